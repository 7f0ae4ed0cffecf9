"""Host-side chimney fixes found by the packetdrill suite: abortive close with unread data (RFC 1122
4.2.2.13, R-DISC-02), keepalive surviving the upload replay, delayed-ACK parameters from TcpConfig
(R-INIT-12), POLLRDHUP at the FIN, and unread data held at the target (R-IND-05/06/08/10)."""

from __future__ import annotations

from hand_driven import HandDrivenConn

from chimney.host.ndis_binding import NdisHostBinding, offload_parameters
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import (
    IPPROTO_TCP,
    POLLIN,
    POLLRDHUP,
    SO_KEEPALIVE,
    SOL_SOCKET,
    TCP_KEEPIDLE,
)
from chimney.host.stack import HostStack
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.tcp import TcpConfig, linux_profile

S = TcpConnectionState
PORT = 6101
WIRE = Impairments(rate_bps=1_000_000_000, delay_ns=400_000)
DATA = bytes(range(251)) * 1600  # 401,600 bytes: more than A's 256 KiB receive buffer


class Conn(HandDrivenConn):
    """A (offload pair host) connected to B's listener, driven by hand through non-blocking sockets."""

    def __init__(self, hold_unread_at_target: bool = False) -> None:
        super().__init__(5, WIRE, PORT, OffloadPolicy.explicit())
        self.p.manager.hold_unread_at_target = hold_unread_at_target

    def offload_a(self) -> None:
        tcb = self.tcb_a()
        assert self.p.manager.offload(tcb) == 1
        self.until(lambda: self.p.manager.is_offloaded(tcb))

    def send_b(self, data: bytes) -> int:
        try:
            return self.sb.send(data)
        except BlockingIOError:
            return 0

    def read_a(self, until_bytes: int, limit_s: float = 30) -> bytes:
        got = bytearray()
        deadline = self.sched.now + int(limit_s * NS_PER_S)
        while len(got) < until_bytes and self.sched.now < deadline:
            try:
                chunk = self.sa.recv(65536)
            except BlockingIOError:
                self.run(1)
                continue
            assert chunk, "EOF before all data arrived"
            got += chunk
        return bytes(got)


def test_close_with_unread_data_on_an_offloaded_connection_resets() -> None:
    """RFC 1122 4.2.2.13: close() with unread data -> TCP_DISCONNECT_ABORTIVE_CLOSE (R-DISC-02), the peer
    sees a RST (ECONNRESET), not a FIN."""
    c = Conn()
    c.offload_a()
    assert c.send_b(b"x" * 100) == 100
    c.until(lambda: c.sa.poll(POLLIN) & POLLIN)
    cp = c.tcb_a().path
    c.sa.close()
    assert cp.aborted
    c.run(5)
    try:
        c.sb.recv(100)
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("B was not reset")


def test_close_after_reading_everything_is_graceful() -> None:
    c = Conn()
    c.offload_a()
    assert c.send_b(b"y" * 100) == 100
    assert c.read_a(100) == b"y" * 100
    cp = c.tcb_a().path
    c.sa.close()
    assert not cp.aborted and cp.shut_sent
    c.run(5)
    assert c.sb.recv(100) == b""  # FIN: end of stream


def test_keepalive_deadline_survives_the_upload_replay() -> None:
    """R-TMR-09 / R-TRM-25: the keepalive deadline handed back at upload is kept; replaying the option set
    while offloaded does not re-arm it from the upload instant."""
    c = Conn()
    c.offload_a()
    c.sa.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    c.sa.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 10)
    armed_at = c.sched.now
    c.until(lambda: not c.p.manager.busy())
    c.run(4000)
    tcb = c.tcb_a()
    assert c.p.manager.upload(tcb) == 1
    c.until(lambda: tcb.path.kind == "host")
    deadline = tcb.conn._ka_deadline
    assert deadline is not None
    # Within the tick/ACK slack of the 10 s armed while offloaded; a replay would give upload time + 10 s.
    assert abs(deadline - (armed_at + 10 * NS_PER_S)) < 100 * NS_PER_MS, (deadline - armed_at) / NS_PER_S


def test_offload_parameters_carry_the_stacks_delayed_ack() -> None:
    """R-INIT-12: TcpDelayedAckTicks / TcpAckFrequency come from TcpConfig, in the adapter's ticks."""
    lp = offload_parameters(linux_profile())
    assert (lp.tcp_delayed_ack_ticks, lp.tcp_ack_frequency, lp.ticks_per_second) == (40, 2, 1000)
    assert offload_parameters(TcpConfig(), ticks_per_second=100).tcp_delayed_ack_ticks == 20
    assert offload_parameters(TcpConfig(delack_timeout_ns=1_500_000)).tcp_delayed_ack_ticks == 2  # rounded up
    off = offload_parameters(TcpConfig(delayed_ack=False))
    assert (off.tcp_delayed_ack_ticks, off.tcp_ack_frequency) == (0, 1)
    big = offload_parameters(TcpConfig(delack_timeout_ns=400 * NS_PER_MS, ack_frequency=1000))
    assert (big.tcp_delayed_ack_ticks, big.tcp_ack_frequency) == (255, 255)  # UCHAR fields


def test_binding_defaults_its_parameters_from_the_stack() -> None:
    stack = HostStack(SimScheduler(1), "L", tcp_config=linux_profile())
    assert NdisHostBinding(stack).params.tcp_delayed_ack_ticks == 40


def test_pollrdhup_as_soon_as_the_fin_is_processed() -> None:
    """Linux tcp_poll: POLLIN|POLLRDHUP once the FIN is processed, while data before it is still unread."""
    c = Conn()  # not offloaded: the host engine
    assert c.send_b(b"z" * 10) == 10
    c.sb.shutdown(1)
    c.until(lambda: c.tcb_a().state is S.CloseWait)
    assert c.sa.poll(POLLIN | POLLRDHUP) == POLLIN | POLLRDHUP
    assert c.sa.recv(100) == b"z" * 10
    assert c.sa.recv(100) == b""


def test_unread_data_held_at_the_target_closes_its_window() -> None:
    """hold_unread_at_target: indications are refused (R-IND-05/06) until recv(), which re-enables them with a
    zero-byte receive (R-IND-08/10); the target buffers what A has not read, so B is flow-controlled by
    A's receive buffer alone, and every byte still arrives in order."""
    c = Conn(hold_unread_at_target=True)
    c.offload_a()
    sent = 0
    for _ in range(200):
        sent += c.send_b(DATA[sent:])
        c.run(2)
    cp = c.tcb_a().path
    m = c.p.manager
    assert sent < len(DATA)  # B stalled on A's closed window
    assert cp.rx_size == 0 and cp.readable > 0 and m.stats["ind_refused"] >= 1
    got = bytearray()
    while len(got) < len(DATA):
        sent += c.send_b(DATA[sent:])
        got += c.read_a(min(len(DATA), len(got) + 1))
    assert bytes(got) == DATA
    assert m.stats["zero_posts"] >= 1
    c.sb.close()
    c.until(lambda: c.sa.poll(POLLRDHUP) & POLLRDHUP)
    assert c.sa.recv(10) == b""
