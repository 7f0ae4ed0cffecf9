"""Example NDIS 5 protocol drivers used by the scenarios and tests: copy, retain-and-return, lookahead.

Owns the frame ledger (sequence number -> CRC) that lets a run prove no lent buffer was reused early.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

from chimney.ndis.ndis5.packet import (
    NdisPacket,
    copy_from_packet,
    get_packet_header_size,
    get_packet_status,
)
from chimney.ndis.ndis5.wrapper import Protocol5
from chimney.ndis.status import NdisStatus

_RESOURCES = int(NdisStatus.RESOURCES)
_SEQ = struct.Struct("!I")  # first 4 payload bytes of every test frame
ETHERTYPE_TEST = b"\x88\xb5"  # IEEE local experimental ethertype


def make_frame(seq: int, payload_len: int, rng: random.Random) -> bytes:
    """An Ethernet frame whose payload starts with `seq` (198.18/15 is not needed at this layer)."""
    payload_len = max(payload_len, 4)
    body = _SEQ.pack(seq & 0xFFFFFFFF) + rng.randbytes(payload_len - 4)
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + ETHERTYPE_TEST + body


def frame_key(data: bytes | bytearray | memoryview, header_size: int = 14) -> tuple[int, int]:
    """(sequence number, CRC32 of the whole frame) of received bytes."""
    seq = _SEQ.unpack_from(data, header_size)[0]
    return seq, zlib.crc32(data)


class RecordingProtocol(Protocol5):
    """Remembers every frame it consumed as seq -> CRC32 (a second sighting of a seq is counted)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.seen: dict[int, int] = {}
        self.repeats = 0
        self.copied = 0  # frames copied at indication time

    def _record(self, data: bytes, header_size: int) -> None:
        seq, crc = frame_key(data, header_size)
        if seq in self.seen:
            self.repeats += 1
        self.seen[seq] = crc


class CopyingProtocol(RecordingProtocol):
    """ProtocolReceivePacket that copies the data and never keeps the packet (returns 0)."""

    def receive_packet(self, packet: NdisPacket) -> int:
        self._record(copy_from_packet(packet), get_packet_header_size(packet))
        self.copied += 1
        return 0


class RetainingProtocol(RecordingProtocol):
    """Keeps some SUCCESS packets and returns them later (after reading them) at seeded times.

    With probability `retain_probability` it promises 1..`max_promise` returns (as if it handed the
    packet to that many clients) and makes each NdisReturnPackets call after a delay drawn from
    `hold_ns`. RESOURCES packets are copied and 0 is returned (R-N5-12).
    """

    def __init__(
        self,
        name: str = "",
        rng: random.Random | None = None,
        retain_probability: float = 1.0,
        hold_ns: tuple[int, int] = (10_000, 500_000),
        max_promise: int = 1,
    ) -> None:
        super().__init__(name)
        self.rng = rng if rng is not None else random.Random(0)
        self.retain_probability = retain_probability
        self.hold_ns = hold_ns
        self.max_promise = max_promise
        self.retained = 0
        self.returns_made = 0
        self.holding: dict[int, int] = {}  # id(packet) -> returns still owed

    def receive_packet(self, packet: NdisPacket) -> int:
        if get_packet_status(packet) == _RESOURCES or self.rng.random() >= self.retain_probability:
            self._record(copy_from_packet(packet), get_packet_header_size(packet))
            self.copied += 1
            return 0
        n = self.rng.randint(1, self.max_promise)
        self.retained += 1
        self.holding[id(packet)] = n
        for _ in range(n):
            self.call_later(self.rng.randint(*self.hold_ns), self._give_back, packet)
        return n

    def _give_back(self, packet: NdisPacket) -> None:
        left = self.holding[id(packet)] - 1
        if left == 0:
            # read the data only now: a descriptor recycled too early would show a wrong CRC
            self._record(copy_from_packet(packet), get_packet_header_size(packet))
            del self.holding[id(packet)]
        else:
            self.holding[id(packet)] = left
        self.returns_made += 1
        self.return_packets([packet])


class LookaheadProtocol(RecordingProtocol):
    """No ProtocolReceivePacket: gets ProtocolReceive + ProtocolReceiveComplete (R-N5-15)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.pending: list[tuple[bytes, int]] = []
        self.completes = 0

    def receive(self, mac_receive_context: Any, header_buffer: memoryview, lookahead_buffer: memoryview, packet_size: int) -> NdisStatus:
        if packet_size > len(lookahead_buffer):
            return NdisStatus.NOT_ACCEPTED  # would need NdisTransferData; the model always gives it all
        self.pending.append((bytes(header_buffer) + bytes(lookahead_buffer), len(header_buffer)))
        self.copied += 1
        return NdisStatus.SUCCESS

    def receive_complete(self) -> None:
        self.completes += 1
        for data, hs in self.pending:
            self._record(data, hs)
        self.pending.clear()
