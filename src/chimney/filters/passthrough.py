"""The chimney pass-through intermediate driver (contract §3.8, rules R-IM-01..12): offload entries, call
entries, block-list overlays and the re-issue of every chimney call, completion and indication.

NDIS name -> Python name (handlers are methods of `PassThroughChimneyIm`; NDIS calls are `Ndis` methods):
  IM offload entry -> OffloadEntry;  IM call entry -> CallEntry
  MiniportInitiateOffload / Terminate / Update / Invalidate / QueryOffload -> initiate_offload / ... / query_offload
    -> re-issued with NdisInitiateOffload ... NdisQueryOffloadState (Ndis.initiate_offload ... query_offload_state)
  ProtocolInitiateOffloadComplete ... ProtocolQueryOffloadComplete -> initiate_offload_complete ...
    -> NdisMInitiateOffloadComplete ... NdisMQueryOffloadStateComplete (Ndis.m_..._complete)
  MiniportTcpOffloadSend/Receive/Disconnect/Forward -> tcp_offload_send/... -> NdisOffloadTcpSend/... (Ndis.offload_tcp_*)
  MiniportTcpOffloadReceiveReturn -> tcp_offload_receive_return -> NdisOffloadTcpReceiveReturn
  ProtocolTcpOffloadSendComplete/... -> tcp_offload_send_complete/... -> NdisTcpOffloadSendComplete/...
  ProtocolTcpOffloadReceiveIndicate -> tcp_offload_receive_indicate -> NdisTcpOffloadReceiveHandler
  ProtocolTcpOffloadEvent -> tcp_offload_event -> NdisTcpOffloadEventHandler
  ProtocolIndicateOffloadEvent -> indicate_offload_event -> NdisMOffloadEventIndicate
  ProtocolStatusEx -> status_ex -> NdisMIndicateStatusEx;  MiniportOidRequest -> oid_request -> NdisOidRequest
  ProtocolOidRequestComplete -> oid_request_complete -> NdisMOidRequestComplete
  MiniportSendNetBufferLists / ProtocolSendNetBufferListsComplete / ProtocolReceiveNetBufferLists /
    MiniportReturnNetBufferLists -> send_net_buffer_lists / send_net_buffer_lists_complete /
    receive_net_buffer_lists / return_net_buffer_lists (normal path, passed through unchanged)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    ProtocolOffloadBlockList,
    iter_tree,
)
from chimney.ndis.buffers import NblInfo, NetBufferList
from chimney.ndis.core import Adapter, Binding, DriverHandle, NdisStatusIndication, NdisUsageError, Op
from chimney.ndis.driver import IntermediateDriver
from chimney.ndis.offload_state import NDIS_TCP_CHIMNEY_OFFLOAD
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES,
    OID_TCP_TASK_OFFLOAD,
    NdisOidRequest,
    NdisRequestType,
)
from chimney.ndis.status import NdisStatus

__all__ = [
    "CallEntry",
    "ImUsageError",
    "NormalPathIm",
    "OffloadEntry",
    "PassThroughChimneyIm",
    "mark_upload_requested",
]

_PENDING = NdisStatus.PENDING
_BYTES = NblInfo.TcpOffloadBytesTransferred
_CAPABILITY_STATUSES = frozenset(
    {NdisStatus.OFFLOAD_RESUME, NdisStatus.TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES}
)

# NdisXxxOffload the IM re-issues downward, and NdisMXxxComplete it calls upward, per operation.
_DOWN = {
    Op.INITIATE: "initiate_offload",
    Op.TERMINATE: "terminate_offload",
    Op.UPDATE: "update_offload",
    Op.INVALIDATE: "invalidate_offload",
    Op.QUERY: "query_offload_state",
}
_UP = {
    Op.INITIATE: "m_initiate_offload_complete",
    Op.TERMINATE: "m_terminate_offload_complete",
    Op.UPDATE: "m_update_offload_complete",
    Op.INVALIDATE: "m_invalidate_offload_complete",
    Op.QUERY: "m_query_offload_state_complete",
}


def mark_upload_requested(head: NetBufferList) -> None:
    """R-IM-12 statuses of a send chain an IM completes itself: first NBL REQUEST_UPLOAD, the rest
    UPLOAD_REQUESTED; nothing of them was transferred (TcpOffloadBytesTransferred 0, R-SEND-04)."""
    head.status = NdisStatus.REQUEST_UPLOAD
    head.info[_BYTES] = 0
    n = head.next
    while n is not None:
        n.status = NdisStatus.UPLOAD_REQUESTED
        n.info[_BYTES] = 0
        n = n.next


class ImUsageError(NdisUsageError):
    """Something reached the IM that it never handed out (unknown call entry, foreign NBL context)."""


def _not_offloaded(im: Any, what: str, offload_context: Any) -> ImUsageError:
    return ImUsageError(f"{im.name}: chimney {what} with MiniportOffloadContext {offload_context!r}, not an offload entry")


class OffloadEntry:
    """IM offload entry (R-IM-04): one per object offloaded through the IM, for its whole offload life.

    `upper_ref` is the NdisOffloadHandle NDIS gave the IM in the upper block list (indications go up with
    it, R-IM-10); `own` is the IM's NDIS_OFFLOAD_HANDLE put in the lower block list (I/O goes down with
    it, R-IM-07). The IM writes a reference to this entry into the upper slot on success."""

    __slots__ = ("id", "im", "live", "own", "type", "upper_ref", "upper_slot", "vm")

    def __init__(self, id: int, im: Any, type: int, upper_ref: Any, upper_slot: Any, vm: Adapter) -> None:
        self.id = id
        self.im = im
        self.type = type
        self.upper_ref = upper_ref
        self.upper_slot = upper_slot
        self.vm = vm
        self.own = NdisOffloadHandle(owner=self)
        self.live = False  # True once the lower initiate succeeded, False again after terminate

    def __repr__(self) -> str:
        return f"<OffloadEntry #{self.id} {self.im.name} type={self.type} live={self.live}>"


class CallEntry:
    """IM call entry (R-IM-05/06): one per state operation in flight through the IM.

    `nodes` holds, per MBL node in walk order, (mbl node, overlaid pbl node, offload entry or None,
    saved ImReserved[0], saved ImReserved[1], saved SourceHandle)."""

    __slots__ = ("id", "new_entries", "nodes", "op", "pbl", "root", "vm")

    def __init__(self, id: int, op: Op, vm: Adapter, root: MiniportOffloadBlockList) -> None:
        self.id = id
        self.op = op
        self.vm = vm
        self.root = root
        self.pbl: ProtocolOffloadBlockList | None = None
        self.nodes: list[tuple[Any, Any, OffloadEntry | None, Any, Any, Any]] = []
        self.new_entries: list[OffloadEntry] = []

    def __repr__(self) -> str:
        return f"<CallEntry #{self.id} {self.op.value} nodes={len(self.nodes)}>"


class NormalPathIm(IntermediateDriver):
    """The non-chimney half of an NDIS 6 IM: normal sends, receives, OIDs and status indications passed
    through unchanged between its virtual miniports and the binding below each of them."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.vms: list[Adapter] = []
        self.counters: dict[str, int] = {}

    @property
    def n(self) -> Any:
        if self.ndis is None:
            raise ImUsageError(f"{self.name} is not registered with NDIS")
        return self.ndis

    def _count(self, key: str, k: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + k

    def halt_ex(self, adapter_context: Any, halt_action: int) -> None:
        if adapter_context in self.vms:
            self.vms.remove(adapter_context)

    # -- normal send / receive path ----------------------------------------------------------------

    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        self.n.send_net_buffer_lists(adapter_context.lower_binding, nbl, port, flags)

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.n.m_send_net_buffer_lists_complete(binding_context.upper_adapter, nbl, flags)

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        self.n.m_indicate_receive_net_buffer_lists(binding_context.upper_adapter, nbl, port, num, receive_flags)

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.n.return_net_buffer_lists(adapter_context.lower_binding, nbl, flags)

    # -- OIDs and status -----------------------------------------------------------------------------

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        return NdisStatus(self.n.oid_request(adapter_context.lower_binding, request))

    def oid_request_complete(self, binding_context: Any, request: NdisOidRequest, status: int) -> None:
        self.n.m_oid_request_complete(binding_context.upper_adapter, request, status)

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        vm = binding_context.upper_adapter
        if vm is not None:
            self.n.m_indicate_status_ex(vm, indication.status_code, indication.status_buffer, indication.port_number)


class PassThroughChimneyIm(NormalPathIm):
    """A chimney-capable pass-through IM (§3.8): every chimney call, completion and indication re-issued.

    allow_chimney=False or alters_packets=True: the IM still registers its handlers but advertises no
    chimney capability and answers OID_TCP_TASK_OFFLOAD queries NOT_SUPPORTED (R-IM-02).
    shared_lower=True models a MUX with several virtual miniports whose chimney traffic all goes down
    the binding of the first one; completions then find their upper interface through the NBL context
    (R-IM-11) and state completions through the call entry.
    """

    ndis: Any  # set by Ndis at registration; the hot paths use it directly (no `n` property call)

    def __init__(
        self,
        name: str,
        *,
        allow_chimney: bool = True,
        alters_packets: bool = False,
        shared_lower: bool = False,
    ) -> None:
        super().__init__(name)
        self.allow_chimney = allow_chimney
        self.alters_packets = alters_packets
        self.shared_lower = shared_lower
        self.primary: Binding | None = None
        self.entries: dict[int, OffloadEntry] = {}  # live offload entries by id
        self.call_entries: dict[int, CallEntry] = {}  # state operations in flight
        self.offload_handlers: dict[str, Any] = {}  # vm name -> NDIS_TCP_OFFLOAD_EVENT_HANDLERS
        self._ids = itertools.count(1)
        self._alloc_failures = 0

    @property
    def chimney_allowed(self) -> bool:
        return self.allow_chimney and not self.alters_packets

    def fail_next_allocations(self, n: int = 1) -> None:
        """Fault injection: the next `n` send propagations find no resources (R-IM-12)."""
        self._alloc_failures += n

    # -- registration and initialization (R-IM-01) --------------------------------------------------------

    def miniport_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_provider_handlers(driver_handle)

    def protocol_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_client_handlers(driver_handle)

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        lower = miniport_handle.lower_binding
        if lower is None:
            raise ImUsageError(f"{miniport_handle.name} is not an IM virtual miniport")
        self.vms.append(miniport_handle)
        if self.primary is None:
            self.primary = lower
        # Advertise what NDIS says is below, not what the lower driver claims: NDIS already refuses the
        # capability of a non-chimney IM below (R-IM-13), and so must we.
        caps = self._lower_caps(lower)
        if caps is not None:
            self.n.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=caps)
        status, table = self.n.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        if status == NdisStatus.SUCCESS:
            self.offload_handlers[miniport_handle.name] = table
        return NdisStatus.SUCCESS

    def _lower_caps(self, lower: Binding) -> Any:
        """The chimney capability this IM may advertise above `lower`: what NDIS answers for the adapter
        below (R-IM-13: nothing when a driver below registered no chimney handlers), unless this IM does
        not allow chimney (R-IM-02)."""
        if not self.chimney_allowed:
            return None
        req = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
        if self.n.oid_request(lower, req) != NdisStatus.SUCCESS:
            return None
        return req.buffer

    def _lower(self, vm: Adapter) -> Binding:
        if self.shared_lower and self.primary is not None:
            return self.primary
        lb = vm.lower_binding
        assert lb is not None
        return lb

    # -- OIDs and status (R-IM-02, R-IM-03) ---------------------------------------------------------------

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        if (
            request.oid == OID_TCP_TASK_OFFLOAD
            and request.type is NdisRequestType.QUERY
            and (not self.chimney_allowed or adapter_context.offload_caps is None)
        ):
            # Not allowed here, or nothing below carries chimney (what this IM advertised, see initialize_ex).
            self._count("oid_task_offload_refused")
            return NdisStatus.NOT_SUPPORTED  # R-IM-02
        return NdisStatus(self.n.oid_request(adapter_context.lower_binding, request))  # sets: R-IM-03

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        vm = binding_context.upper_adapter
        if vm is None:
            return
        buffer = indication.status_buffer
        if indication.status_code in _CAPABILITY_STATUSES and buffer is not None:
            # Relay the event, but only a capability NDIS grants below and this IM carries.
            buffer = buffer if self._lower_caps(binding_context) is buffer else None
        self.n.m_indicate_status_ex(vm, indication.status_code, buffer, indication.port_number)

    # -- state operations (R-IM-04/05/06) -------------------------------------------------------------------

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state_down(Op.INITIATE, adapter_context, mbl)

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state_down(Op.TERMINATE, adapter_context, mbl)

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state_down(Op.UPDATE, adapter_context, mbl)

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state_down(Op.INVALIDATE, adapter_context, mbl)

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state_down(Op.QUERY, adapter_context, mbl)

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._state_up(Op.INITIATE, pbl)

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._state_up(Op.TERMINATE, pbl)

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._state_up(Op.UPDATE, pbl)

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._state_up(Op.INVALIDATE, pbl)

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._state_up(Op.QUERY, pbl)

    def _new_entry(self, op: Op, vm: Adapter, m: MiniportOffloadBlockList) -> OffloadEntry:
        return OffloadEntry(next(self._ids), self, m.header.type, m.ndis_offload_handle, m.miniport_offload_context, vm)

    def _entry_for(self, op: Op, vm: Adapter, m: MiniportOffloadBlockList, ce: CallEntry) -> tuple[Any, str | None]:
        """(offload entry or None, problem) for one upper node: a new entry for a new offload (R-IM-04),
        the existing live entry for a linker / referenced object."""
        slot = m.miniport_offload_context
        if slot is None:
            return None, None  # placeholder
        value = slot.value
        if value is None:
            if op is not Op.INITIATE:
                return None, f"{op.value} node references no offloaded object"
            entry = self._new_entry(op, vm, m)
            ce.new_entries.append(entry)
            return entry, None
        if type(value) is not OffloadEntry and not isinstance(value, OffloadEntry):
            return None, f"{op.value} node references {value!r}, not an offload entry of {self.name}"
        if value.im is not self or not value.live:
            return None, f"{op.value} node references {value!r}, which is not live in {self.name}"
        return value, None

    def _state_down(self, op: Op, vm: Adapter, mbl: MiniportOffloadBlockList) -> None:
        ce = CallEntry(next(self._ids), op, vm, mbl)
        built: dict[int, ProtocolOffloadBlockList] = {}
        problems: list[str] = []
        nodes = ce.nodes
        for m in iter_tree(mbl):
            entry, problem = self._entry_for(op, vm, m, ce)
            if problem is not None:
                problems.append(problem)
            imr = m.im_reserved
            nodes.append((m, None, entry, imr[0], imr[1], m.source_handle))
            # R-IM-05: the call-entry pointer (and this node's offload entry) go into ImReserved, which
            # the PBL shares with the MBL (the overlay).
            imr[0] = ce
            imr[1] = entry
            p = ProtocolOffloadBlockList(m.header.type, entry.own if entry is not None else None, m.state, m.port_number)
            p.header.revision = m.header.revision
            p.header.size = m.header.size
            p.net_buffer_list_chain = m.net_buffer_list_chain
            p.status = m.status
            p.source_handle = m.source_handle
            p.im_reserved = imr
            p.protocol_reserved = m.protocol_reserved
            built[id(m)] = p
        for i, (m, _p, entry, a, b, sh) in enumerate(nodes):
            p = built[id(m)]
            if m.dependent_block_list is not None:
                p.dependent_block_list = built[id(m.dependent_block_list)]
            if m.next_block is not None:
                p.next_block = built[id(m.next_block)]
            nodes[i] = (m, p, entry, a, b, sh)
        ce.pbl = built[id(mbl)]
        self.call_entries[ce.id] = ce
        if problems:
            # A reference the IM cannot resolve: nothing goes down; the whole tree fails here.
            self._count("state_bad_reference")
            for m, p, _e, _a, _b, _sh in nodes:
                placeholder = op is Op.INITIATE and m.miniport_offload_context is None
                p.status = NdisStatus.SUCCESS if placeholder else NdisStatus.FAILURE  # R-TREE-05
            # Completed after MiniportXxxOffload returned, never inside it (R-OFF-01, R-TRM-06).
            self.n.scheduler.call_soon(self._state_up, op, ce.pbl)
            return
        self._issue_down(ce)

    def _issue_down(self, ce: CallEntry) -> None:
        """R-IM-05: the same NdisXxxOffload, downward, with the overlaid protocol block list."""
        getattr(self.n, _DOWN[ce.op])(self._lower(ce.vm), ce.pbl)

    def _state_up(self, op: Op, pbl: ProtocolOffloadBlockList) -> None:
        ce = pbl.im_reserved[0] if pbl is not None else None
        if type(ce) is not CallEntry or self.call_entries.get(ce.id) is not ce or ce.pbl is not pbl or ce.op is not op:
            self._count("state_unknown_completion")
            raise ImUsageError(f"{self.name}: {op.value} completion for {pbl!r} matches no call entry of this IM")
        entries = self.entries
        for m, p, entry, im0, im1, sh in ce.nodes:
            # The MBL overlays the PBL: what the lower side wrote is what the upper side reads.
            m.status = p.status
            m.net_buffer_list_chain = p.net_buffer_list_chain
            m.state = p.state
            m.source_handle = p.source_handle
            imr = m.im_reserved
            imr[0] = im0  # R-IM-06: restore ImReserved and SourceHandle
            imr[1] = im1
            m.source_handle = sh
            if entry is None:
                continue
            if op is Op.INITIATE:
                if entry.live:
                    continue  # a linker: nothing changes for it
                if entry.own.miniport_offload_context.value is not None:
                    entry.live = True
                    entries[entry.id] = entry
                    m.miniport_offload_context.value = entry  # R-IM-04: the upper slot references the entry
            elif op is Op.TERMINATE and p.status == NdisStatus.SUCCESS:
                entry.live = False  # freed with the terminate (R-IM-04 lifetime ends)
                entries.pop(entry.id, None)
        del self.call_entries[ce.id]
        getattr(self.n, _UP[op])(ce.vm, ce.root)

    # -- chimney I/O (R-IM-07, R-IM-11, R-IM-12) ------------------------------------------------------------

    def _push_context(self, vm: Adapter, head: NetBufferList) -> None:
        nbl: NetBufferList | None = head
        while nbl is not None:
            nbl.context.append((self, vm))
            nbl = nbl.next

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        if self._alloc_failures:
            self._alloc_failures -= 1
            self._complete_send_itself(adapter_context, nbl)
            return _PENDING
        if self.shared_lower:
            self._push_context(adapter_context, nbl)
        try:
            own = offload_context.own
        except AttributeError:
            raise _not_offloaded(self, "send", offload_context) from None
        return self.ndis.offload_tcp_send(own, nbl)

    def _complete_send_itself(self, vm: Adapter, nbl: NetBufferList) -> None:
        """R-IM-12: no resources to propagate the send: the IM completes it and asks for an upload."""
        mark_upload_requested(nbl)
        self._count("send_upload_requested")
        self.n.tcp_offload_send_complete(vm, nbl)

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        if self.shared_lower:
            self._push_context(adapter_context, nbl)
        try:
            own = offload_context.own
        except AttributeError:
            raise _not_offloaded(self, "receive", offload_context) from None
        return self.ndis.offload_tcp_receive(own, nbl)

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        if self.shared_lower:
            self._push_context(adapter_context, nbl)
        try:
            own = offload_context.own
        except AttributeError:
            raise _not_offloaded(self, "disconnect", offload_context) from None
        return self.ndis.offload_tcp_disconnect(own, nbl, flags)

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        if self.shared_lower:
            self._push_context(adapter_context, nbl)
        try:
            own = offload_context.own
        except AttributeError:
            raise _not_offloaded(self, "forward", offload_context) from None
        return self.ndis.offload_tcp_forward(own, nbl)

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        # R-IM-09: synchronously, the same NBL chain.
        return NdisStatus(self.n.offload_tcp_receive_return(self._lower(adapter_context), nbl))

    def _complete_up(self, complete: Callable[[Adapter, NetBufferList], None], binding: Binding, head: NetBufferList) -> None:
        """Several upper interfaces: route each NBL by the context pushed on the way down (R-IM-11),
        keeping the identical NBLs (R-IM-08)."""
        groups: list[tuple[Adapter, NetBufferList]] = []
        vm: Adapter | None = None
        prev: NetBufferList | None = None
        nbl: NetBufferList | None = head
        while nbl is not None:
            nxt = nbl.next
            ctx = nbl.context.pop() if nbl.context else None
            if type(ctx) is not tuple or ctx[0] is not self:
                raise ImUsageError(f"{self.name}: completion of {nbl!r} without this IM's NBL context ({ctx!r})")
            if ctx[1] is not vm:
                if prev is not None:
                    prev.next = None
                vm = ctx[1]
                groups.append((ctx[1], nbl))
            prev = nbl
            nbl = nxt
        for target, sub in groups:
            complete(target, sub)

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        if self.shared_lower:
            self._complete_up(self.n.tcp_offload_send_complete, binding_context, nbl)
        else:
            self.ndis.tcp_offload_send_complete(binding_context.upper_adapter, nbl)  # R-IM-08

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        if self.shared_lower:
            self._complete_up(self.n.tcp_offload_receive_complete, binding_context, nbl)
        else:
            self.ndis.tcp_offload_receive_complete(binding_context.upper_adapter, nbl)  # R-IM-08

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        if self.shared_lower:
            self._complete_up(self.n.tcp_offload_disconnect_complete, binding_context, nbl)
        else:
            self.ndis.tcp_offload_disconnect_complete(binding_context.upper_adapter, nbl)  # R-IM-08

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        if self.shared_lower:
            self._complete_up(self.n.tcp_offload_forward_complete, binding_context, nbl)
        else:
            self.ndis.tcp_offload_forward_complete(binding_context.upper_adapter, nbl)  # R-IM-08

    # -- indications (R-IM-10) ----------------------------------------------------------------------------------

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        entry: OffloadEntry = offload_context.owner
        return self.n.tcp_offload_receive_handler(entry.upper_ref, nbl, status)

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        entry: OffloadEntry = offload_context.owner
        self.n.tcp_offload_event_handler(entry.upper_ref, event_type, event_specific_information)

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        if self.shared_lower and binding_context is not self.primary:
            # Every binding hears an untargeted indication; only the chimney binding relays it.
            self._count("offload_event_other_binding")
            return
        if pbl is None:
            vms = self.vms if self.shared_lower else [binding_context.upper_adapter]
            for vm in vms:
                self.n.m_offload_event_indicate(vm, None, indication_code)
            return
        mbl, vm = self._overlay_up(pbl, binding_context)
        self.n.m_offload_event_indicate(vm, mbl, indication_code)

    def _overlay_up(self, pbl: ProtocolOffloadBlockList, binding: Binding) -> tuple[MiniportOffloadBlockList, Adapter]:
        """The MBL an indication goes up with: same state structs (so the host's synchronous writes, e.g.
        the new HRD of a reachability query, land where the target reads them), upper handles."""
        built: dict[int, MiniportOffloadBlockList] = {}
        vm: Adapter | None = None
        order = list(iter_tree(pbl))
        for p in order:
            h = p.offload_handle
            entry = h.owner if h is not None else None
            if entry is not None and not isinstance(entry, OffloadEntry):
                raise ImUsageError(f"{self.name}: indication for {h!r}, which is not this IM's offload handle")
            m = MiniportOffloadBlockList(
                p.header.type,
                entry.upper_slot if entry is not None else None,
                entry.upper_ref if entry is not None else None,
                p.state,
                p.port_number,
            )
            m.header.revision = p.header.revision
            m.header.size = p.header.size
            m.status = p.status
            m.net_buffer_list_chain = p.net_buffer_list_chain
            built[id(p)] = m
            if vm is None and entry is not None:
                vm = entry.vm
        for p in order:
            m = built[id(p)]
            if p.dependent_block_list is not None:
                m.dependent_block_list = built[id(p.dependent_block_list)]
            if p.next_block is not None:
                m.next_block = built[id(p.next_block)]
        return built[id(pbl)], vm if vm is not None else binding.upper_adapter  # type: ignore[return-value]
