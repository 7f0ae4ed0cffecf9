"""ChimneyChecks, terminate side: TERMINATING -> TERMINATED (R-TRM-04/05/06/08/09/10/22/23), returned
send data (R-TRM-11..14, R-OFF-22), returned timers and timestamps (R-TRM-25, R-QRY-08, R-TS-04), and
the delegated-state shape that keeps delayed-ACK/push/SWS timers off the boundary (R-TMR-04/16/21)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from chimney_checks_kit import Conn, Rig, StrictChimneyChecks, T, chain

from chimney.ndis.blocklist import MiniportOffloadBlockList, ProtocolOffloadBlockList
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    TcpCachedFlags,
    TcpOffloadEventType,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation


def violation(fn: Callable[[], object]) -> str:
    with pytest.raises(ContractViolation) as e:
        fn()
    return e.value.rule_id


def test_correct_terminate_returns_unacked_sends_in_order() -> None:
    r = Rig()
    c = r.offload()
    later = r.send(c, 2)
    r.target.send_complete([r.target.ack(c.send_data[0])])
    # Still outstanding: send_data[1] (from the offload), then the two later sends.
    r.terminate(c, [c.send_data[1], *later])
    assert r.rule_ids() == []
    pbl = r.host.state_completions[-1][1]
    assert pbl.net_buffer_list_chain is c.send_data[1]
    assert all(n.owner == "tcpip" and n.source_handle is None for n in [c.send_data[1], *later])
    assert r.binding.sends_out == 0
    assert r.checks.phases() == {"offloaded": 2, "terminated": 1}


def test_r_trm_06_terminate_completed_synchronously() -> None:
    r = Rig()
    c = r.offload()
    for n in c.send_data:
        r.target.ack(n)
    r.target.send_complete(c.send_data)

    def complete_at_once(op: str, mbl: MiniportOffloadBlockList) -> None:
        r.finish_terminate(c, mbl)

    r.target.on_state = complete_at_once
    assert violation(lambda: r.ndis.terminate_offload(r.binding, c.terminate_tree())) == "R-TRM-06"


def test_r_trm_08_terminate_node_status_other_than_success_or_failure() -> None:
    """R-TRM-08 is enforced by the core's terminate-status check, which reports it as R-TREE-15."""
    r = Rig()
    c = r.offload()
    mbl = r.start_terminate(c)
    mbl.net_buffer_list_chain = c.send_data[0]
    mbl.status = NdisStatus.OFFLOAD_TCP_ENTRIES
    assert violation(lambda: r.ndis.m_terminate_offload_complete(r.adapter, mbl)) == "R-TREE-15"


def test_r_trm_09_receive_request_outstanding_at_terminate_completion() -> None:
    r = Rig()
    c = r.offload()
    r.post(c, "receive")
    assert violation(lambda: r.terminate(c, list(c.send_data))) == "R-TRM-09"


def test_r_trm_10_terminate_completed_from_inside_an_indication() -> None:
    r = Rig()
    c = r.offload()
    mbl = r.start_terminate(c)
    r.host.on_indicate = lambda nbl: r.finish_terminate(c, mbl, list(c.send_data))
    assert violation(lambda: r.target.indicate(c.ref)) == "R-TRM-10"


def test_r_trm_11_outstanding_send_neither_completed_nor_returned() -> None:
    r = Rig()
    c = r.offload()
    later = r.send(c, 1)
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    assert violation(lambda: r.terminate(c, [])) == "R-TRM-11" and later


def test_r_off_22_offload_send_data_lost_at_terminate() -> None:
    r = Rig()
    c = r.offload()
    assert violation(lambda: r.terminate(c, [c.send_data[1]])) == "R-OFF-22"


def test_r_trm_12_returned_send_nbls_reordered() -> None:
    r = Rig()
    c = r.offload()
    assert violation(lambda: r.terminate(c, [c.send_data[1], c.send_data[0]])) == "R-TRM-12"


def test_r_trm_12_returned_chain_holds_a_target_nbl() -> None:
    from chimney.ndis.buffers import nbl_from_bytes

    r = Rig()
    c = r.offload()
    foreign = nbl_from_bytes(b"t" * 10, "nic")
    assert violation(lambda: r.terminate(c, [*c.send_data, foreign])) == "R-TRM-12"


def test_r_trm_13_snd_max_beyond_returned_data() -> None:
    r = Rig()
    c = r.offload()
    assert violation(lambda: r.terminate(c, list(c.send_data), snd_max=2000 + 10_000)) == "R-TRM-13"


def test_r_trm_13_send_data_head_not_the_chain() -> None:
    r = Rig()
    c = r.offload()
    mbl = r.start_terminate(c)

    def wrong_head() -> None:
        r.finish_terminate(c, mbl, list(c.send_data), send_data_head=c.send_data[1])

    assert violation(wrong_head) == "R-TRM-13"


def test_r_trm_14_send_data_head_set_although_nothing_returned() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    assert violation(lambda: r.terminate(c, [], send_data_head=c.send_data[0])) == "R-TRM-14"


def test_r_trm_05_terminate_while_a_query_is_pending() -> None:
    r = Rig()
    c = r.offload()
    r.ndis.query_offload_state(r.binding, ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, [TcpOffloadStateDelegated()]))
    assert violation(lambda: r.ndis.terminate_offload(r.binding, c.terminate_tree())) == "R-TRM-05"


def test_r_trm_04_path_terminated_while_its_connection_stays_offloaded() -> None:
    r = Rig()
    c = r.offload()
    path_only = ProtocolOffloadBlockList(T.Ip4OffloadState, c.ph, [])
    assert violation(lambda: r.ndis.terminate_offload(r.binding, path_only)) == "R-TRM-04"


def test_terminating_neighbor_path_and_tcp_in_one_batch_is_fine() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, c.nh, [])
    path = root.add_dependent(ProtocolOffloadBlockList(T.Ip4OffloadState, c.ph, []))
    path.add_dependent(c.terminate_tree())
    r.ndis.terminate_offload(r.binding, root)
    mbl = r.target.pop("terminate")
    for node in (mbl, mbl.dependent_block_list):
        node.status = NdisStatus.SUCCESS
    tcp = mbl.dependent_block_list.dependent_block_list
    dlg = tcp.state[2]
    dlg.ts_time, dlg.snd_una, dlg.snd_nxt, dlg.snd_max = 5010, 7, 7, 7
    tcp.status = NdisStatus.SUCCESS
    r.ndis.m_terminate_offload_complete(r.adapter, mbl)
    assert r.rule_ids() == []
    assert r.checks.phases() == {"terminated": 3}


def test_r_trm_22_send_after_ndis_terminate_offload() -> None:
    r = Rig()
    c = r.offload()
    r.start_terminate(c)
    assert violation(lambda: r.send(c)) == "R-TRM-22"


def test_r_trm_23_event_on_a_terminated_connection() -> None:
    r = Rig()
    c = r.offload()
    r.terminate(c, list(c.send_data))
    assert violation(lambda: r.target.event(c.ref, TcpOffloadEventType.TcpIndicateRetrieve, 10)) == "R-TRM-23"


def test_r_trm_23_completion_of_a_send_returned_at_terminate() -> None:
    r = Rig()
    c = r.offload()
    r.terminate(c, list(c.send_data))
    n = c.send_data[0]
    n.status = NdisStatus.SUCCESS
    assert violation(lambda: r.ndis.tcp_offload_send_complete(r.adapter, chain([n]))) == "R-TRM-23"


def test_r_ts_04_returned_ts_time_behind_the_offered_one() -> None:
    r = Rig()
    c = r.offload(Conn(ts_time=0xFFFFFFF0))
    assert violation(lambda: r.terminate(c, list(c.send_data), ts_time=0xFFFFFF00)) == "R-TS-04"


def test_r_ts_04_ts_time_may_wrap_forward() -> None:
    r = Rig()
    c = r.offload(Conn(ts_time=0xFFFFFFF0))
    r.terminate(c, list(c.send_data), ts_time=0x10)
    assert r.rule_ids() == []


def test_r_trm_25_idle_retransmit_timer_not_reported_as_minus_one() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    assert violation(lambda: r.terminate(c, [], **{"retransmit": _rtx(0)})) == "R-TRM-25"


def test_r_trm_25_keepalive_off_but_keepalive_timer_reported() -> None:
    r = Rig()
    c = Conn()
    c.cached.flags = int(TcpCachedFlags.NAGLING_ENABLED)
    r.offload(c)
    mbl = r.start_terminate(c)
    ka = TcpOffloadStateDelegated().keep_alive
    ka.timeout_delta = 100
    assert violation(lambda: r.finish_terminate(c, mbl, list(c.send_data), keep_alive=ka)) == "R-TRM-25"


def test_r_qry_08_query_reports_an_idle_retransmit_timer_as_running() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    dlg = TcpOffloadStateDelegated()
    r.ndis.query_offload_state(r.binding, ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, [dlg]))
    mbl = r.target.pop("query")
    dlg.snd_una = dlg.snd_max = 1200  # everything acknowledged, no send data outstanding
    dlg.retransmit.timeout_delta = 0
    mbl.status = NdisStatus.SUCCESS
    assert violation(lambda: r.ndis.m_query_offload_state_complete(r.adapter, mbl)) == "R-QRY-08"


def test_r_trm_21_send_after_mandatory_retrieve_completed_success() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    r.target.event(c.ref, TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.HardwareFailure)
    (late,) = r.send(c, 1)
    assert violation(lambda: r.target.send_complete([r.target.ack(late)])) == "R-TRM-21"


def test_sends_after_mandatory_retrieve_completed_upload_in_progress_are_fine() -> None:
    r = Rig()
    c = r.offload()
    r.target.event(c.ref, TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.HardwareFailure)
    (late,) = r.send(c, 1)
    r.target.send_complete([r.target.ack(late, 0, NdisStatus.UPLOAD_IN_PROGRESS)])
    r.terminate(c, list(c.send_data))
    assert r.rule_ids() == []


def test_r_trm_02_and_r_trm_03_retrieve_names_one_tcp_connection() -> None:
    """R-TRM-03 holds by construction (one handle per call); R-TRM-02 forbids non-TCP handles."""
    r = Rig()
    c = r.offload()
    path_ref = r.checks.objects[id(c.ph.miniport_offload_context)]
    from chimney.ndis.blocklist import NdisOffloadHandleRef

    ref = NdisOffloadHandleRef(r.binding, c.ph)
    assert path_ref.layer is not None
    assert violation(lambda: r.target.event(ref, TcpOffloadEventType.TcpIndicateRetrieve, 10)) == "R-TRM-02"


def test_r_tmr_04_16_21_delegated_state_has_no_delayed_ack_push_or_sws_fields() -> None:
    """The boundary cannot carry those timers: TCP_OFFLOAD_STATE_DELEGATED has no field for them."""
    names = {f.name for f in dataclasses.fields(TcpOffloadStateDelegated)}
    names |= {f.name for f in dataclasses.fields(TcpOffloadStateConst)}
    for word in ("delay", "ack_timer", "push", "sws"):
        assert not [n for n in names if word in n], word


def test_graceful_disconnect_then_terminate_completes_cleanly() -> None:
    r = Rig()
    c = r.offload()
    d = r.post(c, "disconnect", 0, TCP_DISCONNECT_GRACEFUL_CLOSE)
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    r.target.io_complete("disconnect", d)
    r.terminate(c, [])
    assert r.rule_ids() == []


def _rtx(delta: int) -> object:
    rtx = TcpOffloadStateDelegated().retransmit
    rtx.timeout_delta = delta
    return rtx


def test_memory_of_terminated_objects_and_returned_nbls_is_bounded() -> None:
    class Small(StrictChimneyChecks):
        HISTORY = 4

    r = Rig(checks=Small)
    for _ in range(6):
        c = r.offload()
        r.terminate(c, list(c.send_data))
    assert len(r.checks.returned) <= 4
    phases = r.checks.phases()
    assert phases["offloaded"] == 12  # neighbors and paths stay offloaded: live objects are never pruned
    assert 1 <= phases["terminated"] < 6
    assert r.rule_ids() == []


def test_r_trm_05_terminate_from_inside_a_receive_post_call() -> None:
    """The host issues NdisTerminateOffload while its NdisOffloadTcpReceive call has not returned."""
    r = Rig()
    c = r.offload()
    tcp_chars = r.adapter.dh.provider_tcp
    assert tcp_chars is not None
    orig = tcp_chars.tcp_offload_receive_handler

    def receive_then_terminate(ctx: object, oc: object, nbl: object) -> object:
        status = orig(ctx, oc, nbl)
        r.ndis.terminate_offload(r.binding, c.terminate_tree())
        return status

    tcp_chars.tcp_offload_receive_handler = receive_then_terminate  # type: ignore[assignment]
    assert violation(lambda: r.post(c, "receive")) == "R-TRM-05"


def _update_keepalive(r: Rig, c: Conn, on: bool, status: int = NdisStatus.SUCCESS) -> None:
    """NdisUpdateOffload of the connection's CACHED state with keepalive switched on/off, completed with `status`."""
    cached = dataclasses.replace(c.cached)
    cached.flags = int(TcpCachedFlags.KEEP_ALIVE_ENABLED) if on else int(TcpCachedFlags.NAGLING_ENABLED)
    r.ndis.update_offload(r.binding, ProtocolOffloadBlockList(T.TcpOffloadCachedState, c.th, [cached]))
    mbl = r.target.pop("update")
    mbl.status = status
    r.ndis.m_update_offload_complete(r.adapter, mbl)


def _running_keepalive() -> object:
    ka = TcpOffloadStateDelegated().keep_alive
    ka.timeout_delta = 100
    return ka


def test_keepalive_switched_on_by_an_update_may_run_at_terminate() -> None:
    r = Rig()
    c = Conn()
    c.cached.flags = int(TcpCachedFlags.NAGLING_ENABLED)
    r.offload(c)
    _update_keepalive(r, c, on=True)
    r.terminate(c, list(c.send_data), keep_alive=_running_keepalive())
    assert r.rule_ids() == []


def test_r_trm_25_keepalive_switched_off_by_an_update_but_its_timer_reported() -> None:
    r = Rig()
    c = Conn()
    c.cached.flags = int(TcpCachedFlags.KEEP_ALIVE_ENABLED)
    r.offload(c)
    _update_keepalive(r, c, on=False)
    mbl = r.start_terminate(c)
    assert violation(lambda: r.finish_terminate(c, mbl, list(c.send_data), keep_alive=_running_keepalive())) == "R-TRM-25"


def test_after_a_failed_update_the_keepalive_timer_is_not_judged() -> None:
    """A node the target failed to update leaves its CACHED variables unknown (the host terminates it)."""
    r = Rig()
    c = Conn()
    c.cached.flags = int(TcpCachedFlags.NAGLING_ENABLED)
    r.offload(c)
    _update_keepalive(r, c, on=True, status=NdisStatus.FAILURE)
    r.terminate(c, list(c.send_data), keep_alive=_running_keepalive())
    assert r.rule_ids() == []


def test_failed_terminate_node_returns_no_state_to_check() -> None:
    """R-TRM-08: FAILURE means the state was lost; the delegated structure is not read (TsTime, timers)."""
    r = Rig()
    c = r.offload(Conn(ts_time=0x100))
    r.target.send_complete([r.target.ack(n) for n in c.send_data])
    mbl = r.start_terminate(c)
    mbl.status = NdisStatus.FAILURE  # the host's blank delegated structure stays as it was (TsTime 0)
    r.ndis.m_terminate_offload_complete(r.adapter, mbl)
    assert r.rule_ids() == []
    assert r.host.state_completions[-1][1].status == NdisStatus.FAILURE


def test_r_upd_03_a_relinked_path_no_longer_depends_on_its_old_neighbor() -> None:
    """An update rooted at neighbor 2 with the path as its dependent re-links the path (R-UPD-03): neighbor 1
    may then be terminated alone; neighbor 2 may not (R-TRM-04)."""
    from chimney.ndis.blocklist import NdisOffloadHandle, iter_tree
    from chimney.ndis.offload_state import (
        NeighborOffloadStateCached,
        NeighborOffloadStateConst,
        NeighborOffloadStateDelegated,
        PathOffloadStateCached,
    )

    r = Rig()
    c = r.offload()
    n2 = NdisOffloadHandle("neighbor2")
    nstate = [NeighborOffloadStateConst(), NeighborOffloadStateCached(), NeighborOffloadStateDelegated()]
    r.ndis.initiate_offload(r.binding, ProtocolOffloadBlockList(T.NeighborOffloadState, n2, nstate))
    mbl = r.target.pop("initiate")
    r.target.offload_all(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    root = ProtocolOffloadBlockList(T.NeighborOffloadCachedState, n2, [NeighborOffloadStateCached()])
    root.add_dependent(ProtocolOffloadBlockList(T.Ip4OffloadCachedState, c.ph, [PathOffloadStateCached()]))
    r.ndis.update_offload(r.binding, root)
    mbl = r.target.pop("update")
    for node in iter_tree(mbl):
        node.status = NdisStatus.SUCCESS
    r.ndis.m_update_offload_complete(r.adapter, mbl)
    r.ndis.terminate_offload(r.binding, ProtocolOffloadBlockList(T.NeighborOffloadState, c.nh, []))
    assert r.rule_ids() == []
    alone = ProtocolOffloadBlockList(T.NeighborOffloadState, n2, [])
    assert violation(lambda: r.ndis.terminate_offload(r.binding, alone)) == "R-TRM-04"
