"""The host TCP/IP stack as an NDIS 6 protocol driver: its interface sends frames as NBLs through the
binding, receives frames from ProtocolReceiveNetBufferLists, negotiates chimney capabilities.

NDIS name -> Python name (methods of `NdisHostBinding`):
  ProtocolSetOptions (+ both client NdisSetOptionalHandlers)  -> set_options
  ProtocolBindAdapterEx                                       -> bind_adapter_ex
  NdisSendNetBufferLists (interface transmit)                 -> _transmit
  ProtocolSendNetBufferListsComplete                          -> send_net_buffer_lists_complete
  ProtocolReceiveNetBufferLists (+ NdisReturnNetBufferLists)  -> receive_net_buffer_lists
  ProtocolStatusEx (OFFLOAD_PAUSE/RESUME, UPLOAD_ALL, media)  -> status_ex (-> OffloadManager.status_indication)
  ProtocolOidRequestComplete (pended OID_PNP_SET_POWER)       -> oid_request_complete
  OID query NDIS_TCP_CONNECTION_OFFLOAD -> negotiate; set OID_TCP_CONNECTION_OFFLOAD_PARAMETERS (enables the
  NIC's TCP chimney for this protocol) -> enable_offload (R-INIT-17 checked there); ProtocolUnbindAdapterEx
  -> unbind_adapter_ex (gives the NIC's offload up)
  ProtocolXxxOffloadComplete, ProtocolIndicateOffloadEvent, ProtocolTcpOffloadXxxComplete,
  ProtocolTcpOffloadEvent, ProtocolTcpOffloadReceiveIndicate  -> same snake_case names, forwarded to the
                                                                 `chimney.host.chimney.OffloadManager`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chimney.host.interface import Interface
from chimney.ndis.blocklist import ProtocolOffloadBlockList
from chimney.ndis.buffers import NetBufferList, nbl_from_bytes
from chimney.ndis.core import Adapter, Binding, BindingState, Ndis, NdisStatusIndication
from chimney.ndis.driver import ProtocolDriver
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    NdisOidRequest,
    NdisTcpConnectionOffload,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES
from chimney.ndis.status import NdisStatus
from chimney.sim.scheduler import NS_PER_S
from chimney.tcp import TcpConfig

if TYPE_CHECKING:
    from chimney.host.chimney import OffloadManager
    from chimney.host.stack import HostStack

_SUCCESS = NdisStatus.SUCCESS
_PENDING = NdisStatus.PENDING


def offload_parameters(cfg: TcpConfig, ticks_per_second: int = 1000) -> NdisTcpConnectionOffloadParameters:
    """NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS carrying the stack's own delayed-ACK behaviour, so an offloaded
    connection ACKs as the host engine would (R-INIT-12: the target takes TcpDelayedAckTicks and
    TcpAckFrequency from these adapter-wide parameters). Both fields are UCHARs: clamped to 1..255;
    TcpDelayedAckTicks 0 turns delayed ACKs off. TcpMaximumRetransmissions (UCHAR) and
    TcpDuplicateAckThreshold carry the stack's retry limit and fast-retransmit threshold, so an offloaded
    connection gives up and recovers exactly as the host engine would."""
    if cfg.delayed_ack:
        ticks = -(-cfg.delack_timeout_ns * ticks_per_second // NS_PER_S)  # round up: never ACK earlier
        delack = min(max(ticks, 1), 255)
        freq = min(max(cfg.ack_frequency, 1), 255)
    else:
        delack, freq = 0, 1
    return NdisTcpConnectionOffloadParameters(
        ticks_per_second=ticks_per_second, tcp_delayed_ack_ticks=delack, tcp_ack_frequency=freq,
        tcp_maximum_retransmissions=min(max(cfg.max_retransmissions, 1), 255),
        tcp_duplicate_ack_threshold=max(cfg.dupack_threshold, 1),
    )


class NdisHostBinding(ProtocolDriver):
    """One host stack bound to one (chimney-capable or plain) miniport adapter.

        hb = NdisHostBinding(stack)
        iface = hb.attach(ndis, adapter, mac=nic.mac, addresses=["198.18.0.1/24"])

    `caps` is the adapter's NDIS_TCP_CONNECTION_OFFLOAD (None: no chimney below), `params` what the
    host set (TicksPerSecond etc.; default `offload_parameters(stack.tcp.config)`). The chimney callbacks go to `manager` once one is attached."""

    def __init__(
        self,
        stack: HostStack,
        name: str | None = None,
        *,
        params: NdisTcpConnectionOffloadParameters | None = None,
    ) -> None:
        super().__init__(name or f"tcpip/{stack.name}")
        self.stack = stack
        self.binding: Binding | None = None
        self.iface: Interface | None = None
        self.caps: NdisTcpConnectionOffload | None = None
        self.params = params if params is not None else offload_parameters(stack.tcp.config)
        self.params_accepted = False
        self.offload_enabled = False  # this protocol set the NIC's TCP offload parameters (R-INIT-17)
        self.offload_conflict: NdisHostBinding | None = None  # the protocol that holds the NIC's offload
        self.manager: OffloadManager | None = None
        self.offload_paused = False
        self.media_up = True
        self.counters: dict[str, int] = dict.fromkeys(
            ("tx_frames", "tx_completed", "tx_failed", "tx_complete_calls", "rx_frames", "rx_indications",
             "rx_resources_copies", "status_indications"), 0
        )

    # ------------------------------------------------------------------ registration and binding

    def set_options(self, driver_handle: Any) -> NdisStatus:
        # R-INIT-03: both client chimney tables from ProtocolSetOptions.
        return self.register_client_handlers(driver_handle)

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return _SUCCESS

    def unbind_adapter_ex(self, binding_context: Any) -> NdisStatus:
        """The binding goes away: the OffloadManager stops listening and issuing requests, and the NIC's
        TCP offload is free for another protocol from here on (R-INIT-17): a protocol that found it held
        by this one negotiates again once the unbind is over (never two holders at a time)."""
        m = self.manager
        if m is not None:
            m.close()
        held = self.offload_enabled
        self.offload_enabled = False
        self.params_accepted = False
        self.offload_conflict = None
        if held:
            self.stack.scheduler.call_soon(self._offload_released, label=f"{self.name} offload released")
        return _SUCCESS

    def _offload_released(self) -> None:
        """After this protocol gave the NIC's TCP offload up: the protocols that stood back for it
        negotiate again; the first enables the offload, the others then find it held by that one."""
        ndis = self.ndis
        if ndis is None:
            return
        for b in list(ndis.bindings):
            other = b.protocol
            if (isinstance(other, NdisHostBinding) and other is not self and other.binding is b
                    and other.offload_conflict is self and b.state is not BindingState.CLOSED):
                other.negotiate()
                if other.manager is not None and other.chimney_ready:
                    other.manager.wake()

    def attach(
        self,
        ndis: Ndis,
        adapter: Adapter,
        *,
        mac: bytes,
        addresses: list[str] | tuple[str, ...] = (),
        name: str | None = None,
        mtu: int = 1500,
    ) -> Interface:
        """Register, bind, add the host interface over the binding, negotiate the chimney parameters."""
        ndis.register_protocol_driver(self)
        ndis.bind(self, adapter)
        ip = self.stack.ip
        if name is None:
            name = f"eth{len(ip.interfaces)}"
        iface = ip.add_interface(name, mac, mtu=mtu)
        iface.transmit = self._transmit
        self.iface = iface
        self.negotiate()
        for cidr in addresses:
            ip.add_address(name, cidr)
        return iface

    def negotiate(self) -> None:
        """Capability query (answered by NDIS from the miniport's attributes) then the parameter set the
        miniport must handle (R-INIT-11), carrying TicksPerSecond (R-INIT-14). R-INIT-17: when another
        protocol already enabled the NIC's TCP offload, this one does not (`offload_conflict` names it):
        its connections stay in the host."""
        ndis = self.ndis
        assert ndis is not None and self.binding is not None
        q = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
        st = ndis.oid_request(self.binding, q)
        self.caps = q.buffer if st == _SUCCESS and isinstance(q.buffer, NdisTcpConnectionOffload) else None
        self.params_accepted = False
        if self.caps is None:
            return
        self.offload_conflict = self.offload_holder()
        if self.offload_conflict is not None:
            return
        self.enable_offload()

    def offload_holder(self) -> NdisHostBinding | None:
        """Another protocol whose binding enabled TCP offload on the same NIC (through intermediate
        drivers too: the NIC is the bottom of the adapter stack), or None."""
        ndis = self.ndis
        if ndis is None or self.binding is None:
            return None
        nic = _nic_of(self.binding.adapter)
        for b in ndis.bindings:
            other = b.protocol
            if (other is not self and isinstance(other, NdisHostBinding) and other.binding is b
                    and other.offload_enabled and b.state is not BindingState.CLOSED and _nic_of(b.adapter) is nic):
                return other
        return None

    def enable_offload(self) -> None:
        """Set OID_TCP_CONNECTION_OFFLOAD_PARAMETERS: this protocol enables the NIC's TCP chimney.
        R-INIT-17 (host invariant): only one protocol at a time does."""
        ndis = self.ndis
        assert ndis is not None and self.binding is not None
        holder = self.offload_holder()
        ndis.verifier.check(holder is None, "R-INIT-17",
                            f"{self.name} enables TCP offload on {self.binding.adapter.name} while "
                            f"{holder.name if holder is not None else '?'} has it enabled", self.binding)
        self.offload_enabled = True  # from the request on: a pended set still holds the NIC
        s = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, self.params)
        st = ndis.oid_request(self.binding, s)
        if st != _PENDING:
            self.params_accepted = self.offload_enabled = st == _SUCCESS

    def oid_request_complete(self, binding_context: Any, request: NdisOidRequest, status: int) -> None:
        if request.oid == OID_TCP_CONNECTION_OFFLOAD_PARAMETERS:
            self.params_accepted = self.offload_enabled = status == _SUCCESS
        elif self.manager is not None:
            self.manager.oid_request_complete(request, status)  # OID_PNP_SET_POWER pended by the target

    @property
    def tx_outstanding(self) -> int:
        """Frames sent through the binding and not completed yet."""
        c = self.counters
        return c["tx_frames"] - c["tx_completed"] - c["tx_failed"]

    @property
    def chimney_ready(self) -> bool:
        """Offloads may be started: capabilities known, parameters accepted, not paused, link up."""
        return self.caps is not None and self.params_accepted and not self.offload_paused and self.media_up

    # ------------------------------------------------------------------ normal send / receive path

    def _transmit(self, frame: bytes, meta: str | None) -> None:
        """Interface transmit: one NBL (one NB, one MDL over the frame) per frame, no copy."""
        binding = self.binding
        ndis = self.ndis
        if binding is None or ndis is None:
            return
        self.counters["tx_frames"] += 1
        ndis.send_net_buffer_lists(binding, nbl_from_bytes(frame, self.name))

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        # The NBLs wrap immutable frames: completion only drops them (nothing to recycle).
        self.counters["tx_complete_calls"] += 1
        n: NetBufferList | None = nbl
        while n is not None:
            if n.status == _SUCCESS:
                self.counters["tx_completed"] += 1
            else:
                self.counters["tx_failed"] += 1
            n = n.next

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        """Copy each frame out, return the NBLs (never with RESOURCES: those stay the miniport's), then
        hand the frames to the IP layer. Returning first keeps the NIC ring full while TCP runs."""
        self.counters["rx_indications"] += 1
        frames: list[bytes] = []
        n: NetBufferList | None = nbl
        while n is not None:
            nb = n.first_net_buffer
            if nb is not None:
                frames.append(nb.copy_data())
            n = n.next
        if receive_flags & NDIS_RECEIVE_FLAGS_RESOURCES:
            self.counters["rx_resources_copies"] += len(frames)
        else:
            assert self.ndis is not None and self.binding is not None
            self.ndis.return_net_buffer_lists(self.binding, nbl, 0)
        iface = self.iface
        if iface is None:
            return
        self.counters["rx_frames"] += len(frames)
        ip = self.stack.ip
        for f in frames:
            ip.input_frame(iface, f)
        m = self.manager
        if m is not None:
            m.wake()

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        self.counters["status_indications"] += 1
        code = indication.status_code
        m = self.manager
        if code == NdisStatus.OFFLOAD_PAUSE:
            self.offload_paused = True  # stop new offloads; I/O on offloaded connections continues
        elif code == NdisStatus.OFFLOAD_RESUME:
            # Capabilities may have changed (the indication carries them, NDIS recorded them): re-query
            # and re-set (§3.1); the manager honours the new capacity from `caps`.
            self.offload_paused = False
            self.negotiate()
        elif code == NdisStatus.MEDIA_DISCONNECT:
            # R-EVT-12: the host decides (OffloadPolicy.upload_on_media_disconnect); no new offloads
            # until the link is back.
            self.media_up = False
        elif code == NdisStatus.MEDIA_CONNECT:
            self.media_up = True
        if m is not None:
            m.status_indication(code)  # UPLOAD_ALL, resume, media policy

    # ------------------------------------------------------------------ chimney client handlers

    def _mgr(self) -> OffloadManager:
        m = self.manager
        if m is None:
            raise RuntimeError(f"{self.name}: chimney callback without an OffloadManager")
        return m

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._mgr().initiate_offload_complete(pbl)

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._mgr().terminate_offload_complete(pbl)

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._mgr().update_offload_complete(pbl)

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._mgr().invalidate_offload_complete(pbl)

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._mgr().query_offload_complete(pbl)

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        self._mgr().indicate_offload_event(pbl, indication_code)

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._mgr().send_complete(nbl)

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._mgr().receive_complete(nbl)

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._mgr().disconnect_complete(nbl)

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self._mgr().forward_complete(nbl)

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        self._mgr().tcp_event(offload_context, event_type, event_specific_information)

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        return self._mgr().receive_indicate(offload_context, nbl, status)


def _nic_of(adapter: Adapter) -> Adapter:
    """The physical adapter at the bottom of an intermediate-driver stack (the adapter itself if none)."""
    while adapter.lower_binding is not None:
        adapter = adapter.lower_binding.adapter
    return adapter


__all__ = ["NdisHostBinding", "offload_parameters"]
