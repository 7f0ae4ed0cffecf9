"""Example NDIS 5 NIC receive rings: preallocated packets and buffers, one ring per miniport kind.

Owns the recycling discipline a MiniportReturnPacket should follow: unchain, reinitialize, restore
shortened buffer lengths, zero the OOB block, re-chain and put the descriptor back on the free ring.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

from chimney.ndis.buffers import Mdl
from chimney.ndis.ndis5.packet import (
    NdisPacket,
    adjust_buffer_length,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_back,
    get_packet_status,
    reinitialize_packet,
    set_packet_header_size,
    set_packet_media_specific_info,
    set_packet_status,
    set_packet_time_received,
    unchain_buffer_at_front,
    zero_packet_oob_data,
)
from chimney.ndis.ndis5.wrapper import Miniport5, MiniportHandle, MiniportKind, VcHandle
from chimney.ndis.status import NdisStatus

ETH_HEADER = 14
_SUCCESS = int(NdisStatus.SUCCESS)
_RESOURCES = int(NdisStatus.RESOURCES)
_PENDING = int(NdisStatus.PENDING)
_SLOT = struct.Struct("<Q")  # ring slot index kept in the miniport's reserved area

# Slot states, seen from the ring
FREE = 0
INDICATED = 1  # inside the indication
LENT = 2  # waiting for MiniportReturnPacket


class RingError(RuntimeError):
    """A descriptor came back that the ring did not lend (a duplicate or a reclaimed packet)."""


@dataclass
class RingCounters:
    indications: int = 0  # NdisM(Co)IndicateReceivePacket calls
    packets_indicated: int = 0
    resources_indications: int = 0  # packets indicated with Status RESOURCES
    returned_via_return_packet: int = 0  # MiniportReturnPacket calls
    returned_at_indicate: int = 0  # serialized: Status read SUCCESS after the indication
    reclaimed_resources: int = 0  # RESOURCES packets taken back at return of the indication
    recycled: int = 0  # descriptors re-armed and put back on the free ring
    pool_allocations: int = 0  # NdisAllocatePacket calls (only at initialize: descriptors are reused)
    buffer_allocations: int = 0
    frames_dropped: int = 0  # no free descriptor, or a frame that does not fit
    duplicates: int = 0  # descriptors returned that were not lent
    returned_after_reclaim: int = 0
    lengths_restored: int = 0  # NdisAdjustBufferLength calls back to the original size

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Slot:
    __slots__ = ("buffers", "index", "original_lengths", "packet", "saved_status", "state")

    def __init__(self, index: int, packet: NdisPacket, buffers: tuple[Mdl, ...]) -> None:
        self.index = index
        self.packet = packet
        self.buffers = buffers
        self.original_lengths = tuple(b.byte_count for b in buffers)
        self.state = FREE
        self.saved_status = _SUCCESS


class RingMiniport(Miniport5):
    """A bus-master NIC with a receive ring of `size` descriptors: header buffer + data buffer each.

    Received frames are copied (DMA) into the next free descriptor, the data buffer is shortened to
    the frame, and the batch is indicated in one array. Below `low_water` free descriptors the rest of
    the batch goes up with RESOURCES (contract §6.28), so the ring never runs dry because of a slow
    protocol.
    """

    def __init__(self, name: str = "", size: int = 16, buffer_size: int = 1500, low_water: int | None = None) -> None:
        super().__init__(name)
        if size < 1:
            raise ValueError("ring size must be at least 1")
        self.size = size
        self.buffer_size = buffer_size
        self.low_water = size // 4 if low_water is None else low_water
        self.counters = RingCounters()
        self._slots: list[_Slot] = []
        self._free: deque[int] = deque()
        self.memory = bytearray(size * (ETH_HEADER + buffer_size))
        self.drop_reasons: dict[str, int] = {}

    # ---- MiniportInitialize

    def initialize(self, handle: MiniportHandle) -> NdisStatus:
        status = super().initialize(handle)
        st, pool = allocate_packet_pool(self.size, name=f"{self.name}/packets")
        if pool is None:
            return st
        st, bpool = allocate_buffer_pool(2 * self.size, name=f"{self.name}/buffers")
        if bpool is None:
            return st
        self.packet_pool, self.buffer_pool = pool, bpool
        mem = memoryview(self.memory)
        stride = ETH_HEADER + self.buffer_size
        for i in range(self.size):
            st, p = allocate_packet(pool)
            if p is None:
                return st
            self.counters.pool_allocations += 1
            base = i * stride
            st, hdr = allocate_buffer(bpool, mem, base, ETH_HEADER)
            _st2, data = allocate_buffer(bpool, mem, base + ETH_HEADER, self.buffer_size)
            if hdr is None or data is None:
                return NdisStatus.RESOURCES
            self.counters.buffer_allocations += 2
            chain_buffer_at_back(p, hdr)
            chain_buffer_at_back(p, data)
            _SLOT.pack_into(self.reserved_area(p), 0, i)
            p.tag = f"{self.name}#{i}"
            self._slots.append(_Slot(i, p, (hdr, data)))
            self._free.append(i)
        return status

    def reserved_area(self, packet: NdisPacket) -> memoryview:
        """The reserved area this miniport kind owns (R-N5-16)."""
        if self.kind is MiniportKind.SERIALIZED:
            return self.miniport_reserved(packet)
        return self.miniport_reserved_ex(packet)

    @property
    def free_count(self) -> int:
        return len(self._free)

    def slot_states(self) -> list[int]:
        return [s.state for s in self._slots]

    def outstanding(self) -> int:
        """Descriptors not on the free ring (after a run: leaked)."""
        return self.size - len(self._free)

    def slot_of(self, packet: NdisPacket) -> _Slot:
        idx = _SLOT.unpack_from(self.reserved_area(packet), 0)[0]
        if idx >= len(self._slots) or self._slots[idx].packet is not packet:
            raise RingError(f"{packet!r} is not a descriptor of ring {self.name}")
        return self._slots[idx]

    # ---- receive (the DPC)

    def _drop(self, reason: str) -> None:
        self.counters.frames_dropped += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1

    def _fill(self, frames: Sequence[bytes]) -> tuple[list[NdisPacket], list[_Slot], list[int]]:
        """Copy frames into free descriptors and set each Status.

        Returns the packet array plus the ring's own slot records and saved statuses: after the
        indication the ring must not touch lent descriptors, not even their reserved area (R-N5-05).
        """
        array: list[NdisPacket] = []
        slots: list[_Slot] = []
        saved: list[int] = []
        low = False
        now_100ns = self.lib.scheduler.now // 100
        for frame in frames:
            n = len(frame)
            if n <= ETH_HEADER or n - ETH_HEADER > self.buffer_size:
                self._drop("bad frame length")
                continue
            if not self._free:
                self._drop("ring empty")
                continue
            slot = self._slots[self._free.popleft()]
            p = slot.packet
            hdr, data = slot.buffers
            hdr.buffer[hdr.byte_offset : hdr.byte_offset + ETH_HEADER] = frame[:ETH_HEADER]
            payload = n - ETH_HEADER
            data.buffer[data.byte_offset : data.byte_offset + payload] = frame[ETH_HEADER:]
            # the data buffer describes exactly the frame; return_packet restores it
            adjust_buffer_length(data, payload)
            set_packet_header_size(p, ETH_HEADER)
            set_packet_time_received(p, now_100ns)
            if frame[12:14] == b"\x81\x00":
                set_packet_media_specific_info(p, (frame[14] >> 5) & 7, 4)  # 802.1p priority
            # §6.28: once low, every remaining packet of the array goes up with RESOURCES
            if not low and len(self._free) < self.low_water:
                low = True
            st = _RESOURCES if low else _SUCCESS
            set_packet_status(p, st)  # R-N5-04
            slot.saved_status = st
            slot.state = INDICATED
            array.append(p)
            slots.append(slot)
            saved.append(st)
        return array, slots, saved

    def receive_frames(self, frames: Sequence[bytes]) -> int:
        """Receive a batch of frames and indicate them; returns how many were indicated."""
        with self.running():
            array, slots, saved = self._fill(frames)
            if not array:
                return 0
            c = self.counters
            c.indications += 1
            c.packets_indicated += len(array)
            c.resources_indications += saved.count(_RESOURCES)
            h = self.handle
            assert h is not None
            self.lib.m_indicate_receive_packet(h, array, len(array))
            self._after_indicate(array, slots, saved)
            return len(array)

    def _after_indicate(self, array: list[NdisPacket], slots: list[_Slot], saved: list[int]) -> None:
        """Deserialized/CO: act on the saved statuses only (R-N5-08)."""
        for slot, st in zip(slots, saved):
            if st == _RESOURCES:
                self.counters.reclaimed_resources += 1
                self._recycle(slot, reclaim=True)  # R-N5-06: ours again, no MiniportReturnPacket
            elif slot.state == INDICATED:
                slot.state = LENT  # NDIS will call return_packet (it may already have)

    # ---- MiniportReturnPacket

    def return_packet(self, packet: NdisPacket) -> None:
        slot = self.slot_of(packet)
        self.counters.returned_via_return_packet += 1
        if slot.state == FREE or slot.saved_status == _RESOURCES:
            if slot.saved_status == _RESOURCES:
                self.counters.returned_after_reclaim += 1
            self.counters.duplicates += 1
            raise RingError(f"{packet!r} returned to {self.name} but it was not lent")
        self._recycle(slot, reclaim=False)

    def _recycle(self, slot: _Slot, reclaim: bool) -> None:
        """Re-arm a descriptor for the next indication instead of freeing it to the pool."""
        p = slot.packet
        # unchain every buffer first: NdisReinitializePacket forgets the chain
        got: list[Mdl] = []
        b = unchain_buffer_at_front(p)
        while b is not None:
            got.append(b)
            b = unchain_buffer_at_front(p)
        if len(got) != len(slot.buffers) or any(x is not y for x, y in zip(got, slot.buffers)):
            raise RingError(f"{p!r} came back with a different buffer chain {got!r}")
        reinitialize_packet(p)
        for buf, orig in zip(slot.buffers, slot.original_lengths):
            if buf.byte_count != orig:
                adjust_buffer_length(buf, orig)
                self.counters.lengths_restored += 1
        zero_packet_oob_data(p)
        for buf in slot.buffers:
            chain_buffer_at_back(p, buf)
        slot.state = FREE
        slot.saved_status = _SUCCESS
        self._free.append(slot.index)
        self.counters.recycled += 1


class SerializedRingMiniport(RingMiniport):
    """Serialized: reads each packet's Status after the indication returns (R-N5-07)."""

    kind = MiniportKind.SERIALIZED

    def _after_indicate(self, array: list[NdisPacket], slots: list[_Slot], saved: list[int]) -> None:
        for p, slot in zip(array, slots):
            st = get_packet_status(p)
            if st == _PENDING:
                slot.state = LENT
            elif st == _RESOURCES:
                self.counters.reclaimed_resources += 1
                self._recycle(slot, reclaim=True)
            else:
                self.counters.returned_at_indicate += 1
                self._recycle(slot, reclaim=False)


class DeserializedRingMiniport(RingMiniport):
    """Deserialized: never reads Status after indicating; MiniportReservedEx for its slot index."""

    kind = MiniportKind.DESERIALIZED


class CoRingMiniport(RingMiniport):
    """Connection-oriented: frames are spread round-robin over the active VCs, one array per VC."""

    kind = MiniportKind.CONNECTION_ORIENTED

    def __init__(self, name: str = "", size: int = 16, buffer_size: int = 1500, low_water: int | None = None) -> None:
        super().__init__(name, size, buffer_size, low_water)
        self.vcs: list[VcHandle] = []
        self._next_vc = 0

    def vc_activated(self, vc: VcHandle) -> None:
        self.vcs.append(vc)

    def receive_frames(self, frames: Sequence[bytes]) -> int:
        with self.running():
            if not self.vcs:
                for _ in frames:
                    self._drop("no active VC")
                return 0
            array, slots, saved = self._fill(frames)
            if not array:
                return 0
            groups: dict[int, list[int]] = {}
            for i in range(len(array)):
                k = self._next_vc % len(self.vcs)
                self._next_vc += 1
                groups.setdefault(k, []).append(i)
            c = self.counters
            for k, idxs in groups.items():
                sub = [array[i] for i in idxs]
                c.indications += 1
                c.packets_indicated += len(sub)
                c.resources_indications += sum(1 for i in idxs if saved[i] == _RESOURCES)
                self.lib.m_co_indicate_receive_packet(self.vcs[k], sub, len(sub))
                self._after_indicate(sub, [slots[i] for i in idxs], [saved[i] for i in idxs])
            return len(array)


RING_CLASSES: dict[MiniportKind, type[RingMiniport]] = {
    MiniportKind.SERIALIZED: SerializedRingMiniport,
    MiniportKind.DESERIALIZED: DeserializedRingMiniport,
    MiniportKind.CONNECTION_ORIENTED: CoRingMiniport,
}
