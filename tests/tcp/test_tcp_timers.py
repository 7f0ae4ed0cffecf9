"""Timers: RTO (RFC 6298, Karn, backoff, R-TMR-17 retry limits), user timeout, keepalive (R-TMR-09),
persist / zero-window probing with the contract counters (R-TMR-10..14)."""

from __future__ import annotations

from tcp_harness import C1, CLIENT_ISS, MS, S1, SERVER_ISS, Peer, S, established_server, w

from chimney.tcp import Closed, Connection, TcpConfig, TimedOut
from chimney.tcp.connection import RTX_PERSIST, RTX_RETRANSMIT

P1 = w(S1 - 1)  # probe sequence number (SND.UNA - 1)


def retransmit_times(p: Peer, until: int) -> list[int]:
    times = []
    while p.conn.state.name != "Closed":
        d = p.conn.next_deadline()
        if d is None or d > until:
            break
        p.run_timers_until(d)
        if any(len(s.payload) for s in p.out()):
            times.append(p.now // MS)
    return times


def test_first_rtt_sample_sets_rto_rfc6298() -> None:
    c = Connection(TcpConfig(), 2000, 80, CLIENT_ISS)
    c.connect(0)
    p = Peer(c, 100 * MS)
    p.out()
    p.peer_sends(f"S. {SERVER_ISS}:{SERVER_ISS}(0) ack {C1} win 1000 <mss 1000>")
    assert c.srtt == 100 * MS and c.rttvar == 50 * MS and c.rto == 300 * MS  # SRTT + 4*RTTVAR


def test_rto_backoff_doubles_and_clamps_to_max() -> None:
    p = established_server(TcpConfig(rto_max_ns=1 * S, max_retransmissions=8))
    p.conn.send(b"a" * 100, 0)
    p.out()
    assert retransmit_times(p, 5 * S) == [200, 600, 1400, 2400, 3400, 4400]


def test_karn_no_sample_from_retransmitted_segment() -> None:
    p = established_server(TcpConfig(rto_min_ns=10 * MS))
    srtt = p.conn.srtt
    p.conn.send(b"a" * 100, 0)
    p.out()
    p.run_timers_until(p.conn.next_deadline() or 0)
    assert len(p.out()) == 1
    p.now += 500 * MS
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 100)} win 65535")
    assert p.conn.srtt == srtt  # ambiguous sample discarded
    assert p.conn.retransmit_count == 0


def test_retransmission_count_limit_r_tmr_17_maxrt_zero() -> None:
    p = established_server(TcpConfig(max_retransmissions=3, max_rt_ns=0))
    p.conn.send(b"a" * 100, 0)
    p.out()
    assert retransmit_times(p, 60 * S) == [200, 600, 1400]
    assert p.conn.state.name == "Closed" and p.now == 3000 * MS
    assert p.conn.pop_events() == [TimedOut("retransmit"), Closed("timeout")]


def test_total_retransmit_time_limit_r_tmr_17_maxrt_nonzero() -> None:
    p = established_server(TcpConfig(max_retransmissions=100, max_rt_ns=1 * S))
    p.conn.send(b"a" * 100, 0)
    p.out()
    assert retransmit_times(p, 60 * S) == [200, 600]
    assert p.conn.state.name == "Closed" and p.now == 1400 * MS


def test_unlimited_retransmissions_r_tmr_17_maxrt_all_ones() -> None:
    p = established_server(TcpConfig(max_retransmissions=1, max_rt_ns=-1, rto_max_ns=1 * S))
    p.conn.send(b"a" * 100, 0)
    p.out()
    times = retransmit_times(p, 100 * S)
    assert len(times) > 90 and p.conn.state.name == "Established"


def test_user_timeout_fires_at_its_own_deadline_rfc9293_3_10_8() -> None:
    """RFC 9293 3.10.8 / RFC 5482: 1 s after the data was sent, not at the RTO expiry after that (1.4 s)."""
    p = established_server(TcpConfig(user_timeout_ns=1 * S))
    p.now = 50 * MS
    p.conn.send(b"a" * 100, p.now)
    p.out()
    assert retransmit_times(p, 60 * S) == [250, 650]
    assert TimedOut("user_timeout") in p.conn.pop_events() and p.now == 1050 * MS
    assert p.conn.state.name == "Closed" and p.conn.next_deadline() is None


def test_user_timeout_counts_from_last_progress() -> None:
    """An ACK of new data restarts the user timeout for the data still outstanding; idle time does not count."""
    p = established_server(TcpConfig(user_timeout_ns=1 * S, nagle=False))
    assert p.conn.next_deadline() is None  # nothing unacknowledged: no user timeout
    p.now = 5 * S
    p.conn.send(b"a" * 200, p.now)
    p.out()
    assert p.conn.next_deadline() == 5 * S + 200 * MS  # the RTO comes first
    p.now = 5 * S + 100 * MS
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 100)} win 65535")
    p.conn.send(b"b" * 10, p.now)
    deadlines = []
    while p.conn.state.name == "Established":
        d = p.conn.next_deadline()
        assert d is not None
        deadlines.append(d)
        p.run_timers_until(d)
    assert deadlines[-1] == 6 * S + 100 * MS


def test_persist_probe_carries_one_octet_rfc9293_3_8_6_1() -> None:
    """RFC default: the probe is one octet of new data at SND.UNA, resent until the peer takes it;
    R-TMR-11 counting is the same as for the Linux-style probe."""
    p = zero_window(TcpConfig())
    p.run_timers_until(200 * MS)
    p.expect_sent(f". {S1}:{w(S1 + 1)}(1) ack {C1}")
    assert p.conn.retransmit_count == 1 and p.conn.next_deadline() == 400 * MS
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 0")  # octet refused: R-TMR-12 next round
    assert p.conn.persist_round == 1 and p.conn.retransmit_count == 0
    assert p.conn.next_deadline() == 600 * MS  # RTO << SndWndProbeCount
    p.run_timers_until(600 * MS)
    p.expect_sent(f". {S1}:{w(S1 + 1)}(1) ack {C1}")
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1)} win 0")  # octet taken, window still closed
    assert p.conn.snd_una == SERVER_ISS + 2 and p.conn.rtx_timer_mode == RTX_PERSIST
    p.run_timers_until(p.conn.next_deadline() or 0)
    p.expect_sent(f". {w(S1 + 1)}:{w(S1 + 2)}(1) ack {C1}")
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1)} win 1000")  # R-TMR-13: the rest follows in order
    p.expect_sent(f"P. {w(S1 + 1)}:{w(S1 + 100)}(99) ack {C1}")
    assert p.conn.rtx_timer_mode == RTX_RETRANSMIT and p.conn.persist_round == 0


def test_linux_profile_probes_without_data() -> None:
    from chimney.tcp import linux_profile

    p = zero_window(linux_profile())
    p.run_timers_until(p.conn.next_deadline() or 0)
    p.expect_sent(f". {P1}:{P1}(0) ack {C1}")


def test_keepalive_probes_and_gives_up_r_tmr_09() -> None:
    cfg = TcpConfig(keepalive=True, keepalive_idle_ns=10 * S, keepalive_interval_ns=1 * S, keepalive_count=3)
    p = established_server(cfg)
    assert p.conn.next_deadline() == 10 * S
    sent = []
    while p.conn.state.name == "Established":
        d = p.conn.next_deadline()
        assert d is not None
        p.run_timers_until(d)
        sent += [(p.now // S, s) for s in p.out()]
    assert [t for t, _ in sent] == [10, 11, 12, 13]
    for _, s in sent[:3]:
        assert s.seq == P1 and len(s.payload) == 0 and s.ack == C1
    assert sent[3][1].flags & 0x04  # RST after the last unanswered probe
    assert TimedOut("keepalive") in p.conn.pop_events()


def test_keepalive_answer_resets_probes() -> None:
    cfg = TcpConfig(keepalive=True, keepalive_idle_ns=10 * S, keepalive_interval_ns=1 * S, keepalive_count=3)
    p = established_server(cfg)
    p.run_timers_until(11 * S)
    assert p.conn.keepalive_probes == 2
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 65535")
    assert p.conn.keepalive_probes == 0 and p.conn.next_deadline() == 21 * S


def zero_window(cfg: TcpConfig | None = None) -> Peer:
    """A peer window of 0 with 100 bytes queued; Linux-style probes unless `cfg` says otherwise."""
    p = established_server(cfg or TcpConfig(zero_window_probe_octet=False))
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 0")
    p.conn.send(b"z" * 100, 0)
    return p


def test_persist_start_r_tmr_10() -> None:
    p = zero_window()
    p.expect_nothing()
    assert p.conn.rtx_timer_mode == RTX_PERSIST
    assert p.conn.persist_round == 0 and p.conn.retransmit_count == 0
    assert p.conn.next_deadline() == 200 * MS  # RTO << 0


def test_persist_probe_and_backoff_within_round_r_tmr_11() -> None:
    p = zero_window()
    p.run_timers_until(200 * MS)
    p.expect_sent(f". {P1}:{P1}(0) ack {C1}")
    assert p.conn.retransmit_count == 1 and p.conn.next_deadline() == 400 * MS  # armed with RTO << 0
    p.run_timers_until(400 * MS)
    p.expect_sent(f". {P1}:{P1}(0) ack {C1}")
    assert p.conn.retransmit_count == 2 and p.conn.next_deadline() == 800 * MS  # RTO << 1


def test_zero_window_ack_starts_next_round_r_tmr_12() -> None:
    p = zero_window()
    p.run_timers_until(400 * MS)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 0")
    assert p.conn.persist_round == 1 and p.conn.retransmit_count == 0
    assert p.conn.next_deadline() == 400 * MS + 400 * MS  # RTO << SndWndProbeCount


def test_window_opening_ends_persist_r_tmr_13() -> None:
    p = zero_window()
    p.run_timers_until(200 * MS)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 1000")
    p.expect_sent(f"P. {S1}:{w(S1 + 100)}(100) ack {C1}")
    assert p.conn.rtx_timer_mode == RTX_RETRANSMIT and p.conn.persist_round == 0


def test_unanswered_probes_time_out_r_tmr_14() -> None:
    p = zero_window(TcpConfig(max_retransmissions=2, zero_window_probe_octet=False))
    probes = 0
    while p.conn.state.name == "Established":
        d = p.conn.next_deadline()
        assert d is not None
        p.run_timers_until(d)
        probes += sum(1 for s in p.out() if s.seq == P1)
    assert probes == 3 and TimedOut("persist") in p.conn.pop_events()


def test_rto_retransmission_stays_inside_the_peer_window() -> None:
    p = established_server(TcpConfig(nagle=False), win=4000)
    p.conn.send(b"a" * 8000, 0)
    assert sum(len(s.payload) for s in p.out()) == 2920  # the 1080-byte tail waits (sender SWS)
    p.run_timers_until(200 * MS)
    (r,) = p.out()
    assert r.seq == S1 and len(r.payload) == 1460  # one segment, within the 4000-byte window
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 500")  # window shrank to 500
    p.run_timers_until(600 * MS)
    (r,) = p.out()
    assert len(r.payload) == 500


def test_fin_wait2_timer_hook_without_close_r_tmr_05() -> None:
    """shutdown() alone starts no FIN_WAIT_2 timer (the user may still read); the hook starts it."""
    from chimney.tcp import FinWait2Timeout

    p = established_server(TcpConfig(fin_wait2_timeout_ns=120 * S))
    assert not p.conn.start_fin_wait2_timer(0)  # not in FIN_WAIT_2 yet
    p.conn.shutdown(0)
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1)} win 65535")
    assert p.conn.state.name == "FinWait2" and p.conn.next_deadline() is None
    assert p.conn.start_fin_wait2_timer(0, timeout_ns=30 * S)
    assert not p.conn.start_fin_wait2_timer(0)  # already running
    p.now = 10 * S
    p.peer_sends(f". {C1}:{w(C1 + 1)}(1) ack {w(S1 + 1)} win 65535", payload=b"x")
    p.run_timers_until(40 * S - 1)
    assert p.conn.state.name == "FinWait2"  # R-TMR-23: restarted at 10 s with the hook's 30 s
    p.run_timers_until(40 * S)
    assert p.conn.state.name == "Closed" and FinWait2Timeout() in p.conn.pop_events()
