"""TCP events and target-driven uploads: RST -> abort with outstanding I/O aborted (R-EVT-02/03), FIN ->
disconnect only after the data before it was consumed (R-EVT-01), TIME_WAIT -> retrieve (R-TMR-03),
retransmission limit -> retrieve without an RST (R-TMR-14/18, R-DISC-03), disconnects, resource-driven
upload (R-OFF-27/28) and the NIC hardware reset asking for NDIS_STATUS_UPLOAD_ALL with nothing lost."""

from __future__ import annotations

from target_harness import Rig, nbls_of, pattern, sha

from chimney.ndis.blocklist import ProtocolOffloadBlockList
from chimney.ndis.buffers import NetBufferList, nbl_from_bytes
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    OffloadStateType,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.status import NdisStatus
from chimney.net.tcp import RST

ABORT = TcpOffloadEventType.TcpIndicateAbort
DISCONNECT = TcpOffloadEventType.TcpIndicateDisconnect
RETRIEVE = TcpOffloadEventType.TcpIndicateRetrieve


def test_rst_aborts_outstanding_sends_then_indicates_abort_r_evt_02_03() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    held: list[bytes] = []
    rig.link.b.set_receiver(held.append)  # nothing gets acknowledged
    nbls = rig.send(pattern(30_000, 1), pieces=3)
    rig.run(20)
    rig.link.b.set_receiver(rig.peer.on_frame)
    rig.peer_conn.abort(rig.sched.now)  # RST with seq == the target's RcvNxt (acceptable)
    rig.peer.pump()
    rig.run(until=lambda: (ABORT, 0) in rig.host.events)
    assert [n for n, _, _ in rig.host.send_done] == nbls
    assert all(st == NdisStatus.REQUEST_ABORTED and k == 0 for _, st, k in rig.host.send_done)
    last_send = max(i for i, e in enumerate(rig.host.log) if e.startswith("send_complete"))
    assert last_send < rig.host.log.index(f"event {int(ABORT)} 0")
    # Later I/O on the aborted connection is refused; the host then terminates it (state CLOSED).
    late = rig.send(b"late")
    rig.run(1)
    assert rig.host.send_done[-1][:2] == (late[0], NdisStatus.REQUEST_ABORTED)
    tree = rig.terminate()
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    assert t.status == NdisStatus.SUCCESS and t.state[0].state == TcpConnectionState.Closed
    assert t.net_buffer_list_chain is None  # R-TRM-14


def test_fin_indicates_disconnect_only_after_data_consumed_r_evt_01() -> None:
    """Then R-RECV-11: a receive request posted after TcpIndicateDisconnect completes with INVALID_STATE."""
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    data = pattern(3000, 2)
    rig.peer.send_stream(data, shutdown=True)
    rig.run(50)
    assert DISCONNECT not in [e for e, _ in rig.host.events]  # the data before the FIN is not consumed
    rig.host.policy = lambda n: (NdisStatus.SUCCESS, n)
    assert rig.ndis.offload_tcp_receive(rig.tcp_handle, nbl_from_bytes(b"", rig.host.name)) == NdisStatus.PENDING
    rig.run(until=lambda: (DISCONNECT, 0) in rig.host.events)
    assert bytes(rig.host.received) == data
    last_ind = max(i for i, e in enumerate(rig.host.log) if e.startswith("indicate") and e.endswith(f"-> {len(data)}"))
    assert last_ind < rig.host.log.index(f"event {int(DISCONNECT)} 0")
    # R-RECV-11: receives posted after the disconnect indication complete with INVALID_STATE.
    post = nbl_from_bytes(bytearray(10), rig.host.name)
    rig.ndis.offload_tcp_receive(rig.tcp_handle, post)
    rig.run(1)
    assert rig.host.recv_done[-1][:2] == (post, NdisStatus.INVALID_STATE)


def test_graceful_disconnect_then_peer_fin_time_wait_requests_upload_r_tmr_03() -> None:
    """R-DISC-09: a graceful disconnect whose user data and FIN the peer acknowledged completes SUCCESS."""
    rig = Rig()
    rig.connect()
    rig.offload()
    final = pattern(2500, 3)
    disc = nbl_from_bytes(final, rig.host.name)
    assert rig.ndis.offload_tcp_disconnect(rig.tcp_handle, disc, TCP_DISCONNECT_GRACEFUL_CLOSE) == NdisStatus.PENDING
    rig.run(until=lambda: bool(rig.host.disc_done))
    assert rig.host.disc_done == [(disc, NdisStatus.SUCCESS, len(final))]  # R-DISC-09/10: FIN + data acked
    assert bytes(rig.peer.received) == final
    rig.peer.send_stream(b"", shutdown=True)
    rig.peer_conn.shutdown(rig.sched.now)
    rig.peer.pump()
    rig.run(until=lambda: (RETRIEVE, TcpUploadReason.UploadRequested) in rig.host.events)
    tree = rig.terminate()
    dlg = tree.dependent_block_list.dependent_block_list.state[0]  # type: ignore[union-attr]
    assert dlg.state == TcpConnectionState.TimeWait  # the host runs 2MSL (§6.31)


def test_abortive_disconnect_sends_rst_and_aborts_sends_r_disc_04_06() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    held: list[bytes] = []
    rig.link.b.set_receiver(held.append)
    nbls = rig.send(pattern(10_000, 4), pieces=2)
    rig.run(5)
    disc = nbl_from_bytes(b"", rig.host.name)
    rig.ndis.offload_tcp_disconnect(rig.tcp_handle, disc, TCP_DISCONNECT_ABORTIVE_CLOSE)
    rig.run(1)
    assert [(n, st) for n, st, _ in rig.host.send_done] == [(n, NdisStatus.REQUEST_ABORTED) for n in nbls]
    assert rig.host.disc_done == [(disc, NdisStatus.SUCCESS, 0)]
    assert rig.host.log.index(f"send_complete {NdisStatus.REQUEST_ABORTED:#x}") < rig.host.log.index(
        f"disconnect_complete {0:#x}"
    )
    from chimney.net.frame import parse_frame

    assert parse_frame(held[-1]).tcp.flags & RST  # type: ignore[union-attr]


def test_retransmission_limit_requests_upload_without_rst_r_tmr_14_18_disc_03() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    frames: list[bytes] = []
    rig.link.b.set_receiver(frames.append)  # the peer is gone
    rig.send(pattern(1000, 5))
    rig.run(until=lambda: (RETRIEVE, TcpUploadReason.TimeoutExpiration) in rig.host.events)
    from chimney.net.frame import parse_frame

    segs = [parse_frame(f).tcp for f in frames]
    assert len(segs) == 1 + 5  # first transmission + TcpMaximumRetransmissions (5) retransmissions
    assert not any(s.flags & RST for s in segs)  # type: ignore[union-attr]
    assert rig.target.counters["rst_suppressed"] >= 0
    tree = rig.terminate()
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    assert t.status == NdisStatus.SUCCESS
    assert sum(n.data_length() for n in nbls_of(t.net_buffer_list_chain)) == 1000  # nothing acked, all back


def test_target_requested_upload_completes_new_io_upload_in_progress_r_off_27_28() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    first = pattern(4000, 6)
    rig.send(first)
    ctx = next(iter(rig.target.tcps.values()))
    rig.target.request_upload(ctx)
    assert rig.host.events[-1] == (RETRIEVE, TcpUploadReason.UploadRequested)
    late = rig.send(pattern(100, 7))
    rig.run(20)
    assert (late[0], NdisStatus.UPLOAD_IN_PROGRESS, 0) in rig.host.send_done
    tree = rig.terminate()
    conn = rig.resume(tree)
    conn.send(pattern(100, 7), rig.sched.now)  # the host re-sends what it got back as "upload in progress"
    rig.host.pump()
    rig.run(until=lambda: len(rig.peer.received) == 4100)
    assert bytes(rig.peer.received) == first + pattern(100, 7)


def test_hardware_reset_asks_upload_all_and_loses_nothing() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    up = pattern(120_000, 8)
    down = pattern(90_000, 9)
    rig.send(up, pieces=12)
    rig.peer.send_stream(down)
    rig.run(2)
    rig.target.hardware_reset()
    assert [i.status_code for i in rig.host.status] == [NdisStatus.UPLOAD_ALL]
    late = rig.send(b"during upload-all")
    rig.run(1)
    assert (late[0], NdisStatus.UPLOAD_IN_PROGRESS, 0) in rig.host.send_done  # R-SEND-14, never PAUSED
    tree = rig.terminate()
    assert not rig.target.upload_all_pending and not rig.target.tcps and not rig.target.neighbors
    conn = rig.resume(tree)
    conn.send(b"during upload-all", rig.sched.now)
    rig.host.pump()
    rig.run(until=lambda: len(rig.peer.received) == len(up) + 17 and len(rig.host.received) == len(down))
    assert sha(rig.peer.received) == sha(up + b"during upload-all")
    assert sha(rig.host.received) == sha(down)


def test_upload_in_close_wait_hands_back_undelivered_data_and_fin() -> None:
    """Peer data + FIN arrive while the host refuses indications: the upload returns state CloseWait with
    the data as BufferedData, and the host's fresh connection reads it and then sees the FIN."""
    from chimney.tcp import PeerClosed

    rig = Rig()
    rig.connect()
    rig.offload()
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    data = pattern(20_000, 5)
    rig.peer.send_stream(data, shutdown=True)
    rig.run(50)
    assert DISCONNECT not in [e for e, _ in rig.host.events]
    tree = rig.terminate()
    dlg = tree.dependent_block_list.dependent_block_list.state[0]  # type: ignore[union-attr]
    assert dlg.state == TcpConnectionState.CloseWait
    assert dlg.buffered_data is not None and dlg.buffered_data.data_length() == len(data)
    conn = rig.resume(tree)
    assert bytes(rig.host.received) == data
    assert PeerClosed() in conn.pop_events()
    conn.shutdown(rig.sched.now)  # the host closes its side over the normal path
    rig.host.pump()
    rig.run(until=lambda: rig.peer_conn.state.name in ("TimeWait", "Closed"))


def test_sends_after_graceful_disconnect_fail_whole_chain() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.ndis.offload_tcp_disconnect(rig.tcp_handle, nbl_from_bytes(b"", rig.host.name), TCP_DISCONNECT_GRACEFUL_CLOSE)
    rig.run(5)
    late = rig.send(pattern(300, 1), pieces=3)
    rig.run(1)
    done = [(n, st) for n, st, _ in rig.host.send_done]
    assert done == [(n, NdisStatus.INVALID_STATE) for n in late]  # never sent, none lost (R-SEND-06)


def test_fin_wait_2_timer_started_by_target_requests_upload_r_tmr_05_06_24() -> None:
    """After a graceful disconnect the target starts the FIN_WAIT_2 timer itself at 120 s (R-TMR-05);
    a segment from the peer restarts it (R-TMR-23); expiry closes the TCB (R-TMR-24) and asks for the
    upload with TimeoutExpiration (R-TMR-06)."""
    rig = Rig()
    rig.connect()
    rig.offload()
    disc = nbl_from_bytes(b"bye", rig.host.name)
    assert rig.ndis.offload_tcp_disconnect(rig.tcp_handle, disc, TCP_DISCONNECT_GRACEFUL_CLOSE) == NdisStatus.PENDING
    rig.run(until=lambda: bool(rig.host.disc_done))
    rig.run(1)
    ctx = next(iter(rig.target.tcps.values()))
    assert ctx.conn.state == TcpConnectionState.FinWait2
    started = rig.sched.now
    assert ctx.conn.next_deadline() is not None
    rig.run(60_000)
    rig.peer.send_stream(b"still talking")  # the peer half is open: data restarts the timer
    rig.run(70_000)
    assert RETRIEVE not in [e for e, _ in rig.host.events]  # 130 s after the start, but 70 s after the data
    assert ctx.conn.state == TcpConnectionState.FinWait2
    rig.run(started / 1e6 + 180_001 - rig.sched.now / 1e6)  # 120 s after the peer's data
    assert rig.host.events[-1] == (RETRIEVE, TcpUploadReason.TimeoutExpiration)
    assert ctx.conn.state == TcpConnectionState.Closed


def _stalled_sends(rig: Rig) -> list[NetBufferList]:
    """Offloaded connection with a send the peer never acknowledges (still outstanding)."""
    rig.connect()
    rig.offload()
    rig.link.b.set_receiver(lambda frame: None)
    nbls = rig.send(pattern(4000, 6), pieces=2)
    rig.run(5)
    assert rig.host.send_done == []
    return nbls


def test_hardware_failure_on_query_r_qry_09() -> None:
    """Query FAILURE, then Retrieve/HardwareFailure, then Abort; the outstanding sends are aborted only when
    the terminate arrives, before its completion."""
    rig = Rig()
    nbls = _stalled_sends(rig)
    rig.target.hardware_failure()
    assert rig.handles is not None
    q = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, rig.handles[2], [TcpOffloadStateDelegated()])
    rig.ndis.query_offload_state(rig.binding, q)
    rig.run(until=lambda: bool(rig.host.completions["query"]))
    assert q.status == NdisStatus.FAILURE
    log = rig.host.log
    i_q = log.index("query_complete")
    assert log[i_q + 1 : i_q + 3] == [f"event {int(RETRIEVE)} {int(TcpUploadReason.HardwareFailure)}", f"event {int(ABORT)} 0"]
    rig.run(100)
    assert rig.host.send_done == []  # step 4 waits for the terminate
    tree = rig.terminate()
    assert [(n, st) for n, st, _ in rig.host.send_done] == [(n, NdisStatus.REQUEST_ABORTED) for n in nbls]
    assert log.index(f"send_complete {NdisStatus.REQUEST_ABORTED:#x}") < log.index("terminate_complete")
    assert tree.dependent_block_list.dependent_block_list.status == NdisStatus.FAILURE  # type: ignore[union-attr]
    assert rig.target.tcps == {}


def test_hardware_failure_during_terminate_r_trm_27_section_6_32() -> None:
    rig = Rig()
    nbls = _stalled_sends(rig)
    rig.target.hardware_failure()
    tree = rig.terminate()
    log = rig.host.log
    assert [(n, st) for n, st, _ in rig.host.send_done] == [(n, NdisStatus.REQUEST_ABORTED) for n in nbls]
    # The R-QRY-09 order: Retrieve/HardwareFailure and Abort first, then the aborted I/O, then the completion.
    i_retrieve = log.index(f"event {int(RETRIEVE)} {int(TcpUploadReason.HardwareFailure)}")
    i_abort = log.index(f"event {int(ABORT)} 0")
    i_sends = log.index(f"send_complete {NdisStatus.REQUEST_ABORTED:#x}")
    assert i_retrieve < i_abort < i_sends < log.index("terminate_complete")
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    assert t.status == NdisStatus.FAILURE and t.net_buffer_list_chain is None
    assert rig.target.tcps == {} and not rig.target.neighbors and not rig.target.paths


def test_hardware_failure_on_invalidate_r_inv_06() -> None:
    rig = Rig()
    _stalled_sends(rig)
    rig.target.hardware_failure()
    assert rig.handles is not None
    inv = ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadState, rig.handles[0])
    rig.ndis.invalidate_offload(rig.binding, inv)
    rig.run(until=lambda: bool(rig.host.completions["invalidate"]))
    assert inv.status == NdisStatus.FAILURE
    assert rig.host.events == [(RETRIEVE, TcpUploadReason.HardwareFailure), (ABORT, 0)]
    late = rig.send(b"after the failure")
    rig.run(1)
    assert rig.host.send_done[-1][:2] == (late[0], NdisStatus.REQUEST_ABORTED)
