"""ChimneyChecks, initiate side: the OFFLOADING phase (R-OFF-01/09/11/12), host-supplied send data and
state (R-OFF-20/21/24, R-TREE-16), §5.2 status aggregation (R-OFF-03/04/05, R-TREE-06), context areas
(R-TREE-09/12), failed offloads (R-OFF-23) and completed trees (R-TREE-04, R-TREE-17)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chimney_checks_kit import Conn, Rig, T, chain

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    ProtocolOffloadBlockList,
    iter_tree,
)
from chimney.ndis.checks_chimney import ChimneyChecks, Phase
from chimney.ndis.offload_state import (
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation


def violation(fn: Callable[[], object]) -> str:
    with pytest.raises(ContractViolation) as e:
        fn()
    return e.value.rule_id


def test_correct_offload_walks_offloading_to_offloaded_without_violations() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    assert r.checks.phases() == {"offloading": 3}
    r.target.offload_all(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    assert r.checks.phases() == {"offloaded": 3}
    r.target.event(c.ref, TcpOffloadEventType.TcpIndicateSendBacklogChange, 4096)  # allowed once complete returned
    assert r.rule_ids() == []
    assert r.verifier.checks["R-OFF-01"] == 1 and r.verifier.checks["R-OFF-05"] == 3


def test_r_off_01_initiate_completed_inside_miniport_initiate_offload() -> None:
    r = Rig()

    def complete_at_once(op: str, mbl: MiniportOffloadBlockList) -> None:
        r.target.offload_all(mbl)
        r.ndis.m_initiate_offload_complete(r.adapter, mbl)

    r.target.on_state = complete_at_once
    assert violation(lambda: r.ndis.initiate_offload(r.binding, Conn().tree())) == "R-OFF-01"


def test_r_off_09_indication_before_initiate_complete_returned() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    r.target.offload_all(mbl)
    assert violation(lambda: r.target.indicate(c.ref)) == "R-OFF-09"


def test_r_off_09_indication_from_inside_the_initiate_completion() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    r.target.offload_all(mbl)
    # A target that indicates from the host's completion handler, before NdisMInitiateOffloadComplete returns.
    r.host.on_state_complete = lambda op, pbl: r.target.indicate(c.ref)
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-OFF-09"


def test_r_off_12_event_while_another_initiate_is_in_progress() -> None:
    r = Rig()
    c1 = r.offload()
    r.start_offload(Conn())  # a second connection is being offloaded
    assert violation(lambda: r.target.event(c1.ref, TcpOffloadEventType.TcpIndicateSendBacklogChange, 1)) == "R-OFF-12"


def test_r_off_12_is_advisory_by_default() -> None:
    r = Rig(checks=ChimneyChecks)
    c1 = r.offload()
    r.start_offload(Conn())
    r.target.event(c1.ref, TcpOffloadEventType.TcpIndicateSendBacklogChange, 1)
    assert r.rule_ids() == []
    assert [a[0] for a in r.checks.advisories] == ["R-OFF-12"]


def test_r_off_11_send_on_a_connection_still_offloading() -> None:
    r = Rig()
    c = Conn()
    r.start_offload(c)
    assert violation(lambda: r.send(c)) == "R-OFF-11"


def test_r_off_11_same_object_offloaded_twice_concurrently() -> None:
    r = Rig()
    c = Conn()
    r.start_offload(c)
    again = ProtocolOffloadBlockList(T.TcpOffloadState, c.th, [])
    assert violation(lambda: r.ndis.initiate_offload(r.binding, again)) == "R-OFF-11"


def test_r_off_11_terminate_of_an_object_still_offloading() -> None:
    r = Rig()
    c = Conn()
    r.start_offload(c)
    assert violation(lambda: r.ndis.terminate_offload(r.binding, c.terminate_tree())) == "R-OFF-11"


def test_r_off_24_host_offloads_a_time_wait_connection() -> None:
    r = Rig()
    c = Conn(state=TcpConnectionState.TimeWait)
    assert violation(lambda: r.ndis.initiate_offload(r.binding, c.tree())) == "R-OFF-24"


@pytest.mark.parametrize("state", [TcpConnectionState.FinWait2, TcpConnectionState.LastAck])
def test_r_off_24_half_closed_and_closing_states_are_offloadable(state: TcpConnectionState) -> None:
    r = Rig()
    r.offload(Conn(state=state))
    assert r.rule_ids() == []


def test_r_off_21_send_data_tail_not_the_last_nbl() -> None:
    r = Rig()
    c = Conn(sends=3)
    pbl = c.tree()
    c.dlg.send_data_tail = c.send_data[1]
    assert violation(lambda: r.ndis.initiate_offload(r.binding, pbl)) == "R-OFF-21"


def test_r_off_20_snd_max_beyond_the_handed_over_data() -> None:
    r = Rig()
    c = Conn(sends=1, size=100)
    c.dlg.snd_max = c.dlg.snd_una + 150
    assert violation(lambda: r.ndis.initiate_offload(r.binding, c.tree())) == "R-OFF-20"


def test_r_tree_16_trailing_state_out_of_order() -> None:
    r = Rig()
    c = Conn()
    pbl = c.tree()
    path = pbl.dependent_block_list
    path.state = [PathOffloadStateCached(), PathOffloadStateConst(), PathOffloadStateDelegated()]
    assert violation(lambda: r.ndis.initiate_offload(r.binding, pbl)) == "R-TREE-16"


def _fail_tcp(mbl: MiniportOffloadBlockList, status: int = NdisStatus.OFFLOAD_TCP_ENTRIES) -> MiniportOffloadBlockList:
    """Offload neighbor and path, fail the TCP node: the correct §5.2 statuses."""
    path = mbl.dependent_block_list
    tcp = path.dependent_block_list
    for node in (mbl, path):
        node.miniport_offload_context.value = {"ctx": node.header.type}
    mbl.status = NdisStatus.SUCCESS
    path.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    tcp.status = status
    return tcp


def test_failed_tcp_node_gives_partial_success_upwards_and_failed_phase() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    _fail_tcp(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    assert r.rule_ids() == []
    assert r.checks.phases() == {"offloaded": 2, "failed": 1}


def test_r_off_05_partial_success_reported_as_success() -> None:
    r = Rig()
    mbl = r.start_offload(Conn())
    _fail_tcp(mbl)
    mbl.dependent_block_list.status = NdisStatus.SUCCESS
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-OFF-05"


def test_r_off_03_dependents_of_a_failed_node_not_failure() -> None:
    r = Rig()
    mbl = r.start_offload(Conn())
    path = mbl.dependent_block_list
    mbl.miniport_offload_context.value = {"n": 1}
    mbl.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    path.status = NdisStatus.OFFLOAD_PATH_ENTRIES
    path.dependent_block_list.status = NdisStatus.RESOURCES  # "attempted" although its path failed
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-OFF-03"


def test_r_off_04_traversal_goes_on_after_the_root_failed() -> None:
    r = Rig()
    c1, c2 = Conn(), Conn()
    root = c1.tree()
    root.next_block = c2.tree()  # two neighbors side by side
    r.ndis.initiate_offload(r.binding, root)
    mbl = r.target.pop("initiate")
    for node in iter_tree(mbl):
        node.status = NdisStatus.FAILURE
    mbl.status = NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES
    sib = mbl.next_block
    sib.miniport_offload_context.value = {"n": 2}
    sib.status = NdisStatus.SUCCESS  # second neighbor offloaded after the root failed
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-OFF-04"


def test_r_tree_06_linker_with_all_dependents_failed_reports_partial() -> None:
    r = Rig()
    c1 = r.offload()
    c2 = Conn()
    tree = c2.tree()
    tree.offload_handle = c1.nh  # already offloaded neighbor and path: linkers
    tree.dependent_block_list.offload_handle = c1.ph
    r.ndis.initiate_offload(r.binding, tree)
    mbl = r.target.pop("initiate")
    mbl.status = NdisStatus.SUCCESS
    mbl.dependent_block_list.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS  # its only TCP failed: FAILURE
    mbl.dependent_block_list.dependent_block_list.status = NdisStatus.OFFLOAD_TCP_ENTRIES
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-TREE-06"


def test_r_tree_12_two_objects_share_one_context() -> None:
    r = Rig()
    mbl = r.start_offload(Conn())
    shared = {"one": "area"}
    for node in iter_tree(mbl):
        node.miniport_offload_context.value = shared
        node.status = NdisStatus.SUCCESS
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-TREE-12"


def test_r_tree_09_context_reference_changed_while_offloaded() -> None:
    r = Rig()
    c = r.offload()
    c.th.miniport_offload_context.value = {"moved": True}
    assert violation(lambda: r.send(c)) == "R-TREE-09"


def test_r_off_23_failed_offload_send_data_completed_by_the_target() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    _fail_tcp(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    first = c.send_data[0]
    first.status = NdisStatus.SUCCESS
    assert violation(lambda: r.ndis.tcp_offload_send_complete(r.adapter, chain([first]))) == "R-OFF-23"


def test_r_off_23_failed_offload_send_data_status_written() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    _fail_tcp(mbl)
    c.send_data[1].status = NdisStatus.UPLOAD_IN_PROGRESS
    assert violation(lambda: r.ndis.m_initiate_offload_complete(r.adapter, mbl)) == "R-OFF-23"


def test_r_tree_04_target_writes_a_tree_after_completing_it() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    r.target.offload_all(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    mbl.dependent_block_list.status = NdisStatus.FAILURE  # stale pointer use after the completion
    assert violation(lambda: r.start_offload(Conn())) == "R-TREE-04"


def test_r_tree_17_invalidate_tree_with_state_structures() -> None:
    r = Rig()
    c = r.offload()
    bad = ProtocolOffloadBlockList(T.Ip4OffloadState, c.ph, [PathOffloadStateCached()])
    assert violation(lambda: r.ndis.invalidate_offload(r.binding, bad)) == "R-TREE-17"


def test_invalidate_without_state_completes_cleanly() -> None:
    r = Rig()
    c = r.offload()
    r.ndis.invalidate_offload(r.binding, ProtocolOffloadBlockList(T.Ip4OffloadState, c.ph, []))
    mbl = r.target.pop("invalidate")
    mbl.status = NdisStatus.SUCCESS
    r.ndis.m_invalidate_offload_complete(r.adapter, mbl)
    assert r.rule_ids() == []


def test_new_offload_under_a_linker_path_is_tracked_as_its_child() -> None:
    r = Rig()
    c1 = r.offload()
    c2 = Conn()
    tcp = c2.tree(tcp_only=True)
    path = ProtocolOffloadBlockList(T.Ip4OffloadState, c1.ph, [])
    path.add_dependent(tcp)
    r.ndis.initiate_offload(r.binding, path)
    mbl = r.target.pop("initiate")
    r.target.offload_all(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    path_obj = r.checks.objects[id(c1.ph.miniport_offload_context)]
    assert [o.phase for o in path_obj.children] == [Phase.OFFLOADED, Phase.OFFLOADED]
    assert r.rule_ids() == []


def test_placeholder_and_cached_struct_of_another_layer_is_r_tree_16() -> None:
    r = Rig()
    pbl = ProtocolOffloadBlockList(T.Ip4OffloadState, NdisOffloadHandle("p"), [TcpOffloadStateCached()])
    assert violation(lambda: r.ndis.initiate_offload(r.binding, pbl)) == "R-TREE-16"


def test_failed_offload_gives_the_send_data_back_to_the_host_unstamped() -> None:
    r = Rig()
    c = Conn()
    mbl = r.start_offload(c)
    assert all(n.owner == "nic" for n in c.send_data) and r.binding.sends_out == 2
    _fail_tcp(mbl)
    r.ndis.m_initiate_offload_complete(r.adapter, mbl)
    assert all(n.owner == "tcpip" and n.source_handle is None for n in c.send_data)
    assert r.binding.sends_out == 0 and r.rule_ids() == []
