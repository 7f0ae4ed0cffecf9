"""An NDIS 5 intermediate driver on the receive path: protocol edge below, virtual miniports above.

Owns re-indication with fresh descriptors that share the lower packet's buffers, and the return of
lower packets as soon as the upper protocols are done (R-N5-14) but never inside ProtocolReceivePacket (R-N5-13).
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import TYPE_CHECKING

from chimney.ndis.ndis5.packet import (
    NdisPacket,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_front,
    free_packet,
    get_packet_header_size,
    get_packet_media_specific_info,
    get_packet_status,
    get_packet_time_received,
    packet_first_buffer,
    reinitialize_packet,
    set_packet_header_size,
    set_packet_media_specific_info,
    set_packet_status,
    set_packet_time_received,
    zero_packet_oob_data,
)
from chimney.ndis.ndis5.wrapper import Miniport5, MiniportHandle, MiniportKind, Protocol5
from chimney.ndis.status import NdisStatus

if TYPE_CHECKING:
    from chimney.ndis.ndis5.wrapper import Ndis5

_RESOURCES = int(NdisStatus.RESOURCES)
_SUCCESS = int(NdisStatus.SUCCESS)
_KEY = struct.Struct("<Q")


class ImReturnMode(Enum):
    TRACK = "track"  # ProtocolReceivePacket returns 1; one NdisReturnPackets when all uppers are done
    COUNT = "count"  # returns the number of upper edges still holding it; one return per upper return


class _LowerEntry:
    __slots__ = ("in_receive", "lower", "outstanding", "returned_early")

    def __init__(self, lower: NdisPacket) -> None:
        self.lower = lower
        self.outstanding = 0
        self.in_receive = True
        self.returned_early = 0


class ImProtocolEdge(Protocol5):
    def __init__(self, im: Ndis5IntermediateDriver, name: str) -> None:
        super().__init__(name)
        self.im = im

    def receive_packet(self, packet: NdisPacket) -> int:
        return self.im._lower_receive(packet)


class ImMiniportEdge(Miniport5):
    """A virtual miniport of the IM: deserialized, flagged intermediate, uses MiniportReserved (R-N5-16)."""

    kind = MiniportKind.DESERIALIZED
    intermediate = True

    def __init__(self, im: Ndis5IntermediateDriver, name: str) -> None:
        super().__init__(name)
        self.im = im

    def return_packet(self, packet: NdisPacket) -> None:
        self.im._upper_returned(self, packet)


class Ndis5IntermediateDriver:
    """A pass-through IM with `upper_edges` virtual miniports; each upper protocol binds to one of them."""

    def __init__(
        self, ndis: Ndis5, name: str = "im", upper_edges: int = 1, mode: ImReturnMode = ImReturnMode.TRACK, pool_size: int = 64
    ) -> None:
        self.ndis = ndis
        self.name = name
        self.mode = mode
        self.protocol = ImProtocolEdge(self, f"{name}/protocol")
        ndis.register_protocol(self.protocol)
        self.edges = [ImMiniportEdge(self, f"{name}/vm{i}") for i in range(upper_edges)]
        self.edge_handles: list[MiniportHandle] = [ndis.m_register_miniport(e) for e in self.edges]
        st, pool = allocate_packet_pool(pool_size, name=f"{name}/packets")
        assert pool is not None, st
        self.pool = pool
        self._entries: dict[int, _LowerEntry] = {}
        self._keys: dict[int, int] = {}
        self._next_key = 1
        self.reindicated = 0
        self.lower_returns = 0
        self.drops = 0

    def bind_below(self, lower: MiniportHandle) -> None:
        self.ndis.open_adapter(self.protocol, lower)

    # ---- protocol edge: ProtocolReceivePacket from the lower miniport

    def _lower_receive(self, lower: NdisPacket) -> int:
        status = get_packet_status(lower)
        entry = _LowerEntry(lower)
        key = self._next_key
        self._next_key += 1
        self._entries[key] = entry
        hs = get_packet_header_size(lower)
        rx = get_packet_time_received(lower)
        msi, msi_size = get_packet_media_specific_info(lower)
        first = packet_first_buffer(lower)
        assert first is not None
        up_status = _RESOURCES if status == _RESOURCES else _SUCCESS
        for edge, handle in zip(self.edges, self.edge_handles):
            if not handle.bindings:
                continue
            _st, mine = allocate_packet(self.pool)
            if mine is None:
                self.drops += 1
                continue
            # share the lower buffers: chaining the chain head links nothing new (its tail stays last)
            chain_buffer_at_front(mine, first)
            set_packet_header_size(mine, hs)
            set_packet_time_received(mine, rx)
            if msi_size:
                set_packet_media_specific_info(mine, msi, msi_size)
            _KEY.pack_into(edge.miniport_reserved(mine), 0, key)
            set_packet_status(mine, up_status)
            if up_status == _SUCCESS:
                entry.outstanding += 1
            self.reindicated += 1
            with edge.running():
                self.ndis.m_indicate_receive_packet(handle, [mine], 1)
                if up_status == _RESOURCES:
                    # saved status RESOURCES: ours again now, and the upper protocols copied
                    self._release(edge, mine)
        entry.in_receive = False
        if status == _RESOURCES:
            del self._entries[key]
            return 0  # R-N5-12: the upper protocols copied inside the re-indication
        if entry.outstanding == 0:
            del self._entries[key]
            return 0
        if self.mode is ImReturnMode.COUNT:
            return entry.outstanding
        return 1

    # ---- miniport edge: MiniportReturnPacket from the upper protocols

    def _release(self, edge: ImMiniportEdge, mine: NdisPacket) -> int:
        key: int = _KEY.unpack_from(edge.miniport_reserved(mine), 0)[0]
        # the buffers belong to the lower miniport: forget them without unchaining (no link is ours)
        reinitialize_packet(mine)
        zero_packet_oob_data(mine)
        free_packet(mine)
        return key

    def _upper_returned(self, edge: ImMiniportEdge, mine: NdisPacket) -> None:
        key = self._release(edge, mine)
        entry = self._entries[key]
        entry.outstanding -= 1
        if entry.in_receive:
            # NDIS returned it inside our ProtocolReceivePacket: returning the lower packet now
            # would break R-N5-13, so it is simply not counted in our return value
            entry.returned_early += 1
            return
        if self.mode is ImReturnMode.COUNT:
            self._return_lower(entry.lower)
            if entry.outstanding == 0:
                del self._entries[key]
        elif entry.outstanding == 0:
            del self._entries[key]
            self._return_lower(entry.lower)  # R-N5-14: as soon as the last upper return arrives

    def _return_lower(self, lower: NdisPacket) -> None:
        self.lower_returns += 1
        self.protocol.return_packets([lower])
