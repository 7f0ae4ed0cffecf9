"""ChimneyChecks, receive indications and TCP events: delivery algorithm (R-IND-01/08/09/10), the chimney
indication pool (R-IND-15), FIN/RST handling (R-EVT-01/03/11), retrieve requests (R-EVT-08 with the §6.8
reading) and send-backlog throttling (R-EVT-10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chimney_checks_kit import Conn, Rig

from chimney.ndis.buffers import nbl_from_bytes
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpUploadReason,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation

EV = TcpOffloadEventType
REFUSE = (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)


def violation(fn: Callable[[], object]) -> str:
    with pytest.raises(ContractViolation) as e:
        fn()
    return e.value.rule_id


def test_refusal_then_posted_receive_then_indication_is_the_delivery_algorithm() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    r.host.indicate_result = None
    rcv = r.post(c, "receive", 10)
    r.target.io_complete("receive", rcv, nbytes=10)  # buffered data goes into the posted request first
    r.target.indicate(c.ref)  # then indications resume
    assert r.rule_ids() == []


def test_r_ind_01_indication_while_a_receive_request_is_posted() -> None:
    r = Rig()
    c = r.offload()
    r.post(c, "receive")
    assert violation(lambda: r.target.indicate(c.ref)) == "R-IND-01"


def test_r_ind_08_reindication_after_refusal_without_a_posted_receive() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    assert violation(lambda: r.target.indicate(c.ref)) == "R-IND-08"


def test_r_ind_08_partial_acceptance_also_stops_indications() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = (NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 4)
    r.target.indicate(c.ref)
    r.host.indicate_result = None
    assert violation(lambda: r.target.indicate(c.ref)) == "R-IND-08"


def test_r_ind_09_indication_before_filling_receives_posted_after_a_refusal() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    r.host.indicate_result = None
    r.post(c, "receive")
    assert violation(lambda: r.target.indicate(c.ref)) == "R-IND-09"


def test_r_ind_10_zero_byte_receive_completed_with_data() -> None:
    r = Rig()
    c = r.offload()
    zero = r.post(c, "receive", 0)
    assert violation(lambda: r.target.io_complete("receive", zero, nbytes=5)) == "R-IND-10"


def test_r_ind_10_zero_byte_receive_re_enables_indications() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    r.host.indicate_result = None
    zero = r.post(c, "receive", 0)
    r.target.io_complete("receive", zero, nbytes=0)
    r.target.indicate(c.ref)
    assert r.rule_ids() == []


def test_r_ind_15_indication_nbl_from_the_normal_receive_pool() -> None:
    r = Rig()
    c = r.offload()
    normal = nbl_from_bytes(b"\x00" * 60, "nic")
    normal.pool = r.target.normal_pool
    r.ndis.m_indicate_receive_net_buffer_lists(r.adapter, normal)
    r.target.indicate(c.ref)  # chimney pool: fine
    assert violation(lambda: r.target.indicate(c.ref, pool=r.target.normal_pool)) == "R-IND-15"


def test_r_evt_01_disconnect_indicated_while_refused_data_is_buffered() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    assert violation(lambda: r.target.event(c.ref, EV.TcpIndicateDisconnect)) == "R-EVT-01"


def test_r_evt_01_disconnect_indicated_from_inside_the_data_indication() -> None:
    r = Rig()
    c = r.offload()
    r.host.on_indicate = lambda nbl: r.target.event(c.ref, EV.TcpIndicateDisconnect)
    assert violation(lambda: r.target.indicate(c.ref)) == "R-EVT-01"


def test_disconnect_after_buffered_data_was_drained_is_fine() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    r.target.indicate(c.ref)
    rcv = r.post(c, "receive", 10)
    r.target.io_complete("receive", rcv, nbytes=10)
    r.target.event(c.ref, EV.TcpIndicateDisconnect)
    assert r.rule_ids() == [] and r.host.events == [(EV.TcpIndicateDisconnect, 0)]


def test_r_evt_11_disconnect_event_with_information() -> None:
    r = Rig()
    c = r.offload()
    assert violation(lambda: r.target.event(c.ref, EV.TcpIndicateDisconnect, 7)) == "R-EVT-11"


def test_r_evt_03_outstanding_receive_not_aborted_after_abort_event() -> None:
    r = Rig()
    c = r.offload()
    rcv = r.post(c, "receive")
    r.target.event(c.ref, EV.TcpIndicateAbort)
    assert violation(lambda: r.target.io_complete("receive", rcv, NdisStatus.SUCCESS, 100)) == "R-EVT-03"


def test_r_evt_03_outstanding_send_completed_success_after_abort_event() -> None:
    r = Rig()
    c = r.offload()
    r.target.event(c.ref, EV.TcpIndicateAbort)
    assert violation(lambda: r.target.send_complete([r.target.ack(c.send_data[0])])) == "R-EVT-03"


def test_abort_then_everything_request_aborted_then_terminate_is_fine() -> None:
    r = Rig()
    c = r.offload()
    rcv = r.post(c, "receive")
    r.target.event(c.ref, EV.TcpIndicateAbort)
    t = r.target
    t.send_complete([t.ack(n, 0, NdisStatus.REQUEST_ABORTED) for n in c.send_data])
    t.io_complete("receive", rcv, NdisStatus.REQUEST_ABORTED)
    r.terminate(c, [])
    assert r.rule_ids() == []


@pytest.mark.parametrize(
    "setup",
    ["offloaded_in_fin_wait_2", "offloaded_in_close_wait", "after_graceful_disconnect", "after_fin_indicated"],
)
def test_r_evt_08_discretionary_retrieve_on_a_half_closed_connection(setup: str) -> None:
    r = Rig()
    if setup == "offloaded_in_fin_wait_2":
        c = r.offload(Conn(state=TcpConnectionState.FinWait2))
    elif setup == "offloaded_in_close_wait":
        c = r.offload(Conn(state=TcpConnectionState.CloseWait))
    else:
        c = r.offload()
        if setup == "after_graceful_disconnect":
            r.post(c, "disconnect", 0, TCP_DISCONNECT_GRACEFUL_CLOSE)
        else:
            r.target.event(c.ref, EV.TcpIndicateDisconnect)
    assert violation(lambda: r.target.event(c.ref, EV.TcpIndicateRetrieve, TcpUploadReason.LowActivity)) == "R-EVT-08"


@pytest.mark.parametrize("state", [TcpConnectionState.FinWait2, TcpConnectionState.CloseWait])
def test_mandatory_retrieve_on_a_half_closed_connection_is_allowed(state: TcpConnectionState) -> None:
    """§6.8: FIN_WAIT_2 expiry (TimeoutExpiration) and other mandatory reasons may always be requested."""
    r = Rig()
    c = r.offload(Conn(state=state))
    r.target.event(c.ref, EV.TcpIndicateRetrieve, TcpUploadReason.TimeoutExpiration)
    assert r.rule_ids() == []


def test_discretionary_retrieve_when_both_sides_closed_is_allowed() -> None:
    r = Rig()
    c = r.offload(Conn(state=TcpConnectionState.LastAck))
    r.target.event(c.ref, EV.TcpIndicateRetrieve, TcpUploadReason.LowActivity)
    assert r.rule_ids() == []


def test_r_evt_10_send_backlog_event_without_a_change() -> None:
    r = Rig()
    c = r.offload()
    r.target.event(c.ref, EV.TcpIndicateSendBacklogChange, 8192)
    r.target.event(c.ref, EV.TcpIndicateSendBacklogChange, 16384)
    assert violation(lambda: r.target.event(c.ref, EV.TcpIndicateSendBacklogChange, 16384)) == "R-EVT-10"


def test_r_off_28_receive_posted_after_mandatory_retrieve_filled_normally() -> None:
    r = Rig()
    c = r.offload()
    r.target.event(c.ref, EV.TcpIndicateRetrieve, TcpUploadReason.UploadRequested)
    rcv = r.post(c, "receive")
    assert violation(lambda: r.target.io_complete("receive", rcv, NdisStatus.SUCCESS, 100)) == "R-OFF-28"


def test_r_tree_14_receive_indication_with_a_path_objects_handle() -> None:
    from chimney.ndis.blocklist import NdisOffloadHandleRef

    r = Rig()
    c = r.offload()
    path_ref = NdisOffloadHandleRef(r.binding, c.ph)
    assert violation(lambda: r.target.indicate(path_ref)) == "R-TREE-14"


def test_indication_while_only_a_zero_byte_request_is_posted_is_allowed() -> None:
    r = Rig()
    c = r.offload()
    zero = r.post(c, "receive", 0)
    r.target.indicate(c.ref)
    r.target.io_complete("receive", zero, nbytes=0)
    assert r.rule_ids() == []


def test_receive_posted_from_inside_a_refused_indication_re_enables_indications() -> None:
    r = Rig()
    c = r.offload()
    r.host.indicate_result = REFUSE
    posted: list[object] = []
    r.host.on_indicate = lambda nbl: posted.append(r.post(c, "receive", 0)) if not posted else None
    r.target.indicate(c.ref)
    r.host.on_indicate = None
    r.host.indicate_result = None
    r.target.io_complete("receive", posted[0], nbytes=0)  # type: ignore[arg-type]
    r.target.indicate(c.ref)
    assert r.rule_ids() == []
