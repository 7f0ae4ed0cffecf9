"""The host transport on two simulated hosts over an emulated link: handshake, data, RST replies for
closed ports, resets, timeouts, listen backlog, many connections, TIME-WAIT, PMTU from ICMP, path swap."""

from __future__ import annotations

import errno
import hashlib

import pytest

from chimney.host.socket import SHUT_WR, Socket
from chimney.host.stack import HostStack, connected_pair
from chimney.host.tcp import HostPath, TcbPath
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState as St
from chimney.net.frame import Frame, parse_frame
from chimney.net.icmp import ICMP_DEST_UNREACH, build_icmp_echo, build_icmp_error, build_icmp_frag_needed
from chimney.net.ipv4 import IPPROTO_ICMP
from chimney.net.tcp import ACK, RST, SYN, TcpSegment
from chimney.sim import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import run_task, spawn
from chimney.tcp import linux_profile

A_IP = "198.18.0.1"
B_IP = "198.18.0.2"


def pair(**kw: object) -> tuple[SimScheduler, HostStack, HostStack, object]:
    s = SimScheduler(seed=3)
    a, b, link = connected_pair(s, **kw)  # type: ignore[arg-type]
    return s, a, b, link


def tcp_frames(port: object, direction: str = "tx") -> list[Frame]:
    """Record the TCP frames a link port sends (direction "tx") or receives ("rx")."""
    out: list[Frame] = []

    def obs(d: str, frame: bytes, meta: str | None) -> None:
        f = parse_frame(frame)
        if d == direction and isinstance(f, Frame) and f.tcp is not None:
            out.append(f)

    port.add_observer(obs)  # type: ignore[attr-defined]
    return out


def established(s: SimScheduler, a: HostStack, b: HostStack, port: int = 5000) -> tuple[Socket, Socket, Socket]:
    srv = b.listen(port)
    c = a.socket()
    c.connect((B_IP, port))
    conn, _ = srv.accept()
    return srv, c, conn


def test_three_way_handshake_builds_tcbs_with_path_and_neighbor() -> None:
    s, a, b, link = pair()
    sent = tcp_frames(link.a)  # type: ignore[attr-defined]
    _srv, c, conn = established(s, a, b)
    assert c.tcb is not None and conn.tcb is not None
    assert c.tcb.state is St.Established and conn.tcb.state is St.Established
    syn = sent[0].tcp
    assert syn is not None and syn.flags == SYN and syn.options is not None and syn.options.mss == 1460
    # the offload state tree is reachable from the TCB: TCP -> path -> neighbor
    tcb = c.tcb
    assert tcb.ip_path is a.ip.paths[(tcb.local, tcb.remote)]
    assert tcb.neighbor is a.ip.neighbors["eth0"].get(tcb.remote) and tcb.neighbor.mac == bytes.fromhex("02000000000b")
    assert a.tcp.find(tcb.local, tcb.local_port, tcb.remote, tcb.remote_port) is tcb
    assert isinstance(tcb.path, HostPath) and tcb.path.conn is tcb.conn
    assert 32768 <= tcb.local_port <= 60999
    assert a.tcp.counters.active_opens == 1 and b.tcp.counters.passive_opens == 1
    assert conn.getpeername() == (A_IP, tcb.local_port) and c.getpeername() == (B_IP, 5000)


def test_echo_over_blocking_sockets() -> None:
    s, a, b, _ = pair()
    _, c, conn = established(s, a, b)
    c.sendall(b"ping " * 1000)
    got = b""
    while len(got) < 5000:
        got += conn.recv(65536)
    conn.sendall(got)
    back = b""
    while len(back) < 5000:
        back += c.recv(65536)
    assert back == b"ping " * 1000


def test_segment_to_a_closed_port_gets_rst_and_connect_is_refused() -> None:
    _s, a, b, link = pair()
    replies = tcp_frames(link.b)  # type: ignore[attr-defined]
    c = a.socket()
    with pytest.raises(ConnectionRefusedError) as ei:
        c.connect((B_IP, 81))
    assert ei.value.errno == errno.ECONNREFUSED
    rst = replies[-1].tcp
    assert rst is not None and rst.flags == RST | ACK and rst.seq == 0  # RFC 9293 3.10.7.1: SYN -> <SEQ=0><ACK=SEG.SEQ+1>
    assert b.tcp.counters.rst_sent == 1 and b.tcp.drops["no_socket"] == 1
    assert a.tcp.conns == {}  # the refused TCB left the demux table


def test_stray_ack_to_closed_port_gets_rst_with_seq_from_its_ack() -> None:
    s, a, b, link = pair()
    replies = tcp_frames(link.b)  # type: ignore[attr-defined]
    a.tcp.send_control(a.ip.interfaces["eth0"].ipv4[0].ip.packed, b.ip.interfaces["eth0"].ipv4[0].ip.packed,
                       TcpSegment(40000, 99, 1000, 777777, ACK, 1000))
    s.run_until(s.now + 10 * NS_PER_MS)
    rst = replies[-1].tcp
    assert rst is not None and rst.flags == RST and rst.seq == 777777
    # and an RST never gets an RST back
    n = len(replies)
    a.tcp.send_control(a.ip.interfaces["eth0"].ipv4[0].ip.packed, b.ip.interfaces["eth0"].ipv4[0].ip.packed,
                       TcpSegment(40000, 99, 1000, 0, RST, 0))
    s.run_until(s.now + 10 * NS_PER_MS)
    assert len(replies) == n


def test_peer_abort_mid_transfer_gives_econnreset_then_eof() -> None:
    s, a, b, _ = pair()
    _, c, conn = established(s, a, b)
    c.sendall(b"x" * 10000)
    conn.recv(100)
    conn.abort()  # SO_LINGER {1,0} close: RST
    s.run_until(s.now + 10 * NS_PER_MS)
    with pytest.raises(ConnectionResetError):
        c.recv(100)
    assert c.recv(100) == b""  # the error is reported once, then EOF (as Linux)
    with pytest.raises(BrokenPipeError):
        c.send(b"more")
    assert c.tcb is not None and c.tcb.closed and c.tcb.close_reason == "reset"


def test_half_close_lets_the_other_direction_continue() -> None:
    s, a, b, _ = pair()
    _, c, conn = established(s, a, b)
    c.sendall(b"request")
    c.shutdown(SHUT_WR)
    assert conn.recv(100) == b"request"
    assert conn.recv(100) == b""  # EOF from the FIN
    conn.sendall(b"response after the client's FIN")
    conn.close()
    got = b""
    while True:
        d = c.recv(100)
        if not d:
            break
        got += d
    assert got == b"response after the client's FIN"
    assert c.tcb is not None and c.tcb.state is St.TimeWait  # we closed first


def test_time_wait_tcb_stays_in_the_demux_until_2msl() -> None:
    s, a, b, _ = pair(tcp_config=linux_profile(msl_ns=2 * NS_PER_S))
    _, c, conn = established(s, a, b)
    key = c.tcb.key  # type: ignore[union-attr]
    c.close()
    assert conn.recv(10) == b""
    conn.close()
    s.run_until(s.now + 100 * NS_PER_MS)
    assert a.tcp.conns[key].state is St.TimeWait and b.tcp.conns == {}
    s.run_until(s.now + 4 * NS_PER_S)
    assert key not in a.tcp.conns and a.tcp.counters.closed == 1


def test_syn_to_a_silent_host_times_out_with_etimedout() -> None:
    s, a, _b, link = pair(tcp_config=linux_profile(syn_retries=2))
    link.set_up(False)  # type: ignore[attr-defined]
    c = a.socket()
    t0 = s.now
    with pytest.raises(TimeoutError) as ei:
        c.connect((B_IP, 5000))
    assert ei.value.errno == errno.ETIMEDOUT
    assert 6 * NS_PER_S <= s.now - t0 <= 8 * NS_PER_S  # 1 + 2 + 4 s of exponential backoff


def test_retransmission_gives_up_after_user_timeout() -> None:
    s, a, b, link = pair()
    _, c, _conn = established(s, a, b)
    c.setsockopt(6, 18, 3000)  # TCP_USER_TIMEOUT 3 s
    link.set_up(False)  # type: ignore[attr-defined]
    c.sendall(b"lost" * 100)
    t0 = s.now
    with pytest.raises(TimeoutError) as ei:
        c.recv(10)
    assert ei.value.errno == errno.ETIMEDOUT
    assert 3 * NS_PER_S <= s.now - t0 < 10 * NS_PER_S


def test_listen_backlog_bounds_the_accept_queue() -> None:
    s, a, b, _ = pair()
    srv = b.listen(5000, backlog=2)
    a.ip.send_ip(b.ip.interfaces["eth0"].ipv4[0].ip.packed, IPPROTO_ICMP, build_icmp_echo(1, 1))  # resolve B first
    s.run_until(s.now + 10 * NS_PER_MS)
    clients = [a.socket() for _ in range(4)]
    for c in clients:
        c.setblocking(False)
        assert c.connect_ex((B_IP, 5000)) == errno.EINPROGRESS
    s.run_until(s.now + 100 * NS_PER_MS)
    lst = srv.listener
    assert lst is not None and lst.ready == 2 and lst.engine.accept_queue_len == 2
    # the other two wait: SYN dropped or final ACK ignored while the accept queue is full (as Linux)
    assert lst.engine.syn_queue_len == 2
    assert sum(t.conn.stats.drops.get("accept_queue_full", 0) for t in lst.children.values()) == 2
    accepted = [srv.accept()[0] for _ in range(2)]
    # the two others complete when their SYN-ACK is retransmitted (their final ACK was ignored)
    srv.settimeout(10.0)
    accepted += [srv.accept()[0] for _ in range(2)]
    assert len({x.getpeername() for x in accepted}) == 4


def test_fifty_concurrent_connections_echo() -> None:
    s, a, b, _ = pair(a_to_b=Impairments(rate_bps=10**9, delay_ns=50_000),
                      b_to_a=Impairments(rate_bps=10**9, delay_ns=50_000))
    from chimney.host.apps import echo_server

    server = echo_server(b, 7)

    async def client(i: int) -> bytes:
        sock = a.socket()
        await sock.aconnect((B_IP, 7))
        msg = f"client {i} ".encode() * (50 + i)
        await sock.asendall(msg)
        sock.shutdown(SHUT_WR)
        got = b""
        while True:
            d = await sock.arecv(65536)
            if not d:
                break
            got += d
        sock.close()
        return got if got == msg else b"MISMATCH"

    tasks = [spawn(s, client(i)) for i in range(50)]
    s.run_until(s.now + 5 * NS_PER_S, predicate=lambda: all(t.done() for t in tasks))
    assert all(t.done() and t.result() != b"MISMATCH" for t in tasks)
    assert server.accepted == 50 and not server.errors
    assert a.tcp.counters.active_opens == 50 and b.tcp.counters.passive_opens == 50


def test_icmp_frag_needed_lowers_the_mss_mid_transfer() -> None:
    s, a, b, link = pair()
    _, c, conn = established(s, a, b)
    tcb = c.tcb
    assert tcb is not None and tcb.conn.snd_mss == 1448
    reported: list[int] = []

    def router(direction: str, frame: bytes, meta: str | None) -> None:
        # a router behind A's link with a 1200-byte next hop: drops bigger packets and says so
        if direction == "tx" and len(frame) - 14 > 1200:
            if not reported:
                s.call_soon(b.ip.send_ip, tcb.local, IPPROTO_ICMP, build_icmp_frag_needed(1200, frame[14:]))
            reported.append(len(frame))

    link.a.add_observer(router)  # type: ignore[attr-defined]
    link.reconfigure(a_to_b=Impairments(mtu=1200))  # type: ignore[attr-defined]
    data = bytes(range(256)) * 2000

    async def send() -> None:
        await c.asendall(data)
        c.shutdown(SHUT_WR)

    async def receive() -> bytes:
        h = hashlib.sha256()
        while d := await conn.arecv_view(1 << 16):
            h.update(d)
        return h.digest()

    spawn(s, send())
    assert run_task(s, receive(), until=s.now + 30 * NS_PER_S) == hashlib.sha256(data).digest()
    assert tcb.ip_path.mtu == 1200 and tcb.conn.snd_mss == 1200 - 40 - 12
    assert a.tcp.counters.pmtu_updates == 1


def test_icmp_port_unreachable_while_connecting_is_a_hard_error() -> None:
    s, a, b, _link = pair()
    c = a.socket()
    c.setblocking(False)
    # B answers the SYN with an ICMP port unreachable instead of a RST (a firewall's "reject")
    b.ip.protocols[6] = lambda f, iface: b.ip.send_ip(f.ip_src, IPPROTO_ICMP,
                                                       build_icmp_error(ICMP_DEST_UNREACH, 3, f.ip_packet))
    assert c.connect_ex((B_IP, 5000)) == errno.EINPROGRESS
    s.run_until(s.now + 10 * NS_PER_MS)
    assert c.getsockopt(1, 4) == errno.ECONNREFUSED
    assert c.tcb is not None and c.tcb.closed


def test_icmp_quoting_a_sequence_not_in_flight_is_ignored() -> None:
    s, a, b, _ = pair()
    _, c, _conn = established(s, a, b)
    from chimney.net.frame import encode_tcp_frame

    tcb = c.tcb
    assert tcb is not None
    bogus = TcpSegment(tcb.local_port, 5000, (tcb.conn.snd_una + 100000) & 0xFFFFFFFF, 0, ACK, 0, b"x" * 1400)
    orig = encode_tcp_frame(bogus, eth_src=b"\x02" * 6, eth_dst=b"\x02" * 6, ip_src=tcb.local, ip_dst=tcb.remote)
    b.ip.send_ip(tcb.local, IPPROTO_ICMP, build_icmp_frag_needed(1000, orig[14:]))
    s.run_until(s.now + 10 * NS_PER_MS)
    assert a.tcp.drops["icmp_seq_not_in_flight"] == 1 and tcb.conn.snd_mss == 1448


def test_ipv6_connection_carries_data() -> None:
    _s, a, b, _ = pair(ipv6=True)
    srv = b.listen(6000)
    c = a.socket()
    c.connect(("2001:2::2", 6000))
    conn, peer = srv.accept()
    assert peer[0] == "2001:2::1"
    c.sendall(b"over v6" * 1000)
    got = b""
    while len(got) < 7000:
        got += conn.recv(9000)
    assert got == b"over v6" * 1000
    assert c.tcb is not None and c.tcb.conn.snd_mss == 1500 - 60 - 12


def test_one_timer_per_connection_is_not_rearmed_per_ack() -> None:
    s, a, b, _ = pair(a_to_b=Impairments(rate_bps=10**9, delay_ns=100_000),
                      b_to_a=Impairments(rate_bps=10**9, delay_ns=100_000))
    _, c, conn = established(s, a, b)
    arms = a.tcp.counters.timer_arms
    data = b"z" * 1_000_000

    async def send() -> None:
        await c.asendall(data)

    async def receive() -> int:
        n = 0
        while n < len(data):
            n += len(await conn.arecv_view(1 << 20))
        return n

    spawn(s, send())
    run_task(s, receive())
    segs = a.tcp.counters.segs_out
    assert segs > 600
    assert a.tcp.counters.timer_arms - arms < segs // 20  # the RTO deadline only moves later per ACK


class RecordingPath(TcbPath):
    """A stand-in for the chimney path: records what the host demux routes to it."""

    kind = "recording"

    def __init__(self, tcb: object) -> None:
        super().__init__(tcb)  # type: ignore[arg-type]
        self.segments: list[TcpSegment] = []

    @property
    def state(self) -> St:
        return St.Established

    def input(self, seg: TcpSegment, frame: Frame | None) -> None:
        self.segments.append(seg)


def test_swapping_the_io_path_reroutes_input_and_stops_the_host_engine() -> None:
    s, a, b, _ = pair()
    _, c, conn = established(s, a, b)
    tcb = conn.tcb
    assert tcb is not None
    host_path = tcb.path
    rec = RecordingPath(tcb)
    old = tcb.set_path(rec)
    assert old is host_path and isinstance(old, HostPath) and old.detached and tcb.timer is None
    c.sendall(b"to the offloaded connection")
    s.run_until(s.now + 10 * NS_PER_MS)
    assert b"".join(bytes(x.payload) for x in rec.segments) == b"to the offloaded connection"
    assert tcb.conn.rxq.size == 0  # the host engine saw nothing
    # and back (upload): the host engine resumes, the data path delivers to the socket again
    tcb.set_path(HostPath(b.tcp, tcb))
    tcb.path.kick()  # type: ignore[attr-defined]
    c.sendall(b"again")  # the host engine never acked the first bytes: they are retransmitted
    conn.settimeout(5.0)
    got = b""
    while len(got) < len(b"to the offloaded connectionagain"):
        got += conn.recv(100)
    assert got == b"to the offloaded connectionagain"


def test_forward_progress_confirms_the_neighbor_so_arp_never_probes() -> None:
    s, a, b, _ = pair()
    _, c, conn = established(s, a, b)
    cache = a.ip.neighbors["eth0"]
    n = c.tcb.neighbor  # type: ignore[union-attr]
    assert n is not None
    probes0 = cache.counters.solicits_unicast + cache.counters.solicits_multicast
    for _ in range(70):  # 70 s of a trickle: well past the 30 s reachable time
        c.send(b"tick")
        s.run_until(s.now + NS_PER_S)
        conn.recv(100)
    assert cache.counters.solicits_unicast + cache.counters.solicits_multicast == probes0
    assert n.state.name == "REACHABLE" and s.now - n.confirmed_at <= 2 * NS_PER_S


def test_a_changed_peer_mac_rebuilds_the_frame_headers() -> None:
    s, a, b, link = pair()
    _, c, conn = established(s, a, b)
    new_mac = bytes.fromhex("0200000000bb")
    b.ip.interfaces["eth0"].mac = new_mac
    b.ip.announce("eth0", b.ip.interfaces["eth0"].ipv4[0].ip.packed)  # gratuitous ARP with the new MAC
    s.run_until(s.now + 10 * NS_PER_MS)
    sent = tcp_frames(link.a)  # type: ignore[attr-defined]
    c.sendall(b"after the move")
    assert conn.recv(100) == b"after the move"
    assert sent and all(f.eth_dst == new_mac for f in sent)
    assert c.tcb is not None and c.tcb.builder is not None and c.tcb.builder.eth_dst == new_mac


def test_route_via_a_gateway_sends_to_the_gateway_mac() -> None:
    s, a, b, link = pair()
    a.route_add("198.19.0.0/16", via=B_IP)
    sent = tcp_frames(link.a)  # type: ignore[attr-defined]
    c = a.socket()
    c.setblocking(False)
    assert c.connect_ex(("198.19.0.5", 80)) == errno.EINPROGRESS
    s.run_until(s.now + 10 * NS_PER_MS)
    tcb = c.tcb
    assert tcb is not None and tcb.ip_path.next_hop == b.ip.interfaces["eth0"].ipv4[0].ip.packed
    assert sent[0].eth_dst == bytes.fromhex("02000000000b") and sent[0].ip_dst == tcb.remote
    assert b.ip.drops["not_our_address"] >= 1  # B is no router: it drops the packet
