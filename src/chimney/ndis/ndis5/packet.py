"""NDIS 5.x packet descriptors: NDIS_PACKET, its private part and OOB block, packet and buffer pools.

Owns the NDIS 5 helper operations (chain/unchain, query, reinitialize, OOB accessors); contract §2.8.

NDIS name -> Python name
    NDIS_PACKET                          -> NdisPacket
    NDIS_PACKET_OOB_DATA                 -> NdisPacketOobData
    NdisAllocatePacketPool / NdisFreePacketPool -> allocate_packet_pool / free_packet_pool
    NdisAllocatePacket / NdisFreePacket  -> allocate_packet / free_packet
    NdisAllocateBufferPool / NdisFreeBufferPool -> allocate_buffer_pool / free_buffer_pool
    NdisAllocateBuffer / NdisFreeBuffer  -> allocate_buffer / free_buffer
    NdisChainBufferAtFront / AtBack      -> chain_buffer_at_front / chain_buffer_at_back
    NdisUnchainBufferAtFront / AtBack    -> unchain_buffer_at_front / unchain_buffer_at_back
    NdisReinitializePacket               -> reinitialize_packet
    NdisAdjustBufferLength               -> adjust_buffer_length
    NdisQueryPacket                      -> query_packet
    NdisQueryBuffer                      -> query_buffer
    NdisGetNextBuffer                    -> get_next_buffer
    NdisRecalculatePacketCounts          -> recalculate_packet_counts
    NDIS_SET/GET_PACKET_STATUS           -> set_packet_status / get_packet_status
    NDIS_SET/GET_PACKET_TIME_RECEIVED    -> set_packet_time_received / get_packet_time_received
    NDIS_SET/GET_PACKET_TIME_SENT        -> set_packet_time_sent / get_packet_time_sent
    NDIS_SET/GET_PACKET_TIME_TO_SEND     -> set_packet_time_to_send / get_packet_time_to_send
    NDIS_SET/GET_PACKET_HEADER_SIZE      -> set_packet_header_size / get_packet_header_size
    NDIS_SET/GET_PACKET_MEDIA_SPECIFIC_INFO -> set_packet_media_specific_info / get_packet_media_specific_info
    NDIS_OOB_DATA_FROM_PACKET            -> oob_data_from_packet
    NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET(p)) -> zero_packet_oob_data (or oob_data_from_packet(p).zero())
    MiniportReserved / MiniportReservedEx / ProtocolReserved -> Miniport5.miniport_reserved(p) /
        Miniport5.miniport_reserved_ex(p) / NdisPacket.protocol_reserved

Every helper that a driver calls on a packet first asks the packet's lender (the miniport handle that
indicated it, if any) whether the caller may touch it: that is how R-N5-05 and R-N5-08 are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chimney.ndis.buffers import Mdl
from chimney.ndis.status import NdisStatus

if TYPE_CHECKING:
    from chimney.ndis.ndis5.wrapper import MiniportHandle

PTR_SIZE = 8  # a 64-bit PVOID: sizes of the reserved areas are multiples of it
PAGE_SIZE = 4096
DEFAULT_PROTOCOL_RESERVED = 4 * PTR_SIZE

# NDIS_PACKET.Private.Flags bits that the model uses (values from ndis.h)
NDIS_FLAGS_DONT_LOOPBACK = 0x00000080
NDIS_FLAGS_IS_LOOPBACK_PACKET = 0x00000100


class PacketPoolError(ValueError):
    """Misuse of a packet or buffer pool: foreign descriptor, double free, freeing a busy pool."""


class PacketState:
    """Where a descriptor is in its life; ints so the hot path compares small constants."""

    FREE = 0  # in its pool
    OWNED = 1  # allocated, owned by the driver that allocated it
    INDICATING = 2  # inside NdisMIndicateReceivePacket, being delivered to protocols
    LENT = 3  # indicated with SUCCESS and kept by a protocol: owned by NDIS/protocols
    SENDING = 4  # passed to NdisSendPackets, owned by NDIS/the miniport until send completion

    NAMES = ("FREE", "OWNED", "INDICATING", "LENT", "SENDING")


class NdisPacketOobData:
    """NDIS_PACKET_OOB_DATA. Private fields: drivers reach it only through the accessors (R-N5-17).

    The read-only properties exist for traces and tests; no driver code in the model writes the
    fields except through `set_packet_*` and `zero()` (NdisZeroMemory on NDIS_OOB_DATA_FROM_PACKET).
    """

    __slots__ = (
        "_header_size",
        "_media_specific_information",
        "_size_media_specific_info",
        "_status",
        "_time_received",
        "_time_to_send",
    )

    def __init__(self) -> None:
        self._time_to_send = 0  # union with TimeSent
        self._time_received = 0
        self._header_size = 0
        self._size_media_specific_info = 0
        self._media_specific_information: Any = None
        self._status = 0

    def zero(self) -> None:
        """NdisZeroMemory over the whole block (status becomes 0, which is NDIS_STATUS_SUCCESS)."""
        self._time_to_send = 0
        self._time_received = 0
        self._header_size = 0
        self._size_media_specific_info = 0
        self._media_specific_information = None
        self._status = 0

    def is_zero(self) -> bool:
        return (
            self._time_to_send == 0
            and self._time_received == 0
            and self._header_size == 0
            and self._size_media_specific_info == 0
            and self._media_specific_information is None
            and self._status == 0
        )

    @property
    def status(self) -> int:
        return self._status

    @property
    def header_size(self) -> int:
        return self._header_size

    @property
    def time_received(self) -> int:
        return self._time_received

    @property
    def time_sent(self) -> int:
        return self._time_to_send

    def __repr__(self) -> str:
        return (
            f"<OOB status=0x{self._status:08X} hdr={self._header_size} rx={self._time_received}"
            f" msi={self._size_media_specific_info}>"
        )


class NdisPacket:
    """NDIS_PACKET: private part (buffer chain, pool, flags, counts), reserved areas, OOB block.

    `_reserved` models the 4·PTR union at the start of the packet: MiniportReserved[2·PTR] +
    WrapperReserved[2·PTR] (variant 1) overlay MiniportReservedEx[3·PTR] + WrapperReservedEx[PTR]
    (variant 2). A serialized miniport writing MiniportReservedEx would overwrite NDIS's
    WrapperReserved, which is why R-N5-16 ties each area to a miniport kind.
    """

    # Underscored slots are NDIS's: the Private part plus the wrapper's bookkeeping while the packet
    # is indicated (_delivering/_promises/_refs/_lent_by/_sealed_by, WrapperReserved in real NDIS).
    __slots__ = (
        "_count_valid",
        "_delivering",
        "_flags",
        "_head",
        "_indicated_status",
        "_indications",
        "_lent_by",
        "_oob",
        "_physical_count",
        "_pool",
        "_promises",
        "_refs",
        "_reserved",
        "_sealed_by",
        "_sender",
        "_state",
        "_status_written",
        "_tail",
        "_total_length",
        "protocol_reserved",
        "tag",
    )

    def __init__(self, protocol_reserved_length: int = DEFAULT_PROTOCOL_RESERVED) -> None:
        self._head: Mdl | None = None
        self._tail: Mdl | None = None
        self._pool: NdisPacketPool | None = None
        self._flags = 0
        self._physical_count = 0
        self._total_length = 0
        self._count_valid = True
        self._reserved = bytearray(4 * PTR_SIZE)
        self._oob = NdisPacketOobData()
        self._state = PacketState.OWNED
        self._status_written = False
        self._lent_by: MiniportHandle | None = None
        self._sealed_by: MiniportHandle | None = None
        self._sender: Any = None  # the Binding that sent it, while SENDING
        self._indications = 0
        self._indicated_status = -1  # status of the last indication, kept by the wrapper
        self._delivering: Any = None
        self._promises: dict[Any, int] = {}
        self._refs = 0
        self.protocol_reserved = bytearray(protocol_reserved_length)
        self.tag: Any = None  # debugging label only (e.g. ring slot)

    @property
    def pool(self) -> NdisPacketPool | None:
        return self._pool

    @property
    def state(self) -> int:
        return self._state

    def __repr__(self) -> str:
        return (
            f"<NdisPacket {self.tag if self.tag is not None else hex(id(self))}"
            f" {PacketState.NAMES[self._state]} status=0x{self._oob._status:08X}>"
        )


def _touch(packet: NdisPacket, what: str) -> None:
    """R-N5-05: the miniport that lent a packet may not touch it until it comes back."""
    lender = packet._lent_by
    if lender is not None:
        lender.check_touch(packet, what)


# ---------------------------------------------------------------------------------------------
# Packet pools


class NdisPacketPool:
    """A packet pool of fixed capacity (NdisAllocatePacketPool). Descriptors know their pool."""

    __slots__ = (
        "_free",
        "_freed",
        "allocations",
        "capacity",
        "failures",
        "frees",
        "in_use",
        "name",
        "protocol_reserved_length",
    )

    def __init__(self, capacity: int, protocol_reserved_length: int = DEFAULT_PROTOCOL_RESERVED, name: str = "") -> None:
        if capacity < 1:
            raise PacketPoolError(f"packet pool needs at least one descriptor, got {capacity}")
        self.capacity = capacity
        self.protocol_reserved_length = protocol_reserved_length
        self.name = name
        self._free: list[NdisPacket] = []
        for _ in range(capacity):
            p = NdisPacket(protocol_reserved_length)
            p._pool = self
            p._state = PacketState.FREE
            self._free.append(p)
        self.in_use = 0
        self.allocations = 0
        self.frees = 0
        self.failures = 0
        self._freed = False

    def __repr__(self) -> str:
        return f"<NdisPacketPool {self.name} {self.in_use}/{self.capacity} in use>"


def allocate_packet_pool(
    number_of_descriptors: int, protocol_reserved_length: int = DEFAULT_PROTOCOL_RESERVED, name: str = ""
) -> tuple[NdisStatus, NdisPacketPool | None]:
    """NdisAllocatePacketPool -> (Status, PoolHandle)."""
    if number_of_descriptors < 1 or protocol_reserved_length < 0:
        return NdisStatus.RESOURCES, None
    return NdisStatus.SUCCESS, NdisPacketPool(number_of_descriptors, protocol_reserved_length, name)


def allocate_packet(pool: NdisPacketPool) -> tuple[NdisStatus, NdisPacket | None]:
    """NdisAllocatePacket -> (Status, Packet); RESOURCES when the pool is exhausted."""
    if pool._freed:
        raise PacketPoolError(f"allocation from freed {pool!r}")
    if not pool._free:
        pool.failures += 1
        return NdisStatus.RESOURCES, None
    p = pool._free.pop()
    p._state = PacketState.OWNED
    pool.in_use += 1
    pool.allocations += 1
    return NdisStatus.SUCCESS, p


def free_packet(packet: NdisPacket) -> None:
    """NdisFreePacket. The packet goes back to the pool it came from, fresh for the next user."""
    pool = packet._pool
    if pool is None:
        raise PacketPoolError(f"{packet!r} was not allocated from a packet pool")
    if packet._state == PacketState.FREE:
        raise PacketPoolError(f"{packet!r} freed twice")
    _touch(packet, "NdisFreePacket")
    if packet._state != PacketState.OWNED:
        raise PacketPoolError(f"{packet!r} freed while NDIS/protocols own it")
    packet._head = packet._tail = None
    packet._flags = 0
    packet._count_valid = False
    packet._oob.zero()
    packet._status_written = False
    packet._sealed_by = None
    packet._reserved[:] = bytes(len(packet._reserved))
    packet._state = PacketState.FREE
    packet.tag = None
    pool._free.append(packet)
    pool.in_use -= 1
    pool.frees += 1


def free_packet_pool(pool: NdisPacketPool) -> None:
    """NdisFreePacketPool: every descriptor must be back first."""
    if pool._freed:
        raise PacketPoolError(f"{pool!r} freed twice")
    if pool.in_use:
        raise PacketPoolError(f"{pool!r} freed with {pool.in_use} descriptors still allocated")
    pool._freed = True


def packet_pool_usage(pool: NdisPacketPool) -> int:
    """NdisPacketPoolUsage: descriptors currently allocated."""
    return pool.in_use


# ---------------------------------------------------------------------------------------------
# Buffer pools (an NDIS_BUFFER is an MDL on NT)


class NdisBufferPool:
    """A buffer-descriptor pool (NdisAllocateBufferPool). `Mdl.pool` points back here."""

    __slots__ = ("_freed", "allocations", "capacity", "failures", "frees", "in_use", "name")

    def __init__(self, capacity: int, name: str = "") -> None:
        self.capacity = capacity
        self.name = name
        self.in_use = 0
        self.allocations = 0
        self.frees = 0
        self.failures = 0
        self._freed = False

    def __repr__(self) -> str:
        return f"<NdisBufferPool {self.name} {self.in_use}/{self.capacity} in use>"


def allocate_buffer_pool(number_of_descriptors: int, name: str = "") -> tuple[NdisStatus, NdisBufferPool | None]:
    """NdisAllocateBufferPool -> (Status, PoolHandle)."""
    if number_of_descriptors < 1:
        return NdisStatus.RESOURCES, None
    return NdisStatus.SUCCESS, NdisBufferPool(number_of_descriptors, name)


def allocate_buffer(
    pool: NdisBufferPool, virtual_address: bytearray | memoryview, offset: int, length: int
) -> tuple[NdisStatus, Mdl | None]:
    """NdisAllocateBuffer: a descriptor for `length` bytes at `offset` of `virtual_address` (no copy)."""
    if pool._freed:
        raise PacketPoolError(f"allocation from freed {pool!r}")
    if pool.in_use >= pool.capacity:
        pool.failures += 1
        return NdisStatus.RESOURCES, None
    mdl = Mdl(virtual_address, offset, length)
    mdl.pool = pool
    pool.in_use += 1
    pool.allocations += 1
    return NdisStatus.SUCCESS, mdl


def free_buffer(buffer: Mdl) -> None:
    """NdisFreeBuffer. The descriptor must be unchained from every packet first."""
    pool = buffer.pool
    if not isinstance(pool, NdisBufferPool):
        raise PacketPoolError(f"{buffer!r} was not allocated from an NDIS 5 buffer pool (or freed twice)")
    buffer.pool = None
    buffer.next = None
    pool.in_use -= 1
    pool.frees += 1


def free_buffer_pool(pool: NdisBufferPool) -> None:
    if pool.in_use:
        raise PacketPoolError(f"{pool!r} freed with {pool.in_use} buffers still allocated")
    pool._freed = True


# ---------------------------------------------------------------------------------------------
# Buffer-chain helpers


def _span_pages(offset: int, length: int) -> int:
    """ADDRESS_AND_SIZE_TO_SPAN_PAGES with the MDL offset standing in for the virtual address."""
    if length == 0:
        return 0
    start = offset % PAGE_SIZE
    return (start + length + PAGE_SIZE - 1) // PAGE_SIZE


def chain_buffer_at_front(packet: NdisPacket, buffer: Mdl) -> None:
    """NdisChainBufferAtFront. `buffer` may itself head a chain; its last element links to the old head."""
    _touch(packet, "NdisChainBufferAtFront")
    last = buffer
    while last.next is not None:
        last = last.next
        if last is buffer:
            raise PacketPoolError("buffer chain is cyclic")
    last.next = packet._head
    if packet._tail is None:
        packet._tail = last
    packet._head = buffer
    packet._count_valid = False


def chain_buffer_at_back(packet: NdisPacket, buffer: Mdl) -> None:
    """NdisChainBufferAtBack. `buffer` may itself head a chain; the packet tail becomes its last element."""
    _touch(packet, "NdisChainBufferAtBack")
    last = buffer
    while last.next is not None:
        last = last.next
        if last is buffer:
            raise PacketPoolError("buffer chain is cyclic")
    if packet._tail is None:
        packet._head = buffer
    else:
        packet._tail.next = buffer
    packet._tail = last
    packet._count_valid = False


def unchain_buffer_at_front(packet: NdisPacket) -> Mdl | None:
    """NdisUnchainBufferAtFront: detach and return the first buffer (its `next` cleared), or None."""
    _touch(packet, "NdisUnchainBufferAtFront")
    b = packet._head
    if b is None:
        return None
    packet._head = b.next
    if packet._head is None:
        packet._tail = None
    b.next = None
    packet._count_valid = False
    return b


def unchain_buffer_at_back(packet: NdisPacket) -> Mdl | None:
    """NdisUnchainBufferAtBack: detach and return the last buffer, or None."""
    _touch(packet, "NdisUnchainBufferAtBack")
    tail = packet._tail
    if tail is None:
        return None
    head = packet._head
    if head is tail:
        packet._head = packet._tail = None
    else:
        prev = head
        assert prev is not None
        while prev.next is not tail:
            nxt = prev.next
            assert nxt is not None
            prev = nxt
        prev.next = None
        packet._tail = prev
    packet._count_valid = False
    return tail


def reinitialize_packet(packet: NdisPacket) -> None:
    """NdisReinitializePacket: forget the buffer chain and counts (buffers are NOT unlinked: unchain first)."""
    _touch(packet, "NdisReinitializePacket")
    packet._head = packet._tail = None
    packet._flags = 0
    packet._physical_count = 0
    packet._total_length = 0
    packet._count_valid = True


def adjust_buffer_length(buffer: Mdl, length: int) -> None:
    """NdisAdjustBufferLength: change ByteCount within the original mapping."""
    if length < 0 or buffer.byte_offset + length > len(buffer.buffer):
        raise PacketPoolError(
            f"cannot adjust {buffer!r} to {length} bytes: backing memory holds {len(buffer.buffer) - buffer.byte_offset}"
        )
    buffer.byte_count = length


def recalculate_packet_counts(packet: NdisPacket) -> None:
    """NdisRecalculatePacketCounts: refresh cached physical count and total length."""
    _touch(packet, "NdisRecalculatePacketCounts")
    _recount(packet)


def _recount(packet: NdisPacket) -> None:
    phys = 0
    total = 0
    b = packet._head
    while b is not None:
        n = b.byte_count
        total += n
        phys += _span_pages(b.byte_offset, n)
        b = b.next
    packet._physical_count = phys
    packet._total_length = total
    packet._count_valid = True


def query_packet(packet: NdisPacket) -> tuple[int, int, Mdl | None, int]:
    """NdisQueryPacket -> (PhysicalBufferCount, BufferCount, FirstBuffer, TotalPacketLength).

    Interpretation: NDIS caches the counts and needs NdisRecalculatePacketCounts after a chained
    buffer's length changes; the model recomputes them on every query so they can never be stale.
    """
    _touch(packet, "NdisQueryPacket")
    count = 0
    b = packet._head
    while b is not None:
        count += 1
        b = b.next
    _recount(packet)
    return packet._physical_count, count, packet._head, packet._total_length


def packet_total_length(packet: NdisPacket) -> int:
    """NdisQueryPacketLength."""
    _touch(packet, "NdisQueryPacketLength")
    _recount(packet)
    return packet._total_length


def query_buffer(buffer: Mdl) -> tuple[memoryview, int]:
    """NdisQueryBuffer -> (VirtualAddress as a memoryview of the described bytes, Length)."""
    return buffer.view(), buffer.byte_count


def get_next_buffer(buffer: Mdl) -> Mdl | None:
    """NdisGetNextBuffer."""
    return buffer.next


def packet_buffers(packet: NdisPacket) -> list[Mdl]:
    """The chained buffers in order (walks NDIS_PACKET_FIRST_NDIS_BUFFER / NdisGetNextBuffer)."""
    _touch(packet, "NdisQueryPacket")
    out: list[Mdl] = []
    b = packet._head
    while b is not None:
        out.append(b)
        b = b.next
    return out


def packet_first_buffer(packet: NdisPacket) -> Mdl | None:
    """NDIS_PACKET_FIRST_NDIS_BUFFER."""
    _touch(packet, "NDIS_PACKET_FIRST_NDIS_BUFFER")
    return packet._head


def packet_last_buffer(packet: NdisPacket) -> Mdl | None:
    """NDIS_PACKET_LAST_NDIS_BUFFER."""
    _touch(packet, "NDIS_PACKET_LAST_NDIS_BUFFER")
    return packet._tail


def copy_from_packet(packet: NdisPacket, offset: int = 0, length: int | None = None) -> bytes:
    """NdisCopyFromPacketToPacket's read half: the packet's bytes [offset, offset+length) as one copy."""
    _touch(packet, "NdisCopyFromPacketToPacket")
    out = bytearray()
    b = packet._head
    while b is not None:
        out += b.view()
        b = b.next
    end = len(out) if length is None else offset + length
    return bytes(out[offset:end])


def set_packet_flags(packet: NdisPacket, flags: int) -> None:
    """NdisSetPacketFlags."""
    _touch(packet, "NdisSetPacketFlags")
    packet._flags = flags


def get_packet_flags(packet: NdisPacket) -> int:
    """NdisGetPacketFlags."""
    _touch(packet, "NdisGetPacketFlags")
    return packet._flags


# ---------------------------------------------------------------------------------------------
# OOB accessors (R-N5-17: the only way to reach NDIS_PACKET_OOB_DATA)


def set_packet_status(packet: NdisPacket, status: int) -> None:
    """NDIS_SET_PACKET_STATUS. A miniport re-arming a packet for indication calls this (R-N5-04)."""
    _touch(packet, "NDIS_SET_PACKET_STATUS")
    packet._oob._status = int(status)
    packet._status_written = True
    packet._sealed_by = None


def get_packet_status(packet: NdisPacket) -> int:
    """NDIS_GET_PACKET_STATUS.

    Not a R-N5-05 touch: a serialized miniport must read it after indicating (R-N5-07). A
    deserialized/CO miniport must not (R-N5-08): the lender handle checks that.
    """
    sealed = packet._sealed_by
    if sealed is not None:
        sealed.check_status_read(packet)
    return packet._oob._status


def set_packet_time_received(packet: NdisPacket, time: int) -> None:
    """NDIS_SET_PACKET_TIME_RECEIVED (100 ns units)."""
    _touch(packet, "NDIS_SET_PACKET_TIME_RECEIVED")
    packet._oob._time_received = time


def get_packet_time_received(packet: NdisPacket) -> int:
    _touch(packet, "NDIS_GET_PACKET_TIME_RECEIVED")
    return packet._oob._time_received


def set_packet_time_sent(packet: NdisPacket, time: int) -> None:
    """NDIS_SET_PACKET_TIME_SENT (receive: when the remote sent it; union with TimeToSend)."""
    _touch(packet, "NDIS_SET_PACKET_TIME_SENT")
    packet._oob._time_to_send = time


def get_packet_time_sent(packet: NdisPacket) -> int:
    _touch(packet, "NDIS_GET_PACKET_TIME_SENT")
    return packet._oob._time_to_send


def set_packet_time_to_send(packet: NdisPacket, time: int) -> None:
    _touch(packet, "NDIS_SET_PACKET_TIME_TO_SEND")
    packet._oob._time_to_send = time


def get_packet_time_to_send(packet: NdisPacket) -> int:
    _touch(packet, "NDIS_GET_PACKET_TIME_TO_SEND")
    return packet._oob._time_to_send


def set_packet_header_size(packet: NdisPacket, size: int) -> None:
    """NDIS_SET_PACKET_HEADER_SIZE."""
    _touch(packet, "NDIS_SET_PACKET_HEADER_SIZE")
    if size < 0:
        raise ValueError(f"negative header size {size}")
    packet._oob._header_size = size


def get_packet_header_size(packet: NdisPacket) -> int:
    _touch(packet, "NDIS_GET_PACKET_HEADER_SIZE")
    return packet._oob._header_size


def set_packet_media_specific_info(packet: NdisPacket, info: Any, size: int) -> None:
    """NDIS_SET_PACKET_MEDIA_SPECIFIC_INFO (info None with size 0 clears it)."""
    _touch(packet, "NDIS_SET_PACKET_MEDIA_SPECIFIC_INFO")
    if (info is None) != (size == 0):
        raise ValueError("media-specific info and its size must be both set or both empty")
    packet._oob._media_specific_information = info
    packet._oob._size_media_specific_info = size


def get_packet_media_specific_info(packet: NdisPacket) -> tuple[Any, int]:
    """NDIS_GET_PACKET_MEDIA_SPECIFIC_INFO -> (info, size)."""
    _touch(packet, "NDIS_GET_PACKET_MEDIA_SPECIFIC_INFO")
    return packet._oob._media_specific_information, packet._oob._size_media_specific_info


def oob_data_from_packet(packet: NdisPacket) -> NdisPacketOobData:
    """NDIS_OOB_DATA_FROM_PACKET: the block itself (for NdisZeroMemory); fields stay read-only."""
    _touch(packet, "NDIS_OOB_DATA_FROM_PACKET")
    return packet._oob


def zero_packet_oob_data(packet: NdisPacket) -> None:
    """NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET(p), sizeof(NDIS_PACKET_OOB_DATA))."""
    _touch(packet, "NdisZeroMemory(OOB)")
    packet._oob.zero()
