"""The NDIS 5.x wrapper: miniport/protocol registry and bindings, multipacket receive indication and return.

Owns NdisMIndicateReceivePacket, NdisMCoIndicateReceivePacket and NdisReturnPackets with the ownership
semantics of contract §3.7/§5.10, checked against rules R-N5-01..18 through the shared Verifier.

NDIS name -> Python name
    NdisMRegisterMiniport + MiniportInitialize  -> Ndis5.m_register_miniport / Miniport5.initialize
    NdisMSetAttributesEx                        -> Ndis5.m_set_attributes_ex
    NdisRegisterProtocol / NdisOpenAdapter      -> Ndis5.register_protocol / Ndis5.open_adapter
    NdisCloseAdapter                            -> Ndis5.close_adapter
    NdisCoCreateVc                              -> Ndis5.co_create_vc
    NdisMIndicateReceivePacket                  -> Ndis5.m_indicate_receive_packet
    NdisMCoIndicateReceivePacket                -> Ndis5.m_co_indicate_receive_packet
    NdisReturnPackets                           -> Ndis5.return_packets
    MiniportReturnPacket                        -> Miniport5.return_packet
    ProtocolReceivePacket                       -> Protocol5.receive_packet
    ProtocolCoReceivePacket                     -> Protocol5.co_receive_packet
    ProtocolReceive / ProtocolReceiveComplete   -> Protocol5.receive / Protocol5.receive_complete
    MiniportReserved / MiniportReservedEx       -> Miniport5.miniport_reserved / miniport_reserved_ex
    NdisSendPackets / MiniportSendPackets       -> Ndis5.send_packets / Miniport5.send_packets
    NdisMSendComplete / ProtocolSendComplete    -> Ndis5.m_send_complete / Protocol5.send_complete
    NdisMSendResourcesAvailable                 -> Ndis5.m_send_resources_available
    NDIS_ATTRIBUTE_DESERIALIZE etc.             -> same names, module constants

A Python model has no "current thread owner", so the wrapper keeps a stack of the driver whose code
is running (it pushes a driver around every handler call; drivers push themselves with `running()`
or `call_later()` when their own code starts from a timer). Code outside any driver (tests, the
harness) is never accused of touching a lent packet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, ClassVar

from chimney.ndis.ndis5.packet import (
    NdisPacket,
    PacketState,
    _recount,
    _touch,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import Scheduler, SimScheduler

# NdisMSetAttributesEx attribute flags (ndis.h values)
NDIS_ATTRIBUTE_IGNORE_PACKET_TIMEOUT = 0x00000001
NDIS_ATTRIBUTE_IGNORE_REQUEST_TIMEOUT = 0x00000002
NDIS_ATTRIBUTE_IGNORE_TOKEN_RING_ERRORS = 0x00000004
NDIS_ATTRIBUTE_BUS_MASTER = 0x00000008
NDIS_ATTRIBUTE_INTERMEDIATE_DRIVER = 0x00000010
NDIS_ATTRIBUTE_DESERIALIZE = 0x00000020
NDIS_ATTRIBUTE_NO_HALT_ON_SUSPEND = 0x00000040
NDIS_ATTRIBUTE_SURPRISE_REMOVE_OK = 0x00000080
NDIS_ATTRIBUTE_NOT_CO_NDIS = 0x00000100

_SUCCESS = int(NdisStatus.SUCCESS)
_RESOURCES = int(NdisStatus.RESOURCES)
_PENDING = int(NdisStatus.PENDING)
_OWNED = PacketState.OWNED
_INDICATING = PacketState.INDICATING
_LENT = PacketState.LENT
_SENDING = PacketState.SENDING


class Ndis5UsageError(TypeError):
    """An API called in a way NDIS 5 has no meaning for (wrong indicate function, unknown handle)."""


class MiniportKind(Enum):
    SERIALIZED = "serialized"
    DESERIALIZED = "deserialized"
    CONNECTION_ORIENTED = "connection-oriented"


class _Running:
    """Context manager pushing a driver on the wrapper's running-driver stack."""

    __slots__ = ("driver", "stack")

    def __init__(self, stack: list[Any], driver: Any) -> None:
        self.stack = stack
        self.driver = driver

    def __enter__(self) -> None:
        self.stack.append(self.driver)

    def __exit__(self, *exc: object) -> None:
        self.stack.pop()


class Driver5:
    """What miniports and protocols share: a name, the wrapper they live in, a way to run as themselves."""

    def __init__(self, name: str = "") -> None:
        self.name = name or type(self).__name__
        self.ndis: Ndis5 | None = None

    @property
    def lib(self) -> Ndis5:
        if self.ndis is None:
            raise Ndis5UsageError(f"{self.name} is not registered with an Ndis5 wrapper")
        return self.ndis

    def running(self) -> _Running:
        """`with driver.running():` marks code as this driver's (for the lent-packet checks)."""
        return _Running(self.lib._stack, self)

    def call_later(self, delay_ns: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Schedule `fn(*args)` to run later as this driver's code (a DPC, a timer, a worker)."""
        lib = self.lib
        return lib.scheduler.call_later(delay_ns, lib._run_as, self, fn, args, label=f"{self.name}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Miniport5(Driver5):
    """Base NDIS 5 miniport. Subclasses set `kind` and implement `return_packet` (R-N5-01)."""

    kind: ClassVar[MiniportKind] = MiniportKind.SERIALIZED
    intermediate: ClassVar[bool] = False  # the miniport edge of an IM (NDIS_ATTRIBUTE_INTERMEDIATE_DRIVER)

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.handle: MiniportHandle | None = None

    def attribute_flags(self) -> int:
        """Flags a correct driver of this kind passes to NdisMSetAttributesEx (R-N5-18)."""
        flags = NDIS_ATTRIBUTE_BUS_MASTER
        if self.kind is not MiniportKind.SERIALIZED:
            flags |= NDIS_ATTRIBUTE_DESERIALIZE
        if self.intermediate:
            flags |= NDIS_ATTRIBUTE_INTERMEDIATE_DRIVER
        if self.kind is not MiniportKind.CONNECTION_ORIENTED:
            flags |= NDIS_ATTRIBUTE_NOT_CO_NDIS
        return flags

    def initialize(self, handle: MiniportHandle) -> NdisStatus:
        """MiniportInitialize: declares attributes via NdisMSetAttributesEx (R-N5-18)."""
        self.lib.m_set_attributes_ex(handle, self, 0, self.attribute_flags())
        return NdisStatus.SUCCESS

    def return_packet(self, packet: NdisPacket) -> None:
        """MiniportReturnPacket(MiniportAdapterContext, Packet). Required for packet indications."""
        raise NotImplementedError

    def send_packets(self, packet_array: list[NdisPacket]) -> None:
        """MiniportSendPackets: serialized drivers set each packet's Status before returning (R-N5-19);
        deserialized/CO drivers queue and complete every packet later with m_send_complete (R-N5-18)."""
        raise NotImplementedError

    def vc_activated(self, vc: VcHandle) -> None:
        """A CO client created a VC on this miniport (MiniportCoCreateVc + activation)."""

    # R-N5-16: which half of the reserved union this driver may use
    def _uses_reserved(self) -> bool:
        return self.kind is MiniportKind.SERIALIZED or self.intermediate

    def miniport_reserved(self, packet: NdisPacket) -> memoryview:
        """MiniportReserved[2·PTR]: serialized miniports and IMs only (R-N5-16)."""
        _touch(packet, "MiniportReserved")
        self.lib.verifier.check(
            self._uses_reserved(),
            "R-N5-16",
            f"{self.kind.value} miniport {self.name} used MiniportReserved; it owns MiniportReservedEx",
            packet,
        )
        return memoryview(packet._reserved)[:16]

    def miniport_reserved_ex(self, packet: NdisPacket) -> memoryview:
        """MiniportReservedEx[3·PTR]: deserialized and CO miniports only (R-N5-16)."""
        _touch(packet, "MiniportReservedEx")
        self.lib.verifier.check(
            not self._uses_reserved(),
            "R-N5-16",
            f"{self.kind.value} miniport {self.name} used MiniportReservedEx, overlapping NDIS's WrapperReserved",
            packet,
        )
        return memoryview(packet._reserved)[:24]


class Protocol5(Driver5):
    """Base NDIS 5 protocol. Override `receive_packet` to be on the packet path, else `receive`."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.binding: Binding | None = None

    def receive_packet(self, packet: NdisPacket) -> int:
        """ProtocolReceivePacket -> number of NdisReturnPackets calls it will make (R-N5-11)."""
        raise NotImplementedError

    def co_receive_packet(self, vc: VcHandle, packet: NdisPacket) -> int:
        """ProtocolCoReceivePacket; by default the same as the connectionless handler."""
        return self.receive_packet(packet)

    def receive(
        self, mac_receive_context: Any, header_buffer: memoryview, lookahead_buffer: memoryview, packet_size: int
    ) -> NdisStatus:
        """ProtocolReceive (lookahead path): copy what you need now, the views die on return (R-N5-15)."""
        return NdisStatus.NOT_ACCEPTED

    def receive_complete(self) -> None:
        """ProtocolReceiveComplete: post-processing of data copied in `receive` starts here (R-N5-15)."""

    def send_complete(self, packet: NdisPacket, status: int) -> None:
        """ProtocolSendComplete: the packet is the protocol's again."""

    def send_packets(self, packets: Sequence[NdisPacket]) -> None:
        """NdisSendPackets on this protocol's binding."""
        if self.binding is None:
            raise Ndis5UsageError(f"{self.name} is not bound")
        with self.running():
            self.lib.send_packets(self.binding, packets, len(packets))

    def return_packets(self, packets: Sequence[NdisPacket]) -> None:
        """NdisReturnPackets issued as this protocol."""
        with self.running():
            self.lib.return_packets(packets, len(packets))

    @classmethod
    def exports_receive_packet(cls) -> bool:
        return cls.receive_packet is not Protocol5.receive_packet or (
            cls.co_receive_packet is not Protocol5.co_receive_packet
        )


class Binding:
    """An open adapter: one protocol bound to one miniport (NdisOpenAdapter)."""

    __slots__ = ("miniport", "open", "packet_path", "protocol")

    def __init__(self, protocol: Protocol5, miniport: MiniportHandle) -> None:
        self.protocol = protocol
        self.miniport = miniport
        self.packet_path = type(protocol).exports_receive_packet()
        self.open = True

    def __repr__(self) -> str:
        return f"<Binding {self.protocol.name} -> {self.miniport.name}>"


class VcHandle:
    """A connection-oriented VC: one client protocol binding on one CO miniport."""

    __slots__ = ("binding", "index", "miniport")

    def __init__(self, binding: Binding, index: int) -> None:
        self.binding = binding
        self.miniport = binding.miniport
        self.index = index

    def __repr__(self) -> str:
        return f"<Vc {self.index} {self.binding!r}>"


class MiniportHandle:
    """NDIS's per-adapter block (MiniportAdapterHandle): attributes, bindings and return accounting."""

    __slots__ = (
        "attributes",
        "bindings",
        "deserialized",
        "indications",
        "kept",
        "lent",
        "miniport",
        "name",
        "ndis",
        "outstanding",
        "packets_indicated",
        "reclaimed_resources",
        "resources_indicated",
        "returned_at_indicate",
        "returned_via_return_packet",
        "send_batch",
        "send_blocked",
        "send_queue",
        "sends_completed",
        "sends_pending",
        "sends_requeued",
        "supplies_return_packet",
        "vcs",
    )

    def __init__(self, ndis: Ndis5, miniport: Miniport5) -> None:
        self.ndis = ndis
        self.miniport = miniport
        self.name = miniport.name
        self.attributes = 0
        self.deserialized = False
        self.bindings: list[Binding] = []
        self.vcs: list[VcHandle] = []
        self.supplies_return_packet = type(miniport).return_packet is not Miniport5.return_packet
        self.indications = 0
        self.packets_indicated = 0
        self.resources_indicated = 0
        self.lent = 0  # handed to NDIS/protocols until MiniportReturnPacket
        self.kept = 0  # of those, kept by a protocol (promise > 0)
        self.outstanding = 0
        self.returned_via_return_packet = 0
        self.returned_at_indicate = 0
        self.reclaimed_resources = 0
        self.send_queue: deque[NdisPacket] = deque()  # NDIS's queue for a serialized miniport
        self.send_batch: list[NdisPacket] | None = None  # the array inside MiniportSendPackets
        self.send_blocked = False  # after RESOURCES, until resources are available again
        self.sends_pending: set[int] = set()  # id() of packets the miniport owes NdisMSendComplete for
        self.sends_completed = 0
        self.sends_requeued = 0

    def check_touch(self, packet: NdisPacket, what: str) -> None:
        """R-N5-05: called by every helper on a lent packet; the lender itself may not touch it."""
        stack = self.ndis._stack
        if stack and stack[-1] is self.miniport:
            self.ndis.verifier.fail(
                "R-N5-05",
                f"miniport {self.name} used {what} on a packet it lent (indicated with SUCCESS) before"
                " it came back",
                packet,
            )

    def check_status_read(self, packet: NdisPacket) -> None:
        """R-N5-08: a deserialized/CO miniport reading Status of a packet it indicated."""
        stack = self.ndis._stack
        if stack and stack[-1] is self.miniport:
            self.ndis.verifier.fail(
                "R-N5-08",
                f"{self.miniport.kind.value} miniport {self.name} read NDIS_GET_PACKET_STATUS after"
                " indicating; it must act on the status it saved before the indication",
                packet,
            )

    def __repr__(self) -> str:
        return f"<MiniportHandle {self.name} {self.miniport.kind.value}>"


class Ndis5:
    """The NDIS 5 library: one per simulated system; owns the verifier every check reports to."""

    def __init__(self, scheduler: Scheduler | None = None, verifier: Verifier | None = None) -> None:
        self.scheduler: Scheduler = scheduler if scheduler is not None else SimScheduler(0)
        self.verifier: Verifier = verifier if verifier is not None else Verifier(Mode.STRICT)
        self._stack: list[Any] = []
        self.miniports: list[MiniportHandle] = []
        self.protocols: list[Protocol5] = []
        self.ndis_return_packets_calls = 0

    # ---- running-driver context

    def current(self) -> Any:
        """The driver whose code is running, or None for harness code."""
        stack = self._stack
        return stack[-1] if stack else None

    def _run_as(self, driver: Driver5, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        self._stack.append(driver)
        try:
            return fn(*args)
        finally:
            self._stack.pop()

    # ---- registration and binding

    def m_register_miniport(self, miniport: Miniport5) -> MiniportHandle:
        """NdisMRegisterMiniport + the MiniportInitialize call for one adapter."""
        if miniport.ndis is not None:
            raise Ndis5UsageError(f"{miniport!r} is already registered")
        miniport.ndis = self
        handle = MiniportHandle(self, miniport)
        miniport.handle = handle
        status = self._run_as(miniport, miniport.initialize, (handle,))
        if status != NdisStatus.SUCCESS:
            miniport.ndis = None
            miniport.handle = None
            raise Ndis5UsageError(f"MiniportInitialize of {miniport.name} failed with 0x{int(status):08X}")
        declared = bool(handle.attributes & NDIS_ATTRIBUTE_DESERIALIZE)
        wants = miniport.kind is not MiniportKind.SERIALIZED
        # R-N5-18: deserialized miniports declare it; CO miniports must be deserialized
        self.verifier.check(
            declared == wants,
            "R-N5-18",
            f"{miniport.kind.value} miniport {miniport.name} "
            + ("did not declare" if wants else "declared")
            + " NDIS_ATTRIBUTE_DESERIALIZE in NdisMSetAttributesEx",
            miniport,
        )
        # NDIS treats the driver as what it declared, as the real wrapper does
        handle.deserialized = declared
        self.miniports.append(handle)
        return handle

    def m_set_attributes_ex(
        self,
        miniport_adapter_handle: MiniportHandle,
        miniport_adapter_context: Any,
        check_for_hang_time_in_seconds: int,
        attribute_flags: int,
        adapter_type: int = 0,
    ) -> None:
        """NdisMSetAttributesEx."""
        miniport_adapter_handle.attributes = attribute_flags

    def register_protocol(self, protocol: Protocol5) -> Protocol5:
        """NdisRegisterProtocol."""
        if protocol.ndis is not None and protocol.ndis is not self:
            raise Ndis5UsageError(f"{protocol!r} is registered with another wrapper")
        protocol.ndis = self
        if protocol not in self.protocols:
            self.protocols.append(protocol)
        return protocol

    def open_adapter(self, protocol: Protocol5, miniport: MiniportHandle) -> Binding:
        """NdisOpenAdapter: bind `protocol` to the adapter (one binding per protocol instance)."""
        self.register_protocol(protocol)
        if protocol.binding is not None and protocol.binding.open:
            raise Ndis5UsageError(f"{protocol.name} is already bound to {protocol.binding.miniport.name}")
        b = Binding(protocol, miniport)
        protocol.binding = b
        miniport.bindings.append(b)
        return b

    def close_adapter(self, binding: Binding) -> None:
        """NdisCloseAdapter: no more indications reach the protocol."""
        binding.open = False
        if binding in binding.miniport.bindings:
            binding.miniport.bindings.remove(binding)

    def co_create_vc(self, binding: Binding) -> VcHandle:
        """NdisCoCreateVc by a CO client on a connection-oriented miniport."""
        h = binding.miniport
        if h.miniport.kind is not MiniportKind.CONNECTION_ORIENTED:
            raise Ndis5UsageError(f"{h.name} is not a connection-oriented miniport")
        vc = VcHandle(binding, len(h.vcs))
        h.vcs.append(vc)
        self._run_as(h.miniport, h.miniport.vc_activated, (vc,))
        return vc

    # ---- receive indication

    def m_indicate_receive_packet(
        self, miniport_adapter_handle: MiniportHandle, receive_packets: Sequence[NdisPacket], number_of_packets: int
    ) -> None:
        """NdisMIndicateReceivePacket (connectionless miniports)."""
        h = miniport_adapter_handle
        if h.miniport.kind is MiniportKind.CONNECTION_ORIENTED:
            raise Ndis5UsageError(f"CO miniport {h.name} must indicate with m_co_indicate_receive_packet")
        self._indicate(h, h.bindings, None, receive_packets, number_of_packets)

    def m_co_indicate_receive_packet(
        self, ndis_vc_handle: VcHandle, packet_array: Sequence[NdisPacket], number_of_packets: int
    ) -> None:
        """NdisMCoIndicateReceivePacket: delivers to the VC's client only."""
        h = ndis_vc_handle.miniport
        if h.miniport.kind is not MiniportKind.CONNECTION_ORIENTED:
            raise Ndis5UsageError(f"{h.name} is connectionless: use m_indicate_receive_packet")
        targets = [ndis_vc_handle.binding] if ndis_vc_handle.binding.open else []
        self._indicate(h, targets, ndis_vc_handle, packet_array, number_of_packets)

    def _admit(self, h: MiniportHandle, p: NdisPacket) -> bool:
        """The per-packet preconditions of an indication; False = not indicated (RECORD mode)."""
        v = self.verifier
        if not v.check(
            p._pool is not None and p._state != PacketState.FREE,
            "R-N5-02",
            f"{h.name} indicated a packet descriptor not allocated from an NDIS packet pool",
            p,
        ):
            return False
        if not v.check(
            p._state == _OWNED,
            "R-N5-05",
            f"{h.name} re-indicated a packet still {PacketState.NAMES[p._state]} (not yet returned)",
            p,
        ):
            return False
        _recount(p)
        if not v.check(
            p._total_length > 0,
            "R-N5-02",
            f"{h.name} indicated a packet with no data (must describe a full packet)",
            p,
        ):
            return False
        st = p._oob._status
        if not v.check(
            p._status_written and (st in (_SUCCESS, _RESOURCES)),
            "R-N5-04",
            f"{h.name} did not set the packet Status to SUCCESS or RESOURCES before indicating"
            f" (status 0x{st:08X}, set={p._status_written})",
            p,
        ):
            # keep going as if the miniport had asked to keep the packet: the safe reading
            p._oob._status = _RESOURCES
        return True

    def _indicate(
        self,
        h: MiniportHandle,
        bindings: Sequence[Binding],
        vc: VcHandle | None,
        packets: Sequence[NdisPacket],
        number_of_packets: int,
    ) -> None:
        v = self.verifier
        v.check(
            h.supplies_return_packet,
            "R-N5-01",
            f"{h.name} indicates with NdisM(Co)IndicateReceivePacket but has no MiniportReturnPacket",
            h.miniport,
        )
        if not v.check(
            number_of_packets >= 1,
            "R-N5-03",
            f"{h.name} called NdisMIndicateReceivePacket with NumberOfPackets={number_of_packets}",
        ):
            return
        if number_of_packets > len(packets):
            raise Ndis5UsageError(f"NumberOfPackets={number_of_packets} but the array holds {len(packets)}")
        # R-N5-10: the array stays the miniport's; NDIS works from its own copy taken on entry
        array: list[NdisPacket] = []
        seen: set[int] = set()
        for p in packets[:number_of_packets]:
            if id(p) in seen:
                v.fail("R-N5-02", f"{h.name} put the same packet descriptor twice in one array", p)
                continue
            seen.add(id(p))
            if self._admit(h, p):
                array.append(p)
        if not array:
            return
        h.indications += 1
        deserialized = h.deserialized
        targets = [b for b in bindings if b.open]
        lookahead_users: list[Protocol5] = []
        stack = self._stack
        for p in array:
            status = p._oob._status
            p._indicated_status = status
            p._indications += 1
            p._status_written = False
            p._state = _INDICATING
            p._refs = 0
            p._promises = {}
            p._lent_by = h
            if deserialized:
                p._sealed_by = h
            h.packets_indicated += 1
            if status == _RESOURCES:
                h.resources_indicated += 1
            for b in targets:
                proto = b.protocol
                if b.packet_path:
                    p._delivering = proto
                    stack.append(proto)
                    try:
                        n = proto.co_receive_packet(vc, p) if vc is not None else proto.receive_packet(p)
                    finally:
                        stack.pop()
                        p._delivering = None
                    if not v.check(
                        type(n) is int and n >= 0,
                        "R-N5-11",
                        f"{proto.name}.receive_packet returned {n!r}; it must return the number of"
                        " NdisReturnPackets calls it will make",
                        p,
                    ):
                        n = 0
                    if status == _RESOURCES and not v.check(
                        n == 0,
                        "R-N5-12",
                        f"{proto.name} kept a packet indicated with RESOURCES (returned {n}); it must"
                        " copy the data and return 0",
                        p,
                    ):
                        n = 0
                    if n:
                        p._promises[proto] = p._promises.get(proto, 0) + n
                        p._refs += n
                else:
                    self._deliver_lookahead(p, proto)
                    if proto not in lookahead_users:
                        lookahead_users.append(proto)
        for proto in lookahead_users:
            self._run_as(proto, proto.receive_complete, ())
        # Ownership at return of the indication (§5.10)
        to_return: list[NdisPacket] = []
        for p in array:
            if p._state != _INDICATING:
                continue  # an earlier return in this loop already settled it
            if p._indicated_status == _RESOURCES:
                # R-N5-06: back to the miniport now, never through MiniportReturnPacket
                p._state = _OWNED
                p._lent_by = None
                h.reclaimed_resources += 1
            elif p._refs > 0:
                p._state = _LENT
                p._oob._status = _PENDING
                h.lent += 1
                h.kept += 1
                h.outstanding += 1
            elif deserialized:
                # NDIS gives every SUCCESS packet of a deserialized miniport back through
                # MiniportReturnPacket, possibly before the indication returns (hence R-N5-08)
                p._state = _LENT
                h.lent += 1
                h.outstanding += 1
                to_return.append(p)
            else:
                p._state = _OWNED
                p._lent_by = None
                h.returned_at_indicate += 1
        for p in to_return:
            self._give_back(p)

    def _deliver_lookahead(self, p: NdisPacket, proto: Protocol5) -> None:
        """ProtocolReceive with the whole packet as lookahead; views are released after the call."""
        head = p._head
        assert head is not None
        hs = p._oob._header_size
        if head.next is None:
            whole = head.view()
        else:
            data = bytearray()
            b: Any = head
            while b is not None:
                data += b.view()
                b = b.next
            whole = memoryview(data)
        hs = min(hs, len(whole))
        header = whole[:hs]
        lookahead = whole[hs:]
        try:
            self._run_as(proto, proto.receive, (p, header, lookahead, len(lookahead)))
        finally:
            # R-N5-15: data must be copied inside ProtocolReceive; a kept view stops working here
            header.release()
            lookahead.release()
            whole.release()

    # ---- return path

    def return_packets(self, packets_to_return: Sequence[NdisPacket], number_of_packets: int | None = None) -> None:
        """NdisReturnPackets: one reference per packet; the last one reaches MiniportReturnPacket."""
        n = len(packets_to_return) if number_of_packets is None else number_of_packets
        if n > len(packets_to_return):
            raise Ndis5UsageError(f"NumberOfPackets={n} but the array holds {len(packets_to_return)}")
        self.ndis_return_packets_calls += 1
        v = self.verifier
        caller = self.current()
        for p in packets_to_return[:n]:
            state = p._state
            if state == _INDICATING and p._delivering is not None and (caller is None or caller is p._delivering):
                v.fail(
                    "R-N5-13",
                    f"NdisReturnPackets by {getattr(caller, 'name', 'harness')} before the"
                    " ProtocolReceivePacket call that delivered the packet returned",
                    p,
                )
                continue
            if (state != _LENT and state != _INDICATING) or p._refs <= 0:
                if p._indicated_status == _RESOURCES and p._indications and state != _LENT:
                    v.fail(
                        "R-N5-12",
                        "NdisReturnPackets for a packet indicated with RESOURCES (it was never lent:"
                        " the protocol had to copy and return 0)",
                        p,
                    )
                else:
                    v.fail(
                        "R-N5-11",
                        "NdisReturnPackets for a packet with no outstanding promise (never indicated,"
                        " already returned, or returned more often than ProtocolReceivePacket promised)",
                        p,
                    )
                continue
            promises = p._promises
            key = caller if caller in promises else None
            if key is None:
                # a caller we cannot attribute (or one that made no promise) spends any open promise
                if caller is not None and isinstance(caller, Protocol5):
                    v.fail(
                        "R-N5-11",
                        f"{caller.name} returned a packet it did not promise to return",
                        p,
                    )
                    continue
                key = next(k for k, c in promises.items() if c > 0)
            promises[key] -= 1
            if promises[key] == 0:
                del promises[key]
            p._refs -= 1
            if p._refs == 0 and state == _LENT:
                self._give_back(p)

    def _give_back(self, p: NdisPacket) -> None:
        """MiniportReturnPacket, exactly once per lent packet (R-N5-09)."""
        h = p._lent_by
        ok = self.verifier.check(
            h is not None and p._state == _LENT,
            "R-N5-09",
            "MiniportReturnPacket would run for a packet that is not lent (duplicate return)",
            p,
        )
        if not ok or h is None:
            return
        p._state = _OWNED
        p._lent_by = None
        h.outstanding -= 1
        h.returned_via_return_packet += 1
        m = h.miniport
        self._run_as(m, m.return_packet, (p,))

    # ---- send path (R-N5-19, and the deserialized part of R-N5-18)

    def send_packets(
        self, ndis_binding_handle: Binding, packet_array: Sequence[NdisPacket], number_of_packets: int | None = None
    ) -> None:
        """NdisSendPackets: the packets belong to NDIS/the miniport until ProtocolSendComplete."""
        n = len(packet_array) if number_of_packets is None else number_of_packets
        if n > len(packet_array):
            raise Ndis5UsageError(f"NumberOfPackets={n} but the array holds {len(packet_array)}")
        h = ndis_binding_handle.miniport
        for p in packet_array[:n]:
            if p._pool is None or p._state != _OWNED:
                raise Ndis5UsageError(f"{p!r} cannot be sent: not from a pool or not owned by the sender")
            p._state = _SENDING
            p._sender = ndis_binding_handle
            h.send_queue.append(p)
        self._drain_sends(h)

    def _drain_sends(self, h: MiniportHandle) -> None:
        if h.send_batch is not None:
            return  # NDIS never re-enters MiniportSendPackets
        m = h.miniport
        v = self.verifier
        while h.send_queue and not h.send_blocked:
            batch = list(h.send_queue)
            h.send_queue.clear()
            for p in batch:
                p._status_written = False
            h.send_batch = batch
            try:
                self._run_as(m, m.send_packets, (batch,))
            finally:
                h.send_batch = None
            if h.deserialized:
                # statuses are meaningless: every packet not yet completed is owed a completion
                for p in batch:
                    if p._state == _SENDING:
                        h.sends_pending.add(id(p))
                continue
            requeue: list[NdisPacket] = []
            for p in batch:
                st = p._oob._status
                if not v.check(
                    p._status_written,
                    "R-N5-19",
                    f"serialized miniport {h.name} returned from MiniportSendPackets without setting a packet's Status",
                    p,
                ):
                    st = _RESOURCES  # the safe reading: NDIS keeps and retries it
                if requeue:
                    # RESOURCES on an earlier packet: this one is requeued whatever it says
                    v.check(
                        st != _PENDING,
                        "R-N5-19",
                        f"{h.name} kept (PENDING) a packet after one it refused with RESOURCES; NDIS requeues"
                        " every later packet of the array",
                        p,
                    )
                    requeue.append(p)
                elif st == _RESOURCES:
                    requeue.append(p)
                elif st == _PENDING:
                    h.sends_pending.add(id(p))
                else:
                    self._complete_send(h, p, st)
            if requeue:
                h.sends_requeued += len(requeue)
                h.send_queue.extendleft(reversed(requeue))
                h.send_blocked = True

    def m_send_complete(self, miniport_adapter_handle: MiniportHandle, packet: NdisPacket, status: int) -> None:
        """NdisMSendComplete: once per packet the miniport kept (serialized: Status PENDING)."""
        h = miniport_adapter_handle
        v = self.verifier
        batch = h.send_batch
        if h.deserialized and batch is not None and any(x is packet for x in batch):
            v.fail(
                "R-N5-18",
                f"deserialized miniport {h.name} completed a multipacket send synchronously (inside MiniportSendPackets)",
                packet,
            )
            return
        if not v.check(
            id(packet) in h.sends_pending and packet._state == _SENDING,
            "R-N5-19",
            f"NdisMSendComplete from {h.name} for a packet it does not owe a completion for (not PENDING,"
            " already completed, or never sent)",
            packet,
        ):
            return
        h.sends_pending.discard(id(packet))
        self._complete_send(h, packet, status)
        if h.send_blocked and h.send_queue:
            # a completion frees miniport resources: retry the requeued packets, outside this call
            h.send_blocked = False
            self.scheduler.call_soon(self._drain_sends, h, label=f"{h.name} send retry")

    def m_send_resources_available(self, miniport_adapter_handle: MiniportHandle) -> None:
        """NdisMSendResourcesAvailable: NDIS resends what it requeued after RESOURCES."""
        h = miniport_adapter_handle
        h.send_blocked = False
        self._drain_sends(h)

    def _complete_send(self, h: MiniportHandle, p: NdisPacket, status: int) -> None:
        binding = p._sender
        p._state = _OWNED
        p._sender = None
        h.sends_completed += 1
        proto = binding.protocol
        self._run_as(proto, proto.send_complete, (p, status))
