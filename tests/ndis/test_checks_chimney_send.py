"""ChimneyChecks, send path: completion order and contents (R-SEND-03..08), concurrent sends
(R-SEND-11), NDIS_STATUS_PAUSED (R-SEND-14), the initiate NetBufferListChain as send data (R-OFF-22)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chimney_checks_kit import BYTES, Rig

from chimney.ndis.buffers import NetBufferList
from chimney.ndis.offload_state import TcpOffloadEventType
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation


def violation(fn: Callable[[], object]) -> str:
    with pytest.raises(ContractViolation) as e:
        fn()
    return e.value.rule_id


def offloaded_with_sends(n: int = 3) -> tuple[Rig, list[NetBufferList]]:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(x) for x in c.send_data])
    nbls = r.send(c, n)
    r.conn = c  # type: ignore[attr-defined]
    return r, nbls


def test_initiate_send_data_completes_through_ndis_tcp_offload_send_complete() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(x) for x in c.send_data])
    assert [k for k, _ in r.host.io_completions] == ["send", "send"]
    assert r.binding.sends_out == 0 and r.rule_ids() == []


def test_in_order_completions_with_one_partial_then_failures_are_fine() -> None:
    r, s = offloaded_with_sends(3)
    t = r.target
    t.send_complete([t.ack(s[0]), t.ack(s[1], 20, NdisStatus.UPLOAD_IN_PROGRESS), t.ack(s[2], 0, NdisStatus.UPLOAD_IN_PROGRESS)])
    assert r.rule_ids() == []
    assert [n.status for _, n in r.host.io_completions[-3:]] == [
        NdisStatus.SUCCESS,
        NdisStatus.UPLOAD_IN_PROGRESS,
        NdisStatus.UPLOAD_IN_PROGRESS,
    ]


def test_r_send_03_later_send_acknowledged_before_an_earlier_one() -> None:
    r, s = offloaded_with_sends(2)
    assert violation(lambda: r.target.send_complete([r.target.ack(s[1])])) == "R-SEND-03"


def test_r_send_03_reordered_within_one_completion_list() -> None:
    r, s = offloaded_with_sends(2)
    assert violation(lambda: r.target.send_complete([r.target.ack(s[1]), r.target.ack(s[0])])) == "R-SEND-03"


def test_r_send_04_bytes_transferred_missing() -> None:
    r, s = offloaded_with_sends(1)
    nb = s[0].first_net_buffer
    assert nb is not None
    nb.advance(nb.data_length)
    s[0].status = NdisStatus.SUCCESS
    assert violation(lambda: r.target.send_complete([s[0]])) == "R-SEND-04"


def test_r_send_04_data_start_not_advanced() -> None:
    r, s = offloaded_with_sends(1)
    s[0].info[BYTES] = s[0].data_length()
    s[0].status = NdisStatus.SUCCESS
    assert violation(lambda: r.target.send_complete([s[0]])) == "R-SEND-04"


def test_r_send_05_success_for_a_partly_acknowledged_nbl() -> None:
    r, s = offloaded_with_sends(1)
    assert violation(lambda: r.target.send_complete([r.target.ack(s[0], 10)])) == "R-SEND-05"


def test_r_send_06_data_acknowledged_for_an_nbl_after_the_first_failure() -> None:
    r, s = offloaded_with_sends(2)
    t = r.target
    partial = t.ack(s[0], 10, NdisStatus.UPLOAD_IN_PROGRESS)
    after = t.ack(s[1])  # fully "acknowledged" although the NBL before it failed
    assert violation(lambda: t.send_complete([partial, after])) == "R-SEND-06"


def test_r_send_07_two_partial_completions_in_one_list() -> None:
    r, s = offloaded_with_sends(2)
    t = r.target
    a = t.ack(s[0], 10, NdisStatus.UPLOAD_IN_PROGRESS)
    b = t.ack(s[1], 10, NdisStatus.UPLOAD_IN_PROGRESS)
    assert violation(lambda: t.send_complete([a, b])) == "R-SEND-07"


def test_untouched_failure_may_complete_while_older_data_waits_for_terminate() -> None:
    r, s = offloaded_with_sends(2)
    t = r.target
    t.send_complete([t.ack(s[1], 0, NdisStatus.UPLOAD_IN_PROGRESS)])
    r.terminate(r.conn, [s[0]])  # type: ignore[attr-defined]
    assert r.rule_ids() == []


def test_r_send_08_failed_send_during_terminate_not_upload_in_progress() -> None:
    r, s = offloaded_with_sends(1)
    r.start_terminate(r.conn)  # type: ignore[attr-defined]
    a = r.target.ack(s[0], 0, NdisStatus.FAILURE)
    assert violation(lambda: r.target.send_complete([a])) == "R-SEND-08"


def test_r_send_08_failed_send_after_abort_not_request_aborted() -> None:
    r, s = offloaded_with_sends(1)
    r.target.event(r.conn.ref, TcpOffloadEventType.TcpIndicateAbort, 0)  # type: ignore[attr-defined]
    (late,) = r.send(r.conn, 1)  # type: ignore[attr-defined]
    r.target.send_complete([r.target.ack(s[0], 0, NdisStatus.REQUEST_ABORTED)])
    assert violation(lambda: r.target.send_complete([r.target.ack(late, 0, NdisStatus.FAILURE)])) == "R-SEND-08"


def test_r_send_14_chimney_send_completed_with_paused() -> None:
    r, s = offloaded_with_sends(1)
    r.ndis.m_indicate_status_ex(r.adapter, NdisStatus.OFFLOAD_PAUSE)
    assert violation(lambda: r.target.send_complete([r.target.ack(s[0], 0, NdisStatus.PAUSED)])) == "R-SEND-14"


def test_r_send_11_send_issued_while_another_send_is_inside_the_target() -> None:
    r = Rig()
    c = r.offload()
    r.target.on_send = lambda nbl: r.send(c, 1) if len(r.target.io_calls) == 1 else None
    assert violation(lambda: r.send(c, 1)) == "R-SEND-11"


def test_sequential_sends_from_one_thread_are_not_concurrent() -> None:
    r = Rig()
    c = r.offload()
    for _ in range(3):
        r.send(c, 1)
    assert r.rule_ids() == [] and r.verifier.checks["R-SEND-11"] == 3


def test_host_sending_again_from_a_completion_inside_the_send_call_is_not_r_send_11() -> None:
    r = Rig()
    c = r.offload()
    r.target.send_complete([r.target.ack(x) for x in c.send_data])
    again: list[object] = []

    def complete_inline(nbl: NetBufferList) -> None:
        if not again:
            again.append(nbl)
            r.target.send_complete([r.target.ack(nbl)])  # completes inside MiniportTcpOffloadSend
            r.send(c, 1)  # the host reacts from its completion handler

    r.target.on_send = complete_inline
    r.send(c, 1)
    assert "R-SEND-11" not in r.rule_ids() and len(again) == 1


def test_r_recv_16_receive_posted_while_another_post_is_inside_the_target() -> None:
    """R-RECV-16: the host posts a second receive request while MiniportTcpOffloadReceive is still running
    for the same connection (two threads posting at once)."""
    r = Rig()
    c = r.offload()
    r.target.on_receive = lambda nbl: r.post(c) if len(r.target.io_calls) == 1 else None
    assert violation(lambda: r.post(c)) == "R-RECV-16"


def test_several_receive_posts_outstanding_one_after_another_are_serialized() -> None:
    """R-RECV-16 allows several outstanding requests, as long as the posts themselves do not overlap."""
    r = Rig()
    c = r.offload()
    for _ in range(3):
        r.post(c)
    assert r.rule_ids() == [] and r.verifier.checks["R-RECV-16"] == 3


def test_posting_again_from_a_completion_inside_the_receive_call_is_not_r_recv_16() -> None:
    """A request the target completes inside MiniportTcpOffloadReceive lets the host post from its completion
    handler (the re-entrancy of §3.6), which is a reaction, not a concurrent post."""
    r = Rig()
    c = r.offload()
    again: list[object] = []

    def complete_inline(nbl: NetBufferList) -> None:
        if not again:
            again.append(nbl)
            r.target.io_complete("receive", nbl, NdisStatus.SUCCESS, 0)
            r.post(c)

    r.target.on_receive = complete_inline
    r.post(c)
    assert "R-RECV-16" not in r.rule_ids() and len(again) == 1
