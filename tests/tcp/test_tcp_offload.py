"""Delegated-state export/import (contract §2.4, R-TMR-04/07/08/15/17/19/21, R-TS-01..06, §6 items
12/30) and the transparency property: a connection moved at a random point behaves as if it never moved."""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_harness import C1, MS, S1, US, Impairment, Net, Peer, S, established_server, make_pair, sha, w

from chimney.ndis.offload_state import (
    TIMER_NOT_RUNNING,
    TcpCachedFlags,
    TcpConnectionState,
    TcpConstFlags,
)
from chimney.tcp import Closed, Connection, Reset, TcpConfig, TimedOut
from chimney.tcp.connection import RTX_FIN_WAIT_2, RTX_PERSIST
from chimney.tcp.offload import EXPORTABLE_STATES

TPS = 1000  # ticks per second (1 ms ticks)


def test_export_fields_mid_transfer() -> None:
    cfg = TcpConfig(nagle=False, keepalive=True, keepalive_idle_ns=60 * S, max_rt_ns=0)
    p = established_server(cfg, opts="mss 1460,sackOK,wscale 2,TS val 500 ecr 0", win=1000)
    c = p.conn
    c.send(b"a" * 3000 + b"b" * 1000, 0)
    p.out()
    p.now = 40 * MS
    p.peer_sends(f". {C1}:{w(C1 + 7)}(7) ack {w(S1 + 1460)} win 1000 <TS val 540 ecr 0>", payload=b"abcdefg")
    p.out()
    const, cached, dlg, send_data, rx = c.export_state(50 * MS, TPS)
    assert const.flags == TcpConstFlags.TIMESTAMP_ENABLED | TcpConstFlags.SACK_ENABLED | TcpConstFlags.WINDOW_SCALING_ENABLED
    assert (const.local_port, const.remote_port, const.snd_wind_scale, const.remote_mss) == (80, 2000, 2, 1460)
    assert cached.flags & TcpCachedFlags.KEEP_ALIVE_ENABLED and not cached.flags & TcpCachedFlags.NAGLING_ENABLED
    assert cached.ka_timeout == 60_000 and cached.max_rt == 0
    assert dlg.state == TcpConnectionState.Established
    assert dlg.snd_una == w(S1 + 1460) and dlg.snd_nxt == dlg.snd_max == w(S1 + 4000)
    assert dlg.rcv_nxt == w(C1 + 7) and dlg.snd_wnd == 4000 and dlg.send_wl1 == C1
    assert b"".join(bytes(v) for v in send_data) == b"a" * 1540 + b"b" * 1000  # unacked + unsent, in order
    assert b"".join(bytes(v) for v in rx) == b"abcdefg"  # acked, not yet read
    # SRtt x8 / RttVar x4 in ticks (§6 item 12): samples 0 ms (handshake) then 40 ms.
    assert dlg.srtt == round(c.srtt * TPS / 1e9 * 8) and dlg.rtt_var == round(c.rttvar * TPS / 1e9 * 4)
    assert dlg.ts_recent == 540 and dlg.ts_recent_age == 10 and dlg.ts_time == c.ts_now(50 * MS) == 50
    assert dlg.retransmit.count == 0 and dlg.retransmit.timeout_delta == 190  # RTO armed at 40 ms
    assert dlg.keep_alive.timeout_delta == 60_000 - 10
    assert dlg.dup_ack_count == 0 and dlg.snd_wnd_probe_count == 0 and dlg.total_rt == 0


def test_export_flushes_delayed_ack_r_tmr_04() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 65535")
    p.expect_nothing()
    p.conn.export_state(1 * MS, TPS)
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 10)}")


def test_idle_timers_export_as_not_running() -> None:
    p = established_server()
    dlg = p.conn.export_state(0, TPS)[2]
    assert dlg.retransmit.timeout_delta == TIMER_NOT_RUNNING and dlg.keep_alive.timeout_delta == TIMER_NOT_RUNNING


def test_srtt_saturates_at_ushort_section_6_12() -> None:
    p = established_server()
    p.conn.srtt = 100 * S
    assert p.conn.export_state(0, TPS)[2].srtt == 0xFFFF


def test_cannot_export_half_open() -> None:
    import pytest

    from chimney.tcp import TcpStateError

    c = Connection(TcpConfig(), 1, 2, 3)
    c.connect(0)
    with pytest.raises(TcpStateError):
        c.export_state(0, TPS)


def move(p: Peer, now: int, tps: int = TPS, cfg: TcpConfig | None = None) -> Peer:
    st = p.conn.export_state(now, tps)
    p.out()
    p.conn.detach()
    q = Peer(Connection.import_state(*st, now, tps, cfg=cfg or p.conn.cfg), now)
    return q


def test_persist_state_resumes_r_tmr_15() -> None:
    p = established_server(TcpConfig(zero_window_probe_octet=False))
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 0")
    p.conn.send(b"z" * 50, 0)
    p.run_timers_until(200 * MS)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 0")  # next round: SndWndProbeCount 1
    dlg = p.conn.export_state(300 * MS, TPS)[2]
    assert dlg.snd_wnd_probe_count == 1 and dlg.retransmit.count == 0
    assert dlg.retransmit.timeout_delta == 300  # 200 ms + 400 ms - 300 ms
    q = move(p, 300 * MS)
    assert q.conn.rtx_timer_mode == RTX_PERSIST and q.conn.persist_round == 1
    assert q.conn.next_deadline() == 600 * MS
    q.run_timers_until(600 * MS)
    q.expect_sent(f". {w(S1 - 1)}:{w(S1 - 1)}(0) ack {C1}")


def test_fin_wait_2_timer_resumes_r_tmr_07() -> None:
    p = established_server(TcpConfig(fin_wait2_timeout_ns=120 * S))
    p.conn.close(0)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1)} win 65535")
    q = move(p, 20 * S)
    assert q.conn.state.name == "FinWait2" and q.conn.rtx_timer_mode == RTX_FIN_WAIT_2
    assert q.conn.next_deadline() == 120 * S
    q.run_timers_until(120 * S)
    assert q.conn.state.name == "Closed"


def test_retransmit_state_resumes_r_tmr_19() -> None:
    p = established_server()
    p.conn.send(b"r" * 100, 0)
    p.out()
    p.run_timers_until(200 * MS)
    p.out()
    dlg = p.conn.export_state(300 * MS, TPS)[2]
    assert dlg.retransmit.count == 1 and dlg.retransmit.timeout_delta == 300 and dlg.total_rt == 100
    q = move(p, 300 * MS)
    assert q.conn.next_deadline() == 600 * MS
    q.run_timers_until(600 * MS)
    q.expect_sent(f"P. {S1}:{w(S1 + 100)}(100) ack {C1}")
    assert q.conn.next_deadline() == 600 * MS + 800 * MS  # backoff continues from Retransmit.Count


def test_keepalive_resumes_r_tmr_08() -> None:
    cfg = TcpConfig(keepalive=True, keepalive_idle_ns=10 * S, keepalive_interval_ns=1 * S, keepalive_count=3)
    p = established_server(cfg)
    p.run_timers_until(10 * S)
    p.out()
    q = move(p, 10 * S + 500 * MS)
    assert q.conn.keepalive_probes == 1 and q.conn.next_deadline() == 11 * S
    q.run_timers_until(14 * S)
    assert TimedOut("keepalive") in q.conn.pop_events()


def test_timestamps_monotonic_across_move_r_ts_01_04() -> None:
    """R-TS-02 too: the retransmission the importing side sends carries TSval = its clock + the delta that
    continues TsTime (5000 ticks at import, 400 ms later 5400), not its own unrelated clock."""
    p = established_server(opts="mss 1460,TS val 1 ecr 0")
    p.now = 5 * S
    p.conn.send(b"a", p.now)
    (before,) = p.out()
    # The importing side's own clock is unrelated (e.g. 3 s behind): its TSval continues from TsTime.
    st = p.conn.export_state(5 * S, TPS)
    q = Connection.import_state(*st, 2 * S, TPS, cfg=p.conn.cfg)
    assert q.ts_now(2 * S) == st[2].ts_time == 5000
    assert q.ts_now(2 * S + 7 * MS) == 5007  # R-TS-02
    q.on_timer(2 * S + 400 * MS)  # retransmission of the unacked byte
    (after,) = q.pop_segments()
    assert before.options is not None and after.options is not None
    assert after.options.ts_val > before.options.ts_val and after.options.ts_ecr == 1
    assert after.options.ts_val == q.ts_now(2 * S + 400 * MS) == 5400


def test_import_keeps_buffered_receive_data_and_half_close() -> None:
    p = established_server()
    p.peer_sends(f"FP. {C1}:{w(C1 + 5)}(5) ack {S1} win 65535", payload=b"hello")
    p.out()
    q = move(p, 1 * MS)
    assert q.conn.state.name == "CloseWait" and bytes(q.conn.recv(-1)) == b"hello"
    assert q.conn.pop_events()[-1].__class__.__name__ == "PeerClosed"
    q.conn.shutdown(2 * MS)
    q.expect_sent(f"F. {S1}:{S1}(0) ack {w(C1 + 6)}")


def _clean(events: list[object]) -> bool:
    return not any(isinstance(e, (Reset, TimedOut)) for e in events) and any(isinstance(e, Closed) for e in events)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    moves=st.lists(st.tuples(st.integers(0, 1), st.integers(5, 400)), min_size=1, max_size=3),
    tps=st.sampled_from([1000, 10_000, 10_000_000]),
    loss=st.sampled_from([0.0, 0.02, 0.08]),
    reorder=st.sampled_from([0.0, 0.1]),
    sack=st.booleans(),
    rcv_buf=st.sampled_from([3000, 65536]),
    close_first=st.booleans(),
)
def test_move_anywhere_is_transparent(
    seed: int, moves: list[tuple[int, int]], tps: int, loss: float, reorder: float, sack: bool, rcv_buf: int,
    close_first: bool,
) -> None:
    cfg = TcpConfig(sack=sack, rcv_buf=rcv_buf, msl_ns=1 * S, max_rt_ns=-1, fin_wait2_timeout_ns=600 * S)
    a, b = make_pair(cfg, cfg)
    imp = Impairment(loss=loss, reorder=reorder, delay=2 * MS, jitter=500 * US)
    net = Net(a, b, seed=seed, ab=imp, ba=Impairment(loss=loss, delay=2 * MS))
    rng = random.Random(seed)
    da, db = rng.randbytes(60_000), rng.randbytes(20_000 if not close_first else 0)
    net.send_stream(0, da)
    net.send_stream(1, db)
    pending = sorted(moves, key=lambda m: m[1])  # (side, step): host -> target -> host ... moves
    steps = [0]

    def hook(n: Net) -> None:
        steps[0] += 1
        while pending and steps[0] >= pending[0][1]:
            side = pending[0][0]
            c = n.conns[side]
            if c.state not in EXPORTABLE_STATES:
                if c.state.name == "Closed":
                    pending.pop(0)
                return
            pending.pop(0)
            n.settle()
            exported = c.export_state(n.now, tps)
            n._collect(side)
            c.detach()
            n.conns[side] = Connection.import_state(*exported, n.now, tps, cfg=cfg)

    net.hooks.append(hook)
    a.connect(0)
    net.run(until=lambda n: n.conns[0].state.name == n.conns[1].state.name == "Closed", max_time=2000 * S)
    assert sha(net.received[1]) == sha(da) and sha(net.received[0]) == sha(db)
    assert _clean(net.events[0]) and _clean(net.events[1])
    # Each side's TSvals never go backwards across moves (R-TS-04).
    for side in (0, 1):
        tsv = [s.options.ts_val for _, s in net.wire[side] if s.options is not None and s.options.ts_val is not None]
        assert all((b_ - a_) % 2**32 < 2**31 for a_, b_ in pairwise(tsv))


def test_moved_and_unmoved_runs_deliver_identically_without_loss() -> None:
    """No impairment: moving mid-transfer changes neither stream nor the number of data bytes on the wire."""
    results = []
    for do_move in (False, True):
        cfg = TcpConfig(msl_ns=1 * S)
        a, b = make_pair(cfg, cfg)
        net = Net(a, b, seed=1, ab=Impairment(delay=1 * MS), ba=Impairment(delay=1 * MS))
        data = random.Random(5).randbytes(200_000)
        net.send_stream(0, data)
        net.send_stream(1, b"pong" * 1000)
        moved = []

        def hook(n: Net, do_move: bool = do_move, moved: list = moved, cfg: TcpConfig = cfg) -> None:
            if do_move and not moved and n.now >= 3 * MS and n.conns[0].state in EXPORTABLE_STATES:
                n.settle()
                ex = n.conns[0].export_state(n.now, TPS)
                n._collect(0)
                n.conns[0].detach()
                n.conns[0] = Connection.import_state(*ex, n.now, TPS, cfg=cfg)
                moved.append(n.now)

        net.hooks.append(hook)
        a.connect(0)
        net.run(until=lambda n: n.conns[0].state.name == n.conns[1].state.name == "Closed")
        wire_bytes = sum(len(s.payload) for _, s in net.wire[0])
        results.append((sha(net.received[1]), sha(net.received[0]), wire_bytes, bool(moved) == do_move))
    assert results[0] == results[1]


def test_time_wait_moves_to_host_which_runs_2msl_r_tmr_03() -> None:
    p = established_server(TcpConfig(msl_ns=30 * S))
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f"F. {C1}:{C1}(0) ack {w(S1 + 1)} win 65535")
    assert p.conn.pop_events()[0].__class__.__name__ == "EnteredTimeWait"  # target asks for upload here
    q = move(p, 1 * S)
    assert q.conn.state.name == "TimeWait" and q.conn.next_deadline() == 61 * S
    q.peer_sends(f"F. {C1}:{C1}(0) ack {w(S1 + 1)} win 65535")  # retransmitted FIN: re-ACK
    q.expect_sent(f". {w(S1 + 1)}:{w(S1 + 1)}(0) ack {w(C1 + 1)}")
    q.run_timers_until(100 * S)
    assert q.conn.state.name == "Closed"


def test_detached_connection_stays_silent() -> None:
    p = established_server()
    p.conn.export_state(0, TPS)
    p.conn.detach()
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 65535")
    p.expect_nothing()
    assert p.conn.stats.drops["detached"] == 1 and p.conn.next_deadline() is None


def test_fast_retransmit_after_move_with_data_in_flight() -> None:
    """No `recover` crosses the chimney: a connection moved with data in flight and no loss behind it
    still fast-retransmits on the third duplicate ACK after limited transmit (RFC 5681 3.2, RFC 3042)."""
    p = established_server(TcpConfig(nagle=False, initial_window=3), opts="mss 1000")
    p.conn.send(b"x" * 6000, 0)
    assert len(p.out()) == 3
    q = move(p, 10 * MS)
    dup = f". {C1}:{C1}(0) ack {S1} win 65535"
    q.peer_sends(dup)
    q.expect_sent(f". {w(S1 + 3000)}:{w(S1 + 4000)}(1000) ack {C1}")  # limited transmit
    q.peer_sends(dup)
    q.expect_sent(f". {w(S1 + 4000)}:{w(S1 + 5000)}(1000) ack {C1}")
    q.peer_sends(dup)
    q.expect_sent(f". {S1}:{w(S1 + 1000)}(1000) ack {C1}")  # fast retransmit
    assert q.conn.in_recovery


def test_move_after_timeout_keeps_recover_guard() -> None:
    """After an RTO the window sent before it must not trigger a second loss response (RFC 6582 `recover`),
    also after a move: the imported connection guards up to SND.MAX."""
    p = established_server(TcpConfig(nagle=False, initial_window=3), opts="mss 1000")
    p.conn.send(b"x" * 3000, 0)
    p.out()
    p.run_timers_until(p.conn.next_deadline() or 0)
    p.out()
    q = move(p, p.now)
    for _ in range(3):
        q.peer_sends(f". {C1}:{C1}(0) ack {S1} win 65535")
    assert not q.conn.in_recovery


def test_keepalive_exhaustion_is_handed_back_not_reset_r_disc_03_r_trm_25() -> None:
    """With hand_back_on_give_up (the offload target) the last unanswered keepalive ends in TimedOut with the
    TCB kept and no RST of ours (R-DISC-03); the export says "expire immediately" (TimeoutDelta 0, R-TRM-25)
    and the host engine that imports it resets the connection at once."""
    cfg = TcpConfig(keepalive=True, keepalive_idle_ns=10 * S, keepalive_interval_ns=1 * S, keepalive_count=2,
                    hand_back_on_give_up=True)
    p = established_server(cfg)
    while not p.conn.gave_up:
        d = p.conn.next_deadline()
        assert d is not None
        p.run_timers_until(d)
    sent = p.out()
    assert len(sent) == 2 and not any(s.flags & 0x04 for s in sent)  # two probes, no RST
    assert TimedOut("keepalive") in p.conn.pop_events()
    assert p.conn.state.name == "Established" and p.conn.next_deadline() is None
    dlg = p.conn.export_state(p.now, TPS)[2]
    assert dlg.keep_alive.probe_count == 2 and dlg.keep_alive.timeout_delta == 0
    q = move(p, p.now, cfg=TcpConfig(keepalive=True, keepalive_count=2))
    assert q.conn.next_deadline() == p.now
    q.run_timers_until(p.now)
    (rst,) = q.out()
    assert rst.flags & 0x04 and q.conn.state.name == "Closed"


def test_retransmission_limit_handed_back_with_expired_timer() -> None:
    cfg = TcpConfig(max_retransmissions=2, hand_back_on_give_up=True)
    p = established_server(cfg)
    p.conn.send(b"a" * 100, 0)
    p.out()
    while not p.conn.gave_up:
        p.run_timers_until(p.conn.next_deadline() or 0)
    assert TimedOut("retransmit") in p.conn.pop_events() and p.conn.state.name == "Established"
    dlg = p.conn.export_state(p.now, TPS)[2]
    assert dlg.retransmit.count == 2 and dlg.retransmit.timeout_delta == 0
    q = move(p, p.now, cfg=TcpConfig(max_retransmissions=2))
    q.run_timers_until(p.now)
    assert TimedOut("retransmit") in q.conn.pop_events() and q.conn.state.name == "Closed"
