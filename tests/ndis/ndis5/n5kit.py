"""Small NDIS 5 drivers for the rule tests: a hand-driven miniport and scripted protocols.

Owns nothing in the product; the tests use it to provoke each R-N5 rule one call at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chimney.ndis.ndis5.packet import (
    NdisPacket,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_back,
    copy_from_packet,
    get_packet_status,
    set_packet_header_size,
    set_packet_status,
)
from chimney.ndis.ndis5.wrapper import Miniport5, MiniportKind, Ndis5, Protocol5
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

SUCCESS = NdisStatus.SUCCESS
RESOURCES = NdisStatus.RESOURCES
PENDING = NdisStatus.PENDING


class ManualMiniport(Miniport5):
    """A miniport the test drives by hand: `make()` a packet, `indicate()` an array."""

    def __init__(self, name: str = "nic", kind: MiniportKind = MiniportKind.SERIALIZED) -> None:
        super().__init__(name)
        self.kind = kind  # type: ignore[misc]  # per-instance kind keeps the helper to one class
        self.returned: list[NdisPacket] = []
        self.memory = bytearray(64 * 256)
        self._next = 0
        _, self.pool = allocate_packet_pool(32)
        _, self.bpool = allocate_buffer_pool(64)
        self.on_return: Callable[[NdisPacket], None] | None = None

    def make(self, payload: bytes = b"H" * 14 + b"payload", status: int | None = SUCCESS) -> NdisPacket:
        assert self.pool is not None and self.bpool is not None
        _, p = allocate_packet(self.pool)
        assert p is not None
        off = self._next * 256
        self._next += 1
        self.memory[off : off + len(payload)] = payload
        _, b = allocate_buffer(self.bpool, self.memory, off, len(payload))
        assert b is not None
        chain_buffer_at_back(p, b)
        set_packet_header_size(p, 14)
        if status is not None:
            set_packet_status(p, status)
        return p

    def indicate(self, packets: list[NdisPacket], n: int | None = None) -> None:
        count = len(packets) if n is None else n
        with self.running():
            assert self.handle is not None
            if self.kind is MiniportKind.CONNECTION_ORIENTED:
                self.lib.m_co_indicate_receive_packet(self.handle.vcs[0], packets, count)
            else:
                self.lib.m_indicate_receive_packet(self.handle, packets, count)

    def return_packet(self, packet: NdisPacket) -> None:
        self.returned.append(packet)
        if self.on_return is not None:
            self.on_return(packet)


class NoReturnMiniport(Miniport5):
    """Indicates packets but has no MiniportReturnPacket (R-N5-01)."""

    kind = MiniportKind.SERIALIZED


class ScriptedProtocol(Protocol5):
    """ProtocolReceivePacket returns `keep(packet)` (default 0) and copies the data first."""

    def __init__(self, name: str = "proto", keep: Callable[[NdisPacket], Any] | None = None) -> None:
        super().__init__(name)
        self.keep = keep
        self.got: list[bytes] = []
        self.statuses: list[int] = []
        self.packets: list[NdisPacket] = []

    def receive_packet(self, packet: NdisPacket) -> int:
        self.statuses.append(get_packet_status(packet))
        self.got.append(copy_from_packet(packet))
        self.packets.append(packet)
        return 0 if self.keep is None else self.keep(packet)


def system(mode: Mode = Mode.STRICT) -> Ndis5:
    return Ndis5(SimScheduler(1), Verifier(mode))


def bound(
    kind: MiniportKind = MiniportKind.SERIALIZED, protocols: int = 1, mode: Mode = Mode.STRICT, keep: Any = None
) -> tuple[Ndis5, ManualMiniport, list[ScriptedProtocol]]:
    """A wrapper with one ManualMiniport of `kind` and `protocols` ScriptedProtocols bound to it."""
    ndis = system(mode)
    m = ManualMiniport("nic", kind)
    h = ndis.m_register_miniport(m)
    protos = [ScriptedProtocol(f"p{i}", keep) for i in range(protocols)]
    for p in protos:
        b = ndis.open_adapter(p, h)
        if kind is MiniportKind.CONNECTION_ORIENTED:
            ndis.co_create_vc(b)
    return ndis, m, protos
