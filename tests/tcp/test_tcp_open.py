"""Connection establishment (RFC 9293 3.5): active, passive, simultaneous open, options, odd segments
in SYN-SENT / SYN-RCVD / LISTEN, the Listener's queues and RFC 6528 ISNs."""

from __future__ import annotations

import pytest
from tcp_harness import C1, CLIENT_ISS, MS, S1, SERVER_ISS, Net, Peer, S, established_server, make_pair, w

from chimney.net.tcp import SYN
from chimney.tcp import Closed, Connected, Connection, Listener, Reset, TcpConfig, TimedOut, isn_rfc6528


def client(cfg: TcpConfig | None = None) -> Peer:
    c = Connection(cfg or TcpConfig(), 2000, 80, CLIENT_ISS)
    p = Peer(c)
    c.connect(0)
    return p


def test_active_open_sends_syn_with_options_then_acks_syn_ack() -> None:
    p = client(TcpConfig(rcv_buf=1 << 20))
    (syn,) = p.expect_sent(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 65535 <mss 1460,sackOK,wscale 5>")
    assert syn.options is not None and syn.options.ts_val is not None and syn.options.ts_ecr == 0
    assert p.conn.state.name == "SynSent"
    p.now = 10 * MS
    p.peer_sends(f"S. {SERVER_ISS}:{SERVER_ISS}(0) ack {C1} win 65535 <mss 1000,sackOK,wscale 7,TS val 99 ecr 0>")
    (ack,) = p.expect_sent(f". {C1}:{C1}(0) ack {S1}")
    c = p.conn
    assert c.state.name == "Established"
    assert c.pop_events() == [Connected()]
    assert (c.snd_wscale, c.rcv_wscale, c.sack_ok, c.ts_ok) == (7, 5, True, True)
    assert c.peer_mss == 1000 and c.snd_mss == 1000 - 12  # RFC 6691: TS option takes 12 bytes
    assert ack.options is not None and ack.options.ts_ecr == 99
    assert ack.window == (1 << 20) >> 5 or ack.window == 0xFFFF
    assert c.srtt == 10 * MS  # RTT sampled from the SYN (RFC 6298 2.2)


def test_passive_open_syn_ack_only_echoes_offered_options() -> None:
    c = Connection(TcpConfig(), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 8192 <mss 536>")
    (sa,) = p.expect_sent(f"S. {SERVER_ISS}:{SERVER_ISS}(0) ack {C1}")
    assert sa.options is not None
    assert sa.options.wscale is None and not sa.options.sack_permitted and sa.options.ts_val is None
    assert c.state.name == "SynRcvd"
    p.peer_sends(f". {C1}:{C1}(0) ack {S1} win 8192")
    assert c.state.name == "Established" and c.pop_events() == [Connected()]
    assert c.snd_wnd == 8192 and c.peer_mss == 536


def test_missing_mss_option_means_536() -> None:
    p = established_server(opts="sackOK")
    assert p.conn.peer_mss == 536 and p.conn.snd_mss == 536


def test_path_mtu_bounds_effective_mss() -> None:
    p = established_server(opts="mss 9000")
    assert p.conn.snd_mss == 1460
    p.conn.set_path_mtu(1280)
    assert p.conn.snd_mss == 1240


def test_simultaneous_open() -> None:
    a = Connection(TcpConfig(), 1000, 2000, 0xFFFFFFFF)
    b = Connection(TcpConfig(), 2000, 1000, 12345)
    a.connect(0)
    b.connect(0)
    syn_a, syn_b = a.pop_segments()[0], b.pop_segments()[0]
    a.receive(syn_b, 1)
    b.receive(syn_a, 1)
    assert a.state.name == b.state.name == "SynRcvd"
    sa_a, sa_b = a.pop_segments(), b.pop_segments()
    assert sa_a[0].flags & SYN and sa_a[0].seq == 0xFFFFFFFF and sa_a[0].ack == 12346
    for s in sa_b:
        a.receive(s, 2)
    for s in sa_a:
        b.receive(s, 2)
    assert a.state.name == b.state.name == "Established"
    assert Connected() in a.pop_events() and Connected() in b.pop_events()


def test_syn_sent_rst_with_acceptable_ack_is_connection_refused() -> None:
    p = client()
    p.out()
    p.peer_sends(f"R. 0:0(0) ack {C1}")
    assert p.conn.state.name == "Closed"
    assert p.conn.pop_events() == [Reset("refused"), Closed("reset")]


def test_syn_sent_rst_without_ack_is_ignored() -> None:
    p = client()
    p.out()
    p.peer_sends("R 0:0(0)")
    assert p.conn.state.name == "SynSent" and p.conn.stats.drops["syn_sent_rst_without_ack"] == 1


def test_syn_sent_bad_ack_gets_rst() -> None:
    p = client()
    p.out()
    p.peer_sends(f"S. 500:500(0) ack {w(CLIENT_ISS + 7)} win 100")
    p.expect_sent(f"R {w(CLIENT_ISS + 7)}:{w(CLIENT_ISS + 7)}(0)")
    assert p.conn.state.name == "SynSent"


def test_syn_sent_segment_without_syn_or_rst_is_dropped() -> None:
    p = client()
    p.out()
    p.peer_sends(f". 500:500(0) ack {C1} win 100")
    p.expect_nothing()
    assert p.conn.state.name == "SynSent"


def test_syn_retransmission_backoff_and_give_up() -> None:
    p = client(TcpConfig(syn_retries=3))
    p.out()
    times = []
    while p.conn.state.name == "SynSent":
        d = p.conn.next_deadline()
        assert d is not None
        p.run_timers_until(d)
        if p.out():
            times.append(p.now)
    assert times == [1 * S, 3 * S, 7 * S]  # RFC 6298 5.5: double each time
    assert TimedOut("syn") in p.conn.pop_events()


def test_syn_rcvd_bad_ack_gets_rst_and_stays() -> None:
    c = Connection(TcpConfig(), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 100")
    p.out()
    p.peer_sends(f". {C1}:{C1}(0) ack 77 win 100")
    p.expect_sent("R 77:77(0)")
    assert c.state.name == "SynRcvd"


def test_syn_rcvd_retransmitted_syn_resends_syn_ack() -> None:
    c = Connection(TcpConfig(), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 100")
    p.out()
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 100")
    p.expect_sent(f"S. {SERVER_ISS}:{SERVER_ISS}(0) ack {C1}")


def test_listen_answers_ack_with_rst_and_ignores_rst() -> None:
    c = Connection(TcpConfig(), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c)
    p.peer_sends(". 5:5(0) ack 1234 win 100")
    p.expect_sent("R 1234:1234(0)")
    p.peer_sends("R 5:5(0)")
    p.expect_nothing()
    assert c.state.name == "Listen"


def test_closed_connection_answers_with_rst() -> None:
    c = Connection(TcpConfig(), 80, 2000, SERVER_ISS)
    p = Peer(c)
    p.peer_sends("none 100:100(10) win 5")
    p.expect_sent("R. 0:0(0) ack 110")
    p.peer_sends(". 100:100(0) ack 55 win 5")
    p.expect_sent("R 55:55(0)")


def test_isn_rfc6528_is_keyed_per_tuple_and_advances_every_4us() -> None:
    k = b"secret"
    a = isn_rfc6528(k, b"\xc6\x12\x00\x01", 80, b"\xc6\x12\x00\x02", 5000, 0)
    assert isn_rfc6528(k, b"\xc6\x12\x00\x01", 80, b"\xc6\x12\x00\x02", 5000, 4000) == w(a + 1)
    assert isn_rfc6528(k, b"\xc6\x12\x00\x01", 80, b"\xc6\x12\x00\x02", 5001, 0) != a
    assert isn_rfc6528(b"other", b"\xc6\x12\x00\x01", 80, b"\xc6\x12\x00\x02", 5000, 0) != a


def _syn(port: int) -> Connection:
    c = Connection(TcpConfig(), port, 80, 1000 * port)
    c.connect(0)
    return c


def test_listener_full_handshake_and_accept() -> None:
    lst = Listener(80, TcpConfig(), isn_secret=b"k")
    cl = _syn(3000)
    child = lst.receive(cl.pop_segments()[0], b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x01", 0)
    assert child is not None and child.state.name == "SynRcvd" and lst.syn_queue_len == 1
    for s in child.pop_segments():
        cl.receive(s, 1)
    for s in cl.pop_segments():
        lst.receive(s, b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x01", 1)  # routed to the half-open child
    assert child.state.name == "Established" and lst.accept() is child and lst.syn_queue_len == 0


def test_listener_syn_queue_and_accept_backlog_limits() -> None:
    lst = Listener(80, TcpConfig(), syn_backlog=2, accept_backlog=1)
    addr = b"\xc6\x12\x00\x09"
    clients = [_syn(4000 + i) for i in range(3)]
    children = [lst.receive(c.pop_segments()[0], addr, b"\x00" * 4, 0) for c in clients]
    assert children[2] is None and lst.drops["syn_queue_full"] == 1
    for cl, ch in zip(clients[:2], children[:2]):
        assert ch is not None
        for s in ch.pop_segments():
            cl.receive(s, 1)
        for s in cl.pop_segments():
            lst.receive(s, addr, b"\x00" * 4, 1)
    # accept queue holds one; the second child ignores the final ACK and stays half-open
    assert children[0] is not None and children[0].state.name == "Established"
    assert children[1] is not None and children[1].state.name == "SynRcvd"
    assert children[1].stats.drops["accept_queue_full"] == 1
    assert lst.accept() is children[0]


def test_listener_rst_for_stray_ack() -> None:
    lst = Listener(80)
    from tcp_harness import seg

    assert lst.receive(seg(". 10:10(0) ack 99 win 10", sport=5, dport=80), b"a", b"b", 0) is None
    (r,) = lst.pop_segments()
    assert r.seq == 99 and r.flags == 0x04


def test_syn_ack_retransmit_then_give_up() -> None:
    c = Connection(TcpConfig(synack_retries=2), 80, 2000, SERVER_ISS)
    c.listen()
    p = Peer(c)
    p.peer_sends(f"S {CLIENT_ISS}:{CLIENT_ISS}(0) win 100")
    p.out()
    p.run_timers_until(1 * S)
    p.expect_sent(f"S. {SERVER_ISS}:{SERVER_ISS}(0) ack {C1}")
    p.run_timers_until(60 * S)
    assert c.state.name == "Closed" and TimedOut("syn") in c.pop_events()


@pytest.mark.parametrize("ts", [True, False])
def test_handshake_over_the_pipe(ts: bool) -> None:
    a, b = make_pair(TcpConfig(timestamps=ts), TcpConfig(timestamps=ts))
    net = Net(a, b)
    a.connect(0)
    net.run(until=lambda n: a.state.name == b.state.name == "Established")
    assert a.ts_ok == ts and b.ts_ok == ts and a.sack_ok and b.ws_ok
