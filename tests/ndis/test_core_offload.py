"""Chimney state operations and I/O through NDIS: PBL -> MBL conversion (placeholders, linkers, new
offloads), offload-handle resolution for I/O, completion checks (R-TREE-02/03/05/07/15), I/O return
rules (R-SEND-01, R-RECV-01, R-DISC-01, R-FWD-01), indications and returns (R-IND-02/03/07/13/14)."""

from __future__ import annotations

from typing import Any

import pytest
from test_core_doubles import ImEntry, Stack, ack, chain, make_nbls, ref_of

from chimney.ndis.blocklist import (
    STATUS_UNSET,
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NodeRole,
    ProtocolOffloadBlockList,
    Slot,
    iter_tree,
    node_role,
)
from chimney.ndis.buffers import NBL_STATUS_UNSET
from chimney.ndis.core import NdisUsageError
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    IndicateOffloadEvent,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpOffloadEventType,
    TcpUploadReason,
)
from chimney.ndis.oid import OID_PNP_SET_POWER, NdisDevicePowerState, NdisOidRequest
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode

T = OffloadStateType


class Conn:
    """The host's view of one neighbor -> path -> TCP offload."""

    def __init__(self) -> None:
        self.nh = NdisOffloadHandle("neighbor")
        self.ph = NdisOffloadHandle("path")
        self.th = NdisOffloadHandle("tcp")
        self.send_data = make_nbls("tcpip", 2)

    def initiate_tree(self, *, placeholder_root: bool = False) -> ProtocolOffloadBlockList:
        nstate = [NeighborOffloadStateConst(), NeighborOffloadStateCached(), NeighborOffloadStateDelegated()]
        root = ProtocolOffloadBlockList(T.NeighborOffloadState, None if placeholder_root else self.nh, nstate)
        path = root.add_dependent(
            ProtocolOffloadBlockList(
                T.Ip4OffloadState, self.ph, [PathOffloadStateConst(), PathOffloadStateCached(), PathOffloadStateDelegated()]
            )
        )
        tcp = path.add_dependent(ProtocolOffloadBlockList(T.TcpOffloadState, self.th, ["const", "cached", "delegated"]))
        tcp.net_buffer_list_chain = chain(*self.send_data)
        return root

    def tcp_only_tree(self, type_: int = T.TcpOffloadDelegatedState, *, stateless: bool = False) -> ProtocolOffloadBlockList:
        """`stateless`: no trailing state structures (an invalidate tree, R-TREE-17)."""
        return ProtocolOffloadBlockList(type_, self.th, [] if stateless else ["delegated"])


def initiated(depth: int, mode: Mode = Mode.STRICT) -> tuple[Stack, Conn]:
    s = Stack(depth, mode=mode)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    op, mbl = s.mp.state_calls.pop()
    assert op == "initiate"
    s.mp.offload_all(mbl)
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    return s, c


def complete_send_data(s: Stack, c: Conn) -> None:
    """The target acknowledges the send data handed over at offload (R-OFF-22), oldest first (R-SEND-03)."""
    ack(*c.send_data)
    s.ndis.tcp_offload_send_complete(s.adapter, chain(*c.send_data))
    assert [n for _, n in s.proto.io_completions] == c.send_data
    s.proto.io_completions.clear()


# ----------------------------------------------------------------------------------- conversion


def test_pbl_to_mbl_placeholder_linker_and_new_offload() -> None:
    s = Stack(0)
    c = Conn()
    c.ph.miniport_offload_context.value = "existing-path"  # already offloaded: a linker
    pbl = c.initiate_tree(placeholder_root=True)
    s.ndis.initiate_offload(s.binding, pbl)
    _, root = s.mp.state_calls[-1]
    path = root.dependent_block_list
    tcp = path.dependent_block_list
    assert [node_role(n) for n in iter_tree(root)] == [NodeRole.PLACEHOLDER, NodeRole.LINKER, NodeRole.NEW_OFFLOAD]
    assert root.miniport_offload_context is None and root.ndis_offload_handle is None
    # MiniportOffloadContext is the very Slot inside the host's NDIS_OFFLOAD_HANDLE.
    assert path.miniport_offload_context is c.ph.miniport_offload_context
    assert tcp.miniport_offload_context is c.th.miniport_offload_context
    # NdisOffloadHandle resolves back to the binding and the host's handle.
    assert ref_of(c.th) is tcp.ndis_offload_handle
    assert tcp.ndis_offload_handle.binding is s.binding and tcp.ndis_offload_handle.upper is c.th
    assert tcp.state is pbl.dependent_block_list.dependent_block_list.state  # shared, not copied
    assert all(n.status == STATUS_UNSET for n in iter_tree(root))
    assert tcp.net_buffer_list_chain is c.send_data[0]
    assert all(n.owner == "nic" for n in c.send_data)  # R-NBL-02: send data handed to the target


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_initiate_completes_to_the_host_with_the_same_pbl_root(depth: int) -> None:
    s = Stack(depth)
    c = Conn()
    pbl = c.initiate_tree()
    s.ndis.initiate_offload(s.binding, pbl)
    _op, mbl = s.mp.state_calls.pop()
    s.mp.offload_all(mbl)
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert s.proto.state_completions == [("initiate", pbl)]
    assert [n.status for n in iter_tree(pbl)] == [NdisStatus.SUCCESS] * 3
    for h in (c.nh, c.ph, c.th):
        value = h.miniport_offload_context.value
        assert value is not None
        assert isinstance(value, ImEntry) == (depth > 0)
    assert s.adapter.outstanding_roots == {}
    assert s.verifier.violations == []


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_io_calls_resolve_the_target_context_from_the_host_handle(depth: int) -> None:
    s, c = initiated(depth)
    complete_send_data(s, c)
    data = make_nbls("tcpip", 3)
    assert s.ndis.offload_tcp_send(c.th, chain(*data)) == NdisStatus.PENDING
    post = make_nbls("tcpip", 1)[0]
    assert s.ndis.offload_tcp_receive(c.th, post) == NdisStatus.PENDING
    fin = make_nbls("tcpip", 1)[0]
    assert s.ndis.offload_tcp_disconnect(c.th, fin, TCP_DISCONNECT_GRACEFUL_CLOSE) == NdisStatus.PENDING
    seg = make_nbls("tcpip", 1)[0]
    assert s.ndis.offload_tcp_forward(c.th, seg) == NdisStatus.PENDING
    kinds = [call[0] for call in s.mp.io_calls]
    assert kinds == ["send", "receive", "disconnect", "forward"]
    for _, ctx, _, _ in s.mp.io_calls:
        assert isinstance(ctx, dict) and "ndis_handle" in ctx  # the target's own context reference
    assert s.mp.io_calls[2][3] == (TCP_DISCONNECT_GRACEFUL_CLOSE,)
    assert s.mp.io_calls[0][2] is data[0]  # identical NBL pointer through every IM (R-IM-07)
    assert all(n.owner == "nic" for n in [*data, post, fin, seg])

    ack(*data)
    for n in [post, fin, seg]:
        n.status = NdisStatus.SUCCESS
    s.ndis.tcp_offload_send_complete(s.adapter, chain(*data))
    s.ndis.tcp_offload_receive_complete(s.adapter, post)
    s.ndis.tcp_offload_disconnect_complete(s.adapter, fin)
    s.ndis.tcp_offload_forward_complete(s.adapter, seg)
    assert s.proto.io_completions == [
        ("send", data[0]), ("send", data[1]), ("send", data[2]),
        ("receive", post), ("disconnect", fin), ("forward", seg),
    ]
    assert all(n.owner == "tcpip" for n in [*data, post, fin, seg])
    assert s.verifier.violations == []


def test_io_on_a_handle_never_offloaded_is_refused() -> None:
    s = Stack(0)
    with pytest.raises(NdisUsageError):
        s.ndis.offload_tcp_send(NdisOffloadHandle(), make_nbls("tcpip", 1)[0])


@pytest.mark.parametrize(
    ("call", "rule_id"),
    [("send", "R-SEND-01"), ("receive", "R-RECV-01"), ("disconnect", "R-DISC-01"), ("forward", "R-FWD-01")],
)
def test_io_handler_returning_other_than_pending(call: str, rule_id: str) -> None:
    s, c = initiated(0)
    s.mp.io_status = NdisStatus.SUCCESS
    nbl = make_nbls("tcpip", 1)[0]
    args: tuple[Any, ...] = (c.th, nbl, TCP_DISCONNECT_GRACEFUL_CLOSE) if call == "disconnect" else (c.th, nbl)
    with pytest.raises(ContractViolation) as e:
        getattr(s.ndis, f"offload_tcp_{call}")(*args)
    assert e.value.rule_id == rule_id


def test_r_nbl_01_io_completion_without_status() -> None:
    s, c = initiated(1)
    complete_send_data(s, c)
    nbl = make_nbls("tcpip", 1)[0]
    s.ndis.offload_tcp_send(c.th, nbl)
    ack(nbl, status=NBL_STATUS_UNSET)
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_send_complete(s.adapter, nbl)
    assert e.value.rule_id == "R-NBL-01"


def test_r_nbl_02_io_double_completion() -> None:
    s, c = initiated(0)
    complete_send_data(s, c)
    nbl = make_nbls("tcpip", 1)[0]
    s.ndis.offload_tcp_send(c.th, nbl)
    ack(nbl)
    s.ndis.tcp_offload_send_complete(s.adapter, nbl)
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_send_complete(s.adapter, nbl)
    assert e.value.rule_id == "R-NBL-02"


def test_r_disc_01_disconnect_completion_with_two_nbls() -> None:
    s, c = initiated(0)
    a, b = make_nbls("tcpip", 2)
    s.ndis.offload_tcp_disconnect(c.th, a, TCP_DISCONNECT_GRACEFUL_CLOSE)
    s.ndis.offload_tcp_send(c.th, b)
    a.status = b.status = NdisStatus.SUCCESS
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_disconnect_complete(s.adapter, chain(a, b))
    assert e.value.rule_id == "R-DISC-01"


# ----------------------------------------------------------------------------------- completions


def test_r_tree_02_initiate_completed_with_an_unwritten_node_status() -> None:
    s = Stack(0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    _, mbl = s.mp.state_calls.pop()
    s.mp.offload_all(mbl)
    mbl.dependent_block_list.dependent_block_list.status = STATUS_UNSET
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert e.value.rule_id == "R-TREE-02"


def test_r_tree_03_completion_with_a_different_root() -> None:
    s = Stack(0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    _, mbl = s.mp.state_calls.pop()
    s.mp.offload_all(mbl)
    impostor = MiniportOffloadBlockList(T.NeighborOffloadState, Slot())
    impostor.status = NdisStatus.SUCCESS
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_initiate_offload_complete(s.adapter, impostor)
    assert e.value.rule_id == "R-TREE-03"
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)  # the right root still completes
    assert len(s.proto.state_completions) == 1


def test_r_tree_03_completing_with_the_wrong_operation() -> None:
    s = Stack(0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    _, mbl = s.mp.state_calls.pop()
    s.mp.offload_all(mbl)
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_terminate_offload_complete(s.adapter, mbl)
    assert e.value.rule_id == "R-TREE-03"


@pytest.mark.parametrize("op", ["terminate", "update", "invalidate", "query"])
def test_r_tree_15_partial_success_outside_initiate(op: str) -> None:
    s, c = initiated(0)
    method = {"query": "query_offload_state"}.get(op, f"{op}_offload")
    s.ndis.__getattribute__(method)(s.binding, c.tcp_only_tree(stateless=op == "invalidate"))
    got_op, mbl = s.mp.state_calls.pop()
    assert got_op == op
    assert mbl.miniport_offload_context is c.th.miniport_offload_context
    mbl.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    complete = {"query": "m_query_offload_state_complete"}.get(op, f"m_{op}_offload_complete")
    with pytest.raises(ContractViolation) as e:
        getattr(s.ndis, complete)(s.adapter, mbl)
    assert e.value.rule_id == "R-TREE-15"


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_terminate_success_returns_send_data_to_the_host(depth: int) -> None:
    s, c = initiated(depth)
    pbl = c.tcp_only_tree()
    s.ndis.terminate_offload(s.binding, pbl)
    _, mbl = s.mp.state_calls.pop()
    mbl.status = NdisStatus.SUCCESS
    mbl.net_buffer_list_chain = chain(*c.send_data)  # outstanding send data goes back (R-TRM-11)
    s.ndis.m_terminate_offload_complete(s.adapter, mbl)
    assert s.proto.state_completions[-1] == ("terminate", pbl)
    assert pbl.status == NdisStatus.SUCCESS and pbl.net_buffer_list_chain is c.send_data[0]
    assert all(n.owner == "tcpip" for n in c.send_data)
    assert s.adapter.offloaded.keys().isdisjoint({id(c.th.miniport_offload_context)})


def test_r_tree_05_placeholder_must_be_success() -> None:
    s = Stack(0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree(placeholder_root=True))
    _, mbl = s.mp.state_calls.pop()
    s.mp.offload_all(mbl)
    mbl.status = NdisStatus.FAILURE
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert e.value.rule_id == "R-TREE-05"


def test_r_tree_07_success_without_a_context_reference() -> None:
    s = Stack(0)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    _, mbl = s.mp.state_calls.pop()
    for n in iter_tree(mbl):
        n.status = NdisStatus.SUCCESS
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert e.value.rule_id == "R-TREE-07"


def test_partial_offload_statuses_are_accepted_for_initiate() -> None:
    """The §5.2 aggregation on one chain: TCP RESOURCES (not offloaded), so path PARTIAL; the neighbor's
    only dependent (the path) is offloaded, so the neighbor is SUCCESS."""
    s = Stack(0)
    c = Conn()
    pbl = c.initiate_tree()
    s.ndis.initiate_offload(s.binding, pbl)
    _, mbl = s.mp.state_calls.pop()
    nodes = list(iter_tree(mbl))
    for n in nodes[:2]:
        n.miniport_offload_context.value = object()
    nodes[0].status = NdisStatus.SUCCESS
    nodes[1].status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    nodes[2].status = NdisStatus.RESOURCES
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert [n.status for n in iter_tree(pbl)] == [
        NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS, NdisStatus.RESOURCES
    ]
    assert c.th.miniport_offload_context.value is None
    assert s.verifier.violations == []


def test_chimney_blocked_by_an_im_without_handlers_fails_the_tree() -> None:
    s = Stack(1, im_chimney=False)
    c = Conn()
    # The upper protocol's client handlers exist; the IM's virtual miniport has no provider handlers.
    pbl = c.initiate_tree()
    s.ndis.initiate_offload(s.binding, pbl)
    assert s.proto.state_completions == [("initiate", pbl)]
    assert all(n.status == NdisStatus.FAILURE for n in iter_tree(pbl))
    assert s.mp.state_calls == [] and s.ndis.counters["chimney_blocked"] == 1


# ----------------------------------------------------------------------------------- indications


def indicate(s: Stack, c: Conn, size: int = 100) -> tuple[Any, Any]:
    nbl = make_nbls("nic", 1, size)[0]
    tcp_node_handle = c.th.miniport_offload_context.value
    if isinstance(tcp_node_handle, ImEntry):
        # The target stored the NdisOffloadHandle of the deepest IM's handle (R-TREE-13).
        h: Any = tcp_node_handle
        while isinstance(h, ImEntry):
            h = h.own.miniport_offload_context.value
        ndis_handle = h["ndis_handle"]
    else:
        ndis_handle = tcp_node_handle["ndis_handle"]
    return s.ndis.tcp_offload_receive_handler(ndis_handle, nbl, NdisStatus.SUCCESS), nbl


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_indication_accepted_then_returned_through_every_im(depth: int) -> None:
    s, c = initiated(depth)
    (status, consumed), nbl = indicate(s, c)
    assert (status, consumed) == (NdisStatus.SUCCESS, 100)
    assert s.proto.indications == [(c.th, nbl)]  # ProtocolTcpOffloadReceiveIndicate got the host's handle
    assert nbl.owner == "tcpip"
    assert s.ndis.offload_tcp_receive_return(s.binding, nbl) == NdisStatus.SUCCESS
    assert s.mp.receive_returns == [nbl] and nbl.owner == "nic"
    s.ndis.halt_adapter(s.adapter)  # nothing outstanding: halts cleanly
    assert s.verifier.violations == []


def test_r_ind_14_halt_with_indicated_nbls_outstanding() -> None:
    s, c = initiated(1)
    indicate(s, c)
    with pytest.raises(ContractViolation) as e:
        s.ndis.halt_adapter(s.adapter)
    assert e.value.rule_id == "R-IND-14"


def test_r_ind_13_receive_return_not_success() -> None:
    s, c = initiated(0)
    _, nbl = indicate(s, c)
    s.mp.receive_return_status = NdisStatus.PENDING
    with pytest.raises(ContractViolation) as e:
        s.ndis.offload_tcp_receive_return(s.binding, nbl)
    assert e.value.rule_id == "R-IND-13"


@pytest.mark.parametrize(
    ("result", "ok"),
    [
        ((NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0), True),
        ((NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 40), True),
        ((NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 5), False),
        ((NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 100), False),
    ],
)
def test_refused_indication_returns_ownership_to_the_target(result: tuple[int, int], ok: bool) -> None:
    s, c = initiated(1)
    s.proto.indicate_result = result
    if not ok:
        with pytest.raises(ContractViolation) as e:
            indicate(s, c)
        assert e.value.rule_id in ("R-IND-05", "R-IND-06")
        return
    got, nbl = indicate(s, c)
    assert got == result and nbl.owner == "nic"


def test_r_ind_07_receive_return_of_a_refused_indication() -> None:
    s, c = initiated(0)
    s.proto.indicate_result = (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    _, nbl = indicate(s, c)
    with pytest.raises(ContractViolation) as e:
        s.ndis.offload_tcp_receive_return(s.binding, nbl)
    assert e.value.rule_id == "R-IND-07"


def test_receive_return_of_an_nbl_never_indicated() -> None:
    s, _ = initiated(0)
    with pytest.raises(ContractViolation) as e:
        s.ndis.offload_tcp_receive_return(s.binding, make_nbls("nic", 1)[0])
    assert e.value.rule_id == "R-NBL-02"


def test_r_ind_02_and_03_indication_shape() -> None:
    s, c = initiated(0)
    ndis_handle = c.th.miniport_offload_context.value["ndis_handle"]
    a, b = make_nbls("nic", 2)
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_receive_handler(ndis_handle, chain(a, b), NdisStatus.SUCCESS)
    assert e.value.rule_id == "R-IND-02"
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_receive_handler(ndis_handle, make_nbls("nic", 1)[0], NdisStatus.RESOURCES)
    assert e.value.rule_id == "R-IND-03"


@pytest.mark.parametrize("depth", [0, 3])
def test_tcp_event_reaches_the_host_with_its_handle(depth: int) -> None:
    s, c = initiated(depth)
    (_, _), _ = indicate(s, c)  # make sure the handle path works for indications too
    h: Any = c.th.miniport_offload_context.value
    while isinstance(h, ImEntry):
        h = h.own.miniport_offload_context.value
    s.ndis.tcp_offload_event_handler(h["ndis_handle"], TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.LowActivity)
    assert s.proto.events == [(c.th, TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.LowActivity)]
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_event_handler(h["ndis_handle"], TcpOffloadEventType.TcpIndicateRetrieve, 0)
    assert e.value.rule_id == "R-EVT-06"


def test_r_tree_14_event_with_something_that_is_not_an_ndis_handle() -> None:
    s, c = initiated(0)
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_event_handler(c.th, TcpOffloadEventType.TcpIndicateAbort, 0)
    assert e.value.rule_id == "R-TREE-14"


@pytest.mark.parametrize("depth", [0, 1])
def test_neighbor_reachability_query_reaches_the_host_which_writes_hrd(depth: int) -> None:
    s, c = initiated(depth)
    h: Any = c.nh.miniport_offload_context.value
    while isinstance(h, ImEntry):
        h = h.own.miniport_offload_context.value
    cached = NeighborOffloadStateCached(host_reachability_delta=500)
    mbl = MiniportOffloadBlockList(
        T.NeighborOffloadState, None, h["ndis_handle"],
        [NeighborOffloadStateConst(), cached, NeighborOffloadStateDelegated(nic_reachability_delta=7)],
    )
    mbl.status = NdisStatus.SUCCESS

    def host_answers(pbl: Any, code: int) -> None:
        pbl.state[1].host_reachability_delta = 3

    s.ndis.m_offload_event_indicate(s.adapter, mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
    (pbl, code), = s.proto.offload_events
    assert code == IndicateOffloadEvent.NeighborReachabilityQuery
    assert pbl.offload_handle is c.nh
    host_answers(pbl, code)
    assert cached.host_reachability_delta == 3  # the same CACHED struct the target passed up


def test_r_nbr_05_malformed_reachability_query() -> None:
    s, _ = initiated(0)
    mbl = MiniportOffloadBlockList(T.NeighborOffloadState, None, None, [])
    mbl.status = NdisStatus.SUCCESS
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_offload_event_indicate(s.adapter, mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
    assert e.value.rule_id == "R-NBR-05"


def test_r_nbr_07_reachability_in_doubt_is_reserved() -> None:
    s, _ = initiated(0)
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_offload_event_indicate(s.adapter, None, IndicateOffloadEvent.NeighborReachabilityInDoubt)
    assert e.value.rule_id == "R-NBR-07"


@pytest.mark.parametrize("depth", [0, 1])
def test_r_pm_01_low_power_with_connections_still_offloaded(depth: int) -> None:
    s, _ = initiated(depth)
    with pytest.raises(ContractViolation) as e:
        s.ndis.oid_request(s.binding, NdisOidRequest.set(OID_PNP_SET_POWER, NdisDevicePowerState.D3))
    assert e.value.rule_id == "R-PM-01"


def test_low_power_after_everything_was_terminated_reaches_the_target() -> None:
    s, c = initiated(0)
    # Terminate TCP, then path, then neighbor (dependent-first order, R-TRM-04).
    for h, t in ((c.th, T.TcpOffloadDelegatedState), (c.ph, T.Ip4OffloadDelegatedState), (c.nh, T.NeighborOffloadDelegatedState)):
        s.ndis.terminate_offload(s.binding, ProtocolOffloadBlockList(t, h, ["delegated"]))
        _, mbl = s.mp.state_calls.pop()
        mbl.status = NdisStatus.SUCCESS
        if h is c.th:  # the send data handed over at offload comes back (R-OFF-22, R-TRM-11)
            mbl.net_buffer_list_chain = chain(*c.send_data)
        s.ndis.m_terminate_offload_complete(s.adapter, mbl)
    assert s.adapter.offloaded == {}
    req = NdisOidRequest.set(OID_PNP_SET_POWER, NdisDevicePowerState.D3)
    assert s.ndis.oid_request(s.binding, req) == NdisStatus.SUCCESS
    assert s.mp.oids == [req]


@pytest.mark.parametrize("depth", [0, 2])
def test_verifier_off_routes_state_operations_io_and_indications(depth: int) -> None:
    s, c = initiated(depth, Mode.OFF)
    assert s.proto.state_completions[0][0] == "initiate"
    data = make_nbls("tcpip", 2)
    assert s.ndis.offload_tcp_send(c.th, chain(*data)) == NdisStatus.PENDING
    for n in data:
        n.status = NdisStatus.SUCCESS
    s.ndis.tcp_offload_send_complete(s.adapter, chain(*data))
    assert [n for _, n in s.proto.io_completions] == data
    (status, consumed), nbl = indicate(s, c)
    assert status == NdisStatus.SUCCESS and consumed == 100
    assert s.ndis.offload_tcp_receive_return(s.binding, nbl) == NdisStatus.SUCCESS
    assert s.mp.receive_returns == [nbl]
    assert sum(s.verifier.checks.values()) == 0


def test_r_init_16_chimney_indication_needs_exactly_one_net_buffer() -> None:
    from chimney.ndis.buffers import NetBufferList

    s, c = initiated(0)
    empty = NetBufferList(None, "nic")
    with pytest.raises(ContractViolation) as e:
        s.ndis.tcp_offload_receive_handler(c.th.miniport_offload_context.value["ndis_handle"], empty, NdisStatus.SUCCESS)
    assert e.value.rule_id == "R-INIT-16"
