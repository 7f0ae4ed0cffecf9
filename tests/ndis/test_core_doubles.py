"""Test doubles for the NDIS core tests: a recording chimney miniport, a recording protocol and a
minimal pass-through IM (the real IM filters live elsewhere). No tests in this module."""

from __future__ import annotations

import itertools
from typing import Any

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    NodeRole,
    ProtocolOffloadBlockList,
    iter_tree,
    mbl_to_pbl,
    node_role,
    pbl_results_to_mbl,
)
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.core import Adapter, Binding, DriverHandle, Ndis, NdisStatusIndication
from chimney.ndis.driver import IntermediateDriver, MiniportDriver, ProtocolDriver
from chimney.ndis.offload_state import NDIS_TCP_CHIMNEY_OFFLOAD
from chimney.ndis.oid import NdisOidRequest, NdisTcpConnectionOffload
from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler


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
    return [nbl_from_bytes(bytes([i % 256]) * size, owner) for i in range(n)]


def ack(*nbls: NetBufferList, status: int = NdisStatus.SUCCESS) -> None:
    """A target completing sends in full: data start advanced by the bytes it reports transferred
    (R-SEND-04). `status=NBL_STATUS_UNSET` leaves Status unwritten for a test provoking R-NBL-01."""
    for n in nbls:
        nb = n.first_net_buffer
        assert nb is not None
        k = nb.data_length
        nb.advance(k)
        n.info[NblInfo.TcpOffloadBytesTransferred] = k
        n.status = status



class RecordingMiniport(MiniportDriver):
    """A chimney target that records every call and completes only when the test tells it to."""

    def __init__(self, name: str = "nic", *, chimney: bool = True, io_status: int = NdisStatus.PENDING) -> None:
        super().__init__(name)
        self.chimney = chimney
        self.io_status = io_status
        self.receive_return_status: int = NdisStatus.SUCCESS
        self.sent: list[NetBufferList] = []  # every NBL given to MiniportSendNetBufferLists, in order
        self.returned: list[NetBufferList] = []  # every NBL given to MiniportReturnNetBufferLists
        self.state_calls: list[tuple[str, MiniportOffloadBlockList]] = []
        self.io_calls: list[tuple[str, Any, NetBufferList, tuple[int, ...]]] = []
        self.receive_returns: list[NetBufferList] = []
        self.oids: list[NdisOidRequest] = []
        self.oid_status: int = NdisStatus.SUCCESS
        self.handlers: Any = None
        self.halted = False
        self.caps = NdisTcpConnectionOffload(tcp_connection_offload_capacity=64)

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        if self.chimney:
            return self.register_provider_handlers(driver_handle)
        return NdisStatus.SUCCESS

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        assert self.ndis is not None
        if self.chimney:
            self.ndis.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=self.caps)
            status, self.handlers = self.ndis.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
            assert status == NdisStatus.SUCCESS
        return NdisStatus.SUCCESS

    def halt_ex(self, adapter_context: Any, halt_action: int) -> None:
        self.halted = True

    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        self.sent.extend(nbls_of(nbl))

    def complete_sends(self, adapter: Adapter, nbls: list[NetBufferList] | None = None, status: int = 0) -> None:
        assert self.ndis is not None
        todo = list(self.sent) if nbls is None else nbls
        for n in todo:
            n.status = status
            if n in self.sent:
                self.sent.remove(n)
        self.ndis.m_send_net_buffer_lists_complete(adapter, chain(*todo), 0)

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.returned.extend(nbls_of(nbl))

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        self.oids.append(request)
        return NdisStatus(self.oid_status)

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("initiate", mbl))

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("terminate", mbl))

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("update", mbl))

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("invalidate", mbl))

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append(("query", mbl))

    def offload_all(self, mbl: MiniportOffloadBlockList) -> None:
        """Target-side initiate: give every new-offload node a context and write SUCCESS everywhere."""
        for node in iter_tree(mbl):
            if node_role(node) is NodeRole.NEW_OFFLOAD:
                node.miniport_offload_context.value = {"ndis_handle": node.ndis_offload_handle}
            node.status = NdisStatus.SUCCESS

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("send", offload_context, nbl, ()))
        return NdisStatus(self.io_status)

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("receive", offload_context, nbl, ()))
        return NdisStatus(self.io_status)

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        self.io_calls.append(("disconnect", offload_context, nbl, (flags,)))
        return NdisStatus(self.io_status)

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("forward", offload_context, nbl, ()))
        return NdisStatus(self.io_status)

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.receive_returns.extend(nbls_of(nbl))
        return NdisStatus(self.receive_return_status)


class RecordingProtocol(ProtocolDriver):
    """A host-like protocol: records completions and indications; keeps received NBLs when told to."""

    def __init__(self, name: str = "tcpip", *, chimney: bool = True, keep_received: bool = False) -> None:
        super().__init__(name)
        self.chimney = chimney
        self.keep_received = keep_received
        self.binding: Binding | None = None
        self.send_completed: list[NetBufferList] = []
        self.received: list[NetBufferList] = []
        self.received_flags: list[int] = []
        self.copies: list[bytes] = []
        self.kept: list[NetBufferList] = []
        self.statuses: list[NdisStatusIndication] = []
        self.oid_completions: list[tuple[NdisOidRequest, int]] = []
        self.state_completions: list[tuple[str, ProtocolOffloadBlockList]] = []
        self.io_completions: list[tuple[str, NetBufferList]] = []
        self.events: list[tuple[Any, int, int]] = []
        self.offload_events: list[tuple[ProtocolOffloadBlockList | None, int]] = []
        self.indications: list[tuple[Any, NetBufferList]] = []
        self.indicate_result: tuple[int, int] | None = None  # None = accept everything

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        if self.chimney:
            return self.register_client_handlers(driver_handle)
        return NdisStatus.SUCCESS

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return NdisStatus.SUCCESS

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        got = nbls_of(nbl)
        assert len(got) == num
        self.received.extend(got)
        self.received_flags.append(receive_flags)
        for n in got:
            assert n.first_net_buffer is not None
            self.copies.append(n.first_net_buffer.copy_data())
        if receive_flags & NDIS_RECEIVE_FLAGS_RESOURCES:
            return
        if self.keep_received:
            self.kept.extend(got)
        else:
            assert self.ndis is not None
            self.ndis.return_net_buffer_lists(binding_context, nbl, 0)

    def return_kept(self, nbls: list[NetBufferList] | None = None) -> None:
        assert self.ndis is not None and self.binding is not None
        todo = list(self.kept) if nbls is None else nbls
        for n in todo:
            self.kept.remove(n)
        self.ndis.return_net_buffer_lists(self.binding, chain(*todo), 0)

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.send_completed.extend(nbls_of(nbl))

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        self.statuses.append(indication)

    def oid_request_complete(self, binding_context: Any, request: NdisOidRequest, status: int) -> None:
        self.oid_completions.append((request, status))

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("initiate", pbl))

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("terminate", pbl))

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("update", pbl))

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("invalidate", pbl))

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append(("query", pbl))

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        self.offload_events.append((pbl, indication_code))

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("send", n) for n in nbls_of(nbl))

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("receive", n) for n in nbls_of(nbl))

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("disconnect", n) for n in nbls_of(nbl))

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("forward", n) for n in nbls_of(nbl))

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        self.events.append((offload_context, event_type, event_specific_information))

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        self.indications.append((offload_context, nbl))
        if self.indicate_result is None:
            return NdisStatus.SUCCESS, nbl.data_length()
        return self.indicate_result


class ImEntry:
    """IM offload entry (§3.8): the upper NdisOffloadHandle and the IM's own NDIS_OFFLOAD_HANDLE."""

    def __init__(self, upper_ref: Any) -> None:
        self.upper_ref = upper_ref
        self.own = NdisOffloadHandle(owner=self)


class PassThroughIm(IntermediateDriver):
    """Minimal pass-through IM: re-issues every call, completion and indication with the same objects."""

    def __init__(self, name: str, *, chimney: bool = True) -> None:
        super().__init__(name)
        self.chimney = chimney
        self.seen_sends: list[NetBufferList] = []

    def miniport_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_provider_handlers(driver_handle) if self.chimney else NdisStatus.SUCCESS

    def protocol_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_client_handlers(driver_handle) if self.chimney else NdisStatus.SUCCESS

    @property
    def n(self) -> Ndis:
        assert self.ndis is not None
        return self.ndis

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        lower = miniport_handle.lower_binding
        assert lower is not None
        # Relays the capability advertisement whether or not it can carry chimney (R-IM-13 case).
        if lower.adapter.offload_caps is not None:
            self.n.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=lower.adapter.offload_caps)
        if self.chimney:
            self.n.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        return NdisStatus.SUCCESS

    # normal path
    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        self.seen_sends.extend(nbls_of(nbl))
        self.n.send_net_buffer_lists(adapter_context.lower_binding, nbl, port, flags)

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.n.m_send_net_buffer_lists_complete(binding_context.upper_adapter, nbl, flags)

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        self.n.m_indicate_receive_net_buffer_lists(binding_context.upper_adapter, nbl, port, num, receive_flags)

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.n.return_net_buffer_lists(adapter_context.lower_binding, nbl, flags)

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        return NdisStatus(self.n.oid_request(adapter_context.lower_binding, request))

    def oid_request_complete(self, binding_context: Any, request: NdisOidRequest, status: int) -> None:
        self.n.m_oid_request_complete(binding_context.upper_adapter, request, status)

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        self.n.m_indicate_status_ex(binding_context.upper_adapter, indication.status_code, indication.status_buffer)

    # state operations (§3.8)
    def _down(self, op: str, vm: Adapter, mbl: MiniportOffloadBlockList) -> None:
        def resolve(m: MiniportOffloadBlockList) -> NdisOffloadHandle | None:
            slot = m.miniport_offload_context
            if slot is None:
                return None
            if slot.value is None:  # new offload: create the offload entry
                entry = ImEntry(m.ndis_offload_handle)
                m.miniport_reserved[0] = entry
                return entry.own
            return slot.value.own

        pbl = mbl_to_pbl(mbl, resolve)
        assert pbl is not None and vm.lower_binding is not None
        getattr(self.n, {"query": "query_offload_state"}.get(op, f"{op}_offload"))(vm.lower_binding, pbl)

    def _up(self, op: str, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        mbl = pbl_results_to_mbl(pbl)
        if op == "initiate":
            for m in iter_tree(mbl):
                entry = m.miniport_reserved[0]
                if entry is not None and entry.own.miniport_offload_context.value is not None:
                    m.miniport_offload_context.value = entry
                m.miniport_reserved[0] = None
        assert binding.upper_adapter is not None
        getattr(self.n, {"query": "m_query_offload_state_complete"}.get(op, f"m_{op}_offload_complete"))(
            binding.upper_adapter, mbl
        )

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._down("initiate", adapter_context, mbl)

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._down("terminate", adapter_context, mbl)

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._down("update", adapter_context, mbl)

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._down("invalidate", adapter_context, mbl)

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._down("query", adapter_context, mbl)

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._up("initiate", binding_context, pbl)

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._up("terminate", binding_context, pbl)

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._up("update", binding_context, pbl)

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._up("invalidate", binding_context, pbl)

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._up("query", binding_context, pbl)

    # chimney I/O
    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return NdisStatus(self.n.offload_tcp_send(offload_context.own, nbl))

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return NdisStatus(self.n.offload_tcp_receive(offload_context.own, nbl))

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        return NdisStatus(self.n.offload_tcp_disconnect(offload_context.own, nbl, flags))

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        return NdisStatus(self.n.offload_tcp_forward(offload_context.own, nbl))

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        return NdisStatus(self.n.offload_tcp_receive_return(adapter_context.lower_binding, nbl))

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.n.tcp_offload_send_complete(binding_context.upper_adapter, nbl)

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.n.tcp_offload_receive_complete(binding_context.upper_adapter, nbl)

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.n.tcp_offload_disconnect_complete(binding_context.upper_adapter, nbl)

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.n.tcp_offload_forward_complete(binding_context.upper_adapter, nbl)

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        entry: ImEntry = offload_context.owner
        return self.n.tcp_offload_receive_handler(entry.upper_ref, nbl, status)

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        entry: ImEntry = offload_context.owner
        self.n.tcp_offload_event_handler(entry.upper_ref, event_type, event_specific_information)

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        mbl = None
        if pbl is not None:
            entry = pbl.offload_handle.owner if pbl.offload_handle is not None else None
            mbl = MiniportOffloadBlockList(
                pbl.header.type,
                None,
                entry.upper_ref if isinstance(entry, ImEntry) else None,
                pbl.state,
            )
            mbl.status = pbl.status
        self.n.m_offload_event_indicate(binding_context.upper_adapter, mbl, indication_code)


class Stack:
    """protocol -> [IM x depth] -> miniport, built through the public Ndis API."""

    def __init__(
        self,
        depth: int = 0,
        *,
        mode: Mode = Mode.STRICT,
        protocols: int = 1,
        keep_received: bool = False,
        im_chimney: bool = True,
    ) -> None:
        self.sched = SimScheduler(1)
        self.verifier = Verifier(mode)
        self.ndis = Ndis(self.sched, self.verifier)
        self.mp = RecordingMiniport("nic")
        self.adapter = self.ndis.add_adapter(self.mp, "nic0")
        self.ims: list[PassThroughIm] = []
        top = self.adapter
        for i in range(depth):
            im = PassThroughIm(f"im{i}", chimney=im_chimney)
            self.ims.append(im)
            top = self.ndis.add_im(im, top, f"im{i}-vm")
        self.top = top
        self.protos = [RecordingProtocol(f"tcpip{i}" if i else "tcpip", keep_received=keep_received)
                       for i in range(protocols)]
        self.bindings = [self.ndis.bind(p, top) for p in self.protos]
        self.proto = self.protos[0]
        self.binding = self.bindings[0]


def ref_of(handle: NdisOffloadHandle) -> NdisOffloadHandleRef:
    ref = handle.ndis_reserved[0]
    assert isinstance(ref, NdisOffloadHandleRef)
    return ref
