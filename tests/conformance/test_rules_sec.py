"""The blind-attack mitigation and recommended data-path scenarios of `chimney verify`
(conformance/scenarios_sec.py): the built-in target passes every rule they check and each broken target of
examples/broken_sec_targets.py is caught with exactly the rule id it breaks; plus the documented deviations
(ECN, SWS timer, TcpDoubtReachabilityRetransmissions, the mitigation timer of a keepalive-off upload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chimney.conformance import VerifyReport, load_target, run_battery
from chimney.conformance.runner import FAIL, PASS
from chimney.conformance.scenarios import Bench, drain
from chimney.conformance.scenarios_data import DATA_WIRE, DataProbe, _inject, _rcv_nxt
from chimney.conformance.scenarios_sec import SEC_SCENARIOS, _drop_ports, _idle_pair, _offload_idle
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import (
    TIMER_NOT_RUNNING,
    IndicateOffloadEvent,
    TcpConnectionState,
    TcpUploadReason,
)
from chimney.ndis.verifier import Mode, Verifier
from chimney.net.frame import parse_frame
from chimney.net.tcp import CWR, ECE, RST
from chimney.sim.scheduler import NS_PER_S
from chimney.target.context import PathCtx, TcpCtx

ROOT = Path(__file__).resolve().parents[2]
BROKEN_FILE = ROOT / "examples" / "broken_sec_targets.py"
SEC = [s.name for s in SEC_SCENARIOS]

RULES: dict[str, str] = {
    "R-SEC-01": "sec-blind-rst-syn", "R-SEC-03": "sec-blind-rst-syn", "R-SEC-05": "sec-blind-rst-syn",
    "R-SEC-06": "sec-blind-rst-syn",
    "R-SEC-07": "sec-keepalive-interplay", "R-SEC-08": "sec-keepalive-interplay",
    "R-SEC-09": "sec-keepalive-interplay",
    "R-RECV-03": "recommended-paths", "R-RECV-15": "recommended-paths", "R-RFC-05": "recommended-paths",
    "R-RX-10": "recommended-paths", "R-DISC-07": "recommended-paths",
}


@pytest.fixture(scope="module")
def builtin_sec() -> VerifyReport:
    return run_battery(load_target(None), seed=1, only=SEC, quick=True)


def test_builtin_target_passes_every_sec_scenario(builtin_sec: VerifyReport) -> None:
    r = builtin_sec
    assert [s.name for s in r.scenarios] == SEC
    assert r.functional_failures == [], [(s.name, s.failures) for s in r.functional_failures]
    assert r.failed_rules == [], [(x.id, x.first) for x in r.failed_rules]


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_builtin_target_is_checked_and_passes(builtin_sec: VerifyReport, rule_id: str) -> None:
    assert builtin_sec.rule(rule_id).result == PASS
    by_name = {s.name: s for s in builtin_sec.scenarios}
    assert rule_id in by_name[RULES[rule_id]].checked


def test_sec_07_is_checked_with_the_defaults_too(builtin_sec: VerifyReport) -> None:
    """R-SEC-07's 10 probes / 1 s defaults (KaProbeCount and KaInterval 0) are judged in sec-blind-rst-syn."""
    by_name = {s.name: s for s in builtin_sec.scenarios}
    assert "R-SEC-07" in by_name["sec-blind-rst-syn"].checked


# Rules a broken target may break besides its own, only where the damage cannot be kept apart from it.
CONSEQUENTIAL: dict[str, frozenset[str]] = {
    # No mitigation keepalive means no probes and no CLOSED upload either.
    "NoMitigationKeepalive": frozenset({"R-SEC-07"}),
    # The probe count restarted from zero is also what an upload mid-mitigation returns as ProbeCount.
    "DelegatedProbeCountIgnored": frozenset({"R-SEC-08"}),
    # An indication while requests are posted is R-IND-01 at the boundary; the requests then complete in
    # pieces around it.
    "IndicatesDespitePosts": frozenset({"R-IND-01", "R-RECV-15"}),
    # Half-filled requests run out before the data does: the rest is indicated with requests just completed.
    "SpreadsOverRequests": frozenset({"R-RECV-03"}),
}


def _caught(cls: str, rule_id: str) -> VerifyReport:
    """Run the scenario owning `rule_id` against the broken target `cls`: `rule_id` fails and no other rule
    does unless listed in CONSEQUENTIAL."""
    r = run_battery(load_target(f"{BROKEN_FILE}:{cls}"), seed=1, only=[RULES[rule_id]], quick=True)
    failed = [(x.id, x.first) for x in r.failed_rules]
    assert r.rule(rule_id).result == FAIL, (cls, rule_id, failed)
    others = {x.id for x in r.failed_rules if x.id != rule_id}
    assert others <= CONSEQUENTIAL.get(cls, frozenset()), (cls, rule_id, failed)
    # SHOULD / MAY rules: reported as FAIL, but only a broken MUST or a functional failure fails the run.
    assert r.rule(rule_id).level not in ("MUST", "MUST NOT")
    return r


def test_r_sec_01_rst_outside_the_window_answered() -> None:
    _caught("RstOutOfWindowAcked", "R-SEC-01")


def test_r_sec_03_challenge_ack_for_every_in_window_rst() -> None:
    _caught("ChallengeEveryRst", "R-SEC-03")


def test_r_sec_05_in_window_syn_challenges_not_throttled() -> None:
    _caught("UnthrottledSynChallenge", "R-SEC-05")


def test_r_sec_06_no_keepalive_after_a_challenge_ack() -> None:
    r = _caught("NoMitigationKeepalive", "R-SEC-06")
    assert r.rule("R-SEC-07").result == FAIL  # no probes at all, so no CLOSED upload either


def test_r_sec_07_delegated_probe_count_not_counted() -> None:
    _caught("DelegatedProbeCountIgnored", "R-SEC-07")


def test_r_sec_08_upload_during_mitigation_loses_the_probe_state() -> None:
    _caught("UploadForgetsMitigation", "R-SEC-08")


def test_r_sec_09_acceptable_segment_stops_the_normal_keepalive() -> None:
    _caught("AcceptableSegmentStopsKeepalive", "R-SEC-09")


def test_r_recv_03_data_indicated_while_requests_are_posted() -> None:
    _caught("IndicatesDespitePosts", "R-RECV-03")


def test_r_recv_15_several_partially_filled_requests_in_one_completion() -> None:
    _caught("SpreadsOverRequests", "R-RECV-15")


def test_r_rfc_05_target_handles_ipv4_options_itself() -> None:
    _caught("IpOptionsHandledInline", "R-RFC-05")


def test_r_rx_10_corrupted_ip_header_dropped_without_counting() -> None:
    _caught("CorruptIpDroppedUncounted", "R-RX-10")


def test_r_disc_07_fin_waits_for_the_data_acks() -> None:
    _caught("FinHeldForAcks", "R-DISC-07")


# ---------------------------------------------------------------- built-in target: deviations and internals


def _bench(seed: int = 5, impairments: Any = DATA_WIRE) -> Bench:
    return Bench(load_target(None), seed, Verifier(Mode.RECORD), impairments=impairments)


def test_r_sec_08_keepalive_off_upload_returns_probes_with_an_idle_timer() -> None:
    """Documented deviation of R-SEC-08 (docs/verifier-coverage.md): with KEEP_ALIVE_ENABLED clear the host
    cannot continue the mitigation's keepalive (and R-TRM-25 wants -1 for a keepalive it switched off), so
    an upload during mitigation returns the probes sent with TimeoutDelta -1, and the verifier stays quiet."""
    b = _bench()
    p = DataProbe.of(b)
    c = _idle_pair(b, 5501)
    _offload_idle(b, [c])
    _inject(b, p, c.tcb, seq=_rcv_nxt(b, c.tcb) + 1000, flags=RST, ack=0)
    p.drop_to_b = _drop_ports({c.tcb.local_port})
    b.run(10)
    assert len(c.challenges(p, 0)) == 1
    b.sched.run_until(b.sched.now + 302 * NS_PER_S)  # 5 min, then 2 of the 9 probes (KaInterval 75 s: 1)
    probes = c.probes(p, 0)
    assert len(probes) >= 1
    n = len(p.terminated)
    b.upload(c.tcb)
    dlg = p.terminated[n].dlg
    assert dlg is not None and dlg.state == TcpConnectionState.Established
    assert dlg.keep_alive.probe_count == len(probes)
    assert dlg.keep_alive.timeout_delta == TIMER_NOT_RUNNING
    assert not b.verifier.violations, b.verifier.violations


def test_r_inv_02_invalidated_path_is_marked_invalid_in_its_context() -> None:
    """R-INV-02: after MiniportInvalidateOffload of a path the target's context for it says invalid (the send
    path reads that mark: R-INV-03), its neighbor stays valid, and the connection above asks for upload."""
    b = _bench()
    c = _idle_pair(b, 5502)
    _offload_idle(b, [c])
    target = b.p.target
    (ctx,) = [t for t in target.tcps.values() if isinstance(t, TcpCtx)]
    path = ctx.path
    assert isinstance(path, PathCtx) and path.valid and ctx.valid
    m = b.p.manager
    cp = m.paths.get(c.tcb)
    assert cp is not None and cp.path_obj is not None
    held: list[Any] = []
    real = m.upload
    m.upload = lambda tcbs, **kw: held.append(tcbs) or 0  # the context stays to be looked at
    try:
        m.invalidate([cp.path_obj])
        b.run(5)
        assert not path.valid
        assert path.neighbor.valid  # only the invalidated object (and what depends on it) is affected
        assert ctx.upload_requested == int(TcpUploadReason.InvalidState)  # the connection above saw it
    finally:
        m.upload = real
    b.upload(c.tcb)


def _wire_trace(sws_ticks: int, doubt: int) -> tuple[list[bytes], list[int]]:
    """A lossy offloaded transfer; what the target sent and the offload events it indicated."""
    b = _bench(9, Impairments(rate_bps=100_000_000, delay_ns=300_000, queue_limit_frames=300, loss=0.03))
    target = b.p.target
    target.params.tcp_sws_prevention_ticks = sws_ticks
    target.params.tcp_doubt_reachability_retransmissions = doubt
    events: list[int] = []
    real = b.p.ndis.m_offload_event_indicate

    def indicate(adapter: Any, mbl: Any, event: int) -> Any:
        events.append(int(event))
        return real(adapter, mbl, event)

    b.p.ndis.m_offload_event_indicate = indicate
    c = _idle_pair(b, 5503)
    _offload_idle(b, [c])
    frames: list[bytes] = []
    b.p.link.a.add_observer(lambda d, fr, meta: frames.append(bytes(fr)) if d == "tx" else None)
    got = bytearray()
    data = bytes(range(256)) * 400
    b.push(c.sa, data, [(c.sb, got)])
    b.until(lambda: (drain([(c.sb, got)]), len(got) >= len(data))[1], 30, "B to read everything")
    assert bytes(got) == data
    tcp = [fr for fr in frames if getattr(parse_frame(fr, verify_checksums=False), "tcp", None) is not None]
    return tcp, events


def test_r_init_13_sws_ticks_and_doubt_retransmissions_change_nothing_on_the_wire() -> None:
    """R-INIT-13, documented deviation: the built-in target keeps no SWS prevention timer (sub-MSS data waits
    for an ACK or the persist timer: R-TMR-21 hands data over at once) and reaching
    TcpDoubtReachabilityRetransmissions indicates nothing, because NeighborReachabilityInDoubt is reserved
    (R-NBR-07, §6.11) and the staleness test already runs before every send (R-NBR-04). So the same lossy
    transfer is identical on the wire with very different values, and no InDoubt event is ever indicated."""
    a, ev_a = _wire_trace(1000, 3)
    b, ev_b = _wire_trace(7, 1)
    seqs = [(t.seq, len(t.payload)) for t in (parse_frame(fr, verify_checksums=False).tcp for fr in a)  # type: ignore[union-attr]
            if t is not None and len(t.payload)]
    assert len(seqs) > 50 and len(set(seqs)) < len(seqs)  # retransmissions happened (the doubt count was reached)
    assert a == b
    assert ev_a == ev_b
    assert int(IndicateOffloadEvent.NeighborReachabilityInDoubt) not in ev_a + ev_b


def test_r_rfc_03_newreno_limited_transmit_and_sack_present_ecn_absent() -> None:
    """R-RFC-03: the offloaded engine runs NewReno with limited transmit (RFC 3042) and SACK when the
    connection negotiated it; a lossy transfer recovers by fast retransmit. Documented deviation: no ECN
    (RFC 3168: the engine never sets ECT or negotiates ECE/CWR) and no SWS timer (see R-INIT-13)."""
    b = _bench(11, Impairments(rate_bps=100_000_000, delay_ns=300_000, queue_limit_frames=300, loss=0.02))
    c = _idle_pair(b, 5504)
    _offload_idle(b, [c])
    (ctx,) = list(b.p.target.tcps.values())
    conn = ctx.conn
    assert conn.cfg.congestion_control == "newreno" and conn.cfg.limited_transmit
    assert conn.sack_ok and conn.cfg.sack
    marks: list[tuple[int, int]] = []  # (IPv4 ECN field, TCP ECE|CWR) of every segment the target sends

    def watch(direction: str, frame: bytes, meta: Any) -> None:
        f = parse_frame(frame, verify_checksums=False)
        seg = getattr(f, "tcp", None)
        if direction == "tx" and seg is not None:
            marks.append(((f.tos or 0) & 0x03, seg.flags & (ECE | CWR)))  # type: ignore[union-attr]

    b.p.link.a.add_observer(watch)
    got = bytearray()
    data = bytes(range(256)) * 2000
    b.push(c.sa, data, [(c.sb, got)])
    b.until(lambda: (drain([(c.sb, got)]), len(got) >= len(data))[1], 30, "B to read everything")
    assert bytes(got) == data
    assert conn.stats.fast_retransmits >= 1
    assert len(marks) > 300
    assert {m for m in marks} == {(0, 0)}  # no ECT codepoint, no ECE/CWR: ECN absent
