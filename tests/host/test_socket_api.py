"""The sockets API: errno semantics in non-blocking mode, poll() readiness, options, blocking timeouts
(simulated clock) and the awaitable forms used by simulation tasks."""

from __future__ import annotations

import errno

import pytest

from chimney.host.socket import (
    IPPROTO_TCP,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    POLLRDHUP,
    SHUT_RDWR,
    SHUT_WR,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_LINGER,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_MAXSEG,
    TCP_NODELAY,
    Socket,
    poll_sockets,
)
from chimney.host.stack import HostStack, connected_pair
from chimney.sim import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import run_task

B_IP = "198.18.0.2"


def setup() -> tuple[SimScheduler, HostStack, HostStack, object]:
    s = SimScheduler(seed=5)
    a, b, link = connected_pair(s)
    return s, a, b, link


def settle(s: SimScheduler, ms: int = 10) -> None:
    s.run_until(s.now + ms * NS_PER_MS)


def nb_pair(s: SimScheduler, a: HostStack, b: HostStack, port: int = 5000) -> tuple[Socket, Socket, Socket]:
    srv = b.listen(port)
    srv.setblocking(False)
    c = a.socket()
    c.setblocking(False)
    assert c.connect_ex((B_IP, port)) == errno.EINPROGRESS
    settle(s)
    conn, _ = srv.accept()
    conn.setblocking(False)
    return srv, c, conn


def test_nonblocking_connect_reports_einprogress_then_writable() -> None:
    s, a, b, _ = setup()
    b.listen(5000)
    c = a.socket()
    c.setblocking(False)
    with pytest.raises(BlockingIOError) as ei:
        c.connect((B_IP, 5000))
    assert ei.value.errno == errno.EINPROGRESS
    assert c.poll() == 0  # SYN-SENT: nothing yet
    with pytest.raises(OSError) as again:
        c.connect((B_IP, 5000))
    assert again.value.errno == errno.EALREADY
    settle(s)
    assert c.poll() == POLLOUT
    assert c.getsockopt(SOL_SOCKET, SO_ERROR) == 0
    with pytest.raises(OSError) as done:
        c.connect((B_IP, 5000))
    assert done.value.errno == errno.EISCONN


def test_nonblocking_connect_to_closed_port_sets_so_error_econnrefused() -> None:
    s, a, _b, _ = setup()
    c = a.socket()
    c.setblocking(False)
    assert c.connect_ex((B_IP, 4444)) == errno.EINPROGRESS
    settle(s)
    assert c.poll() & (POLLERR | POLLHUP) == POLLERR | POLLHUP
    assert c.getsockopt(SOL_SOCKET, SO_ERROR) == errno.ECONNREFUSED
    assert c.getsockopt(SOL_SOCKET, SO_ERROR) == 0  # reported once
    assert not c.poll() & POLLERR


def test_nonblocking_recv_send_accept_errno() -> None:
    s, a, b, _ = setup()
    srv, c, conn = nb_pair(s, a, b)
    with pytest.raises(BlockingIOError) as ei:
        conn.recv(10)
    assert ei.value.errno == errno.EAGAIN
    with pytest.raises(BlockingIOError):
        srv.accept()
    lone = a.socket()
    with pytest.raises(OSError) as nc:
        lone.send(b"x")
    assert nc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as nc2:
        lone.recv(1)
    assert nc2.value.errno == errno.ENOTCONN
    c.shutdown(SHUT_WR)
    with pytest.raises(BrokenPipeError) as ep:
        c.send(b"after shutdown")
    assert ep.value.errno == errno.EPIPE
    settle(s)
    assert conn.recv(10) == b""  # EOF is not an error
    c.close()
    with pytest.raises(OSError) as bad:
        c.recv(1)
    assert bad.value.errno == errno.EBADF


def test_send_until_eagain_then_pollout_returns_when_the_peer_reads() -> None:
    s, a, b, _ = setup()
    srv = b.socket()
    srv.set_options(rcvbuf=16384)  # children inherit the listener's options
    srv.bind(("", 5000))
    srv.listen()
    c = a.socket()
    c.setsockopt(SOL_SOCKET, SO_SNDBUF, 32768)
    c.connect((B_IP, 5000))
    c.setblocking(False)
    conn, _ = srv.accept()
    conn.setblocking(False)
    assert conn.tcb is not None and conn.tcb.conn.cfg.rcv_buf == 16384
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:
            sent += c.send(b"q" * 8192)
            settle(s, 1)
    assert 32768 + 16384 - 8192 <= sent <= 32768 + 16384  # our buffer plus the peer's window
    assert not c.poll(POLLOUT)
    assert c.wait(POLLOUT, timeout=0.5) == 0  # the peer does not read: no space comes back
    got = 0
    while got < sent:
        try:
            got += len(conn.recv(1 << 20))
        except BlockingIOError:
            settle(s, 1)
    assert c.wait(POLLOUT, timeout=1.0) & POLLOUT


def test_poll_readiness_through_the_connection_life() -> None:
    s, a, b, _ = setup()
    srv = b.listen(5000)
    assert srv.poll() == 0
    c = a.socket()
    c.setblocking(False)
    c.connect_ex((B_IP, 5000))
    settle(s)
    assert srv.poll() == POLLIN  # a connection is waiting to be accepted
    conn, _ = srv.accept()
    assert conn.poll() == POLLOUT and c.poll() == POLLOUT
    c.send(b"data")
    settle(s)
    assert conn.poll() == POLLIN | POLLOUT
    conn.recv(100)
    c.shutdown(SHUT_WR)
    settle(s)
    assert conn.poll() == POLLIN | POLLOUT | POLLRDHUP  # peer FIN: readable (EOF), write side open
    conn.shutdown(SHUT_WR)
    settle(s)
    assert conn.poll() & POLLHUP and c.poll() & POLLIN
    unconnected = a.socket()
    assert unconnected.poll() == POLLOUT | POLLHUP  # as Linux reports a fresh socket


def test_reset_is_reported_once_then_epipe() -> None:
    s, a, b, _ = setup()
    _, c, conn = nb_pair(s, a, b)
    conn.setsockopt(SOL_SOCKET, SO_LINGER, (1, 0))
    conn.close()
    settle(s)
    assert c.poll() & (POLLERR | POLLHUP | POLLIN) == POLLERR | POLLHUP | POLLIN
    with pytest.raises(ConnectionResetError) as ei:
        c.send(b"x")
    assert ei.value.errno == errno.ECONNRESET
    with pytest.raises(BrokenPipeError):
        c.send(b"x")
    assert c.recv(10) == b""


def test_close_with_unread_data_resets_the_peer() -> None:
    s, a, b, _ = setup()
    _, c, conn = nb_pair(s, a, b)
    c.send(b"never read")
    settle(s)
    conn.close()  # RFC 2525 2.17: unread data -> RST, not FIN
    settle(s)
    assert c.getsockopt(SOL_SOCKET, SO_ERROR) == errno.ECONNRESET


def test_blocking_recv_timeout_advances_the_simulated_clock() -> None:
    s, a, b, _ = setup()
    srv = b.listen(5000)
    c = a.socket()
    c.connect((B_IP, 5000))
    conn, _ = srv.accept()
    conn.settimeout(0.25)
    t0 = s.now
    with pytest.raises(TimeoutError):
        conn.recv(10)
    assert s.now - t0 == 250 * NS_PER_MS


def test_options_reach_the_engine_config() -> None:
    _s, a, b, _ = setup()
    srv = b.listen(5000)
    c = a.socket()
    c.set_options(nodelay=True, rcvbuf=50000, maxseg=1000)
    c.connect((B_IP, 5000))
    conn, _ = srv.accept()
    tcb = c.tcb
    assert tcb is not None
    assert not tcb.conn.cfg.nagle and tcb.conn.cfg.rcv_buf == 50000
    assert c.getsockopt(IPPROTO_TCP, TCP_NODELAY) == 1 and c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 50000
    # the MSS option we advertised bounds what the peer sends us
    assert conn.tcb is not None and conn.tcb.conn.peer_mss == 1000
    assert conn.getsockopt(IPPROTO_TCP, TCP_MAXSEG) == 1000 - 12
    with pytest.raises(OSError) as ei:
        c.setsockopt(SOL_SOCKET, 999, 1)
    assert ei.value.errno == errno.ENOPROTOOPT


def test_keepalive_detects_a_dead_peer() -> None:
    s, a, b, link = setup()
    srv = b.listen(5000)
    c = a.socket()
    c.connect((B_IP, 5000))
    srv.accept()
    c.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    c.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 10)
    c.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, 2)
    c.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, 3)
    settle(s, 15_000)
    assert c.tcb is not None and c.tcb.state.name == "Established"  # the live peer answered the probes
    link.set_up(False)  # type: ignore[attr-defined]
    t0 = s.now
    c.settimeout(60)
    with pytest.raises(TimeoutError) as ei:
        c.recv(1)
    assert ei.value.errno == errno.ETIMEDOUT
    assert 10 * NS_PER_S <= s.now - t0 <= 20 * NS_PER_S  # idle 10 s + 3 probes 2 s apart


def test_bind_conflicts_and_addresses() -> None:
    _s, a, b, _ = setup()
    b.listen(5000)
    s2 = b.socket()
    with pytest.raises(OSError) as ei:
        s2.bind(("", 5000))
    assert ei.value.errno == errno.EADDRINUSE
    s3 = b.socket()
    with pytest.raises(OSError) as na:
        s3.bind(("198.18.9.9", 1))
    assert na.value.errno == errno.EADDRNOTAVAIL
    c = a.socket()
    c.bind(("198.18.0.1", 40000))
    c.connect((B_IP, 5000))
    assert c.getsockname() == ("198.18.0.1", 40000)


def test_awaitable_forms_in_a_task() -> None:
    s, a, b, _ = setup()
    srv = b.listen(5000)

    async def scenario() -> tuple[bytes, str]:
        c = a.socket()
        await c.aconnect((B_IP, 5000))
        conn, _ = await srv.aaccept()
        await c.asendall(b"hello task")
        got = await conn.arecv(100)
        try:
            await conn.arecv(100, timeout_ns=50 * NS_PER_MS)
            timed_out = "no"
        except TimeoutError:
            timed_out = "yes"
        c.shutdown(SHUT_RDWR)
        assert await conn.await_poll(POLLRDHUP, timeout_ns=NS_PER_S) & POLLRDHUP
        return got, timed_out

    assert run_task(s, scenario()) == (b"hello task", "yes")


def test_ephemeral_ports_are_distinct_per_destination() -> None:
    s, a, b, _ = setup()
    b.listen(5000)
    socks = []
    for _ in range(20):
        c = a.socket()
        c.setblocking(False)
        c.connect_ex((B_IP, 5000))
        socks.append(c)
    settle(s)
    ports = {c.getsockname()[1] for c in socks}
    assert len(ports) == 20


def test_poll_sockets_waits_for_the_first_ready_socket() -> None:
    s, a, b, _ = setup()
    srv = b.listen(5000)
    c1, c2 = a.socket(), a.socket()
    c1.connect((B_IP, 5000))
    c2.connect((B_IP, 5000))
    (s1, _), (s2, _) = srv.accept(), srv.accept()
    t0 = s.now
    assert poll_sockets([(c1, POLLIN), (c2, POLLIN)], timeout=0.2) == []
    assert s.now - t0 == 200 * NS_PER_MS
    s.call_later(50 * NS_PER_MS, s2.send, b"hi")
    ready = poll_sockets([(c1, POLLIN), (c2, POLLIN)], timeout=1.0)
    assert ready == [(c2, POLLIN)]
    assert c2.recv(10) == b"hi" and s1.poll(POLLIN) == 0


def test_stack_conveniences_attach_and_default_route() -> None:
    s = SimScheduler(seed=9)
    from chimney.links.p2p import Link

    link = Link(s, "x")
    h = HostStack(s, "H")
    iface = h.attach(link.a)
    h.add_address("198.18.5.1/24")
    h.route_add("default", via="198.18.5.254")
    assert iface.name == "eth0" and iface.mac[0] & 0x02 and iface.ipv4[0].ip.packed == bytes([198, 18, 5, 1])
    p = h.ip.path(None, bytes([198, 19, 1, 1]))
    assert p is not None and p.next_hop == bytes([198, 18, 5, 254])
