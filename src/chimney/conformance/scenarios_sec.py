"""Conformance scenarios for the blind in-window attack mitigations of §4.16 (R-SEC-01/03/05..09) and the
remaining recommended target behaviours (R-RECV-03/15, R-DISC-07, R-RX-10, R-RFC-05, R-INIT-13).

Each scenario puts an offloaded connection in the situation the rule describes and judges what the target
does on host A's wire and at the NDIS boundary, through `DataProbe` (scenarios_data.py): segments injected
"from B" straight into the target's port, frames A sends to B dropped to leave keepalive probes unanswered,
the returned delegated state at terminate. Verdicts go through `bench.verifier.check(ok, rule, ...)`.

Segments are told apart on an idle connection by their sequence numbers: a challenge ACK carries
SEQ = SndNxt, a keepalive probe SEQ = SndNxt - 1 (the engine's zero-length probe).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from chimney.conformance.scenarios import Bench, Scenario, ScenarioAbort, drain, pattern
from chimney.conformance.scenarios_data import (
    DATA_WIRE,
    MASK,
    DataProbe,
    OneShot,
    Post,
    WireSeg,
    _b_send,
    _b_tcb,
    _close,
    _inject,
    _pair,
    _rcv_nxt,
    _with_ip_options,
)
from chimney.host.socket import (
    IPPROTO_TCP,
    SO_KEEPALIVE,
    SOL_SOCKET,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    Socket,
)
from chimney.host.tcp import Tcb
from chimney.ndis.offload_state import TIMER_NOT_RUNNING, TcpConnectionState, TcpOffloadEventType
from chimney.net.frame import parse_frame
from chimney.net.tcp import ACK, FIN, RST, SYN
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S

PORT = 5401
_RETRIEVE = int(TcpOffloadEventType.TcpIndicateRetrieve)
_ABORT = int(TcpOffloadEventType.TcpIndicateAbort)
KA_START_S = 300  # R-SEC-06
SLACK_NS = 20 * NS_PER_MS  # a timer on 1 ms ticks plus 1 ms of wire each way


@dataclass
class _Conn:
    """One offloaded connection of a scenario and where its idle sequence numbers stand."""

    sa: Socket
    sb: Socket
    tcb: Tcb
    port: int
    snd: int = 0  # A's SndNxt (B's RcvNxt) while idle

    def mark(self, b: Bench) -> None:
        self.snd = int(_b_tcb(b, self.tcb.local_port).conn.rcv_nxt) & MASK

    def out(self, p: DataProbe, since: int, until: int | None = None) -> list[WireSeg]:
        return [s for s in p.wire if s.out and not s.host and s.sport == self.tcb.local_port and s.t >= since
                and (until is None or s.t <= until)]

    def challenges(self, p: DataProbe, since: int, until: int | None = None) -> list[WireSeg]:
        return [s for s in self.out(p, since, until) if not s.n and s.flags & ACK and not s.flags & (RST | SYN | FIN)
                and s.seq == self.snd]

    def probes(self, p: DataProbe, since: int, until: int | None = None) -> list[WireSeg]:
        return [s for s in self.out(p, since, until) if not s.n and s.flags & ACK and s.seq == (self.snd - 1) & MASK]


def _idle_pair(b: Bench, port: int, keepalive: tuple[int, int, int] | None = None) -> _Conn:
    """An offloaded, idle pair (B has sent a little so the probe knows B's timestamps); `keepalive` is
    (idle s, interval s, count) set on A's socket before the offload."""
    sa, sb, tcb = b.socket_pair(port)
    if keepalive is not None:
        idle, intvl, cnt = keepalive
        for level, opt, val in ((SOL_SOCKET, SO_KEEPALIVE, 1), (IPPROTO_TCP, TCP_KEEPIDLE, idle),
                                (IPPROTO_TCP, TCP_KEEPINTVL, intvl), (IPPROTO_TCP, TCP_KEEPCNT, cnt)):
            sa.setsockopt(level, opt, val)
    return _Conn(sa, sb, tcb, port)


def _offload_idle(b: Bench, cs: list[_Conn], probes: dict[int, int] | None = None) -> None:
    """B sends a little first (the probe learns B's timestamps), then the idle connections are offloaded,
    those in `probes` with that many keepalive probes already sent (offered as KeepAlive.ProbeCount;
    nothing arrives after the offload that would reset the count)."""
    for c in cs:
        _b_send(b, c.sb, b"hello")
    b.run(400)  # delayed ACKs out, everything idle
    got = bytearray()
    for c in cs:
        drain([(c.sa, got)])
        conn = getattr(c.tcb, "conn", None)
        if probes and c.port in probes and conn is not None:
            conn._ka_probes = probes[c.port]  # exported as KeepAlive.ProbeCount (R-TMR-08)
        if not b.offload_one(c.tcb):
            raise ScenarioAbort("no offload")
        c.mark(b)
    b.run(5)


def _drop_ports(ports: set[int]) -> Callable[[bytes], bool]:
    """drop_to_b: A's frames of these connections are lost (their keepalive probes go unanswered)."""

    def f(frame: bytes) -> bool:
        seg = getattr(parse_frame(frame, verify_checksums=False), "tcp", None)
        return seg is not None and seg.src_port in ports

    return f


def _run_to(b: Bench, t: int) -> None:
    if t > b.sched.now:
        b.sched.run_until(t)


def _s(ns: int) -> str:
    return f"{ns / NS_PER_S:.3f} s"


# ============================================================================ scenarios


def sec_blind_rst_syn(b: Bench, quick: bool) -> None:
    """Blind in-window attacks on an idle connection with keepalive off and KaProbeCount/KaInterval 0: an RST
    outside the window is dropped silently (R-SEC-01); in-window out-of-order RSTs get one challenge ACK for
    the whole RST-validation period (R-SEC-03); in-window out-of-order SYNs one per 3 s (R-SEC-05); the
    keepalive starts 5 minutes after the first challenge ACK (R-SEC-06) and sends the default 10 probes 1 s
    apart, then the unanswered connection is uploaded in CLOSED state (R-SEC-07)."""
    p = DataProbe.of(b)
    v = b.verifier
    p.cached_patch = {"ka_probe_count": 0, "ka_interval": 0}
    c = _idle_pair(b, PORT)
    _offload_idle(b, [c])
    tcb = c.tcb
    rcv = _rcv_nxt(b, tcb)
    # --- R-SEC-01: far outside the window.
    t = b.sched.now
    _inject(b, p, tcb, seq=rcv + (1 << 30), flags=RST, ack=0)
    _inject(b, p, tcb, seq=rcv - 70_000, flags=RST | ACK)
    b.run(5)
    out = c.out(p, t)
    v.check(not out and not p.events_of(_ABORT, t), "R-SEC-01", f"RSTs outside the receive window were answered "
            f"with {len(out)} segments / {len(p.events_of(_ABORT, t))} aborts instead of dropped silently", tcb)
    # --- R-SEC-03: in-window, out of order; again 20 ms and 1.5 s later (past any per-second limiter).
    t_rst = b.sched.now
    _inject(b, p, tcb, seq=rcv + 1000, flags=RST, ack=0)
    b.run(20)
    _inject(b, p, tcb, seq=rcv + 2000, flags=RST, ack=0)
    b.run(1500)
    _inject(b, p, tcb, seq=rcv + 3000, flags=RST | ACK)
    b.run(20)
    ch = c.challenges(p, t_rst)
    v.check(len(ch) == 1 and not p.events_of(_ABORT, t_rst), "R-SEC-03", f"three in-window out-of-order RSTs in "
            f"one RST-validation period got {len(ch)} challenge ACKs (want exactly 1) and "
            f"{len(p.events_of(_ABORT, t_rst))} aborts", tcb)
    t_cack = ch[0].t if ch else t_rst
    # --- R-SEC-05: in-window SYN twice within 3 s, then once more after 3 s.
    t = b.sched.now
    _inject(b, p, tcb, seq=rcv + 500, flags=SYN)
    b.run(1000)
    _inject(b, p, tcb, seq=rcv + 600, flags=SYN)
    b.run(1000)
    first = c.challenges(p, t)
    t2 = t + 3 * NS_PER_S + 100 * NS_PER_MS
    _run_to(b, t2)
    _inject(b, p, tcb, seq=rcv + 700, flags=SYN)
    b.run(20)
    again = c.challenges(p, t2)
    v.check(len(first) == 1 and len(again) == 1, "R-SEC-05", f"in-window out-of-order SYNs: {len(first)} challenge "
            f"ACKs for two SYNs 1 s apart (want 1), {len(again)} for one 3.1 s later (want 1)", tcb)
    bad = p.events_of(_ABORT, t) + p.events_of(_RETRIEVE, t)
    v.check(not bad and tcb.path.kind != "host", "R-SEC-05", f"in-window SYNs aborted or uploaded the connection "
            f"({bad})", tcb)
    # --- R-SEC-06 / R-SEC-07: nothing answers; probes from t_cack + 5 min, 10 of them 1 s apart, then CLOSED.
    p.drop_to_b = _drop_ports({tcb.local_port})
    n_trm = len(p.terminated)
    _run_to(b, t_cack + KA_START_S * NS_PER_S + 100 * NS_PER_MS)
    pr = c.probes(p, t_cack)
    due = t_cack + KA_START_S * NS_PER_S
    v.check(bool(pr) and abs(pr[0].t - due) <= SLACK_NS, "R-SEC-06", "after a challenge ACK the first keepalive "
            f"probe came {_s(pr[0].t - t_cack) if pr else 'never'} later (want {KA_START_S} s)", tcb)
    b.run(12_000)
    pr = c.probes(p, t_cack)
    gaps = [y.t - x.t for x, y in itertools.pairwise(pr)]
    ok_gaps = all(abs(g - NS_PER_S) <= SLACK_NS for g in gaps)
    v.check(len(pr) == 10 and ok_gaps, "R-SEC-07", f"with KaProbeCount 0 / KaInterval 0 the mitigation sent "
            f"{len(pr)} probes (want 10) with gaps {[_s(g) for g in gaps[:3]]}... (want 1 s)", tcb)
    b.until(lambda: tcb.path.kind == "host", 5, "the connection to come back after unanswered probes")
    mine = p.terminated[n_trm:]
    closed = bool(mine) and mine[-1].dlg is not None and mine[-1].dlg.state == TcpConnectionState.Closed
    v.check(closed and bool(p.events_of(_RETRIEVE, t_cack)), "R-SEC-07", "after all mitigation probes went "
            f"unanswered the connection was not uploaded in CLOSED state (terminated: "
            f"{[t.dlg.state if t.dlg else None for t in mine]})", tcb)
    p.drop_to_b = None
    _close(b, c.sa, c.sb)


def sec_keepalive_interplay(b: Bench, quick: bool) -> None:
    """Mitigation against a running keepalive (KaTimeout 400 s, KaInterval 2 s, KaProbeCount 4): a challenge
    ACK shortens it to 5 minutes (R-SEC-06); an upload mid-mitigation returns the probes sent (counting the
    delegated ProbeCount) and the time to the next probe (R-SEC-08); unanswered, the delegated ProbeCount
    counts toward KaProbeCount before the CLOSED upload (R-SEC-07); an acceptable segment resumes the normal
    keepalive, or stops the timer on a connection without keepalive (R-SEC-09), and ends the RST-validation
    period (R-SEC-03)."""
    p = DataProbe.of(b)
    v = b.verifier
    ka = (400, 2, 4)
    up = _idle_pair(b, PORT, ka)  # uploaded during the mitigation
    run_out = _idle_pair(b, PORT + 1, ka)  # all probes unanswered
    resume = _idle_pair(b, PORT + 2, ka)  # acceptable segment, keepalive on
    plain = _idle_pair(b, PORT + 3)  # acceptable segment, keepalive off
    cs = [up, run_out, resume, plain]
    _offload_idle(b, cs, {up.port: 1, run_out.port: 1})
    p.drop_to_b = _drop_ports({up.tcb.local_port, run_out.tcb.local_port})
    t0 = b.sched.now
    for c in cs:
        _inject(b, p, c.tcb, seq=_rcv_nxt(b, c.tcb) + 1000, flags=RST, ack=0)
    b.run(10)
    t_c = {c.port: (c.challenges(p, t0) or [None])[0] for c in cs}
    if any(x is None for x in t_c.values()):
        b.fail(f"no challenge ACK for an in-window RST on {[k for k, x in t_c.items() if x is None]}")
        raise ScenarioAbort("no challenge ACK")
    # --- the acceptable segments, 10 s in.
    _run_to(b, t0 + 10 * NS_PER_S)
    t_data = b.sched.now
    for c in (resume, plain):
        _b_send(b, c.sb, b"acceptable")
    b.run(300)
    # --- R-SEC-06 shortened: the first mitigation probe of `up` 5 minutes after its challenge ACK.
    tc_up = t_c[up.port].t  # type: ignore[union-attr]
    _run_to(b, tc_up + (KA_START_S + 3) * NS_PER_S + 100 * NS_PER_MS)
    pr = up.probes(p, t0)
    due = tc_up + KA_START_S * NS_PER_S
    v.check(bool(pr) and abs(pr[0].t - due) <= SLACK_NS, "R-SEC-06", "a running keepalive due in 400 s was not "
            f"shortened to {KA_START_S} s after a challenge ACK: first probe {_s(pr[0].t - tc_up) if pr else 'never'} "
            "after it", up.tcb)
    # --- R-SEC-08: upload `up` between its 2nd and 3rd mitigation probe (1 delegated + 2 sent).
    n_trm = len(p.terminated)
    t_up = b.sched.now
    b.upload(up.tcb)
    mine = [t for t in p.terminated[n_trm:] if t.dlg is not None]
    pr = up.probes(p, t0, t_up)
    if mine:
        dka = mine[0].dlg.keep_alive  # type: ignore[union-attr]
        nxt = pr[-1].t + 2 * NS_PER_S if pr else None
        want = -(-(nxt - mine[0].t) // NS_PER_MS) if nxt is not None else None  # ticks of 1 ms, rounded up
        ok = dka.probe_count == 1 + len(pr) and want is not None and dka.timeout_delta != TIMER_NOT_RUNNING \
            and abs(dka.timeout_delta - want) <= 2
        v.check(ok, "R-SEC-08", f"uploaded during mitigation after {len(pr)} probes (1 delegated): KeepAlive."
                f"ProbeCount {dka.probe_count}, TimeoutDelta {dka.timeout_delta} (want {1 + len(pr)} and {want})",
                up.tcb)
    else:
        b.fail("no terminate state for the connection uploaded during mitigation")
    # --- R-SEC-07 with a delegated ProbeCount: 4 - 1 = 3 probes, then CLOSED.
    tc_ro = t_c[run_out.port].t  # type: ignore[union-attr]
    n_trm = len(p.terminated)
    _run_to(b, tc_ro + (KA_START_S + 10) * NS_PER_S)
    b.until(lambda: run_out.tcb.path.kind == "host", 5, "the unanswered connection to come back")
    pr = run_out.probes(p, t0)
    gaps = [y.t - x.t for x, y in itertools.pairwise(pr)]
    mine = [t for t in p.terminated[n_trm:] if t.dlg is not None]
    closed = any(t.dlg.state == TcpConnectionState.Closed for t in mine)  # type: ignore[union-attr]
    v.check(len(pr) == 3 and all(abs(g - 2 * NS_PER_S) <= SLACK_NS for g in gaps) and closed, "R-SEC-07",
            f"KaProbeCount 4 with delegated ProbeCount 1: {len(pr)} mitigation probes (want 3) with gaps "
            f"{[_s(g) for g in gaps]} (want 2 s), uploaded CLOSED: {closed}", run_out.tcb)
    p.drop_to_b = None
    # --- R-SEC-09: `resume` probes again KaTimeout after the acceptable segment, `plain` never.
    _run_to(b, t_data + 412 * NS_PER_S)
    early = resume.probes(p, t0, t_data + 399 * NS_PER_S)
    late = resume.probes(p, t_data + 399 * NS_PER_S)
    v.check(not early and bool(late), "R-SEC-09", f"keepalive on: after an acceptable segment {len(early)} probes "
            f"came before KaTimeout (400 s) and {len(late)} after it (want the normal keepalive back: 0 and >= 1)",
            resume.tcb)
    none = plain.probes(p, t0)
    v.check(not none, "R-SEC-09", f"keepalive off: {len(none)} probes after an acceptable segment ended the "
            "mitigation (its timer must stop)", plain.tcb)
    # --- R-SEC-03: the acceptable segment ended the RST-validation period: a new RST is challenged again.
    t = b.sched.now
    plain.mark(b)
    _inject(b, p, plain.tcb, seq=_rcv_nxt(b, plain.tcb) + 1000, flags=RST, ack=0)
    b.run(10)
    v.check(len(plain.challenges(p, t)) == 1, "R-SEC-03", "after an acceptable segment ended the RST-validation "
            f"period a new in-window RST got {len(plain.challenges(p, t))} challenge ACKs (want 1)", plain.tcb)
    _b_send(b, plain.sb, b"end")
    b.run(5)
    for c in cs:
        _close(b, c.sa, c.sb)


def _corrupt_ip(frame: bytes) -> bytes:
    """Flip a bit of the IPv4 header checksum: the IP header is corrupted, the TCP segment intact."""
    f = parse_frame(frame, verify_checksums=False)
    off = f.l2_len + 10  # type: ignore[union-attr]
    out = bytearray(frame)
    out[off] ^= 0x20
    return bytes(out)


def recommended_paths(b: Bench, quick: bool) -> None:
    """Recommended data-path behaviour: received data goes into posted requests rather than indications
    (R-RECV-03), a completion holds at most one partially filled request, last (R-RECV-15); a segment with
    IPv4 options goes to the host, the target does not handle them itself (R-RFC-05); a corrupted IP header
    is indicated without counting InHeaderErrors or dropped and counted, never processed (R-RX-10); a
    graceful disconnect sends its FIN without waiting for the data's ACKs (R-DISC-07)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b, PORT + 10)
    chains: list[list[Post]] = []
    ct = b.p.binding.binding.dh.client_tcp
    inner = ct.tcp_offload_receive_complete_handler

    def complete(ctx: object, chain: object) -> None:
        mine = []
        ours = {id(q.nbl): q for q in p.posts}
        n = chain
        while n is not None:
            post = ours.get(id(n))
            if post is not None:
                mine.append(post)
            n = n.next  # type: ignore[attr-defined]
        inner(ctx, chain)
        if mine:
            chains.append(mine)

    ct.tcp_offload_receive_complete_handler = complete
    # --- R-RECV-03 / R-RECV-15: three posted requests, then 2500 bytes in one push.
    t = b.sched.now
    for _ in range(3):
        p.post(tcb, 1000)
    _b_send(b, sb, pattern(4096, 71)[:2500])
    b.run(20)
    kinds = [k for (tt, k, _n) in p.deliveries if tt >= t]
    v.check(bool(kinds) and all(k == "post" for k in kinds), "R-RECV-03", f"with requests posted the data was "
            f"delivered as {kinds} (want only the posted requests)", tcb)
    bad = []
    for ch in chains:
        part = [i for i, q in enumerate(ch) if (q.advanced or 0) < q.size]
        if len(part) > 1 or (part and part[0] != len(ch) - 1):
            bad.append([(q.advanced, q.size) for q in ch])
    v.check(bool(chains) and not bad, "R-RECV-15", f"receive completions with more than one partially filled "
            f"request, or one not last: {bad} ({len(chains)} completions)", tcb)
    b.run(5)
    # --- R-RFC-05: IPv4 options.
    t = b.sched.now
    p.rx_filter = OneShot(_with_ip_options)
    chunk = pattern(1024, 73)[:600]
    _b_send(b, sb, chunk)
    b.run(5)
    p.rx_filter = None
    opt = p.normal_frames(t, lambda f: f.tcp is not None and f.has_ip_options)
    v.check(opt >= 1, "R-RFC-05", "a segment with IPv4 options for an offloaded connection was handled by the "
            "target instead of going to the host", tcb)
    # --- R-RX-10: a corrupted IP header.
    t = b.sched.now
    ack0 = p.acked_upto(0)
    ip0 = _ip_header_errors(b)
    bad_ip = OneShot(_corrupt_ip)
    p.rx_filter = bad_ip
    _b_send(b, sb, pattern(512, 75)[:300])
    b.run(3)
    p.rx_filter = None
    indicated = p.normal_frames(t, lambda f: f.tcp is not None)
    counted = _ip_header_errors(b) - ip0
    v.check(bool(bad_ip.seen) and ((indicated >= 1 and counted == 0) or (indicated == 0 and counted >= 1)),
            "R-RX-10", f"a frame with a corrupted IP header: indicated {indicated} times, InHeaderErrors +{counted} "
            "(want indicated and not counted, or dropped and counted)", tcb)
    v.check(p.acked_upto(t) in (None, ack0), "R-RX-10", "the target acknowledged a segment whose IP header was "
            "corrupted", tcb)
    b.run(1500)  # B retransmits it intact
    got = bytearray()
    drain([(sa, got)])
    # --- R-DISC-07: B's ACKs held back; the FIN must not wait for them.
    hold: list[bytes] = []
    p.rx_filter = lambda fr: hold.append(fr)  # type: ignore[func-returns-value]
    t = b.sched.now
    data = pattern(8192, 77)[:4000]
    with contextlib.suppress(BlockingIOError):
        sa.send(data)
    sa.shutdown(1)
    b.run(30)
    fin = [s for s in p.sent(t) if s.flags & FIN and not s.host]
    data_out = sum(s.n for s in p.sent(t) if not s.host)
    v.check(bool(fin) and data_out >= len(data), "R-DISC-07", f"graceful disconnect with {len(data)} bytes queued "
            f"and no ACK from the peer for 30 ms: {data_out} bytes and {len(fin)} FINs sent (want the data and the "
            "FIN without waiting for ACKs)", tcb)
    p.rx_filter = None
    for fr in hold:
        p.deliver(fr)
    b.run(5)
    rest = bytearray()
    b.until(lambda: drain([(sb, rest)]), 10, "B to read to EOF")
    b.expect(bytes(rest).endswith(data), f"B read {len(rest)} bytes, not ending with the {len(data)} sent")
    ct.tcp_offload_receive_complete_handler = inner
    _close(b, sa, sb)


def _ip_header_errors(b: Bench) -> int:
    try:
        _tcp, ip = b.p.manager.offload_stats(4)
    except (OSError, TypeError):
        return 0
    return int(getattr(ip, "in_header_errors", 0) or 0)


SEC_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("sec-blind-rst-syn", sec_blind_rst_syn, DATA_WIRE),
    Scenario("sec-keepalive-interplay", sec_keepalive_interplay, DATA_WIRE),
    Scenario("recommended-paths", recommended_paths, DATA_WIRE),
)
