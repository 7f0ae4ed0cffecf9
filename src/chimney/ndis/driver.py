"""NDIS 6 driver base classes (miniport, protocol, intermediate) with NDIS-named handlers, and the
characteristics / handler-table dataclasses of contract §2.5 registered through `Ndis.set_optional_handlers`.

Handler names are the NDIS names in snake_case without the Miniport/Protocol prefix:
  MiniportInitializeEx -> MiniportDriver.initialize_ex, MiniportHaltEx -> halt_ex, MiniportPause -> pause,
  MiniportRestart -> restart, MiniportOidRequest -> oid_request, MiniportSendNetBufferLists ->
  send_net_buffer_lists, MiniportReturnNetBufferLists -> return_net_buffer_lists, MiniportSetOptions ->
  set_options, MiniportInitiateOffload -> initiate_offload (terminate/update/invalidate/query likewise),
  MiniportTcpOffloadSend -> tcp_offload_send (receive/disconnect/forward/receive_return likewise);
  ProtocolBindAdapterEx -> ProtocolDriver.bind_adapter_ex, ProtocolUnbindAdapterEx -> unbind_adapter_ex,
  ProtocolReceiveNetBufferLists -> receive_net_buffer_lists, ProtocolSendNetBufferListsComplete ->
  send_net_buffer_lists_complete, ProtocolStatusEx -> status_ex, ProtocolOidRequestComplete ->
  oid_request_complete, ProtocolSetOptions -> set_options, ProtocolInitiateOffloadComplete ->
  initiate_offload_complete (...), ProtocolIndicateOffloadEvent -> indicate_offload_event,
  ProtocolTcpOffloadSendComplete -> tcp_offload_send_complete (...), ProtocolTcpOffloadEvent ->
  tcp_offload_event, ProtocolTcpOffloadReceiveIndicate -> tcp_offload_receive_indicate.
An IntermediateDriver has both edges; its two SetOptions handlers are `miniport_set_options` and
`protocol_set_options` because the names collide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chimney.ndis.blocklist import MiniportOffloadBlockList, NdisObjectHeader, ProtocolOffloadBlockList
from chimney.ndis.offload_state import NDIS_TCP_CHIMNEY_OFFLOAD
from chimney.ndis.status import NdisStatus

if TYPE_CHECKING:
    from chimney.ndis.buffers import NetBufferList
    from chimney.ndis.core import Adapter, Binding, DriverHandle, Ndis, NdisStatusIndication
    from chimney.ndis.oid import NdisOidRequest

Handler = Callable[..., Any]


# ------------------------------------------------------------------------------ characteristics (§2.5)


@dataclass(slots=True)
class ProviderChimneyOffloadGenericCharacteristics:
    """NDIS_PROVIDER_CHIMNEY_OFFLOAD_GENERIC_CHARACTERISTICS (target / IM, in MiniportSetOptions)."""

    initiate_offload_handler: Handler | None = None
    terminate_offload_handler: Handler | None = None
    update_offload_handler: Handler | None = None
    invalidate_offload_handler: Handler | None = None
    query_offload_handler: Handler | None = None
    header: NdisObjectHeader = field(default_factory=NdisObjectHeader)
    flags: int = 0

    HANDLER_NAMES = (
        "initiate_offload_handler",
        "terminate_offload_handler",
        "update_offload_handler",
        "invalidate_offload_handler",
        "query_offload_handler",
    )


@dataclass(slots=True)
class ProviderChimneyOffloadTcpCharacteristics:
    """NDIS_PROVIDER_CHIMNEY_OFFLOAD_TCP_CHARACTERISTICS (OffloadType = NdisTcpChimneyOffload)."""

    tcp_offload_send_handler: Handler | None = None
    tcp_offload_receive_handler: Handler | None = None
    tcp_offload_disconnect_handler: Handler | None = None
    tcp_offload_forward_handler: Handler | None = None
    tcp_offload_receive_return_handler: Handler | None = None
    offload_type: int = NDIS_TCP_CHIMNEY_OFFLOAD
    header: NdisObjectHeader = field(default_factory=NdisObjectHeader)
    flags: int = 0

    HANDLER_NAMES = (
        "tcp_offload_send_handler",
        "tcp_offload_receive_handler",
        "tcp_offload_disconnect_handler",
        "tcp_offload_forward_handler",
        "tcp_offload_receive_return_handler",
    )


@dataclass(slots=True)
class ClientChimneyOffloadGenericCharacteristics:
    """NDIS_CLIENT_CHIMNEY_OFFLOAD_GENERIC_CHARACTERISTICS (protocol / IM, in ProtocolSetOptions)."""

    initiate_offload_complete_handler: Handler | None = None
    terminate_offload_complete_handler: Handler | None = None
    update_offload_complete_handler: Handler | None = None
    invalidate_offload_complete_handler: Handler | None = None
    query_offload_complete_handler: Handler | None = None
    indicate_offload_event_handler: Handler | None = None
    header: NdisObjectHeader = field(default_factory=NdisObjectHeader)
    flags: int = 0

    HANDLER_NAMES = (
        "initiate_offload_complete_handler",
        "terminate_offload_complete_handler",
        "update_offload_complete_handler",
        "invalidate_offload_complete_handler",
        "query_offload_complete_handler",
        "indicate_offload_event_handler",
    )


@dataclass(slots=True)
class ClientChimneyOffloadTcpCharacteristics:
    """NDIS_CLIENT_CHIMNEY_OFFLOAD_TCP_CHARACTERISTICS."""

    tcp_offload_send_complete_handler: Handler | None = None
    tcp_offload_receive_complete_handler: Handler | None = None
    tcp_offload_disconnect_complete_handler: Handler | None = None
    tcp_offload_forward_complete_handler: Handler | None = None
    tcp_offload_event_handler: Handler | None = None
    tcp_offload_receive_indicate_handler: Handler | None = None
    offload_type: int = NDIS_TCP_CHIMNEY_OFFLOAD
    header: NdisObjectHeader = field(default_factory=NdisObjectHeader)
    flags: int = 0

    HANDLER_NAMES = (
        "tcp_offload_send_complete_handler",
        "tcp_offload_receive_complete_handler",
        "tcp_offload_disconnect_complete_handler",
        "tcp_offload_forward_complete_handler",
        "tcp_offload_event_handler",
        "tcp_offload_receive_indicate_handler",
    )


@dataclass(slots=True)
class NdisTcpOffloadEventHandlers:
    """NDIS_TCP_OFFLOAD_EVENT_HANDLERS (rev 1), returned by NdisMGetOffloadHandlers: the six NDIS entry
    points a target calls; each is a bound `Ndis` method taking the same arguments as the NDIS function."""

    header: NdisObjectHeader
    ndis_tcp_offload_event_handler: Handler
    ndis_tcp_offload_receive_handler: Handler
    ndis_tcp_offload_send_complete: Handler
    ndis_tcp_offload_receive_complete: Handler
    ndis_tcp_offload_disconnect_complete: Handler
    ndis_tcp_offload_forward_complete: Handler


NDIS_TCP_OFFLOAD_EVENT_HANDLERS_REVISION_1 = 1


def all_handlers_set(chars: Any) -> list[str]:
    """Names of the handler members of a characteristics object that are not set."""
    return [n for n in chars.HANDLER_NAMES if getattr(chars, n) is None]


# --------------------------------------------------------------------------------------------- drivers


class _Driver:
    """Common: a driver name (also its NBL owner name) and the `Ndis` it registered with."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ndis: Ndis | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class MiniportDriver(_Driver):
    """An NDIS 6 miniport driver. Subclasses override the handlers they support.

    `adapter_context` is the MiniportAdapterContext the driver gave in `Ndis.m_set_miniport_attributes`
    (the `Adapter` handle itself when it gave none).
    """

    # -- MiniportXxx (NDIS_MINIPORT_DRIVER_CHARACTERISTICS) ------------------------------------------

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        return NdisStatus.SUCCESS

    def halt_ex(self, adapter_context: Any, halt_action: int) -> None:
        return None

    def pause(self, adapter_context: Any) -> NdisStatus:
        return NdisStatus.SUCCESS

    def restart(self, adapter_context: Any) -> NdisStatus:
        return NdisStatus.SUCCESS

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        return NdisStatus.NOT_SUPPORTED

    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        raise NotImplementedError(f"{self.name} has no MiniportSendNetBufferLists")

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        raise NotImplementedError(f"{self.name} has no MiniportReturnNetBufferLists")

    # -- generic chimney provider (MiniportXxxOffload) -------------------------------------------------

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        raise NotImplementedError

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        raise NotImplementedError

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        raise NotImplementedError

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        raise NotImplementedError

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        raise NotImplementedError

    # -- TCP chimney provider (MiniportTcpOffloadXxx) ---------------------------------------------------

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        raise NotImplementedError

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        raise NotImplementedError

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        raise NotImplementedError

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        raise NotImplementedError

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------------

    def provider_characteristics(
        self,
    ) -> tuple[ProviderChimneyOffloadGenericCharacteristics, ProviderChimneyOffloadTcpCharacteristics]:
        """The two provider tables filled from this driver's methods (for NdisSetOptionalHandlers)."""
        return (
            ProviderChimneyOffloadGenericCharacteristics(
                self.initiate_offload,
                self.terminate_offload,
                self.update_offload,
                self.invalidate_offload,
                self.query_offload,
            ),
            ProviderChimneyOffloadTcpCharacteristics(
                self.tcp_offload_send,
                self.tcp_offload_receive,
                self.tcp_offload_disconnect,
                self.tcp_offload_forward,
                self.tcp_offload_receive_return,
            ),
        )

    def register_provider_handlers(self, driver_handle: DriverHandle) -> NdisStatus:
        """Call from set_options: both NdisSetOptionalHandlers calls (R-INIT-01..03)."""
        assert self.ndis is not None
        generic, tcp = self.provider_characteristics()
        status = self.ndis.set_optional_handlers(driver_handle, generic)
        if status != NdisStatus.SUCCESS:
            return status
        return self.ndis.set_optional_handlers(driver_handle, tcp)


class ProtocolDriver(_Driver):
    """An NDIS 6 protocol driver. `binding_context` is Binding.context (the Binding when not set)."""

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        return NdisStatus.SUCCESS

    def unbind_adapter_ex(self, binding_context: Any) -> NdisStatus:
        return NdisStatus.SUCCESS

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        """Default: copy nothing and give every NBL straight back (unless NDIS said RESOURCES)."""
        from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES

        if not receive_flags & NDIS_RECEIVE_FLAGS_RESOURCES:
            assert self.ndis is not None
            self.ndis.return_net_buffer_lists(_binding_of(binding_context), nbl, 0)

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        return None

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        return None

    def oid_request_complete(self, binding_context: Any, request: NdisOidRequest, status: int) -> None:
        return None

    # -- generic chimney client (ProtocolXxxOffloadComplete, ProtocolIndicateOffloadEvent) --------------

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        raise NotImplementedError

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        raise NotImplementedError

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        raise NotImplementedError

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        raise NotImplementedError

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        raise NotImplementedError

    def indicate_offload_event(
        self, binding_context: Any, pbl: ProtocolOffloadBlockList | None, indication_code: int
    ) -> None:
        raise NotImplementedError

    # -- TCP chimney client (ProtocolTcpOffloadXxx) -------------------------------------------------------

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        raise NotImplementedError

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        raise NotImplementedError

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        raise NotImplementedError

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        raise NotImplementedError

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        raise NotImplementedError

    def tcp_offload_receive_indicate(
        self, offload_context: Any, nbl: NetBufferList, status: int
    ) -> tuple[int, int]:
        """Returns (NDIS_STATUS, BytesConsumed)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------------

    def client_characteristics(
        self,
    ) -> tuple[ClientChimneyOffloadGenericCharacteristics, ClientChimneyOffloadTcpCharacteristics]:
        return (
            ClientChimneyOffloadGenericCharacteristics(
                self.initiate_offload_complete,
                self.terminate_offload_complete,
                self.update_offload_complete,
                self.invalidate_offload_complete,
                self.query_offload_complete,
                self.indicate_offload_event,
            ),
            ClientChimneyOffloadTcpCharacteristics(
                self.tcp_offload_send_complete,
                self.tcp_offload_receive_complete,
                self.tcp_offload_disconnect_complete,
                self.tcp_offload_forward_complete,
                self.tcp_offload_event,
                self.tcp_offload_receive_indicate,
            ),
        )

    def register_client_handlers(self, driver_handle: DriverHandle) -> NdisStatus:
        """Call from set_options: both client NdisSetOptionalHandlers calls (R-INIT-03)."""
        assert self.ndis is not None
        generic, tcp = self.client_characteristics()
        status = self.ndis.set_optional_handlers(driver_handle, generic)
        if status != NdisStatus.SUCCESS:
            return status
        return self.ndis.set_optional_handlers(driver_handle, tcp)


class IntermediateDriver(MiniportDriver, ProtocolDriver):
    """Both edges: a protocol edge bound to a lower miniport and a virtual miniport above (§3.8).

    NDIS calls `miniport_set_options` / `protocol_set_options` (the two SetOptions handlers) at
    registration. Pass-through semantics are up to the subclass; `Adapter.lower_binding` of the
    virtual miniport and `Binding.upper_adapter` of the lower binding connect the two edges.
    """

    def miniport_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def protocol_set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        if driver_handle.kind == "miniport":
            return self.miniport_set_options(driver_handle)
        return self.protocol_set_options(driver_handle)


def _binding_of(binding_context: Any) -> Any:
    """Protocols that keep the default context get the Binding back as their context."""
    return getattr(binding_context, "binding", binding_context)
