"""Test doubles for the IM filter tests: a host-like recording protocol, a chimney target that completes
state operations and I/O on the scheduler, a hop-recording pass-through IM and a stack builder. No tests here."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from chimney.filters.checks import ImChecks
from chimney.filters.passthrough import OffloadEntry, PassThroughChimneyIm
from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NodeRole,
    ProtocolOffloadBlockList,
    iter_dependents,
    iter_tree,
    node_role,
)
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.core import Adapter, Binding, DriverHandle, Ndis, NdisStatusIndication
from chimney.ndis.driver import IntermediateDriver, MiniportDriver, ProtocolDriver
from chimney.ndis.offload_state import (
    NDIS_TCP_CHIMNEY_OFFLOAD,
    IndicateOffloadEvent,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
)
from chimney.ndis.oid import NdisOidRequest, NdisTcpConnectionOffload
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

T = OffloadStateType
DELAY_NS = 5_000
OK = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)


def chain(*nbls: NetBufferList) -> NetBufferList:
    for a, b in itertools.pairwise(nbls):
        a.next = b
    nbls[-1].next = None
    return nbls[0]


def nbls_of(head: NetBufferList | None) -> list[NetBufferList]:
    out = []
    while head is not None:
        out.append(head)
        head = head.next
    return out


def make_nbls(owner: str, n: int, size: int = 100) -> list[NetBufferList]:
    return [nbl_from_bytes(bytearray([65 + i % 26]) * size, owner) for i in range(n)]


class Box:
    """A state struct stand-in the target fills in on query (shared by every layer: the overlay)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value


# ------------------------------------------------------------------------------------------------ target


class TargetObj:
    """What the target writes into a slot: its context for one offloaded object."""

    _ids = itertools.count(1)

    def __init__(self, node: MiniportOffloadBlockList) -> None:
        self.id = next(TargetObj._ids)
        self.type = node.header.type
        self.ndis_handle = node.ndis_offload_handle  # passed back in indications (R-TREE-13)
        self.send_data = node.net_buffer_list_chain
        self.invalid = False
        self.updates = 0

    def __repr__(self) -> str:
        return f"<TargetObj {self.id} type={self.type}>"


class ChimneyTarget(MiniportDriver):
    """A chimney miniport completing everything on the scheduler after `delay_ns` (unless auto=False)."""

    def __init__(self, name: str = "nic", *, delay_ns: int = DELAY_NS, auto: bool = True) -> None:
        super().__init__(name)
        self.delay_ns = delay_ns
        self.auto = auto
        self.adapter: Adapter | None = None
        self.handlers: Any = None
        self.caps = NdisTcpConnectionOffload(tcp_connection_offload_capacity=128)
        self.fail_state: dict[int, int] = {}  # id(state list) -> failure status for that new offload
        self.objects: dict[int, TargetObj] = {}
        self.state_calls: list[tuple[str, MiniportOffloadBlockList]] = []
        self.io_calls: list[tuple[str, Any, NetBufferList, tuple[int, ...]]] = []
        self.pending_io: list[tuple[str, NetBufferList]] = []
        self.receive_returns: list[NetBufferList] = []
        self.oids: list[NdisOidRequest] = []
        self.sent: list[NetBufferList] = []
        self.returned: list[NetBufferList] = []

    @property
    def n(self) -> Ndis:
        assert self.ndis is not None
        return self.ndis

    def set_options(self, driver_handle: DriverHandle) -> Any:
        return self.register_provider_handlers(driver_handle)

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> Any:
        self.adapter = miniport_handle
        self.n.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=self.caps)
        status, self.handlers = self.n.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        assert status == NdisStatus.SUCCESS
        return NdisStatus.SUCCESS

    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        if self.auto:
            self.n.scheduler.call_later(self.delay_ns, fn, *args)

    # -- state operations ------------------------------------------------------------------------------

    def initiate_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("initiate", mbl))
        self._later(self.complete_initiate, mbl)

    def _initiate_node(self, node: MiniportOffloadBlockList) -> int:
        """§5.2 aggregation, recursively over the node's dependents."""
        role = node_role(node)
        if role is NodeRole.NEW_OFFLOAD:
            failure = self.fail_state.get(id(node.state))
            if failure is not None:
                node.status = failure
                for dep in iter_dependents(node):
                    for sub in iter_tree_only(dep):
                        sub.status = NdisStatus.FAILURE
                return failure
            obj = TargetObj(node)
            self.objects[obj.id] = obj
            node.miniport_offload_context.value = obj
        deps = list(iter_dependents(node))
        results = [self._initiate_node(d) for d in deps]
        ok = [r for r in results if r in OK]
        if role is NodeRole.PLACEHOLDER or not deps or len(ok) == len(deps):
            node.status = NdisStatus.SUCCESS
        elif role is NodeRole.LINKER and not ok:
            node.status = NdisStatus.FAILURE
        else:
            node.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
        return node.status

    def complete_initiate(self, mbl: MiniportOffloadBlockList) -> None:
        node: MiniportOffloadBlockList | None = mbl
        while node is not None:
            self._initiate_node(node)
            node = node.next_block
        assert self.adapter is not None
        self.n.m_initiate_offload_complete(self.adapter, mbl)

    def _each(self, op: str, mbl: MiniportOffloadBlockList) -> None:
        for node in iter_tree(mbl):
            obj = node.miniport_offload_context.value if node.miniport_offload_context is not None else None
            if not isinstance(obj, TargetObj):
                node.status = NdisStatus.FAILURE
                continue
            if op == "query":
                for s in node.state:
                    if isinstance(s, Box):
                        s.value = f"obj{obj.id}"
            elif op == "update":
                obj.updates += 1
            elif op == "invalidate":
                obj.invalid = True
            elif op == "terminate":
                node.net_buffer_list_chain = obj.send_data
                obj.send_data = None
                del self.objects[obj.id]
            node.status = NdisStatus.SUCCESS
        assert self.adapter is not None
        getattr(self.n, {"query": "m_query_offload_state_complete"}.get(op, f"m_{op}_offload_complete"))(self.adapter, mbl)

    def terminate_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("terminate", mbl))
        self._later(self._each, "terminate", mbl)

    def update_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("update", mbl))
        self._later(self._each, "update", mbl)

    def invalidate_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("invalidate", mbl))
        self._later(self._each, "invalidate", mbl)

    def query_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("query", mbl))
        self._later(self._each, "query", mbl)

    # -- chimney I/O ------------------------------------------------------------------------------------

    def _io(self, kind: str, ctx: Any, nbl: NetBufferList, *extra: int) -> NdisStatus:
        assert isinstance(ctx, TargetObj), ctx
        self.io_calls.append((kind, ctx, nbl, extra))
        if kind == "disconnect":
            self.pending_io.append((kind, nbl))
        else:
            self.pending_io.extend((kind, n) for n in nbls_of(nbl))
        self._later(self.complete_io)
        return NdisStatus.PENDING

    def tcp_offload_send(self, ctx: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return self._io("send", offload_context, nbl)

    def tcp_offload_receive(self, ctx: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return self._io("receive", offload_context, nbl)

    def tcp_offload_disconnect(self, ctx: Any, offload_context: Any, nbl: NetBufferList, flags: int) -> NdisStatus:
        return self._io("disconnect", offload_context, nbl, flags)

    def tcp_offload_forward(self, ctx: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return self._io("forward", offload_context, nbl)

    def complete_io(self, order: Callable[[list[Any]], list[Any]] | None = None) -> None:
        """Complete every pending I/O: one batched call per kind (disconnects one by one)."""
        todo, self.pending_io = self.pending_io, []
        if order is not None:
            todo = order(todo)
        assert self.handlers is not None and self.adapter is not None
        groups: list[tuple[str, list[NetBufferList]]] = []
        for kind, nbl in todo:
            nbl.status = NdisStatus.SUCCESS
            moved = nbl.data_length()
            if kind == "receive":
                nb = nbl.first_net_buffer
                assert nb is not None
                nb.write(0, b"r" * moved)
            nbl.info[NblInfo.TcpOffloadBytesTransferred] = moved
            if kind in ("send", "receive"):
                for nb in nbl.net_buffers():
                    nb.advance(nb.data_length)  # NdisAdvanceNetBufferDataStart by the bytes done
            if groups and groups[-1][0] == kind and kind != "disconnect":
                groups[-1][1].append(nbl)
            else:
                groups.append((kind, [nbl]))
        for kind, nbls in groups:  # in request order; one call per run of the same kind
            getattr(self.handlers, f"ndis_tcp_offload_{kind}_complete")(self.adapter, chain(*nbls))

    def tcp_offload_receive_return(self, ctx: Any, nbl: NetBufferList) -> NdisStatus:
        self.receive_returns.extend(nbls_of(nbl))
        return NdisStatus.SUCCESS

    # -- indications -----------------------------------------------------------------------------------

    def indicate(self, obj: TargetObj, data: bytes) -> tuple[tuple[int, int], NetBufferList]:
        nbl = nbl_from_bytes(data, self.name)
        return self.handlers.ndis_tcp_offload_receive_handler(obj.ndis_handle, nbl, NdisStatus.SUCCESS), nbl

    def event(self, obj: TargetObj, event_type: int, info: int = 0) -> None:
        self.handlers.ndis_tcp_offload_event_handler(obj.ndis_handle, event_type, info)

    def reachability_query(self, obj: TargetObj, hrd: int, nrd: int) -> NeighborOffloadStateCached:
        cached = NeighborOffloadStateCached(host_reachability_delta=hrd)
        mbl = MiniportOffloadBlockList(
            T.NeighborOffloadState,
            None,
            obj.ndis_handle,
            [NeighborOffloadStateConst(), cached, NeighborOffloadStateDelegated(nic_reachability_delta=nrd)],
        )
        mbl.status = NdisStatus.SUCCESS
        assert self.adapter is not None
        self.n.m_offload_event_indicate(self.adapter, mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
        return cached

    def status(self, code: int, buffer: Any = None) -> None:
        assert self.adapter is not None
        self.n.m_indicate_status_ex(self.adapter, code, buffer)

    # -- OIDs and normal path ----------------------------------------------------------------------------

    def oid_request(self, ctx: Any, request: NdisOidRequest) -> NdisStatus:
        self.oids.append(request)
        return NdisStatus.SUCCESS

    def send_net_buffer_lists(self, ctx: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        got = nbls_of(nbl)
        self.sent.extend(got)
        for n in got:
            n.status = NdisStatus.SUCCESS
        self.n.scheduler.call_later(self.delay_ns, self.n.m_send_net_buffer_lists_complete, self.adapter, nbl, 0)

    def return_net_buffer_lists(self, ctx: Any, nbl: NetBufferList, flags: int) -> None:
        self.returned.extend(nbls_of(nbl))


def iter_tree_only(node: Any) -> Any:
    """`node` and everything below it (its DependentBlockList subtree), not its NextBlock siblings."""
    yield node
    for dep in iter_dependents(node):
        yield from iter_tree_only(dep)


# ------------------------------------------------------------------------------------------------ host


class Host(ProtocolDriver):
    """A host-like chimney protocol recording every completion and indication, per binding."""

    def __init__(self, name: str = "tcpip") -> None:
        super().__init__(name)
        self.bindings: list[Binding] = []
        self.state_completions: list[tuple[str, ProtocolOffloadBlockList]] = []
        self.io_completions: list[tuple[str, Any, NetBufferList]] = []
        self.events: list[tuple[Any, int, int]] = []
        self.offload_events: list[tuple[Any, int]] = []
        self.indications: list[tuple[Any, NetBufferList, int]] = []
        self.indicate_result: tuple[int, int] | None = None  # None = accept all
        self.hrd_answer: int | None = None
        self.statuses: list[NdisStatusIndication] = []
        self.oid_completions: list[tuple[NdisOidRequest, int]] = []
        self.send_completed: list[NetBufferList] = []
        self.received: list[NetBufferList] = []

    def set_options(self, driver_handle: DriverHandle) -> Any:
        return self.register_client_handlers(driver_handle)

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> Any:
        self.bindings.append(binding)
        return NdisStatus.SUCCESS

    def initiate_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("initiate", pbl))

    def terminate_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("terminate", pbl))

    def update_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("update", pbl))

    def invalidate_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("invalidate", pbl))

    def query_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("query", pbl))

    def indicate_offload_event(self, ctx: Any, pbl: ProtocolOffloadBlockList | None, code: int) -> None:
        self.offload_events.append((pbl, code))
        if pbl is not None and code == IndicateOffloadEvent.NeighborReachabilityQuery and self.hrd_answer is not None:
            pbl.state[1].host_reachability_delta = self.hrd_answer  # synchronously, before returning

    def tcp_offload_send_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("send", ctx, n) for n in nbls_of(nbl))

    def tcp_offload_receive_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("receive", ctx, n) for n in nbls_of(nbl))

    def tcp_offload_disconnect_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("disconnect", ctx, n) for n in nbls_of(nbl))

    def tcp_offload_forward_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("forward", ctx, n) for n in nbls_of(nbl))

    def tcp_offload_event(self, offload_context: Any, event_type: int, info: int) -> None:
        self.events.append((offload_context, event_type, info))

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        self.indications.append((offload_context, nbl, status))
        if self.indicate_result is None:
            return NdisStatus.SUCCESS, nbl.data_length()
        return self.indicate_result

    def status_ex(self, ctx: Any, indication: NdisStatusIndication) -> None:
        self.statuses.append(indication)

    def oid_request_complete(self, ctx: Any, request: NdisOidRequest, status: int) -> None:
        self.oid_completions.append((request, status))

    def send_net_buffer_lists_complete(self, ctx: Any, nbl: NetBufferList, flags: int) -> None:
        self.send_completed.extend(nbls_of(nbl))

    def receive_net_buffer_lists(self, ctx: Any, nbl: NetBufferList, port: int, num: int, flags: int) -> None:
        self.received.extend(nbls_of(nbl))
        assert self.ndis is not None
        self.ndis.return_net_buffer_lists(ctx, nbl, 0)


# ------------------------------------------------------------------------------------------------ IMs


class HopIm(PassThroughChimneyIm):
    """Pass-through IM that logs (im, handler, NBL) at every I/O hop into a shared list."""

    def __init__(self, name: str, log: list[tuple[str, str, NetBufferList]], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.log = log

    def _hop(self, what: str, head: NetBufferList) -> None:
        self.log.extend((self.name, what, n) for n in nbls_of(head))

    def tcp_offload_send(self, ctx: Any, oc: Any, nbl: NetBufferList) -> Any:
        self._hop("send", nbl)
        return super().tcp_offload_send(ctx, oc, nbl)

    def tcp_offload_receive(self, ctx: Any, oc: Any, nbl: NetBufferList) -> Any:
        self._hop("receive", nbl)
        return super().tcp_offload_receive(ctx, oc, nbl)

    def tcp_offload_disconnect(self, ctx: Any, oc: Any, nbl: NetBufferList, flags: int) -> Any:
        self._hop("disconnect", nbl)
        return super().tcp_offload_disconnect(ctx, oc, nbl, flags)

    def tcp_offload_forward(self, ctx: Any, oc: Any, nbl: NetBufferList) -> Any:
        self._hop("forward", nbl)
        return super().tcp_offload_forward(ctx, oc, nbl)

    def tcp_offload_send_complete(self, bc: Any, nbl: NetBufferList) -> None:
        self._hop("send_complete", nbl)
        super().tcp_offload_send_complete(bc, nbl)

    def tcp_offload_receive_complete(self, bc: Any, nbl: NetBufferList) -> None:
        self._hop("receive_complete", nbl)
        super().tcp_offload_receive_complete(bc, nbl)

    def tcp_offload_disconnect_complete(self, bc: Any, nbl: NetBufferList) -> None:
        self._hop("disconnect_complete", nbl)
        super().tcp_offload_disconnect_complete(bc, nbl)

    def tcp_offload_forward_complete(self, bc: Any, nbl: NetBufferList) -> None:
        self._hop("forward_complete", nbl)
        super().tcp_offload_forward_complete(bc, nbl)

    def tcp_offload_receive_indicate(self, oc: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        self._hop("receive_indicate", nbl)
        return super().tcp_offload_receive_indicate(oc, nbl, status)

    def tcp_offload_receive_return(self, ctx: Any, nbl: NetBufferList) -> Any:
        self._hop("receive_return", nbl)
        return super().tcp_offload_receive_return(ctx, nbl)


class Stack:
    """host -> [IM x depth] -> chimney target, built through the public Ndis API with ImChecks."""

    def __init__(
        self,
        depth: int = 0,
        *,
        mode: Mode = Mode.STRICT,
        im_factory: Callable[[int, list[Any]], IntermediateDriver] | None = None,
        auto: bool = True,
    ) -> None:
        self.sched = SimScheduler(1)
        self.verifier = Verifier(mode)
        self.ndis = Ndis(self.sched, self.verifier, checks=ImChecks)
        self.target = ChimneyTarget("nic", auto=auto)
        self.nic = self.ndis.add_adapter(self.target, "nic0")
        self.hops: list[tuple[str, str, NetBufferList]] = []
        self.ims: list[Any] = []
        self.vms: list[Adapter] = []
        top = self.nic
        # The list is built bottom-up: ims[0] sits right above the target, ims[-1] right below the host.
        for i in range(depth):
            im = im_factory(i, self.hops) if im_factory is not None else HopIm(f"im{i}", self.hops)
            self.ims.append(im)
            top = self.ndis.add_im(im, top, f"{im.name}-vm")
            self.vms.append(top)
        self.top = top
        self.host = Host("tcpip")
        self.binding = self.ndis.bind(self.host, top)

    def run(self) -> None:
        self.sched.run_until()


class Conn:
    """The host's view of neighbor -> path -> TCP objects it offloads, with its own NDIS_OFFLOAD_HANDLEs."""

    def __init__(self, tag: str = "c") -> None:
        self.nh = NdisOffloadHandle(f"{tag}-neighbor")
        self.ph = NdisOffloadHandle(f"{tag}-path")
        self.th = NdisOffloadHandle(f"{tag}-tcp")
        self.th2 = NdisOffloadHandle(f"{tag}-tcp2")

    def tree(self, *, second_tcp: bool = False, send_data: NetBufferList | None = None) -> ProtocolOffloadBlockList:
        root = ProtocolOffloadBlockList(
            T.NeighborOffloadState,
            self.nh,
            [NeighborOffloadStateConst(), NeighborOffloadStateCached(), NeighborOffloadStateDelegated()],
        )
        path = root.add_dependent(
            ProtocolOffloadBlockList(
                T.Ip4OffloadState, self.ph, [PathOffloadStateConst(), PathOffloadStateCached(), PathOffloadStateDelegated()]
            )
        )
        tcp = path.add_dependent(ProtocolOffloadBlockList(T.TcpOffloadState, self.th, ["const", "cached", "delegated"]))
        tcp.net_buffer_list_chain = send_data
        if second_tcp:
            path.add_dependent(ProtocolOffloadBlockList(T.TcpOffloadState, self.th2, ["const", "cached", "delegated"]))
        return root


def target_obj(handle: NdisOffloadHandle) -> TargetObj:
    """Follow a host handle through every IM offload entry down to the target's context."""
    value: Any = handle.miniport_offload_context.value
    while isinstance(value, OffloadEntry):
        value = value.own.miniport_offload_context.value
    assert isinstance(value, TargetObj), value
    return value


def entry_chain(handle: NdisOffloadHandle) -> list[OffloadEntry]:
    """The IM offload entries behind a host handle, top IM first."""
    out = []
    value: Any = handle.miniport_offload_context.value
    while isinstance(value, OffloadEntry):
        out.append(value)
        value = value.own.miniport_offload_context.value
    return out


def offloaded(depth: int, **kwargs: Any) -> tuple[Stack, Conn]:
    """A stack with one neighbor -> path -> TCP connection offloaded."""
    s = Stack(depth, **kwargs)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.tree())
    s.run()
    assert [n.status for n in iter_tree(s.host.state_completions[-1][1])] == [NdisStatus.SUCCESS] * 3
    s.host.state_completions.clear()
    return s, c
