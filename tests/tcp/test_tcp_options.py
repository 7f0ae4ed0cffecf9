"""RFC 7323 window scaling, timestamps (every segment, R-TS-07), PAWS and TS.Recent rules; ICMP
frag-needed / soft errors (RFC 1191, RFC 1122 4.2.3.9)."""

from __future__ import annotations

from tcp_harness import C1, MS, S1, established_server, w

from chimney.tcp import SoftError, TcpConfig


def test_window_scale_applies_after_syn_only() -> None:
    p = established_server(TcpConfig(rcv_buf=1 << 20), opts="mss 1460,wscale 7", win=100)
    c = p.conn
    assert c.snd_wscale == 7 and c.rcv_wscale == 5
    assert c.snd_wnd == 100 << 7  # the ACK's window is scaled
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 3")
    assert c.snd_wnd == 3 << 7
    p.run_timers_until(200 * MS)
    (a,) = p.out()
    assert a.window == ((1 << 20) - 10) >> 5


def test_syn_ack_window_is_unscaled() -> None:
    c = established_server(opts="mss 1460,wscale 3", win=60000).conn
    assert c.max_snd_wnd >= 60000


def test_no_scaling_unless_both_offer() -> None:
    p = established_server(TcpConfig(rcv_buf=1 << 20), opts="mss 1460")
    assert p.conn.rcv_wscale == 0 and p.conn.snd_wscale == 0
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 65535")
    p.run_timers_until(200 * MS)
    assert p.out()[0].window == 65535


def ts_server() -> object:
    return established_server(opts="mss 1460,TS val 1000 ecr 0")


def test_every_segment_carries_timestamps_r_ts_07() -> None:
    p = ts_server()
    p.now = 7 * MS
    p.conn.send(b"x" * 3000, p.now)
    p.conn.abort(p.now)
    segs = p.out()
    assert len(segs) >= 3 and segs[-1].flags & 0x04
    for s in segs:
        assert s.options is not None and s.options.ts_val == 7 and s.options.ts_ecr == 1000


def test_paws_drops_old_timestamp_and_acks() -> None:
    p = ts_server()
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 65535 <TS val 2000 ecr 0>")
    p.run_timers_until(200 * MS)
    p.out()
    p.peer_sends(f". {w(C1 + 10)}:{w(C1 + 20)}(10) ack {S1} win 65535 <TS val 1500 ecr 0>")
    (a,) = p.out()
    assert a.ack == w(C1 + 10) and p.conn.stats.drops["paws"] == 1 and p.conn.readable == 10


def test_paws_handles_tsval_wrap() -> None:
    p = established_server(opts="mss 1460,TS val 4294967000 ecr 0")
    p.peer_sends(f". {C1}:{w(C1 + 10)}(10) ack {S1} win 65535 <TS val 5 ecr 0>")
    assert p.conn.readable == 10 and p.conn.ts_recent == 5


def test_ts_recent_only_from_segments_at_last_ack_sent() -> None:
    p = ts_server()
    # Out-of-order segment (SEG.SEQ > Last.ACK.sent) must not update TS.Recent (RFC 7323 4.3).
    p.peer_sends(f". {w(C1 + 100)}:{w(C1 + 110)}(10) ack {S1} win 65535 <TS val 3000 ecr 0>")
    assert p.conn.ts_recent == 1000
    p.peer_sends(f". {C1}:{w(C1 + 100)}(100) ack {S1} win 65535 <TS val 2500 ecr 0>")
    assert p.conn.ts_recent == 2500


def test_rst_is_not_subject_to_paws() -> None:
    p = ts_server()
    p.peer_sends(f"R {C1}:{C1}(0) <TS val 1 ecr 0>")
    assert p.conn.state.name == "Closed"


def test_icmp_frag_needed_lowers_mss_and_resends() -> None:
    p = established_server(TcpConfig(nagle=False))
    p.conn.send(b"a" * 2920, 0)
    assert [len(s.payload) for s in p.out()] == [1460, 1460]
    p.conn.icmp_frag_needed(1000, 1 * MS)
    assert p.conn.snd_mss == 960
    assert [len(s.payload) for s in p.out()] == [960, 960, 960, 40]
    assert p.conn.pop_events() == [SoftError("frag_needed", 1000)]


def test_icmp_soft_error_keeps_connection() -> None:
    p = established_server()
    p.conn.icmp_soft_error("host_unreachable")
    assert p.conn.state.name == "Established"
    assert p.conn.pop_events() == [SoftError("host_unreachable")]


def test_rttm_uses_timestamp_echo_when_no_segment_is_timed() -> None:
    cfg = TcpConfig(nagle=False, rto_min_ns=1 * MS)
    p = established_server(cfg, opts="mss 1000,TS val 1 ecr 0")
    p.now = 10 * MS
    p.conn.send(b"a" * 2000, p.now)  # two segments, TSval 10; only the first is timed
    p.out()
    p.now = 60 * MS
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 1000)} win 65535 <TS val 2 ecr 10>")
    srtt1 = p.conn.srtt
    assert srtt1 == (7 * 0 + 50 * MS) // 8  # handshake sample 0, then the timed segment: 50 ms
    p.now = 90 * MS
    p.peer_sends(f". {C1}:{C1}(0) ack {w(S1 + 2000)} win 65535 <TS val 3 ecr 10>")
    assert p.conn.srtt == (7 * srtt1 + 80 * MS) // 8  # RFC 7323 RTTM: now - TSecr = 80 ms


def test_sack_blocks_on_full_sized_data_segment_fit_the_mtu_rfc9293_3_7_1() -> None:
    """A full-sized data segment sent while we hold out-of-order data carries only the SACK blocks that fit
    next to its payload and the timestamps: the IP packet never exceeds the path MTU (1500)."""
    p = established_server(TcpConfig(nagle=False), opts="mss 1460,sackOK,TS val 1 ecr 0")
    p.peer_sends(f". {w(C1 + 100)}:{w(C1 + 200)}(100) ack {S1} win 65535 <TS val 2 ecr 0>")
    p.out()  # the duplicate ACK carries the block
    p.conn.send(b"d" * 3000, 0)
    segs = p.out()
    assert segs and all(len(s.payload) for s in segs)
    for s in segs:
        assert s.options is not None
        opt_len = 12 + (4 + 8 * len(s.options.sack_blocks) if s.options.sack_blocks else 0)
        assert 20 + 20 + opt_len + len(s.payload) <= 1500
    small = [s for s in segs if len(s.payload) <= 1448 - 12]
    assert all(s.options.sack_blocks for s in small if s.options is not None)  # room left: blocks kept
