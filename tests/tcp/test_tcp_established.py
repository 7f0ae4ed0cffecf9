"""ESTABLISHED-state segment processing: acceptability (RFC 9293 3.10.7.4 four cases), RST/SYN/ACK
checks with RFC 5961 challenge ACKs, odd flag combinations, receive path (delayed ACK, out-of-order,
SACK generation, PSH, URG) and the send path (segmentation, Nagle, SWS)."""

from __future__ import annotations

from tcp_harness import C1, MS, S1, established_server, w

from chimney.tcp import Closed, DataReadable, Reset, TcpConfig, UrgentData

ACK1 = f"ack {S1} win 65535"


def test_delayed_ack_every_second_full_segment() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 1460)}(1460) {ACK1}")
    p.expect_nothing()
    p.peer_sends(f". {w(C1 + 1460)}:{w(C1 + 2920)}(1460) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 2920)}")
    assert p.conn.pop_events() == [DataReadable(1460, False), DataReadable(1460, False)]
    assert bytes(p.conn.recv(-1)) == b"x" * 2920


def test_delayed_ack_timer_bounds_the_delay() -> None:
    p = established_server(TcpConfig(delack_timeout_ns=40 * MS))
    p.peer_sends(f"P. {C1}:{w(C1 + 10)}(10) {ACK1}")
    p.expect_nothing()
    assert p.conn.next_deadline() == 40 * MS
    p.run_timers_until(40 * MS)
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 10)}")
    assert p.conn.pop_events() == [DataReadable(10, True)]


def test_out_of_order_acked_at_once_and_gap_fill_acked_at_once() -> None:
    p = established_server()
    p.peer_sends(f". {w(C1 + 100)}:{w(C1 + 200)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.readable == 0
    p.peer_sends(f". {C1}:{w(C1 + 100)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 200)}")
    assert p.conn.pop_events() == [DataReadable(200, False)]
    assert bytes(p.conn.recv(-1)) == b"x" * 200


def test_reassembly_keeps_bytes_in_order_with_overlaps() -> None:
    p = established_server()
    data = bytes(range(200))

    def send(lo: int, hi: int) -> None:
        p.peer_sends(f". {w(C1 + lo)}:{w(C1 + hi)}({hi - lo}) {ACK1}", payload=data[lo:hi])

    send(150, 200)
    send(50, 120)
    send(100, 160)
    send(0, 60)
    assert p.conn.rcv_nxt & 0xFFFFFFFF == w(C1 + 200)
    assert bytes(p.conn.recv(-1)) == data


def test_sack_blocks_most_recent_first() -> None:
    p = established_server(opts="mss 1460,sackOK")
    p.peer_sends(f". {w(C1 + 100)}:{w(C1 + 200)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1} <sack {w(C1 + 100)}:{w(C1 + 200)}>")
    p.peer_sends(f". {w(C1 + 300)}:{w(C1 + 400)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1} <sack {w(C1 + 300)}:{w(C1 + 400)},sack {w(C1 + 100)}:{w(C1 + 200)}>")
    p.peer_sends(f". {w(C1 + 200)}:{w(C1 + 300)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1} <sack {w(C1 + 100)}:{w(C1 + 400)}>")


def test_sack_block_count_limited_to_four_without_timestamps() -> None:
    p = established_server(opts="mss 1460,sackOK")
    for i in range(6):
        p.peer_sends(f". {w(C1 + 100 + 200 * i)}:{w(C1 + 200 + 200 * i)}(100) {ACK1}")
    last = p.out()[-1]
    assert last.options is not None and len(last.options.sack_blocks) == 4
    assert last.options.sack_blocks[0] == (w(C1 + 1100), w(C1 + 1200))


def test_old_duplicate_is_acked_and_dropped() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 100)}(100) {ACK1}")
    p.out()
    p.peer_sends(f". {C1}:{w(C1 + 100)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {w(C1 + 100)}")
    assert p.conn.readable == 100 and p.conn.stats.drops["unacceptable_seq"] == 1


def test_segment_beyond_window_is_unacceptable() -> None:
    p = established_server(TcpConfig(rcv_buf=4000))
    p.peer_sends(f". {w(C1 + 5000)}:{w(C1 + 5100)}(100) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.readable == 0


def test_partial_overlap_at_right_edge_is_trimmed() -> None:
    p = established_server(TcpConfig(rcv_buf=1000))
    p.peer_sends(f". {C1}:{w(C1 + 1200)}(1200) {ACK1}")
    assert p.conn.readable == 1000 and p.conn.stats.drops["beyond_window"] == 1


def test_exact_rst_resets() -> None:
    p = established_server()
    p.peer_sends(f"R {C1}:{C1}(0)")
    assert p.conn.state.name == "Closed"
    assert p.conn.pop_events() == [Reset("reset"), Closed("reset")]


def test_rst_with_data_at_rcv_nxt_resets() -> None:
    p = established_server()
    p.peer_sends(f"R {C1}:{w(C1 + 5)}(5)")
    assert p.conn.state.name == "Closed" and p.conn.readable == 0


def test_in_window_rst_gets_challenge_ack_rfc5961() -> None:
    p = established_server()
    p.peer_sends(f"R {w(C1 + 10)}:{w(C1 + 10)}(0)")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.state.name == "Established" and p.conn.stats.challenge_acks == 1


def test_out_of_window_rst_is_silently_dropped() -> None:
    p = established_server()
    p.peer_sends(f"R {w(C1 - 10)}:{w(C1 - 10)}(0)")
    p.expect_nothing()
    assert p.conn.state.name == "Established"


def test_syn_in_established_gets_challenge_ack() -> None:
    p = established_server()
    p.peer_sends(f"S {C1}:{C1}(0) win 100")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.state.name == "Established"


def test_syn_fin_in_established_gets_challenge_ack_and_fin_is_ignored() -> None:
    p = established_server()
    p.peer_sends(f"SF. {C1}:{C1}(0) {ACK1}")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.state.name == "Established"


def test_challenge_acks_are_rate_limited() -> None:
    p = established_server(TcpConfig(challenge_ack_limit=3))
    for _ in range(10):
        p.peer_sends(f"S {C1}:{C1}(0) win 100")
    assert len(p.out()) == 3 and p.conn.stats.drops["challenge_ack_rate_limited"] == 7
    p.now += 1_000_000_000
    p.peer_sends(f"S {C1}:{C1}(0) win 100")
    assert len(p.out()) == 1


def test_segment_without_ack_flag_is_dropped() -> None:
    p = established_server()
    p.peer_sends(f"none {C1}:{w(C1 + 10)}(10)")
    p.expect_nothing()
    assert p.conn.readable == 0 and p.conn.stats.drops["no_ack"] == 1


def test_fin_without_ack_is_dropped() -> None:
    p = established_server()
    p.peer_sends(f"F {C1}:{C1}(0)")
    assert p.conn.state.name == "Established"


def test_ack_of_unsent_data_is_acked_and_dropped() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {w(S1 + 500)} win 100")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.readable == 0 and p.conn.snd_una & 0xFFFFFFFF == S1


def test_too_old_ack_gets_challenge_ack_rfc5961_5_2() -> None:
    p = established_server(win=1000)
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 - 5000)} win 1000")
    p.expect_sent(f". {S1}:{S1}(0) ack {C1}")
    assert p.conn.stats.challenge_acks == 1


def test_push_flag_reported_on_delivery() -> None:
    p = established_server()
    p.peer_sends(f". {C1}:{w(C1 + 5)}(5) {ACK1}")
    p.peer_sends(f"P. {w(C1 + 5)}:{w(C1 + 10)}(5) {ACK1}")
    assert p.conn.pop_events() == [DataReadable(5, False), DataReadable(5, True)]


def test_urgent_pointer_reported() -> None:
    p = established_server()
    p.peer_sends(f"U. {C1}:{w(C1 + 10)}(10) {ACK1} urg 7")
    ev = p.conn.pop_events()
    assert UrgentData(7) in ev and DataReadable(10, False) in ev
    p.peer_sends(f"U. {w(C1 + 10)}:{w(C1 + 12)}(2) {ACK1} urg 1")
    assert UrgentData(7) not in p.conn.pop_events()  # pointer did not advance past 17


def test_send_segments_at_mss_with_psh_on_last() -> None:
    p = established_server(TcpConfig(nagle=False))
    assert p.conn.send(b"a" * 3000, 0) == 3000
    p.expect_sent(
        f". {S1}:{w(S1 + 1460)}(1460) ack {C1}",
        f". {w(S1 + 1460)}:{w(S1 + 2920)}(1460) ack {C1}",
        f"P. {w(S1 + 2920)}:{w(S1 + 3000)}(80) ack {C1}",
    )


def test_send_is_zero_copy_memoryview() -> None:
    p = established_server()
    buf = bytearray(b"q" * 100)
    p.conn.send(buf, 0)
    (s,) = p.out()
    assert isinstance(s.payload, memoryview) and s.payload.obj is buf


def test_nagle_holds_small_segment_until_ack() -> None:
    p = established_server()
    p.conn.send(b"a" * 10, 0)
    p.expect_sent(f"P. {S1}:{w(S1 + 10)}(10) ack {C1}")
    p.conn.send(b"b" * 10, 0)
    p.conn.send(b"c" * 10, 0)
    p.expect_nothing()
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 10)} win 65535")
    p.expect_sent(f"P. {w(S1 + 10)}:{w(S1 + 30)}(20) ack {C1}")


def test_nodelay_sends_small_segments_at_once() -> None:
    p = established_server(TcpConfig(nagle=False))
    p.conn.send(b"a" * 10, 0)
    p.conn.send(b"b" * 10, 0)
    assert len(p.out()) == 2


def test_sender_sws_avoidance_waits_for_a_useful_window() -> None:
    p = established_server(TcpConfig(nagle=False), win=2000)
    p.conn.send(b"a" * 4000, 0)
    # A 540-byte tail with data in flight is under max_snd_wnd/2: hold it (RFC 9293 3.8.6.2.1).
    p.expect_sent(f". {S1}:{w(S1 + 1460)}(1460) ack {C1}")
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 100)} win 2000")
    p.expect_nothing()
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1460)} win 2000")
    p.expect_sent(f". {w(S1 + 1460)}:{w(S1 + 2920)}(1460) ack {C1}")
    # Nothing in flight: the window-limited remainder goes even though it is small.
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 2920)} win 500")
    p.expect_sent(f". {w(S1 + 2920)}:{w(S1 + 3420)}(500) ack {C1}")


def test_receive_window_closes_and_reopens_with_update() -> None:
    p = established_server(TcpConfig(rcv_buf=3000, mss=1000))
    for i in range(3):
        p.peer_sends(f". {w(C1 + 1000 * i)}:{w(C1 + 1000 * (i + 1))}(1000) {ACK1}")
    p.run_timers_until(200 * MS)  # the third segment's ACK is delayed
    (a1, a2) = p.out()
    assert a1.ack == w(C1 + 2000) and a1.window == 1000
    assert a2.window == 0 and a2.ack == w(C1 + 3000)
    p.peer_sends(f". {w(C1 + 3000)}:{w(C1 + 3001)}(1) {ACK1}")  # zero-window: data not taken
    assert p.conn.readable == 3000
    p.out()
    p.conn.recv(500)
    p.expect_nothing()  # receiver SWS: 500 < min(rcv_buf/2, mss)
    p.conn.recv(1000)
    (upd,) = p.out()
    assert upd.window == 1500 and upd.ack == w(C1 + 3000)


def test_empty_segment_at_right_window_edge_is_accepted() -> None:
    p = established_server(TcpConfig(rcv_buf=1000))
    # A peer that filled our window acks with SEQ = RCV.NXT + RCV.WND (Linux tcp_acceptable_seq).
    p.conn.send(b"x" * 10, 0)
    p.out()
    p.peer_sends(f". {w(C1 + 1000)}:{w(C1 + 1000)}(0) ack {w(S1 + 10)} win 65535")
    assert p.conn.snd_una & 0xFFFFFFFF == w(S1 + 10)


def test_dupacks_to_out_of_window_pure_acks_are_rate_limited() -> None:
    p = established_server(TcpConfig(oow_ack_interval_ns=100 * MS))
    for _ in range(5):
        p.peer_sends(f". {w(C1 - 100)}:{w(C1 - 100)}(0) ack {S1} win 65535")
    assert len(p.out()) == 1 and p.conn.stats.drops["oow_ack_rate_limited"] == 4
    p.peer_sends(f". {w(C1 - 100)}:{w(C1 - 100)}(10) ack {S1} win 65535")  # data: always answered
    assert len(p.out()) == 1
