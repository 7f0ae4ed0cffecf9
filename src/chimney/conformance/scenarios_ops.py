"""Conformance scenarios for the state operations and what they return: query, update (every cached flag),
invalidate, corrupt hardware, neighbor reachability, statistics OIDs, RTT descaling and TicksPerSecond.

Each scenario watches the target at the NDIS boundary (`OpsProbe` wraps the generic provider handlers and
the NdisM*Complete calls of one Bench) and on the wire (host A's port), and records its verdicts with
`bench.verifier.check(ok, "R-...", ...)`, so `chimney verify` reports each rule as pass / FAIL / not
exercised. Hooks that need more than NDIS (hardware_failure(), statistics preloading) are used only when
the target offers them; otherwise the rule stays "not exercised".
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chimney.conformance.scenarios import B_ADDR, PORT, Bench, Scenario, ScenarioAbort, drain, pattern
from chimney.filters.passthrough import OffloadEntry
from chimney.host.chimney import ChimneyPath
from chimney.host.socket import SO_SNDBUF, SOL_SOCKET, Socket
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.blocklist import iter_tree
from chimney.ndis.offload_state import (
    NeighborOffloadStateDelegated,
    TcpCachedFlags,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import (
    OID_IP4_OFFLOAD_STATS,
    OID_IP6_OFFLOAD_STATS,
    OID_TCP4_OFFLOAD_STATS,
    OID_TCP6_OFFLOAD_STATS,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    IpOffloadStats,
    NdisOidRequest,
    TcpOffloadStats,
)
from chimney.ndis.status import NdisStatus
from chimney.net.frame import encode_tcp_frame, parse_frame
from chimney.net.tcp import ACK, PSH, RST, TcpSegment
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import spawn

MASK = 0xFFFFFFFF
NOT_RUNNING = 0xFFFFFFFF
_OK = (NdisStatus.SUCCESS, NdisStatus.FAILURE)
_ONE_SHOT = int(TcpCachedFlags.KEEP_ALIVE_RESTART | TcpCachedFlags.MAX_RT_RESTART | TcpCachedFlags.UPDATE_RCV_WND)
_KA_ON = int(TcpCachedFlags.KEEP_ALIVE_ENABLED)
_MAX_RT_RESTART = int(TcpCachedFlags.MAX_RT_RESTART)
_KA_RESTART = int(TcpCachedFlags.KEEP_ALIVE_RESTART)
_CACHED_FIELDS = ("initial_rcv_wnd", "rcv_indication_size", "ka_probe_count", "ka_timeout", "ka_interval", "max_rt",
                  "flow_label", "ttl_or_hop_limit", "tos_or_traffic_class", "user_priority")
# 100 ms each way: an RTT (200 ms) the tick can resolve and an 8x SRtt that would be plainly visible.
SLOW = Impairments(rate_bps=100_000_000, delay_ns=100 * NS_PER_MS, queue_limit_frames=300)
# 20 ms each way: SRtt x8 is a few hundred ticks, far from its unscaled value (R-QRY-07 at a query).
MEDIUM = Impairments(rate_bps=100_000_000, delay_ns=20 * NS_PER_MS, queue_limit_frames=1000)
_OPS = ("query", "update", "invalidate", "terminate")
_COMPLETE = {
    "query": "m_query_offload_state_complete",
    "update": "m_update_offload_complete",
    "invalidate": "m_invalidate_offload_complete",
    "terminate": "m_terminate_offload_complete",
}
_STATUS_RULE = {"query": "R-QRY-03", "update": "R-UPD-06", "invalidate": "R-INV-06"}
_ASYNC_RULE = {"query": "R-QRY-01", "update": "R-UPD-01", "invalidate": "R-INV-01"}


@dataclass(slots=True)
class WireSeg:
    """One TCP segment seen on host A's port: `out` True for what A (host or target) sent."""

    t: int
    out: bool
    sport: int
    dport: int
    seq: int
    ack: int
    n: int
    flags: int
    tsval: int | None
    tsecr: int | None
    ttl: int


class OpsProbe:
    """Observation hooks on one Bench: every state operation's handler call window and completion (node
    statuses, and the R-QRY-01 / R-UPD-01 / R-INV-01 / status-set checks of §4), delegated state offered
    at initiate and returned at terminate, TCP events and send completions as the host saw them, and
    the TCP segments on host A's wire."""

    @classmethod
    def of(cls, b: Bench) -> OpsProbe:
        """The probe of this bench (installed on first use: the hooks wrap each entry point once)."""
        p = getattr(b, "ops_probe", None)
        if p is None:
            p = cls(b)
            b.ops_probe = p  # type: ignore[attr-defined]
        return p

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.v = b.verifier
        self.hw_failed = False  # a corrupt-hardware sequence was started: FAILURE is allowed (R-INV-06)
        self.inside: dict[str, int] = dict.fromkeys(_OPS, 0)
        self.completed: dict[str, int] = dict.fromkeys(_OPS, 0)
        self.offered: dict[int, TcpOffloadStateDelegated] = {}  # local port -> delegated at initiate
        self.returned: dict[int, TcpOffloadStateDelegated] = {}  # local port -> delegated at terminate
        self.returned_nrd: list[int] = []  # NicReachabilityDelta of terminated neighbors
        self.terminate_status: dict[int, int] = {}  # local port -> node status at terminate
        self.initiated_at: dict[int, int] = {}  # local port -> time of MiniportInitiateOffload
        self.terminated_at: dict[int, int] = {}  # local port -> time of NdisMTerminateOffloadComplete
        self.log: list[tuple[int, str, Any]] = []  # (time, what, detail) in call order
        self.wire: list[WireSeg] = []
        # Drops segments before host B sees them; it is called on their arrival at B (WireSeg.t is then).
        self.drop_to_b: Callable[[WireSeg], bool] | None = None
        ndis = b.p.ndis
        gen = ndis.adapters[0].dh.provider_generic
        for op in _OPS:
            self._wrap_handler(gen, op)
            self._wrap_complete(ndis, op)
        orig_init = gen.initiate_offload_handler

        def initiate(ctx: Any, mbl: Any) -> None:
            for node in iter_tree(mbl):
                const = next((s for s in node.state if type(s) is TcpOffloadStateConst), None)
                dlg = next((s for s in node.state if type(s) is TcpOffloadStateDelegated), None)
                if const is not None and dlg is not None:
                    self.offered[const.local_port] = _snapshot(dlg)
                    self.initiated_at[const.local_port] = self.b.sched.now
            orig_init(ctx, mbl)

        gen.initiate_offload_handler = initiate
        m = b.p.manager
        for name in ("tcp_event", "send_complete", "indicate_offload_event"):
            self._wrap_host(m, name)
        b.p.link.a.add_observer(self._observe)
        port_b = b.p.link.b
        recv = port_b.receiver

        def to_b(frame: bytes) -> None:
            if self.drop_to_b is not None:
                seg = self._parse(frame, True)
                if seg is not None and self.drop_to_b(seg):
                    return
            if recv is not None:
                recv(frame)

        port_b.set_receiver(to_b)

    # ------------------------------------------------------------------ hooks

    def _wrap_handler(self, gen: Any, op: str) -> None:
        name = f"{op}_offload_handler"
        orig = getattr(gen, name)

        def handler(ctx: Any, mbl: Any) -> None:
            self.inside[op] += 1
            try:
                orig(ctx, mbl)
            finally:
                self.inside[op] -= 1

        setattr(gen, name, handler)

    def _wrap_complete(self, ndis: Any, op: str) -> None:
        name = _COMPLETE[op]
        orig = getattr(ndis, name)

        target_adapter = ndis.adapters[0]

        def complete(adapter: Any, mbl: Any) -> None:
            # The target's completion only: a stacked IM completing the same operation upward is not a
            # second one (R-IM-06).
            if adapter is target_adapter:
                self._completion(op, mbl)
            orig(adapter, mbl)

        setattr(ndis, name, complete)

    def _completion(self, op: str, mbl: Any) -> None:
        self.completed[op] += 1
        v = self.v
        statuses = [int(n.status) for n in iter_tree(mbl)]
        self.log.append((self.b.sched.now, f"{op}-complete", statuses))
        if op in _ASYNC_RULE:
            v.check(not self.inside[op], _ASYNC_RULE[op],
                    f"Miniport{op.capitalize()}Offload completed its tree before returning (synchronously)", mbl)
        if op in _STATUS_RULE:
            bad = [NdisStatus.name(s) for s in statuses if s not in _OK]
            v.check(not bad, _STATUS_RULE[op], f"{op} completion with node status {bad}: only SUCCESS or FAILURE", mbl)
        if op == "invalidate":
            failed = any(s == NdisStatus.FAILURE for s in statuses)
            v.check(not failed or self.hw_failed, "R-INV-06",
                    "invalidate completed with FAILURE although the hardware is healthy", mbl)
        if op == "terminate":
            for node in iter_tree(mbl):
                owner = _owner(node.ndis_offload_handle)
                for s in node.state:
                    if type(s) is TcpOffloadStateDelegated and isinstance(owner, ChimneyPath):
                        self.returned[owner.tcb.local_port] = _snapshot(s)
                        self.terminate_status[owner.tcb.local_port] = int(node.status)
                        self.terminated_at[owner.tcb.local_port] = self.b.sched.now
                    elif type(s) is NeighborOffloadStateDelegated and node.status == NdisStatus.SUCCESS:
                        self.returned_nrd.append(s.nic_reachability_delta)

    def _wrap_host(self, m: Any, name: str) -> None:
        orig = getattr(m, name)

        def hook(*args: Any) -> Any:
            self.log.append((self.b.sched.now, name, args))
            return orig(*args)

        setattr(m, name, hook)

    def _parse(self, frame: bytes, out: bool) -> WireSeg | None:
        f = parse_frame(frame, verify_checksums=False)
        seg = getattr(f, "tcp", None)
        if seg is None:
            return None
        o = seg.options
        return WireSeg(self.b.sched.now, out, seg.src_port, seg.dst_port, seg.seq, seg.ack, len(seg.payload),
                       seg.flags, o.ts_val if o is not None else None, o.ts_ecr if o is not None else None,
                       f.ttl or 0)  # type: ignore[union-attr]

    def _observe(self, direction: str, frame: bytes, meta: str | None) -> None:
        seg = self._parse(frame, direction == "tx")
        if seg is not None:
            self.wire.append(seg)

    # ------------------------------------------------------------------ views

    def events(self, tcb: Tcb | None = None) -> list[tuple[int, int, int]]:
        """(time, TCP_OFFLOAD_EVENT_TYPE, info) the host received, optionally of one connection."""
        out = []
        for t, what, args in self.log:
            if what != "tcp_event":
                continue
            handle, ev, info = args
            owner = getattr(handle, "owner", None)
            if tcb is None or (isinstance(owner, ChimneyPath) and owner.tcb is tcb):
                out.append((t, int(ev), int(info)))
        return out

    def sent(self, tcb: Tcb, since: int = 0, until: int | None = None) -> list[WireSeg]:
        lp = tcb.local_port
        return [s for s in self.wire if s.out and s.sport == lp and s.t >= since and (until is None or s.t <= until)]

    def received(self, tcb: Tcb) -> list[WireSeg]:
        lp = tcb.local_port
        return [s for s in self.wire if not s.out and s.dport == lp]

    def reachability_queries(self, since: int = 0) -> int:
        return sum(1 for t, what, args in self.log if what == "indicate_offload_event" and t >= since
                   and args[0] is not None)


def _owner(handle: Any) -> Any:
    """The host's object behind a miniport block list's NdisOffloadHandle (NDIS wraps the host's handle;
    below stacked IMs it wraps an IM offload entry's, which refers to the handle it got from above)."""
    owner = getattr(getattr(handle, "upper", handle), "owner", None)
    while isinstance(owner, OffloadEntry):
        owner = getattr(getattr(owner.upper_ref, "upper", owner.upper_ref), "owner", None)
    return owner


def _snapshot(d: TcpOffloadStateDelegated) -> TcpOffloadStateDelegated:
    """A copy of the plain values (the NBL members belong to the tree and are dropped)."""
    c = copy.copy(d)
    c.keep_alive = copy.copy(d.keep_alive)
    c.retransmit = copy.copy(d.retransmit)
    c.send_data_head = c.send_data_tail = c.buffered_data = None
    return c


# ====================================================================================== helpers


def _ticks(b: Bench) -> int:
    return int(b.p.binding.params.ticks_per_second)


def _ms_ticks(b: Bench, ms: int) -> int:
    return max(1, ms * _ticks(b) // 1000)


def _query(b: Bench, tcb: Tcb, what: str) -> TcpOffloadStateDelegated | None:
    fut = b.p.manager.query(tcb)
    b.until(fut.done, 5, f"the query {what} to complete")
    return fut.result() if fut.done() else None


def _query_all(b: Bench, tcb: Tcb, what: str) -> tuple[TcpOffloadStateCached | None, TcpOffloadStateDelegated | None]:
    """The connection's CACHED and DELEGATED state from one query (the manager keeps only DELEGATED, so
    its completion handler is wrapped for this one query)."""
    m = b.p.manager
    got: list[TcpOffloadStateCached] = []
    orig = m.query_offload_complete

    def grab(pbl: Any) -> None:
        if pbl.status == NdisStatus.SUCCESS:
            got.extend(copy.deepcopy(s) for s in pbl.state if type(s) is TcpOffloadStateCached)
        orig(pbl)

    m.query_offload_complete = grab
    try:
        dlg = _query(b, tcb, what)
    finally:
        m.query_offload_complete = orig
    return (got[0] if got else None), dlg


def _raw_update(b: Bench, tcb: Tcb, what: str, *, set_flags: int = 0, clear_flags: int = 0, **values: Any) -> int:
    """NdisUpdateOffload of the connection's CACHED struct with chosen flags (one-shots included) and
    values, through the manager's own update queue so its bookkeeping stays right (R-UPD-05). Returns
    the time the update was issued."""
    m = b.p.manager
    cp = m.paths.get(tcb)
    if cp is None or cp.cached is None:
        raise ScenarioAbort(f"{what}: connection not offloaded")
    c = copy.deepcopy(cp.cached)
    for k, val in values.items():
        setattr(c, k, val)
    c.flags = (c.flags & ~_ONE_SHOT & ~clear_flags) | set_flags
    t0 = b.sched.now
    cp.next_update = c
    m._pump_update(cp)  # the manager's queue: the only way to send chosen one-shot flags
    b.until(lambda: not cp.updating and cp.next_update is None, 5, f"the update ({what}) to complete")
    return t0


def _socket_pair(b: Bench, port: int) -> tuple[Socket, Socket, Tcb]:
    """`Bench.socket_pair` for any path delay: waits for the peer's accept instead of a fixed 2 ms."""
    lst = b.p.host_b.listen(port)
    lst.setblocking(False)
    sa = b.p.host_a.socket()
    sa.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sa.connect((B_ADDR, port))
    accepted: list[Socket] = []

    def ready() -> bool:
        if not accepted:
            with contextlib.suppress(BlockingIOError):
                accepted.append(lst.accept()[0])
        return bool(accepted) and any(t.state is TcpConnectionState.Established for t in b.a_conns(port))

    b.must(ready, 10, "connection established and accepted")
    lst.close()
    sb = accepted[0]
    sb.setblocking(False)
    (tcb,) = b.a_conns(port)
    return sa, sb, tcb


def _offloaded_idle(b: Bench, port: int = PORT) -> tuple[Socket, Socket, Tcb]:
    """An offloaded connection that exchanged a little data both ways (RTT samples) and is idle."""
    sa, sb, tcb = _socket_pair(b, port)
    sinks = [(sa, bytearray()), (sb, bytearray())]
    for _ in range(3):
        b.push(sa, pattern(2048, 3), sinks)
        b.push(sb, pattern(2048, 5), sinks)
        b.until(lambda: (drain(sinks), tcb.conn.snd_una == tcb.conn.snd_max)[1], 10, "the chunk acknowledged")
    b.until(lambda: (drain(sinks), tcb.conn.snd_una == tcb.conn.snd_max)[1] and not tcb.conn.rxq.size, 10,
            "the host's data acknowledged and read before the offload")
    if not b.offload_one(tcb):
        raise ScenarioAbort("no offload")
    return sa, sb, tcb


def _finish_pair(b: Bench, tcb: Tcb, sa: Socket, sb: Socket) -> None:
    if b.p.manager.is_offloaded(tcb):
        b.upload(tcb)
    for s in (sa, sb):
        with contextlib.suppress(OSError):
            s.shutdown(1)
    b.until(lambda: drain([(sa, bytearray()), (sb, bytearray())]), 20, "both sides to read to EOF")
    sa.close()
    sb.close()


def _all_terminated(b: Bench) -> None:
    m = b.p.manager
    b.until(lambda: not m.paths and not m.neighbor_objs and not m.busy(), 10,
            "every connection, path and neighbor terminated")


def _keepalive_probes(p: OpsProbe, tcb: Tcb, since: int) -> list[WireSeg]:
    """Keepalive probes A sent since `since`: at most one byte, at SND.UNA - 1 (the peer's ACK - 1)."""
    acks = {(s.ack - 1) & MASK for s in p.received(tcb)}
    return [s for s in p.sent(tcb, since) if s.n <= 1 and s.seq in acks and not s.flags & RST]


def _blackhole(p: OpsProbe, tcb: Tcb, on: bool) -> None:
    """Drop (or stop dropping) every TCP segment A sends on this connection before host B sees it."""
    lp = tcb.local_port
    p.drop_to_b = (lambda s: s.out and s.sport == lp) if on else None


def _check_backlog(b: Bench, d: TcpOffloadStateDelegated, when: str) -> None:
    v = d.send_backlog_size
    b.verifier.check(isinstance(v, int) and 0 <= v <= MASK, "R-QRY-05",
                     f"{when} query: SendBacklogSize is {v!r}, want a u32 (0xFFFFFFFF when unsupported)", d)


def _check_cached(b: Bench, p: OpsProbe, tcb: Tcb, got: TcpOffloadStateCached | None, when: str) -> None:
    """R-UPD-07: the target's CACHED variables are what the host last gave it, and its segments use them."""
    cp = b.p.manager.paths.get(tcb)
    if got is None or cp is None or cp.cached is None:
        b.fail(f"no CACHED state to compare {when}")
        return
    want = cp.cached
    diff = [f"{k} {getattr(got, k)} (host: {getattr(want, k)})" for k in _CACHED_FIELDS
            if getattr(got, k) != getattr(want, k)]
    if (got.flags & ~_ONE_SHOT) != (want.flags & ~_ONE_SHOT):
        diff.append(f"flags {got.flags:#x} (host: {want.flags:#x})")
    b.verifier.check(not diff, "R-UPD-07", f"{when}: the target changed cached variables on its own: "
                     + ", ".join(diff), got)
    ttls = sorted({s.ttl for s in p.sent(tcb, p.initiated_at.get(tcb.local_port, 0))})
    b.verifier.check(ttls in ([], [want.ttl_or_hop_limit]), "R-UPD-07",
                     f"{when}: the target sent with TTL {ttls}, cached TtlOrHopLimit {want.ttl_or_hop_limit}")


def _wire_rtt_ticks(p: OpsProbe, tcb: Tcb, tps: int, since: int) -> list[float]:
    """RTT samples as the target should take them (R-TS-03): arrival of a peer segment echoing TSecr X
    minus the first time A sent TSval X, in ticks."""
    first: dict[int, int] = {}
    for s in p.sent(tcb, since):
        if s.tsval is not None and s.n:
            first.setdefault(s.tsval, s.t)
    out = []
    seen: set[int] = set()
    for s in p.received(tcb):
        if s.t >= since and s.tsecr in first and s.tsecr not in seen:
            seen.add(s.tsecr)
            out.append((s.t - first[s.tsecr]) * tps / NS_PER_S)
    return out


# ====================================================================================== scenarios


def query_states(b: Bench, quick: bool) -> None:
    """Queries while idle, mid-transfer and three at once: asynchronous (R-QRY-01), SUCCESS/FAILURE only
    (R-QRY-03), SendBacklogSize present (R-QRY-05), SRtt/RttVar scaled as offered (R-QRY-07), CACHED
    values untouched by the target (R-UPD-07)."""
    p = OpsProbe.of(b)
    sa, sb, tcb = _offloaded_idle(b)
    offered = p.offered.get(tcb.local_port)
    cached, dlg = _query_all(b, tcb, "of an idle connection")
    if dlg is None or offered is None:
        b.fail("the query of an idle offloaded connection failed")
        raise ScenarioAbort("query failed")
    _check_backlog(b, dlg, "idle")
    # No RTT sample since the offload: the descaled offered SRtt/RttVar come back rescaled (x8 / x4); the
    # 40 ms path keeps the offered values far above the rounding of a whole-tick target.
    b.expect(offered.srtt >= 100, f"offered SRtt {offered.srtt}: the path RTT is too short to tell x8 from x1")
    b.verifier.check(abs(dlg.srtt - offered.srtt) <= 8 and abs(dlg.rtt_var - offered.rtt_var) <= 4, "R-QRY-07",
                     f"idle connection queried SRtt {dlg.srtt} / RttVar {dlg.rtt_var}; offered as {offered.srtt} / "
                     f"{offered.rtt_var} (x8 / x4) with no RTT sample since", dlg)
    _check_cached(b, p, tcb, cached, "idle after the offload")
    data = pattern(200_000 if quick else 800_000, 7)
    got = bytearray()
    w = spawn(b.sched, sa.asendall(data))
    b.run(15)
    drain([(sb, got)])
    before = p.completed["query"]
    futs = [b.p.manager.query(tcb) for _ in range(3)]
    b.until(lambda: all(f.done() for f in futs), 5, "three concurrent queries to complete")
    b.expect(p.completed["query"] - before == 3, f"{p.completed['query'] - before} of 3 concurrent queries completed")
    for f in futs:
        d = f.result() if f.done() else None
        if b.expect(d is not None, "a query mid-transfer failed") and d is not None:
            _check_backlog(b, d, "mid-transfer")
    b.until(lambda: (drain([(sb, got)]), w.done() and len(got) >= len(data))[1], 30, "the transfer to finish")
    b.expect(bytes(got) == data, f"B received {len(got)} of {len(data)} bytes around the queries, or wrong data")
    cached, _ = _query_all(b, tcb, "after the transfer")
    _check_cached(b, p, tcb, cached, "after a transfer")
    _finish_pair(b, tcb, sa, sb)


def update_flags(b: Bench, quick: bool) -> None:
    """Updates with each cached flag: keepalive enabled (R-UPD-12), KEEP_ALIVE_RESTART (R-UPD-09), keepalive
    disabled (R-UPD-12), MAX_RT_RESTART with new keepalive values while probing (R-UPD-11) and while
    retransmitting (R-UPD-10); every update asynchronous (R-UPD-01) with SUCCESS/FAILURE (R-UPD-06)."""
    p = OpsProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _offloaded_idle(b)
    tps = _ticks(b)
    tick = NS_PER_S // tps
    slack = 2 * tick + 5 * NS_PER_MS
    ka = {"ka_timeout": _ms_ticks(b, 300), "ka_interval": _ms_ticks(b, 100), "ka_probe_count": 3}
    ka_idle = ka["ka_timeout"] * tick

    # Keepalive on: the first probe after KaTimeout of idle time.
    t0 = _raw_update(b, tcb, "keepalive on", set_flags=_KA_ON, **ka)
    b.run(ka_idle / NS_PER_MS + 100)
    probes = _keepalive_probes(p, tcb, t0)
    last = max((s.t for s in p.sent(tcb) + p.received(tcb) if s.t < t0), default=t0)
    v.check(bool(probes) and last + ka_idle - slack <= probes[0].t <= b.sched.now, "R-UPD-12",
            f"after TCP_FLAG_KEEP_ALIVE_ENABLED with KaTimeout {ka['ka_timeout']} ticks: probes at "
            f"{[(s.t - t0) // NS_PER_MS for s in probes]} ms after the update")
    v.check(bool(probes), "R-TMR-01", "no keepalive timer: keepalive enabled, no probe after KaTimeout of idle time")
    # KEEP_ALIVE_RESTART two thirds into the idle time: the next probe waits a whole KaTimeout again.
    b.until(lambda: bool(_keepalive_probes(p, tcb, b.sched.now - ka_idle // 2)), 2, "an answered keepalive probe")
    answered = max(s.t for s in p.received(tcb))
    b.run((answered + 2 * ka_idle // 3 - b.sched.now) / NS_PER_MS)
    t1 = _raw_update(b, tcb, "keepalive restart", set_flags=_KA_ON | _KA_RESTART, **ka)
    b.until(lambda: bool(_keepalive_probes(p, tcb, t1)), 2, "a keepalive probe after the restart")
    nxt = _keepalive_probes(p, tcb, t1)
    v.check(bool(nxt) and nxt[0].t >= t1 + ka_idle - slack, "R-UPD-09",
            f"TCP_FLAG_KEEP_ALIVE_RESTART at +{(t1 - answered) // NS_PER_MS} ms of idle: next probe "
            f"{(nxt[0].t - t1) // NS_PER_MS if nxt else None} ms later, want {ka_idle // NS_PER_MS} ms")
    # Keepalive off: no timer, no probes.
    t2 = _raw_update(b, tcb, "keepalive off", clear_flags=_KA_ON, **ka)
    d = _query(b, tcb, "with keepalive off")
    v.check(d is not None and d.keep_alive.timeout_delta == NOT_RUNNING, "R-UPD-12",
            f"keepalive disabled, yet KeepAlive.TimeoutDelta is {d.keep_alive.timeout_delta if d else None}", d)
    b.run(3 * ka_idle / NS_PER_MS)
    late = _keepalive_probes(p, tcb, t2 + 5 * NS_PER_MS)
    v.check(not late, "R-UPD-12", f"{len(late)} keepalive probes after TCP_FLAG_KEEP_ALIVE_ENABLED was cleared")
    # A keepalive timeout of three weeks: the timer's counter must hold it (R-TMR-02).
    weeks = min(21 * 86_400 * tps, MASK - 1)
    t_w = _raw_update(b, tcb, "three-week keepalive", set_flags=_KA_ON | _KA_RESTART, ka_timeout=weeks, ka_interval=weeks,
                      ka_probe_count=3)
    d = _query(b, tcb, "with a three-week keepalive")
    gone = (b.sched.now - t_w) // tick + 2
    v.check(d is not None and weeks - gone <= d.keep_alive.timeout_delta <= weeks, "R-TMR-02",
            f"KaTimeout {weeks} ticks (three weeks): KeepAlive.TimeoutDelta "
            f"{d.keep_alive.timeout_delta if d else None}, the timer counter wrapped or was cut", d)
    _raw_update(b, tcb, "keepalive off after three weeks", clear_flags=_KA_ON, **ka)
    # Probes unanswered, then MAX_RT_RESTART with a new KaProbeCount / KaTimeout / KaInterval: both reset.
    _raw_update(b, tcb, "keepalive on again", set_flags=_KA_ON, **ka)
    _blackhole(p, tcb, True)
    t3 = b.sched.now
    b.until(lambda: len(_keepalive_probes(p, tcb, t3)) >= 2, 3, "two unanswered keepalive probes")
    new = {"ka_timeout": _ms_ticks(b, 400), "ka_interval": _ms_ticks(b, 250), "ka_probe_count": 5}
    t4 = _raw_update(b, tcb, "MAX_RT_RESTART with new keepalive values", set_flags=_KA_ON | _MAX_RT_RESTART, **new)
    d = _query(b, tcb, "after MAX_RT_RESTART")
    gone = (b.sched.now - t4) // tick + 2
    v.check(d is not None and d.keep_alive.probe_count == 0, "R-UPD-11",
            f"KaProbeCount updated with TCP_FLAG_MAX_RT_RESTART: KeepAlive.ProbeCount is "
            f"{d.keep_alive.probe_count if d else None}, want 0", d)
    v.check(d is not None and d.keep_alive.timeout_delta != NOT_RUNNING
            and d.keep_alive.timeout_delta >= new["ka_interval"] - gone, "R-UPD-11",
            f"KaTimeout/KaInterval updated with TCP_FLAG_MAX_RT_RESTART: KeepAlive.TimeoutDelta is "
            f"{d.keep_alive.timeout_delta if d else None}, want it restarted (>= {new['ka_interval'] - gone})", d)
    _blackhole(p, tcb, False)
    _raw_update(b, tcb, "keepalive off for the retransmissions", clear_flags=_KA_ON, **ka)
    # Retransmitting for a while, then MAX_RT_RESTART: TotalRT starts again from 0.
    _blackhole(p, tcb, True)
    got = bytearray()
    data = pattern(1024, 9)
    sa.send(data)
    b.run(900)
    d0 = _query(b, tcb, "while retransmitting")
    t5 = _raw_update(b, tcb, "MAX_RT_RESTART", set_flags=_MAX_RT_RESTART)
    d1 = _query(b, tcb, "after MAX_RT_RESTART")
    bound = (b.sched.now - t5) // tick + 2
    if b.expect(d0 is not None and d0.total_rt >= _ms_ticks(b, 300), f"TotalRT after 0.9 s of retransmissions is "
                f"{d0.total_rt if d0 else None}: the retransmission timer is not counting"):
        v.check(d1 is not None and d1.total_rt <= bound, "R-UPD-10",
                f"TCP_FLAG_MAX_RT_RESTART: TotalRT {d0.total_rt if d0 else None} -> "
                f"{d1.total_rt if d1 else None} ticks, want <= {bound}", d1)
    _blackhole(p, tcb, False)
    b.until(lambda: (drain([(sb, got)]), len(got) >= len(data))[1], 10, "the retransmitted data to arrive")
    b.expect(bytes(got) == data, "wrong data after the retransmissions")
    _finish_pair(b, tcb, sa, sb)


def invalidate_hold(b: Bench, quick: bool) -> None:
    """Invalidate the neighbor under a sending connection and let the host take 60 ms to terminate: the
    invalidate completes asynchronously (R-INV-01) with SUCCESS (R-INV-06); no data goes out meanwhile
    (R-INV-03); the objects are still the target's to query and to return in full at terminate (R-INV-05)."""
    p = OpsProbe.of(b)
    v = b.verifier
    m = b.p.manager
    sa, sb, tcb = _offloaded_idle(b)
    cp = m.paths[tcb]
    nobj = cp.path_obj.parent if cp.path_obj is not None else None
    if nobj is None:
        raise ScenarioAbort("no neighbor object")
    data = pattern(150_000 if quick else 600_000, 13)
    got = bytearray()
    w = spawn(b.sched, sa.asendall(data))
    b.run(5)
    held: list[tuple[Any, dict[str, Any]]] = []
    real_upload = m.upload

    def later(tcbs: Any, **kw: Any) -> int:
        held.append((tcbs, kw))
        return 0

    m.upload = later  # the host may take its time to terminate; the target must hold on meanwhile
    try:
        m.invalidate([nobj])
        b.until(lambda: p.completed["invalidate"] >= 1, 5, "the invalidate to complete")
        t_inv = b.sched.now
        b.run(30)
        sent = [s for s in p.sent(tcb, t_inv) if s.n]
        v.check(not sent, "R-INV-03", f"{len(sent)} data segments ({sum(s.n for s in sent)} bytes) sent on a "
                f"connection over an invalidated neighbor", *sent[:2])
        d = _query(b, tcb, "of a connection over an invalidated neighbor")
        v.check(d is not None, "R-INV-05", "the query of a connection over an invalidated neighbor failed before "
                "its terminate: the target let go of it")
        b.run(30)
    finally:
        m.upload = real_upload
    b.expect(bool(held), "neither the target's TcpIndicateRetrieve nor the host's fallback asked for an upload")
    b.upload(tcb)
    _all_terminated(b)
    lp = tcb.local_port
    ret = p.returned.get(lp)
    v.check(p.terminate_status.get(lp) == NdisStatus.SUCCESS and ret is not None
            and ret.state is not TcpConnectionState.Closed, "R-INV-05",
            f"terminate of the invalidated connection: status {p.terminate_status.get(lp)!r}, state "
            f"{ret.state.name if ret else None}: its state was not kept until the host terminated it", ret)
    trm = [st for _t, what, st in p.log if what == "terminate-complete"]
    v.check(all(all(s == NdisStatus.SUCCESS for s in sts) for sts in trm), "R-INV-05",
            f"terminate of invalidated objects completed with {trm}")
    b.until(lambda: (drain([(sb, got)]), w.done() and len(got) >= len(data))[1], 30,
            "the transfer to finish in the host")
    b.expect(bytes(got) == data, f"B received {len(got)} of {len(data)} bytes, or wrong data")
    _finish_pair(b, tcb, sa, sb)


def _hw_sequence(b: Bench, trigger: str) -> None:
    """One corrupt-hardware sequence on a fresh connection with sends stuck in flight, started by a query,
    an invalidate or a terminate (R-QRY-09 / R-INV-06 / R-TRM-27, §6.32)."""
    p = OpsProbe.of(b)
    v = b.verifier
    m = b.p.manager
    sa, sb, tcb = _offloaded_idle(b)
    _blackhole(p, tcb, True)
    with contextlib.suppress(BlockingIOError):
        sa.send(pattern(30_000, 21))
    b.run(20)
    me = m.paths.get(tcb)
    p.hw_failed = True
    b.p.target.hardware_failure()
    mark = len(p.log)
    rule = {"query": "R-QRY-09", "invalidate": "R-INV-06", "terminate": "R-TRM-27"}[trigger]
    if trigger == "query":
        m.query(tcb)
    elif trigger == "invalidate":
        cp = m.paths[tcb]
        if cp.path_obj is not None and cp.path_obj.parent is not None:
            m.invalidate([cp.path_obj.parent])
    else:
        m.upload(tcb)
    b.until(lambda: tcb.path.kind == "host" or tcb.closed, 10, "the failed connection to be terminated")
    b.until(lambda: not m.busy(), 5, "every operation to complete")
    log = p.log[mark:]
    steps: list[str] = []
    for _t, what, args in log:
        if what == f"{trigger}-complete":
            steps.append("op-failed" if NdisStatus.FAILURE in args else "op-ok")
        elif what == "tcp_event" and getattr(args[0], "owner", None) is me:
            ev, info = int(args[1]), int(args[2])
            if ev == TcpOffloadEventType.TcpIndicateRetrieve:
                steps.append("retrieve-hw" if info == TcpUploadReason.HardwareFailure else f"retrieve-{info}")
            elif ev == TcpOffloadEventType.TcpIndicateAbort:
                steps.append("abort")
        elif what == "send_complete":
            nbl = args[0]
            steps.append("send-aborted" if nbl.status == NdisStatus.REQUEST_ABORTED else f"send-{nbl.status:#x}")
        elif what == "terminate-complete" and trigger != "terminate":
            steps.append("terminated")
        elif what == "terminate-complete":
            steps.append("op-failed" if NdisStatus.FAILURE in args else "op-ok")
    compact = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
    if trigger == "terminate":
        # §6.32: the failing call is the terminate itself: its outstanding I/O is aborted before it
        # completes with FAILURE; Retrieve/HardwareFailure then Abort may be indicated first.
        want = ["send-aborted", "op-failed"]
        events = [s for s in compact if s in ("retrieve-hw", "abort")]
        ok = [s for s in compact if s not in events][:2] == want and events in ([], ["retrieve-hw", "abort"])
    else:
        want = ["op-failed", "retrieve-hw", "abort", "send-aborted", "terminated"]
        ok = compact[:len(want)] == want
    v.check(ok, rule, f"corrupt hardware, {trigger}: saw {compact}, want {want} in this order")
    failed = m.stats["upload_failed"]
    b.expect(failed == 1, f"host counted {failed} failed uploads for the one connection lost to the hardware")
    m.stats["upload_failed"] = 0  # expected here: the hardware lost the connection's state
    _blackhole(p, tcb, False)
    sa.close()
    sb.close()


def hardware_failure(b: Bench, quick: bool) -> None:
    """Corrupt hardware found by a query, an invalidate and a terminate (one fresh pair each): FAILURE,
    Retrieve/HardwareFailure, Abort, outstanding sends REQUEST_ABORTED, then the terminate completion
    (R-QRY-09, R-INV-06, R-TRM-27). Needs the target's `hardware_failure()` hook (not exercised without)."""
    if not callable(getattr(b.p.target, "hardware_failure", None)):
        return
    for trigger in ("query", "invalidate", "terminate"):
        extra = Bench(b.factory, b.sched.seed, b.verifier)  # a fresh pair each: the hardware fails once
        try:
            _hw_sequence(extra, trigger)
        except ScenarioAbort:
            pass
        finally:
            with contextlib.suppress(ScenarioAbort):
                extra.finish()
            b.failures.extend(f"[{trigger}] {f}" for f in extra.failures)


def _set_stale_ticks(b: Bench, ms: int) -> None:
    """OID_TCP_CONNECTION_OFFLOAD_PARAMETERS again with a short NceStaleTicks (host side too)."""
    params = copy.copy(b.p.binding.params)
    params.nce_stale_ticks = _ms_ticks(b, ms)
    st = b.p.ndis.oid_request(b.p.manager.binding_handle, NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
                                                                             params))
    if st != NdisStatus.SUCCESS:
        raise ScenarioAbort(f"the target refused OID_TCP_CONNECTION_OFFLOAD_PARAMETERS: {NdisStatus.name(st)}")
    b.p.binding.params = params


def neighbor_reachability(b: Bench, quick: bool) -> None:
    """NceStaleTicks 300 ms and a host that never confirms the neighbor: while the connection makes forward
    progress the target asks nothing (NRT = NCT on progress, R-NBR-03); once the peer goes silent it asks
    the host (R-NBR-09); at terminate NRD is small again after progress (R-NBR-03)."""
    p = OpsProbe.of(b)
    v = b.verifier
    _set_stale_ticks(b, 300)
    sa, sb, tcb = _offloaded_idle(b)
    got = bytearray()
    t0 = b.sched.now
    for i in range(24):  # 1.2 s of small writes, each acknowledged: forward progress all along
        sa.send(pattern(1024, i + 1))
        b.run(50)
        drain([(sb, got)])
    n = p.reachability_queries(t0)
    v.check(n == 0, "R-NBR-03", f"{n} NeighborReachabilityQuery indications in 1.2 s of acknowledged sends "
            "(NceStaleTicks 300 ms): forward progress did not refresh NRT")
    _blackhole(p, tcb, True)
    t1 = b.sched.now
    sa.send(pattern(1024, 77))
    b.run(1500)
    n = p.reachability_queries(t1)
    v.check(n >= 1, "R-NBR-09", "no NeighborReachabilityQuery in 1.5 s of retransmissions without any forward "
            "progress (NceStaleTicks 300 ms)")
    _blackhole(p, tcb, False)
    b.until(lambda: (drain([(sb, got)]), len(got) >= 25 * 1024)[1], 10, "the data to arrive after the silence")
    b.until(lambda: _acked(p, tcb), 5, "the data to be acknowledged")
    b.run(5)
    p.returned_nrd.clear()
    b.upload(tcb)
    _all_terminated(b)
    stale = _ms_ticks(b, 300)
    v.check(bool(p.returned_nrd) and all(x < stale for x in p.returned_nrd), "R-NBR-03",
            f"NicReachabilityDelta at terminate {p.returned_nrd} just after forward progress (NceStaleTicks {stale})")
    _finish_pair(b, tcb, sa, sb)


_PRELOAD_TCP = ("in_segments", "out_segments", "retransmitted_segments", "out_resets", "reset_established")
_PRELOAD_IP = ("in_receives", "in_octets", "in_delivers", "out_requests", "out_octets")


def _stats_query(b: Bench, oid: int) -> Any:
    req = NdisOidRequest.query(oid)
    st = b.p.ndis.oid_request(b.p.manager.binding_handle, req)
    return req.buffer if st == NdisStatus.SUCCESS else None


def _preload(b: Bench) -> dict[str, tuple[int, int]] | None:
    """Counters set one below their maximum where the target exposes them (the built-in's `tcp_stats` /
    `ip_stats`, IPv4 first): name -> (preloaded value, width). None when it does not. Two increments then
    wrap a counter to 0, a saturating one stays at the maximum and one that does not count stays put."""
    tcp = getattr(b.p.target, "tcp_stats", None)
    ip = getattr(b.p.target, "ip_stats", None)
    bits = {**getattr(TcpOffloadStats, "_bits", {}), **getattr(IpOffloadStats, "_bits", {})}
    if not (isinstance(tcp, tuple | list) and isinstance(ip, tuple | list) and tcp and ip):
        return None
    out: dict[str, tuple[int, int]] = {}
    for obj, names in ((tcp[0], _PRELOAD_TCP), (ip[0], _PRELOAD_IP)):
        for name in names:
            if not hasattr(obj, name) or name not in bits:
                return None
            start = (1 << bits[name]) - 2
            setattr(obj, name, start)
            out[name] = (start, bits[name])
    return out


def _classify(p: OpsProbe, lp: int) -> tuple[int, int, int]:
    """(OutSegments, RetransmittedSegments, OutResets) the target's segments of one connection should add,
    from the wire (R-STAT-08): between MiniportInitiateOffload and the terminate completion; bytes below
    the offered SndMax count as sent before."""
    off = p.offered.get(lp)
    t0 = p.initiated_at.get(lp)
    if off is None or t0 is None:
        return 0, 0, 0
    t1 = p.terminated_at.get(lp)
    high = off.snd_max
    out = rtx = rst = 0
    for s in p.wire:
        if not s.out or s.sport != lp or s.t < t0 or (t1 is not None and s.t > t1):
            continue
        if s.flags & RST:
            rst += 1
        if s.n:
            end = (s.seq + s.n) & MASK
            if 0 < ((high - s.seq) & MASK) < 0x80000000:
                rtx += 1
                if not 0 < ((end - high) & MASK) < 0x80000000:
                    continue
            if 0 < ((end - high) & MASK) < 0x80000000:
                high = end
        out += 1
    return out, rtx, rst


def offload_statistics(b: Bench, quick: bool) -> None:
    """Statistics OIDs: the four structures (R-STAT-03); counters at their maximum wrap (R-STAT-05);
    OutSegments / RetransmittedSegments / OutResets match the wire (R-STAT-08); CurrentlyEstablished and
    ResetEstablished follow the offloaded connections' states (R-STAT-09)."""
    p = OpsProbe.of(b)
    v = b.verifier
    m = b.p.manager
    for oid, cls in ((OID_TCP4_OFFLOAD_STATS, TcpOffloadStats), (OID_TCP6_OFFLOAD_STATS, TcpOffloadStats),
                     (OID_IP4_OFFLOAD_STATS, IpOffloadStats), (OID_IP6_OFFLOAD_STATS, IpOffloadStats)):
        got = _stats_query(b, oid)
        v.check(isinstance(got, cls), "R-STAT-03", f"query of OID 0x{oid:08X} returned {type(got).__name__}, "
                f"want {cls.__name__}")
    m.reset_offload_stats(4)
    pre = _preload(b)
    pairs = [_offloaded_idle(b, PORT + i) for i in range(4)]
    (sa1, sb1, c1), (_sa2, sb2, c2), (_sa3, sb3, c3), (sa4, _sb4, c4) = pairs
    # c1 sends with every 5th new data segment lost once: retransmissions (and a pure retransmission or two).
    seen: set[int] = set()
    lp1 = c1.local_port

    def lossy(s: WireSeg) -> bool:
        if s.out and s.sport == lp1 and s.n and s.seq not in seen:
            seen.add(s.seq)
            return len(seen) % 5 == 0
        return False

    p.drop_to_b = lossy
    data = pattern(60_000 if quick else 200_000, 3)
    got = bytearray()
    w = spawn(b.sched, sa1.asendall(data))
    b.until(lambda: (drain([(sb1, got)]), w.done() and len(got) >= len(data))[1], 30, "the lossy transfer")
    p.drop_to_b = None
    b.expect(bytes(got) == data, "wrong data on the lossy connection")
    sb2.shutdown(1)  # c2 -> CLOSE_WAIT
    b.until(lambda: c2.conn.state is TcpConnectionState.CloseWait or m.paths[c2].tcp_state
            is TcpConnectionState.CloseWait, 5, "the second connection in CLOSE_WAIT")
    b.run(10)
    tcp = _stats_query(b, OID_TCP4_OFFLOAD_STATS)
    cur = getattr(tcp, "currently_established", None)
    v.check(cur == 4, "R-STAT-09", f"CurrentlyEstablished {cur} with three offloaded connections in ESTABLISHED and "
            "one in CLOSE_WAIT (want 4)")
    sb3.abort()  # peer RST on ESTABLISHED c3
    b.until(lambda: c3.closed, 5, "the third connection to close on the peer's RST")
    sa4.abort()  # our abortive disconnect on ESTABLISHED c4: one RST out
    b.until(lambda: c4.closed, 5, "the fourth connection to close on our abort")
    b.run(10)
    for tcb in (c1, c2):
        b.upload(tcb)
    _all_terminated(b)
    tcp = _stats_query(b, OID_TCP4_OFFLOAD_STATS)
    ip = _stats_query(b, OID_IP4_OFFLOAD_STATS)
    if tcp is None or ip is None:
        b.fail("statistics OID query failed at the end")
        return
    want = [sum(x) for x in zip(*(_classify(p, t.local_port) for t in (c1, c2, c3, c4)), strict=True)]
    base = {k: pre[k][0] if pre else 0 for k in _PRELOAD_TCP}
    seen_vals = {k: getattr(tcp, k) for k in ("out_segments", "retransmitted_segments", "out_resets",
                                             "reset_established")}

    def delta(name: str, width: int) -> int:
        return (seen_vals[name] - base[name]) % (1 << width)

    got8 = [delta("out_segments", 64), delta("retransmitted_segments", 32), delta("out_resets", 32)]
    v.check(got8 == want, "R-STAT-08", f"(OutSegments, RetransmittedSegments, OutResets) added {got8}, the "
            f"target's segments on the wire say {want}")
    # A setup precondition, not the target's fault: the lossy transfer must retransmit and the abort send one RST.
    b.expect(want[1] > 0 and want[2] == 1, f"the statistics scenario did not produce retransmissions and exactly "
             f"one RST on the wire (segments, retransmitted, RSTs = {want})")
    rst = delta("reset_established", 32)
    v.check(rst == 2, "R-STAT-09", f"ResetEstablished added {rst}; two ESTABLISHED connections went straight to "
            "CLOSED (peer RST, our abort)")
    if pre is not None:
        # Counters that moved by two or more (the wire says so, or any traffic does) must have wrapped.
        moved = {"out_segments": want[0], "retransmitted_segments": want[1], "out_resets": want[2],
                 "reset_established": 2}
        stuck = [k for k, (start, _w) in pre.items() if moved.get(k, 2) >= 2
                 and getattr(tcp if k in _PRELOAD_TCP else ip, k) == start + 1]
        v.check(not stuck, "R-STAT-05", f"counters started one below their maximum stopped at it instead of "
                f"wrapping to zero: {stuck}")
        over = [k for k, (_top, w) in pre.items() if not 0 <= getattr(tcp if k in _PRELOAD_TCP else ip, k) < 1 << w]
        v.check(not over, "R-STAT-05", f"counters beyond their width: {over}")
    for sa, sb, tcb in pairs[:2]:
        _finish_pair(b, tcb, sa, sb)
    for sa, sb, _tcb in pairs[2:]:
        sa.close()
        sb.close()


def rtt_descaling(b: Bench, quick: bool) -> None:
    """A 200 ms RTT path at the scenario's TicksPerSecond (R-INIT-14): a segment lost right after the offload
    is retransmitted one RFC 2988 RTO later, computed from the descaled offered SRtt/RttVar (R-OFF-25,
    R-TMR-22); after more traffic the queried SRtt (x8) matches the timestamp RTT on the wire (R-QRY-07,
    R-TS-03); TSecr echoes TsRecent and TsRecent comes back at terminate (R-TS-06)."""
    p = OpsProbe.of(b)
    v = b.verifier
    tps = _ticks(b)
    tick = NS_PER_S // tps
    sa, sb, tcb = _offloaded_idle(b)
    lp = tcb.local_port
    off = p.offered.get(lp)
    if off is None:
        raise ScenarioAbort("no offered state")
    # One lost segment: its retransmission comes one RTO later.
    lost: list[WireSeg] = []

    def drop_first(s: WireSeg) -> bool:
        if s.out and s.sport == lp and s.n and not lost:
            lost.append(s)
            return True
        return False

    p.drop_to_b = drop_first
    got = bytearray()
    t_send = b.sched.now
    sa.send(pattern(500, 31))
    b.until(lambda: bool(lost) and any(s.seq == lost[0].seq and s.t > lost[0].t for s in p.sent(tcb)), 10,
            "the lost segment's retransmission")
    p.drop_to_b = None
    srtt, var = off.srtt / 8, off.rtt_var / 4  # ticks
    rfc = (srtt + max(1.0, 4 * var)) * tick
    rto_ok = False
    if lost:
        # drop_to_b saw the segment on arrival at B: its send time is on A's side of the wire.
        tx = sorted(s.t for s in p.sent(tcb) if s.seq == lost[0].seq and s.n)
        measured = tx[1] - tx[0] if len(tx) >= 2 else None
        # One small NBL, an open window, nothing in flight: no reason to hold it (R-TMR-20: an SWS timer
        # may suppress only less than an MSS that does not reach the end of an NBL).
        v.check(tx[0] - t_send <= 2 * tick + NS_PER_MS, "R-TMR-20",
                f"a whole 256-byte send NBL went out {(tx[0] - t_send) / NS_PER_MS:.1f} ms after it was posted")
        v.check(measured is not None, "R-TMR-01", "no retransmit timer: a lost segment was never retransmitted")
        lo, hi = 0.9 * rfc - 2 * tick, 1.1 * max(rfc, NS_PER_S) + 2 * tick
        rto_ok = measured is not None and lo <= measured <= hi
        text = (f"first retransmission {measured / NS_PER_MS if measured else None} ms after the send; offered SRtt "
                f"{off.srtt} / RttVar {off.rtt_var} (x8 / x4, {tps} ticks/s) give an RTO of {rfc / NS_PER_MS:.0f} ms "
                f"(accepted {lo / NS_PER_MS:.0f}..{hi / NS_PER_MS:.0f} ms)")
        v.check(rto_ok, "R-OFF-25", text)
        v.check(rto_ok, "R-TMR-22", text)
    # More traffic: timestamp RTT samples on the wire vs the queried SRtt.
    t0 = b.sched.now
    for i in range(6 if quick else 12):
        sa.send(pattern(3000, i + 40))
        b.run(250)
        drain([(sb, got)])
    b.until(lambda: (drain([(sb, got)]), _acked(p, tcb))[1], 5, "the data acknowledged")
    d = _query(b, tcb, "after RTT samples")
    samples = sorted(_wire_rtt_ticks(p, tcb, tps, t0))
    ts_on = bool(off.ts_recent) or any(s.tsval is not None for s in p.sent(tcb, t0))
    srtt_ok = False
    if d is not None and samples:
        med = samples[len(samples) // 2]
        srtt_ok = abs(d.srtt / 8 - med) <= 0.25 * med + 2
        text = (f"queried SRtt {d.srtt} (x8 = {d.srtt / 8:.1f} ticks) vs a median RTT of {med:.1f} ticks "
                f"on the wire ({len(samples)} timestamp samples, {tps} ticks/s)")
        v.check(srtt_ok, "R-QRY-07", text)
        if ts_on:
            v.check(srtt_ok, "R-TS-03", text)
    else:
        b.fail("no RTT samples or no query result")
    # TSecr of every target segment is a TSval the peer sent (TsRecent), never going back.
    t_init = p.initiated_at.get(lp, 0)
    peer_ts = [s for s in p.received(tcb) if s.tsval is not None]
    echo_bad = []
    last = -1
    for s in p.sent(tcb, t_init):
        if s.tsecr is None:
            continue
        before = [r.tsval for r in peer_ts if r.t <= s.t]
        if (before and s.tsecr not in before) or s.tsecr < last:
            echo_bad.append(s)
        last = s.tsecr
    if ts_on:
        v.check(not echo_bad, "R-TS-06", f"{len(echo_bad)} target segments echo a TSecr that is not the peer's "
                "TsRecent (or goes backwards)", *echo_bad[:2])
        # R-TS-05 (SHOULD): the timestamp clock runs at TicksPerSecond.
        ts = [s for s in p.sent(tcb, t_init) if s.tsval is not None]
        if len(ts) >= 2 and ts[-1].t - ts[0].t >= NS_PER_S:
            rate = ((ts[-1].tsval - ts[0].tsval) & MASK) * NS_PER_S / (ts[-1].t - ts[0].t)
            v.check(abs(rate - tps) <= 0.05 * tps + 2, "R-TS-05", f"TSval advanced {rate:.1f} per second, "
                    f"TicksPerSecond {tps}")
    b.run(50)
    b.upload(tcb)
    ret = p.returned.get(lp)
    last_peer = next((s.tsval for s in reversed(p.received(tcb)) if s.tsval is not None and
                      s.t <= p.terminated_at.get(lp, b.sched.now)), None)
    _check_returned_state(b, p, tcb, ret)
    if ts_on:
        v.check(ret is not None and ret.ts_recent == last_peer, "R-TS-06",
                f"TsRecent returned at terminate {ret.ts_recent if ret else None}, the peer's last TSval "
                f"{last_peer}", ret)
    v.check(rto_ok and srtt_ok and ret is not None, "R-INIT-14",
            f"at TicksPerSecond {tps}: RTO timing {'ok' if rto_ok else 'wrong'}, SRtt units "
            f"{'ok' if srtt_ok else 'wrong'}, terminate {'ok' if ret is not None else 'failed'}")
    b.expect(bytes(got).startswith(pattern(500, 31)), "the retransmitted segment's data did not arrive first")
    _finish_pair(b, tcb, sa, sb)


def _check_returned_state(b: Bench, p: OpsProbe, tcb: Tcb, ret: TcpOffloadStateDelegated | None) -> None:
    """R-TRM-07: the DELEGATED struct of a quiet connection's terminate holds its current sequence state,
    as the wire shows it: RcvNxt after the peer's last byte, SndUna at the peer's last ACK, SndMax after
    the last byte the target sent."""
    t1 = p.terminated_at.get(tcb.local_port, b.sched.now)
    peer = [s for s in p.received(tcb) if s.t <= t1]
    mine = [s for s in p.sent(tcb) if s.t <= t1]
    if not peer or not mine:
        b.fail("no segments to compare the terminate state with")
        return
    want = ((peer[-1].seq + peer[-1].n) & MASK, peer[-1].ack, max(((s.seq + s.n) & MASK for s in mine),
                                                                   key=lambda x: (x - mine[0].seq) & MASK))
    got = (ret.rcv_nxt, ret.snd_una, ret.snd_max) if ret is not None else None
    b.verifier.check(got == want, "R-TRM-07", f"terminate of a quiet connection returned (RcvNxt, SndUna, SndMax) "
                     f"{got}, the wire says {want}", ret)


def _acked(p: OpsProbe, tcb: Tcb) -> bool:
    """Everything A sent on the connection is acknowledged by the peer (seen on the wire)."""
    sent = [s for s in p.sent(tcb) if s.n]
    acks = [s.ack for s in p.received(tcb)]
    if not sent:
        return True
    end = (sent[-1].seq + sent[-1].n) & MASK
    return bool(acks) and ((acks[-1] - end) & MASK) < 0x80000000


def persist_state(b: Bench, quick: bool) -> None:
    """The peer stops reading until its window is zero: the target's persist state comes back at terminate
    (SndWnd 0, persist timer running, R-TMR-15); offloaded again while persisting, the target resumes the
    persist timer from Retransmit.TimeoutDelta and probes; the stream completes when the peer reads."""
    p = OpsProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _offloaded_idle(b)
    tps = _ticks(b)
    tick = NS_PER_S // tps
    rcv_buf = b.p.host_b.tcp.config.rcv_buf
    first, more = pattern(rcv_buf + 60_000, 5), pattern(120_000, 6)
    data = first + more
    w = spawn(b.sched, sa.asendall(first))
    b.run(1500)  # the peer's window closes and the target probes it
    lp = tcb.local_port
    # R-EVT-09: with the window shut nothing about the path changes; posting more data must not change the
    # optimum backlog the target reports (queried SendBacklogSize, TcpIndicateSendBacklogChange).
    cp = b.p.manager.paths.get(tcb)
    d1 = _query(b, tcb, "in persist")
    out1, t1 = (cp.out_bytes if cp is not None else 0), b.sched.now
    b.until(w.done, 5, "the first write handed to the host")
    sa.setsockopt(SOL_SOCKET, SO_SNDBUF, out1 + 2 * len(more))  # room to post more
    w = spawn(b.sched, sa.asendall(more))
    b.run(300)
    d2 = _query(b, tcb, "in persist with more data posted")
    out2 = cp.out_bytes if cp is not None else 0
    if d1 is not None and d2 is not None and out2 != out1 and d1.snd_wnd == d2.snd_wnd == 0:
        evs = [info for t, ev, info in p.events(tcb) if t >= t1 and ev == TcpOffloadEventType.TcpIndicateSendBacklogChange]
        v.check(d1.send_backlog_size == d2.send_backlog_size and all(x == d1.send_backlog_size for x in evs),
                "R-EVT-09", f"zero window, {out1} then {out2} bytes posted: SendBacklogSize {d1.send_backlog_size} -> "
                f"{d2.send_backlog_size}, backlog events {evs}: the optimum follows the posted bytes")
    b.upload(tcb)
    ret = p.returned.get(lp)
    ok = ret is not None and ret.snd_wnd == 0 and ret.retransmit.timeout_delta != NOT_RUNNING
    probes = [s for s in p.sent(tcb, p.initiated_at.get(lp, 0)) if s.n and s.t > b.sched.now - 1000 * NS_PER_MS]
    v.check(ret is None or ret.snd_wnd != 0 or bool(probes), "R-TMR-01",
            "no persist timer: the peer's window stayed zero for a second and the target sent no window probe")
    v.check(ok, "R-TMR-15", "terminate in persist state: SndWnd "
            f"{ret.snd_wnd if ret else None}, Retransmit.TimeoutDelta {ret.retransmit.timeout_delta if ret else None} "
            f"(want 0 and a running timer), SndWndProbeCount {ret.snd_wnd_probe_count if ret else None}", ret)
    b.run(300)
    if not b.offload_one(tcb):
        raise ScenarioAbort("no second offload")
    off = p.offered.get(lp)
    t_off = p.initiated_at.get(lp, b.sched.now)
    b.run(4000)
    probes = p.sent(tcb, t_off)
    if off is not None and off.snd_wnd == 0 and off.retransmit.timeout_delta != NOT_RUNNING:
        due = t_off + off.retransmit.timeout_delta * tick
        first = probes[0].t if probes else None
        v.check(first is not None and first <= due + 2 * tick + 5 * NS_PER_MS, "R-TMR-15",
                f"offloaded in persist with Retransmit.TimeoutDelta {off.retransmit.timeout_delta} ticks: first "
                f"segment {(first - t_off) / NS_PER_MS if first else None} ms after the offload")
    got = bytearray()
    b.until(lambda: (drain([(sb, got)]), w.done() and len(got) >= len(data))[1], 60, "the peer to read everything")
    b.expect(bytes(got) == data, f"B read {len(got)} of {len(data)} bytes after the persist phase, or wrong data")
    _finish_pair(b, tcb, sa, sb)


class _Untouchable:
    """The handler table NdisMGetOffloadHandlers hands out with STATUS_NOT_SUPPORTED: any use is recorded."""

    def __init__(self, used: list[str]) -> None:
        object.__setattr__(self, "_used", used)

    def __getattr__(self, name: str) -> Any:
        object.__getattribute__(self, "_used").append(name)
        raise AttributeError(f"the NdisMGetOffloadHandlers table is not valid after STATUS_NOT_SUPPORTED ({name})")


def refused_offload_handlers(b: Bench, quick: bool) -> None:
    """A second adapter of the target whose NdisMGetOffloadHandlers fails with STATUS_NOT_SUPPORTED: the
    target must not touch the returned table (R-INIT-05), whether it then fails MiniportInitializeEx or
    runs without chimney. A table kept for later is caught too: the adapter then gets frames (TCP among
    them), a cable pull and re-plug, a second of timers and its halt, and only then is the table's use
    judged."""
    from chimney.conformance.harness import ConformanceChecks
    from chimney.links.p2p import Link
    from chimney.ndis.core import Ndis, NdisUsageError
    from chimney.target import EmulatedNic, TargetLimits

    used: list[str] = []
    link = Link(b.sched, "refused", None, None, mac_a=bytes.fromhex("02000000001a"), mac_b=bytes.fromhex("02000000001b"))
    ndis = Ndis(b.sched, b.verifier, checks=ConformanceChecks)
    target = b.factory("toe-refused", EmulatedNic(link.a), b.sched, TargetLimits())
    ndis.register_miniport_driver(target)
    orig = ndis.m_get_offload_handlers

    def refuse(handle: Any, chimney_type: int) -> tuple[NdisStatus, Any]:
        orig(handle, chimney_type)
        return NdisStatus.NOT_SUPPORTED, _Untouchable(used)

    ndis.m_get_offload_handlers = refuse  # type: ignore[method-assign]
    adapter = None
    with contextlib.suppress(NdisUsageError, AttributeError):
        adapter = ndis.add_adapter(target, "nic-refused")
    b.run(20)
    n_init = len(used)
    during_init = sorted(set(used))
    # A use of the table raises AttributeError (an invalid pointer); it is recorded, and the rest is skipped.
    with contextlib.suppress(AttributeError):
        link.b.send(bytes(link.a.mac or b"") + bytes(link.b.mac or b"") + b"\x08\x00" + bytes(46))
        seg = TcpSegment(5001, 5002, 1000, 1, ACK | PSH, 8192, b"later")
        link.b.send(encode_tcp_frame(seg, eth_src=link.b.mac or bytes(6), eth_dst=link.a.mac or bytes(6),
                                     ip_src=bytes([198, 18, 9, 2]), ip_dst=bytes([198, 18, 9, 1])))
        b.run(5)
        link.set_up(False)
        b.run(5)
        link.set_up(True)
        b.run(1000)
    if adapter is not None:
        with contextlib.suppress(Exception):
            ndis.halt_adapter(adapter)
    later = sorted(set(used[n_init:]))
    b.verifier.check(not used, "R-INIT-05", f"the target used the handler table of a failed NdisMGetOffloadHandlers "
                     f"(STATUS_NOT_SUPPORTED): during MiniportInitializeEx {during_init}, later {later}")


OPS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("query-states", query_states, MEDIUM),
    Scenario("update-flags", update_flags),
    Scenario("invalidate-hold", invalidate_hold),
    Scenario("hardware-failure", hardware_failure),
    Scenario("neighbor-reachability", neighbor_reachability),
    Scenario("offload-statistics", offload_statistics),
    Scenario("rtt-descaling", rtt_descaling, SLOW),
    Scenario("ticks-100", rtt_descaling, SLOW, ticks_per_second=100),
    Scenario("ticks-10", rtt_descaling, SLOW, ticks_per_second=10),
    Scenario("persist-state", persist_state),
    Scenario("refused-offload-handlers", refused_offload_handlers),
)
