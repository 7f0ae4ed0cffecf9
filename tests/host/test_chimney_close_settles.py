"""close() on a connection whose offload or upload is in flight: the host engine runs close() (not a
half-close) once the path settles; and `OffloadManager.declined` forgets connections that are over."""

from __future__ import annotations

import contextlib
from typing import Any

from hand_driven import HandDrivenConn

from chimney.host.chimney import Phase
from chimney.host.policy import OffloadPolicy, PolicyMode
from chimney.host.socket import IPPROTO_TCP, TCP_LINGER2
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState
from chimney.tcp import linux_profile

S = TcpConnectionState
PORT = 6201
WIRE = Impairments(rate_bps=1_000_000_000, delay_ns=400_000)


class Conn(HandDrivenConn):
    """Host A (Linux profile: data after close() resets) connected to B's listener, driven by hand."""

    def __init__(self, policy: OffloadPolicy) -> None:
        super().__init__(7, WIRE, PORT, policy)
        self.m = self.p.manager

    @property
    def tcb(self) -> Any:
        return self.tcb_a()

    def b_is_reset_by_data_after_close(self) -> bool:
        """B writes after A's close(): a Linux close() answers with a RST; a half-close takes the data."""
        assert self.sb.send(b"late") == 4
        self.run(20)
        try:
            self.sb.recv(100)
            self.sb.send(b"more")
            self.run(20)
            self.sb.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except BlockingIOError:
            return False
        return False


def linux_baseline() -> OffloadPolicy:
    """The target runs the Linux profile's settings; close() with rst_on_data_after_close has no chimney
    form (R-DISC-13), so the host must close such a connection itself."""
    return OffloadPolicy(PolicyMode.EXPLICIT, baseline=linux_profile())


def test_close_while_the_offload_is_in_flight_uploads_once_offloaded_and_the_host_engine_closes() -> None:
    """close() during OFFLOADING with rst_on_data_after_close: the upload follows the initiate
    completion (from _start_io) and the host engine closes; data after close() resets the connection."""
    c = Conn(linux_baseline())
    tcb = c.tcb
    assert c.m.offload(tcb) == 1
    cp = tcb.path
    assert cp.phase is Phase.OFFLOADING
    c.sa.close()
    assert cp.pending_close and not cp.shut_sent
    c.until(lambda: tcb.path.kind == "host" and not c.m.busy())
    assert c.m.history[-1][1:3] == ("upload", tcb) and c.m.history[-1][3].startswith("uncarried:")
    assert c.m.stats["uploads_uncarried"] == 1 and "rst_on_data_after_close" in c.m.declined[tcb]
    assert tcb.state in (S.FinWait1, S.FinWait2)
    assert c.b_is_reset_by_data_after_close()


def test_close_while_being_uploaded_runs_the_host_engines_close_not_a_half_close() -> None:
    """close() during TERMINATING: once the connection is back, the host engine closes it (data after
    close() resets, as a Linux close() does); before, the upload replayed a shutdown()."""
    c = Conn(OffloadPolicy.explicit())
    tcb = c.tcb
    assert c.m.offload(tcb) == 1
    c.until(lambda: c.m.is_offloaded(tcb) and not c.m.busy())
    assert c.m.upload(tcb) == 1
    cp = tcb.path
    assert cp.phase is Phase.TERMINATING
    c.sa.close()
    assert cp.pending_close and not cp.pending_shutdown
    c.until(lambda: tcb.path.kind == "host" and not c.m.busy())
    assert tcb.state in (S.FinWait1, S.FinWait2)
    assert c.b_is_reset_by_data_after_close()


def test_close_with_rst_on_data_after_close_while_being_uploaded_is_not_counted_as_an_upload() -> None:
    c = Conn(linux_baseline())
    tcb = c.tcb
    assert c.m.offload(tcb) == 1
    c.until(lambda: c.m.is_offloaded(tcb) and not c.m.busy())
    assert c.m.upload(tcb) == 1
    c.sa.close()
    c.until(lambda: tcb.path.kind == "host" and not c.m.busy())
    assert c.m.stats["uploads_uncarried"] == 0 and c.m.stats["uploads_done"] == 1
    assert c.b_is_reset_by_data_after_close()


def test_close_of_an_offloaded_connection_without_a_baseline_stays_a_graceful_chimney_disconnect() -> None:
    """Without a baseline the target's close is trusted: close() is TCP_DISCONNECT_GRACEFUL_CLOSE."""
    c = Conn(OffloadPolicy.explicit())
    tcb = c.tcb
    assert c.m.offload(tcb) == 1
    c.until(lambda: c.m.is_offloaded(tcb) and not c.m.busy())
    cp = tcb.path
    c.sa.close()
    assert cp.shut_sent and not cp.aborted and c.m.is_offloaded(tcb)
    c.run(5)
    assert c.sb.recv(100) == b""


def test_declined_forgets_a_connection_once_it_closed() -> None:
    """A connection kept on the host (a setting the chimney cannot carry) is listed in `declined` while it
    lives; once it closed the manager's gc drops it, with no other connection declined meanwhile."""
    c = Conn(OffloadPolicy(PolicyMode.EXPLICIT, baseline=linux_profile()))
    tcb = c.tcb
    c.sa.setsockopt(IPPROTO_TCP, TCP_LINGER2, 5)
    assert c.m.offload(tcb) == 0 and tcb in c.m.declined
    c.sb.close()  # B closes first: A ends in LAST_ACK, not TIME_WAIT
    c.until(lambda: tcb.state is S.CloseWait)
    c.sa.close()
    c.until(lambda: tcb.closed)
    assert tcb in c.m.declined  # nothing ran the gc yet
    # Any later hand-over runs the gc: here a second connection is offloaded.
    other = _second_connection(c)
    assert c.m.offload(other) == 1
    c.until(lambda: c.m.is_offloaded(other) and not c.m.busy())
    c.run(1)
    assert tcb not in c.m.declined and c.m.declined == {}


def test_declined_forgets_a_connection_closed_after_close_was_uploaded_for() -> None:
    """close() with rst_on_data_after_close records the reason; after the connection is over (the host
    engine closed it), the next gc pass of the manager drops the entry."""
    c = Conn(linux_baseline())
    tcb = c.tcb
    assert c.m.offload(tcb) == 1
    c.until(lambda: c.m.is_offloaded(tcb) and not c.m.busy())
    c.sa.close()
    assert tcb in c.m.declined
    c.sb.close()
    c.until(lambda: tcb.closed, 200)
    other = _second_connection(c)
    assert c.m.offload(other) == 1
    c.until(lambda: c.m.is_offloaded(other) and not c.m.busy())
    c.run(1)
    assert c.m.declined == {}


def _second_connection(c: Conn) -> Any:
    lst = c.p.host_b.listen(PORT + 1)
    lst.setblocking(False)
    s = c.p.host_a.socket()
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("198.18.0.2", PORT + 1))
    c.until(lambda: any(t.remote_port == PORT + 1 and t.state is S.Established
                        for t in c.p.host_a.tcp.connections()))
    c.run(2)
    return next(t for t in c.p.host_a.tcp.connections() if t.remote_port == PORT + 1)
