"""virtio_net_hdr: the per-frame offload header a Linux TAP opened with IFF_VNET_HDR prepends.
Owns pack/parse of the 10-byte header and the 12-byte mergeable-rx-buffer variant, and checksum finishing.

The header tells the receiver what the sender left undone: NEEDS_CSUM means the transport
checksum field holds only the pseudo-header sum and must be finished over `[csum_start:]`;
a gso_type other than NONE means the frame is a super-segment of up to 64 KB that the receiver
must cut into `gso_size`-byte payloads (Linux's equivalent of NDIS large-send offload).

Layout (little-endian once TUNSETVNETLE is set, which `TapDevice` always does)::

    u8 flags | u8 gso_type | u16 hdr_len | u16 gso_size | u16 csum_start | u16 csum_offset [| u16 num_buffers]
"""

from __future__ import annotations

import struct
from typing import Final

VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_F_RSC_INFO: Final = 4

VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_UDP: Final = 3
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_UDP_L4: Final = 5
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80

VNET_HDR_LEN: Final = 10
VNET_HDR_MRG_LEN: Final = 12

_KNOWN_FLAGS = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO
_KNOWN_GSO = frozenset(
    {
        VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_TCPV4,
        VIRTIO_NET_HDR_GSO_UDP,
        VIRTIO_NET_HDR_GSO_TCPV6,
        VIRTIO_NET_HDR_GSO_UDP_L4,
    }
)
_GSO_NAMES = {0: "NONE", 1: "TCPV4", 3: "UDP", 4: "TCPV6", 5: "UDP_L4"}

_UDP_CSUM_OFFSET = 6

_HDR = struct.Struct("<BBHHHH")
_HDR_MRG = struct.Struct("<BBHHHHH")


class VnetHeaderError(ValueError):
    """A virtio_net_hdr that is truncated or describes something impossible for its frame."""


class VnetHdr:
    """One virtio_net_hdr. `num_buffers` is only carried on the wire in the 12-byte variant."""

    __slots__ = ("csum_offset", "csum_start", "flags", "gso_size", "gso_type", "hdr_len", "num_buffers")

    def __init__(
        self,
        flags: int = 0,
        gso_type: int = VIRTIO_NET_HDR_GSO_NONE,
        hdr_len: int = 0,
        gso_size: int = 0,
        csum_start: int = 0,
        csum_offset: int = 0,
        num_buffers: int = 0,
    ) -> None:
        self.flags = flags
        self.gso_type = gso_type
        self.hdr_len = hdr_len
        self.gso_size = gso_size
        self.csum_start = csum_start
        self.csum_offset = csum_offset
        self.num_buffers = num_buffers

    # -- wire format -----------------------------------------------------------------------
    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, mrg: bool = False) -> VnetHdr:
        """Decode from the start of `buf`; `mrg` selects the 12-byte layout. Rejects unknown bits."""
        st = _HDR_MRG if mrg else _HDR
        if len(buf) < st.size:
            raise VnetHeaderError(f"virtio_net_hdr truncated: {len(buf)} < {st.size} bytes")
        if mrg:
            flags, gso_type, hdr_len, gso_size, cs, co, nb = _HDR_MRG.unpack_from(buf)
        else:
            flags, gso_type, hdr_len, gso_size, cs, co = _HDR.unpack_from(buf)
            nb = 0
        if flags & ~_KNOWN_FLAGS:
            raise VnetHeaderError(f"unknown virtio_net_hdr flags 0x{flags:02x}")
        if gso_type & ~VIRTIO_NET_HDR_GSO_ECN not in _KNOWN_GSO:
            raise VnetHeaderError(f"unknown gso_type 0x{gso_type:02x}")
        return cls(flags, gso_type, hdr_len, gso_size, cs, co, nb)

    def pack(self, mrg: bool = False) -> bytes:
        if mrg:
            return _HDR_MRG.pack(
                self.flags,
                self.gso_type,
                self.hdr_len,
                self.gso_size,
                self.csum_start,
                self.csum_offset,
                self.num_buffers,
            )
        return _HDR.pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
        )

    def pack_into(self, buf: bytearray | memoryview, offset: int = 0, mrg: bool = False) -> int:
        """Write into `buf` at `offset` without allocating; returns the number of bytes written."""
        if mrg:
            _HDR_MRG.pack_into(
                buf,
                offset,
                self.flags,
                self.gso_type,
                self.hdr_len,
                self.gso_size,
                self.csum_start,
                self.csum_offset,
                self.num_buffers,
            )
            return VNET_HDR_MRG_LEN
        _HDR.pack_into(
            buf, offset, self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
        )
        return VNET_HDR_LEN

    # -- meaning ---------------------------------------------------------------------------
    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_DATA_VALID)

    @property
    def gso(self) -> int:
        """gso_type without the ECN bit."""
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN

    @property
    def ecn(self) -> bool:
        return bool(self.gso_type & VIRTIO_NET_HDR_GSO_ECN)

    @property
    def is_gso(self) -> bool:
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE

    def validate(self, frame_len: int) -> None:
        """Check the header against the length of the frame it describes (header excluded)."""
        if self.needs_csum and self.csum_start + self.csum_offset + 2 > frame_len:
            raise VnetHeaderError(
                f"checksum field at {self.csum_start}+{self.csum_offset} lies beyond frame of {frame_len} bytes"
            )
        if self.is_gso:
            if self.gso_size == 0:
                raise VnetHeaderError("GSO frame with gso_size 0")
            if self.hdr_len > frame_len:
                raise VnetHeaderError(f"hdr_len {self.hdr_len} exceeds frame of {frame_len} bytes")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VnetHdr):
            return NotImplemented
        return (
            self.flags == other.flags
            and self.gso_type == other.gso_type
            and self.hdr_len == other.hdr_len
            and self.gso_size == other.gso_size
            and self.csum_start == other.csum_start
            and self.csum_offset == other.csum_offset
            and self.num_buffers == other.num_buffers
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        flags = "|".join(
            n
            for bit, n in (
                (VIRTIO_NET_HDR_F_NEEDS_CSUM, "NEEDS_CSUM"),
                (VIRTIO_NET_HDR_F_DATA_VALID, "DATA_VALID"),
                (VIRTIO_NET_HDR_F_RSC_INFO, "RSC_INFO"),
            )
            if self.flags & bit
        )
        gso = _GSO_NAMES.get(self.gso, hex(self.gso)) + ("|ECN" if self.ecn else "")
        return (
            f"VnetHdr(flags={flags or 0}, gso={gso}, hdr_len={self.hdr_len}, gso_size={self.gso_size}, "
            f"csum_start={self.csum_start}, csum_offset={self.csum_offset})"
        )


#: The header for a plain frame: no checksum work, no segmentation. Shared, never mutate.
ZERO_HDR: Final = bytes(VNET_HDR_LEN)
ZERO_HDR_MRG: Final = bytes(VNET_HDR_MRG_LEN)


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """16-bit one's-complement sum of `data` (big-endian words, odd tail zero-padded), folded.

    Uses 2**16 == 1 (mod 0xffff): the sum of the words equals the big number modulo 0xffff, which
    keeps the per-byte work in C even for 64 KB GSO frames.
    """
    n = len(data)
    v = int.from_bytes(data, "big")
    if n & 1:
        v <<= 8
    s = (v + initial) % 0xFFFF
    if s == 0 and (v or initial):
        return 0xFFFF
    return s


def complete_checksum(frame: bytearray | memoryview, hdr: VnetHdr) -> bool:
    """Finish a NEEDS_CSUM checksum in place (what a NIC's transmit checksum offload would do).

    The field at csum_start+csum_offset holds the pseudo-header sum; the result is the complement
    of the sum over `frame[csum_start:]`. Returns False when the header does not ask for it.
    """
    if not hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return False
    hdr.validate(len(frame))
    pos = hdr.csum_start + hdr.csum_offset
    csum = ~ones_complement_sum(memoryview(frame)[hdr.csum_start :]) & 0xFFFF
    if csum == 0 and hdr.csum_offset == _UDP_CSUM_OFFSET:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones; zero means "no checksum"
    frame[pos] = csum >> 8
    frame[pos + 1] = csum & 0xFF
    return True
