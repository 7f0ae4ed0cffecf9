"""Core NDIS behaviour added for the chimney verifier: initiate NetBufferListChain ownership and routing
(R-OFF-17..23, R-NBL-02), BufferedData at terminate (R-TRM-16), refused marks (R-IND-07), the
BoundaryChecks edge hooks, R-IM-13 answers and refusals, and block-list conversion of very wide trees."""

from __future__ import annotations

from typing import Any

import pytest
from test_core_doubles import (
    PassThroughIm,
    RecordingMiniport,
    RecordingProtocol,
    Stack,
    chain,
    make_nbls,
    ref_of,
)

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    ProtocolOffloadBlockList,
    iter_tree,
    mbl_to_pbl,
    pbl_to_mbl,
)
from chimney.ndis.buffers import NblInfo
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import Binding, BoundaryChecks, Ndis, NdisUsageError, Op
from chimney.ndis.offload_state import (
    IndicateOffloadEvent,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    TcpOffloadEventType,
    TcpOffloadStateDelegated,
)
from chimney.ndis.oid import (
    OID_PNP_SET_POWER,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    OID_TCP_TASK_OFFLOAD,
    NdisDevicePowerState,
    NdisOidRequest,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

T = OffloadStateType
S = NdisStatus


class Conn:
    """One TCP-only offload (a TCP node on its own) carrying two send NBLs as NetBufferListChain."""

    def __init__(self, owner: str = "tcpip") -> None:
        self.th = NdisOffloadHandle("tcp")
        self.send_data = make_nbls(owner, 2)
        self.pbl: ProtocolOffloadBlockList | None = None

    def initiate_tree(self) -> ProtocolOffloadBlockList:
        node = ProtocolOffloadBlockList(T.TcpOffloadState, self.th, ["const", "cached", "delegated"])
        node.net_buffer_list_chain = chain(*self.send_data)
        self.pbl = node
        return node


def initiate(s: Stack, c: Conn, binding: Binding | None = None) -> MiniportOffloadBlockList:
    s.ndis.initiate_offload(binding or s.binding, c.initiate_tree())
    op, mbl = s.mp.state_calls.pop()
    assert op == "initiate"
    return mbl


def offloaded(s: Stack, c: Conn, binding: Binding | None = None) -> None:
    mbl = initiate(s, c, binding)
    s.mp.offload_all(mbl)
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)


def terminate(s: Stack, c: Conn, returned: list[Any], buffered: Any = None) -> None:
    s.ndis.terminate_offload(s.binding, ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, None))
    op, mbl = s.mp.state_calls.pop()
    assert op == "terminate"
    mbl.net_buffer_list_chain = chain(*returned) if returned else None
    dlg = TcpOffloadStateDelegated(buffered_data=buffered)
    if returned:  # R-TRM-13: the returned send data is described consistently
        dlg.send_data_head, dlg.send_data_tail = returned[0], returned[-1]
        dlg.snd_max = sum(n.data_length() for n in returned)
    mbl.state = [dlg]
    mbl.status = S.SUCCESS
    s.ndis.m_terminate_offload_complete(s.adapter, mbl)


def ack(nbl: Any) -> None:
    """A target completing a send in full (R-SEND-04: data start advanced by the bytes transferred)."""
    k = nbl.first_net_buffer.data_length
    nbl.first_net_buffer.advance(k)
    nbl.info[NblInfo.TcpOffloadBytesTransferred] = k
    nbl.status = S.SUCCESS


def originals(nbls: list[Any]) -> list[Any]:
    return [n.source_handle for n in nbls]


# ------------------------------------------------------------------- 1. initiate NetBufferListChain


@pytest.mark.parametrize("depth", [0, 1])
def test_r_off_22_initiate_chain_goes_down_stamped_and_send_complete_routes_it_back(depth: int) -> None:
    s = Stack(depth)
    c = Conn()
    before = originals(c.send_data)
    offloaded(s, c)
    for n in c.send_data:
        assert n.owner == "nic"  # R-NBL-02: the target owns the send data now
        assert type(n.source_handle) is tuple and isinstance(n.source_handle[0], Binding)
    assert s.binding.sends_out == 2
    for n in c.send_data:
        ack(n)
    s.ndis.tcp_offload_send_complete(s.adapter, chain(*c.send_data))
    assert [n for _, n in s.proto.io_completions] == c.send_data
    assert all(n.owner == "tcpip" for n in c.send_data)
    assert originals(c.send_data) == before
    assert s.binding.sends_out == 0
    assert s.verifier.violations == []


def test_r_off_23_failed_tcp_node_gives_the_chain_back_untouched_at_initiate_completion() -> None:
    s = Stack(0)
    c = Conn()
    before = originals(c.send_data)
    statuses = [n.status for n in c.send_data]
    mbl = initiate(s, c)
    mbl.status = S.FAILURE
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    assert [op for op, _ in s.proto.state_completions] == ["initiate"]
    assert all(n.owner == "tcpip" for n in c.send_data)
    assert originals(c.send_data) == before
    assert [n.status for n in c.send_data] == statuses  # untouched
    assert s.binding.sends_out == 0
    s.ndis.unbind(s.binding)  # nothing outstanding on the binding
    assert s.verifier.violations == []


def test_r_trm_11_terminate_returns_unsent_chain_nbls_to_the_host() -> None:
    s = Stack(0)
    c = Conn()
    before = originals(c.send_data)
    offloaded(s, c)
    terminate(s, c, c.send_data)
    assert all(n.owner == "tcpip" for n in c.send_data)
    assert originals(c.send_data) == before
    assert s.binding.sends_out == 0
    assert s.verifier.violations == []


def test_a_target_handing_back_an_nbl_it_never_held_is_reported() -> None:
    s = Stack(0, mode=Mode.RECORD)
    c = Conn()
    offloaded(s, c)
    stray = make_nbls("somebody", 1)[0]
    terminate(s, c, [*c.send_data, stray])
    assert "R-NBL-02" in [v.rule_id for v in s.verifier.violations]


@pytest.mark.parametrize("checks", [BoundaryChecks, ChimneyChecks], ids=["crossing-checks", "chimney-checks"])
def test_core_chain_handling_is_the_same_with_the_crossing_or_the_full_checks(checks: type[BoundaryChecks]) -> None:
    s = Stack(0)
    s.ndis = Ndis(s.sched, Verifier(Mode.STRICT), checks=checks)
    s.mp = type(s.mp)("nic2")
    s.adapter = s.ndis.add_adapter(s.mp, "nic1")
    s.binding = s.ndis.bind(s.proto, s.adapter)
    c = Conn()
    before = originals(c.send_data)
    offloaded(s, c)
    for n in c.send_data:
        assert n.source_handle[1] is before[0] or n.source_handle[1] == before[0]  # stamped exactly once
        assert n.owner == "nic2"
    assert s.binding.sends_out == 2
    terminate(s, c, c.send_data)
    assert originals(c.send_data) == before and s.binding.sends_out == 0
    assert all(n.owner == "tcpip" for n in c.send_data)
    assert s.ndis.verifier.violations == []


def test_verifier_off_with_two_bindings_still_routes_chain_completions_by_source_handle() -> None:
    s = Stack(0, mode=Mode.OFF, protocols=2)
    c0, c1 = Conn(), Conn("tcpip1")
    offloaded(s, c0, s.bindings[0])
    offloaded(s, c1, s.bindings[1])
    both = [c0.send_data[0], c1.send_data[0]]
    for n in both:
        ack(n)
    s.ndis.tcp_offload_send_complete(s.adapter, chain(*both))
    assert [n for _, n in s.protos[0].io_completions] == [c0.send_data[0]]
    assert [n for _, n in s.protos[1].io_completions] == [c1.send_data[0]]
    s.ndis.terminate_offload(s.bindings[0], ProtocolOffloadBlockList(T.TcpOffloadState, c0.th, None))
    _, mbl = s.mp.state_calls.pop()
    mbl.net_buffer_list_chain = chain(c0.send_data[1])
    mbl.status = S.SUCCESS
    s.ndis.m_terminate_offload_complete(s.adapter, mbl)
    assert c0.send_data[1].source_handle is None  # unstamped on its way back


# ------------------------------------------------------------------- 2./3. BufferedData, refused marks


def refuse_indication(s: Stack, c: Conn, nbl: Any) -> None:
    s.proto.indicate_result = (S.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    ret, _ = s.ndis.tcp_offload_receive_handler(c_ref(c), nbl, S.SUCCESS)
    assert ret == S.OFFLOAD_DATA_NOT_ACCEPTED and nbl.owner == "nic"
    s.proto.indicate_result = None


def c_ref(c: Conn) -> NdisOffloadHandleRef:
    return ref_of(c.th)


def test_r_trm_16_buffered_data_passes_to_the_host_and_a_recycled_refused_nbl_may_come_back() -> None:
    s = Stack(0)
    c = Conn()
    offloaded(s, c)
    recycled = make_nbls("nic", 1)[0]
    refuse_indication(s, c, recycled)  # R-IND-07 mark on its serial
    terminate(s, c, c.send_data, buffered=recycled)
    assert recycled.owner == "tcpip"
    assert s.ndis.offload_tcp_receive_return(s.binding, recycled) == S.SUCCESS  # no R-IND-07
    assert recycled.owner == "nic"
    assert s.verifier.violations == []


def test_r_trm_16_buffered_data_the_target_already_handed_over_is_left_alone() -> None:
    s = Stack(0)
    c = Conn()
    offloaded(s, c)
    bd = make_nbls("nic", 1)[0]
    s.ndis.tracker.transfer(bd, frm="nic", to="tcpip", rule_id="R-TRM-16", op="target hands BufferedData over")
    history = bd.history
    terminate(s, c, c.send_data, buffered=bd)
    assert bd.owner == "tcpip" and bd.history is history  # not moved twice
    assert s.ndis.offload_tcp_receive_return(s.binding, bd) == S.SUCCESS
    assert s.verifier.violations == []


def test_r_ind_07_refused_then_re_indicated_and_accepted_nbl_may_be_returned() -> None:
    s = Stack(0)
    c = Conn()
    offloaded(s, c)
    nbl = make_nbls("nic", 1)[0]
    refuse_indication(s, c, nbl)
    post = make_nbls("tcpip", 1)[0]
    s.ndis.offload_tcp_receive(c.th, post)  # R-IND-08: a post re-enables indications
    post.status = S.SUCCESS
    post.info[NblInfo.TcpOffloadBytesTransferred] = post.data_length()  # R-IND-09: filled first
    s.ndis.tcp_offload_receive_complete(s.adapter, post)
    assert s.ndis.tcp_offload_receive_handler(c_ref(c), nbl, S.SUCCESS) == (S.SUCCESS, 100)
    assert s.ndis.offload_tcp_receive_return(s.binding, nbl) == S.SUCCESS
    assert s.verifier.violations == []


def test_r_ind_07_returning_a_refused_nbl_is_still_caught() -> None:
    s = Stack(0, mode=Mode.RECORD)
    c = Conn()
    offloaded(s, c)
    nbl = make_nbls("nic", 1)[0]
    refuse_indication(s, c, nbl)
    nbl.owner = "tcpip"  # a host that kept it anyway
    s.ndis.offload_tcp_receive_return(s.binding, nbl)
    assert "R-IND-07" in [v.rule_id for v in s.verifier.violations]


# ------------------------------------------------------------------- 4. edge hooks


class Recorder(BoundaryChecks):
    log: list[str]

    def __init__(self, ndis: Ndis) -> None:
        super().__init__(ndis)
        self.log = []

    def state_call_enter(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        self.log.append(f"enter {op.value} blocked={blocked}")

    def state_call_exit(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        self.log.append(f"exit {op.value}")

    def state_complete_returned(self, op: Op, adapter: Any, mbl: MiniportOffloadBlockList) -> None:
        self.log.append(f"completed {op.value}")

    def io_enter(self, kind: str, handle: NdisOffloadHandle, nbl: Any, extra: tuple[int, ...]) -> Any:
        self.log.append(f"io {kind} {extra}")
        return kind.upper()

    def io_exit(self, kind: str, handle: NdisOffloadHandle, token: Any) -> None:
        self.log.append(f"io done {token}")

    def indication_enter(self, ref: NdisOffloadHandleRef, nbl: Any, status: int) -> Any:
        self.log.append("indicate")
        return "IND"

    def indication_exit(self, ref: NdisOffloadHandleRef, token: Any, result: tuple[int, int] | None) -> None:
        self.log.append(f"indicated {token} {None if result is None else tuple(int(x) for x in result)}")

    def event_enter(self, ref: NdisOffloadHandleRef, event_type: int, info: int) -> Any:
        self.log.append(f"event {event_type}")
        return "EVT"

    def event_exit(self, ref: NdisOffloadHandleRef, token: Any, completed: bool) -> None:
        self.log.append(f"event done {token}" + ("" if completed else " (raised)"))

    def status_indication(self, adapter: Any, status: int) -> None:
        self.log.append(f"status {status:#x}")

    def offload_event_enter(self, adapter: Any, mbl: Any, code: int) -> Any:
        self.log.append(f"offload event {code}")
        return "OEV"

    def offload_event_exit(self, adapter: Any, token: Any, completed: bool) -> None:
        self.log.append(f"offload event done {token} completed={completed}")

    def oid_enter(self, binding: Binding, request: Any) -> Any:
        self.log.append(f"oid {request.oid:#x}")
        return "OID"

    def oid_exit(self, binding: Binding, request: Any, token: Any, status: int | None) -> None:
        self.log.append(f"oid done {token} {status}")


def recorder_stack() -> tuple[Stack, Recorder]:
    s = Stack(0)
    s.ndis = Ndis(s.sched, Verifier(Mode.STRICT), checks=Recorder)
    s.mp = type(s.mp)("nic")
    s.adapter = s.ndis.add_adapter(s.mp, "nic0")
    s.binding = s.ndis.bind(s.proto, s.adapter)
    chk = s.ndis._chk
    assert isinstance(chk, Recorder)
    return s, chk


def test_hooks_bracket_the_miniport_state_handler_and_the_protocol_completion_handler() -> None:
    s, chk = recorder_stack()
    c = Conn()
    provider = s.adapter.dh.provider_generic
    client = s.binding.dh.client_generic
    assert provider is not None and client is not None
    down, up = provider.initiate_offload_handler, client.initiate_offload_complete_handler

    def miniport(ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        chk.log.append("miniport handler")
        down(ctx, mbl)

    def protocol(ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        chk.log.append("protocol handler")
        up(ctx, pbl)

    provider.initiate_offload_handler = miniport
    client.initiate_offload_complete_handler = protocol
    offloaded(s, c)
    assert chk.log == [
        "enter initiate blocked=False",
        "miniport handler",
        "exit initiate",
        "protocol handler",
        "completed initiate",
    ]


def test_hooks_bracket_chimney_io_indications_events_and_see_status_indications() -> None:
    s, chk = recorder_stack()
    c = Conn()
    offloaded(s, c)
    chk.log.clear()
    s.ndis.offload_tcp_disconnect(c.th, make_nbls("tcpip", 1)[0], 1)
    s.ndis.tcp_offload_receive_handler(c_ref(c), make_nbls("nic", 1)[0], S.SUCCESS)
    s.ndis.tcp_offload_event_handler(c_ref(c), TcpOffloadEventType.TcpIndicateAbort, 0)
    s.ndis.m_indicate_status_ex(s.adapter, S.OFFLOAD_PAUSE)
    assert chk.log == [
        "io disconnect (1,)",
        "io done DISCONNECT",
        "indicate",
        "indicated IND (0, 100)",
        f"event {int(TcpOffloadEventType.TcpIndicateAbort)}",
        "event done EVT",
        f"status {int(S.OFFLOAD_PAUSE):#x}",
    ]


def test_hooks_bracket_offload_event_indications_and_oid_requests_raised_or_not() -> None:
    s, chk = recorder_stack()
    offloaded(s, Conn())
    chk.log.clear()
    s.ndis.m_offload_event_indicate(s.adapter, _reachability_query(), IndicateOffloadEvent.NeighborReachabilityQuery)
    req = NdisOidRequest.set(OID_PNP_SET_POWER, NdisDevicePowerState.D0)
    status = s.ndis.oid_request(s.binding, req)
    s.mp.oid_request = _raise  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        s.ndis.oid_request(s.binding, NdisOidRequest.set(OID_PNP_SET_POWER, NdisDevicePowerState.D0))
    client = s.binding.dh.client_generic
    assert client is not None
    client.indicate_offload_event_handler = _raise
    with pytest.raises(RuntimeError):
        s.ndis.m_offload_event_indicate(s.adapter, _reachability_query(), IndicateOffloadEvent.NeighborReachabilityQuery)
    code = int(IndicateOffloadEvent.NeighborReachabilityQuery)
    assert chk.log == [
        f"offload event {code}",
        "offload event done OEV completed=True",
        f"oid {OID_PNP_SET_POWER:#x}",
        f"oid done OID {int(status)}",
        f"oid {OID_PNP_SET_POWER:#x}",
        "oid done OID None",
        f"offload event {code}",
        "offload event done OEV completed=False",
    ]


def _raise(*args: Any) -> Any:
    raise RuntimeError("handler failed")


def _reachability_query() -> MiniportOffloadBlockList:
    state = [NeighborOffloadStateConst(), NeighborOffloadStateCached(), NeighborOffloadStateDelegated()]
    mbl = MiniportOffloadBlockList(T.NeighborOffloadState, None, None, state)
    mbl.status = S.SUCCESS
    return mbl


def test_hooks_see_ndis_failing_a_tree_itself_inline_when_no_chimney_is_below() -> None:
    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT), checks=Recorder)
    nic = ndis.add_adapter(RecordingMiniport("nic"), "nic0")
    vm = ndis.add_im(PassThroughIm("im0", chimney=False), nic, "im0-vm")
    proto = RecordingProtocol("tcpip")
    binding = ndis.bind(proto, vm)
    rec = ndis._chk
    assert isinstance(rec, Recorder)
    ndis.initiate_offload(binding, Conn().initiate_tree())
    assert rec.log == ["enter initiate blocked=True", "exit initiate"]
    assert [op for op, _ in proto.state_completions] == ["initiate"]


def test_chimney_checks_still_catch_a_synchronous_initiate_completion_through_the_hooks() -> None:
    """R-OFF-01 depends on the 'miniport handler returned' edge now coming from core."""
    s = Stack(0, mode=Mode.RECORD)
    s.ndis = Ndis(s.sched, Verifier(Mode.RECORD), checks=ChimneyChecks)
    s.mp = type(s.mp)("nic")
    s.adapter = s.ndis.add_adapter(s.mp, "nic0")
    s.binding = s.ndis.bind(s.proto, s.adapter)

    def inline(ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        s.mp.offload_all(mbl)
        s.ndis.m_initiate_offload_complete(s.adapter, mbl)

    provider = s.adapter.dh.provider_generic
    assert provider is not None
    provider.initiate_offload_handler = inline
    s.ndis.initiate_offload(s.binding, Conn().initiate_tree())
    assert "R-OFF-01" in [v.rule_id for v in s.ndis.verifier.violations]


# ------------------------------------------------------------------- 5. R-IM-13


@pytest.mark.parametrize("oid", [OID_TCP_TASK_OFFLOAD, OID_TCP_CONNECTION_OFFLOAD_PARAMETERS])
def test_r_im_13_chimney_queries_to_an_adapter_without_chimney_handlers_are_not_supported(oid: int) -> None:
    s = Stack(1, im_chimney=False)
    s.top.offload_params = "stale parameters"
    req = NdisOidRequest.query(oid)
    assert s.ndis.oid_request(s.binding, req) == S.NOT_SUPPORTED
    assert req.status == S.NOT_SUPPORTED and s.mp.oids == []
    assert s.verifier.violations == []


def test_r_im_13_io_on_a_handle_ndis_failed_itself_is_refused_with_a_clear_error() -> None:
    s = Stack(1, im_chimney=False)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.initiate_tree())
    assert c.pbl is not None and c.pbl.status == S.FAILURE
    assert all(n.owner == "tcpip" and n.source_handle is None for n in c.send_data)  # never handed down
    for call in (
        lambda: s.ndis.offload_tcp_send(c.th, make_nbls("tcpip", 1)[0]),
        lambda: s.ndis.offload_tcp_receive(c.th, make_nbls("tcpip", 1)[0]),
        lambda: s.ndis.offload_tcp_disconnect(c.th, make_nbls("tcpip", 1)[0], 1),
        lambda: s.ndis.offload_tcp_receive_return(s.binding, make_nbls("tcpip", 1)[0]),
    ):
        with pytest.raises(NdisUsageError, match="no chimney handlers"):
            call()
    assert s.binding.sends_out == 0


def test_io_on_a_handle_the_target_failed_reaches_the_target_which_refuses_it() -> None:
    s = Stack(0)
    c = Conn()
    mbl = initiate(s, c)
    mbl.status = S.FAILURE
    s.ndis.m_initiate_offload_complete(s.adapter, mbl)
    nbl = make_nbls("tcpip", 1)[0]
    assert s.ndis.offload_tcp_send(c.th, nbl) == S.PENDING
    assert s.mp.io_calls[-1][1] is None  # no context: the target completes it with an error itself


# ------------------------------------------------------------------- 6. deep trees


def test_ten_thousand_sibling_tcp_nodes_convert_both_ways_without_recursion() -> None:
    handles = [NdisOffloadHandle(f"t{i}") for i in range(10_000)]
    root = ProtocolOffloadBlockList(T.TcpOffloadState, handles[0], [])
    node = root
    for h in handles[1:]:
        node.next_block = ProtocolOffloadBlockList(T.TcpOffloadState, h, [])
        node = node.next_block
    made: list[NdisOffloadHandle] = []

    def make(h: NdisOffloadHandle) -> Any:
        made.append(h)
        return h

    mroot = pbl_to_mbl(root, make)
    mnodes = list(iter_tree(mroot))
    assert made == handles and len(mnodes) == 10_000
    assert all(m.ndis_reserved[0] is p for m, p in zip(mnodes, iter_tree(root), strict=True))
    back = mbl_to_pbl(mroot, lambda m: m.ndis_offload_handle)
    assert [p.offload_handle for p in iter_tree(back)] == handles


def test_r_im_13_a_tree_ndis_fails_itself_leaves_no_stamp_on_the_chain() -> None:
    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT))
    nic = ndis.add_adapter(RecordingMiniport("nic"), "nic0")
    vm = ndis.add_im(PassThroughIm("im0", chimney=False), nic, "im0-vm")
    proto = RecordingProtocol("tcpip")
    binding = ndis.bind(proto, vm)
    c = Conn()
    before = originals(c.send_data)
    ndis.initiate_offload(binding, c.initiate_tree())
    assert originals(c.send_data) == before and binding.sends_out == 0
    assert all(n.owner == "tcpip" for n in c.send_data)
    ndis.unbind(binding)
    assert ndis.verifier.violations == []
