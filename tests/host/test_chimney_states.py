"""Offload and upload in every offloadable TCP state (R-OFF-24), refusal outside them, and the delegated
timers and timestamps surviving the round trip (R-TMR-07/08/15/19, R-TS-04). Verifier STRICT throughout."""

from __future__ import annotations

import contextlib

import pytest
from hand_driven import HandDrivenConn

from chimney.host.policy import OffloadPolicy
from chimney.host.socket import IPPROTO_TCP, SO_KEEPALIVE, SOL_SOCKET, TCP_KEEPIDLE, Socket
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState
from chimney.sim.scheduler import NS_PER_MS

S = TcpConnectionState
PORT = 6001
DELAY_NS = 400_000  # one-way: a state that lasts one RTT lasts 0.8 ms
WIRE = Impairments(rate_bps=1_000_000_000, delay_ns=DELAY_NS)


class Conn(HandDrivenConn):
    """One connection A <-> B over the offload pair, driven by hand through non-blocking sockets."""

    def __init__(self) -> None:
        super().__init__(3, WIRE, PORT, OffloadPolicy.explicit())
        self.got_a = bytearray()
        self.got_b = bytearray()

    def push(self, sock: Socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                self.run(1)
                self.drain()

    def drain(self) -> None:
        for sock, buf in ((self.sa, self.got_a), (self.sb, self.got_b)):
            while True:
                try:
                    chunk = sock.recv(1 << 20)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                buf += chunk

    def offload(self, tcb: Tcb) -> None:
        assert self.p.manager.offload(tcb) == 1
        self.until(lambda: not self.p.manager.busy() or self.p.manager.is_offloaded(tcb))
        assert self.p.manager.is_offloaded(tcb), self.p.manager.initiate_results

    def finish(self) -> None:
        """Both sides read to EOF; A's TIME-WAIT (or close) runs in the host; nothing is left over."""
        def done() -> bool:
            self.drain()
            t = self.tcb_a()
            return t is None or (t.path.kind == "host" and t.state in (S.TimeWait, S.Closed))

        self.until(done, 60)
        self.sa.close()
        self.sb.close()
        m = self.p.manager
        self.until(lambda: not m.busy() and not m.paths and not self.p.binding.tx_outstanding, 60)
        assert m.stats["send_completed_out_of_order"] == 0 and m.stats["send_completed_unknown"] == 0
        assert m.leaks() == []
        self.p.ndis.halt_adapter(self.p.ndis.adapters[0])
        assert self.p.ndis.leak_report().strip() == "no live NBLs (all owners)"


FIN_SENT = (S.FinWait1, S.Closing, S.LastAck)
DATA_A = bytes(range(251)) * 400  # 100 KB, not a multiple of anything relevant
DATA_B = bytes(range(241)) * 300


def reach(c: Conn, state: TcpConnectionState) -> None:
    """Bring A's side of the connection into `state` (data exchanged first, so buffers are not empty)."""
    c.push(c.sa, DATA_A[:50_000])
    c.push(c.sb, DATA_B[:30_000])
    c.run(5)
    if state is S.Established:
        return
    if state is S.FinWait1:
        c.push(c.sa, DATA_A[50_000:])
        c.sa.shutdown(1)  # FIN queued behind unacknowledged data
    elif state is S.FinWait2:
        c.sa.shutdown(1)
        c.until(lambda: c.tcb_a().state is S.FinWait2)
    elif state is S.CloseWait:
        c.sb.shutdown(1)
        c.until(lambda: c.tcb_a().state is S.CloseWait)
    elif state is S.LastAck:
        c.sb.shutdown(1)
        c.until(lambda: c.tcb_a().state is S.CloseWait)
        c.sa.shutdown(1)
    elif state is S.Closing:
        c.sa.shutdown(1)
        c.sb.shutdown(1)
        c.until(lambda: c.tcb_a().state is not S.FinWait1, 1)  # both FINs cross on the wire
    assert c.tcb_a().state is state


@pytest.mark.parametrize("upload_at_once", [False, True], ids=["offloaded-to-the-end", "uploaded-in-state"])
@pytest.mark.parametrize(
    "state", [S.Established, S.FinWait1, S.FinWait2, S.CloseWait, S.Closing, S.LastAck], ids=lambda s: s.name
)
def test_offload_in_each_offloadable_state_and_finish_cleanly(state: TcpConnectionState, upload_at_once: bool) -> None:
    """R-OFF-24: every offloadable state offloads; uploading right away resumes the host in the same state
    (the delegated State field round trip); either way every byte arrives and the close completes."""
    c = Conn()
    reach(c, state)
    tcb = c.tcb_a()
    m = c.p.manager
    assert m.offload(tcb) == 1
    c.until(lambda: not m.busy() or m.is_offloaded(tcb))
    if state in FIN_SENT and m.initiate_results == {"FAILURE": 1}:
        # Known target defect (reported): with our FIN already sent, SndMax - SndUna counts the FIN's
        # sequence number, and the target fails the node because the NBL data is one byte "short".
        # The host must then carry on by itself (§5.2): the rest of the test checks exactly that.
        assert tcb.path.kind == "host" and m.stats["initiate_tcp_failed"] == 1
        upload_at_once = False
    else:
        assert m.is_offloaded(tcb), m.initiate_results
    if upload_at_once:
        assert c.p.manager.upload(tcb) == 1
        c.until(lambda: tcb.path.kind == "host")
        uploads = [h for h in c.p.manager.history if h[1] == "upload"]
        assert uploads[0][3] == f"explicit:{state.name}"
    # Whatever is left of the exchange, then the close from the side that has not closed yet.
    if state in (S.Established, S.CloseWait):
        c.push(c.sa, DATA_A[50_000:])
    if state in (S.Established, S.FinWait1, S.FinWait2):
        c.push(c.sb, DATA_B[30_000:])
    if state in (S.Established, S.CloseWait):
        c.sa.shutdown(1)
    if state in (S.Established, S.FinWait1, S.FinWait2):
        c.run(5)
        c.sb.shutdown(1)
    c.finish()
    expect_b = DATA_B if state in (S.Established, S.FinWait1, S.FinWait2) else DATA_B[:30_000]
    expect_a = DATA_A if state in (S.Established, S.FinWait1, S.CloseWait) else DATA_A[:50_000]
    assert bytes(c.got_a) == expect_b
    assert bytes(c.got_b) == expect_a


def test_no_offload_outside_offloadable_states() -> None:
    """R-OFF-24: SynSent and TimeWait connections are never put in an initiate tree."""
    c = Conn()
    c.sa.shutdown(1)
    c.sb.shutdown(1)
    c.until(lambda: c.tcb_a().state is S.TimeWait)
    assert c.p.manager.offload(c.tcb_a()) == 0
    s = c.p.host_a.socket()
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("198.18.0.2", PORT + 1))  # nobody listens: SYN_SENT for one RTT
    syn = [t for t in c.p.host_a.tcp.connections() if t.remote_port == PORT + 1]
    assert syn and syn[0].state is S.SynSent
    assert c.p.manager.offload(syn[0]) == 0
    assert c.p.manager.stats["initiates"] == 0


def _within_tick(a: int | None, b: int | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= NS_PER_MS  # TicksPerSecond 1000


def test_fin_wait_2_timer_continues_from_delegated_delta() -> None:
    """R-TMR-07: offloaded in FIN_WAIT_2 and uploaded later, the FIN_WAIT_2 deadline is where it was."""
    c = Conn()
    c.sa.close()  # orphaned: the FIN_WAIT_2 timer runs (as Linux tcp_fin_timeout)
    c.until(lambda: c.tcb_a().state is S.FinWait2)
    tcb = c.tcb_a()
    deadline = tcb.conn._rtx_deadline
    assert deadline is not None
    c.offload(tcb)
    c.run(700)
    c.p.manager.upload(tcb)
    c.until(lambda: tcb.path.kind == "host")
    assert tcb.state is S.FinWait2
    assert _within_tick(tcb.conn._rtx_deadline, deadline)
    c.sb.shutdown(1)
    c.until(lambda: c.tcb_a() is None or c.tcb_a().state is S.TimeWait)
    c.finish()


def test_keepalive_and_timestamps_continue_across_offload_and_upload() -> None:
    """R-TMR-08: the keepalive deadline survives; R-TS-04: TSval after the upload continues from the
    target's clock, so it never goes backwards."""
    c = Conn()
    c.sa.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    c.sa.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 5)
    c.run(1)
    tcb = c.tcb_a()
    ka = tcb.conn._ka_deadline
    assert ka is not None
    assert tcb.conn.ts_ok
    t0 = c.sched.now
    ts0 = tcb.conn.ts_now(t0)
    c.offload(tcb)
    c.run(1500)
    c.p.manager.upload(tcb)
    c.until(lambda: tcb.path.kind == "host")
    t1 = c.sched.now
    assert _within_tick(tcb.conn._ka_deadline, ka)
    elapsed_ticks = (t1 - t0) // NS_PER_MS
    assert tcb.conn.ts_now(t1) - ts0 >= elapsed_ticks - 1
    c.sa.shutdown(1)
    c.sb.shutdown(1)
    c.finish()


def test_retransmit_timer_continues_when_uploaded_with_data_in_flight() -> None:
    """R-TMR-19: data in flight at offload keeps its retransmission deadline through the round trip."""
    c = Conn()
    c.push(c.sa, DATA_A[:20_000])
    tcb = c.tcb_a()
    rtx = tcb.conn._rtx_deadline
    assert rtx is not None and tcb.conn.snd_max > tcb.conn.snd_una
    c.offload(tcb)
    c.p.manager.upload(tcb)
    c.until(lambda: tcb.path.kind == "host")
    if tcb.conn.snd_max > tcb.conn.snd_una:
        assert _within_tick(tcb.conn._rtx_deadline, rtx)
    c.push(c.sa, DATA_A[20_000:])
    c.sa.shutdown(1)
    c.run(5)
    c.sb.shutdown(1)
    c.finish()
    assert bytes(c.got_b) == DATA_A


@pytest.mark.parametrize("closer", ["active", "passive"])
def test_upload_right_after_a_chimney_disconnect_resumes_with_our_fin(closer: str) -> None:
    """Shutdown through NdisOffloadTcpDisconnect, then upload at once: the host resumes in FinWait1 (active)
    or LastAck (passive) with the FIN in the returned state, or redoes a disconnect the target refused."""
    c = Conn()
    reach(c, S.Established if closer == "active" else S.CloseWait)
    tcb = c.tcb_a()
    c.offload(tcb)
    c.run(1)
    c.sa.shutdown(1)
    assert c.p.manager.stats["disconnects_indicated"] <= 1
    c.p.manager.upload(tcb)
    c.until(lambda: tcb.path.kind == "host")
    upload = next(h for h in c.p.manager.history if h[1] == "upload")
    expected = {"active": S.FinWait1, "passive": S.LastAck}[closer]
    assert upload[3] == f"explicit:{expected.name}"
    assert tcb.state is expected
    if closer == "active":
        c.run(5)
        c.push(c.sb, DATA_B[30_000:])
        c.sb.shutdown(1)
    c.finish()
    assert bytes(c.got_b) == DATA_A[:50_000]
    assert bytes(c.got_a) == (DATA_B if closer == "active" else DATA_B[:30_000])
