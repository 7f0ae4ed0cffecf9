"""IPv4 header codec: parse (options walked and skipped, fragments flagged, never reassembled) and build.
`parse_ipv4(mv)` -> `Ipv4Header | Drop`; `write_ipv4_header(buf, off, ...)` -> 20 (no options on transmit).
"""

from __future__ import annotations

import struct

from chimney.net.checksum import finish, verify_raw
from chimney.net.drops import Drop, DropReason

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV4_HLEN = 20

_HDR = struct.Struct("!BBHHHBBH4s4s")


class Ipv4Header:
    """Parsed IPv4 header. `frag_offset` is the wire field (8-octet units); `payload` is trimmed to
    `total_len` (Ethernet padding removed) and `packet` is the whole IP packet, both views."""

    __slots__ = (
        "checksum",
        "df",
        "dst",
        "frag_offset",
        "has_options",
        "header_len",
        "ident",
        "mf",
        "packet",
        "payload",
        "proto",
        "src",
        "tos",
        "total_len",
        "ttl",
    )

    def __init__(
        self,
        tos: int,
        total_len: int,
        ident: int,
        df: bool,
        mf: bool,
        frag_offset: int,
        ttl: int,
        proto: int,
        checksum: int,
        src: bytes,
        dst: bytes,
        header_len: int,
        packet: memoryview,
    ) -> None:
        self.tos = tos
        self.total_len = total_len
        self.ident = ident
        self.df = df
        self.mf = mf
        self.frag_offset = frag_offset
        self.ttl = ttl
        self.proto = proto
        self.checksum = checksum
        self.src = src
        self.dst = dst
        self.header_len = header_len
        self.has_options = header_len > IPV4_HLEN
        self.packet = packet
        self.payload = packet[header_len:]

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0


def check_ipv4_options(opts: memoryview) -> str | None:
    """Walk IPv4 options (RFC 791 §3.1) without interpreting them; returns an error text or None."""
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:  # end of option list: the rest is padding
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:
            return f"option {kind} at {i} has no length byte"
        olen = opts[i + 1]
        if olen < 2 or i + olen > n:
            return f"option {kind} length {olen} overruns {n} option bytes"
        i += olen
    return None


def parse_ipv4(mv: memoryview, verify: bool = True) -> Ipv4Header | Drop:
    """Parse an IPv4 packet starting at mv[0]. `mv` may carry trailing link padding."""
    n = len(mv)
    if n < IPV4_HLEN:
        return Drop(DropReason.TRUNCATED_IPV4, f"{n} bytes")
    vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _HDR.unpack_from(mv)
    if vihl >> 4 != 4:
        return Drop(DropReason.BAD_IP_VERSION, f"version {vihl >> 4} in IPv4 ethertype")
    hl = (vihl & 0xF) << 2
    if hl < IPV4_HLEN:
        return Drop(DropReason.BAD_IHL, f"IHL {hl >> 2}")
    if total < hl:
        return Drop(DropReason.BAD_IP_TOTAL_LEN, f"total length {total} < header {hl}")
    if total > n:
        return Drop(DropReason.IP_TRUNCATED, f"total length {total} > {n} bytes present")
    if verify and not verify_raw(int.from_bytes(mv[:hl], "big")):
        return Drop(DropReason.BAD_IPV4_CHECKSUM, f"header checksum {csum:#06x}")
    if hl > IPV4_HLEN:
        err = check_ipv4_options(mv[IPV4_HLEN:hl])
        if err is not None:
            return Drop(DropReason.BAD_IPV4_OPTIONS, err)
    return Ipv4Header(
        tos, total, ident, bool(frag & 0x4000), bool(frag & 0x2000), frag & 0x1FFF, ttl, proto, csum, src, dst, hl,
        mv[:total],
    )


def write_ipv4_header(
    buf: bytearray | memoryview,
    off: int,
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    df: bool = True,
) -> int:
    """Write a 20-byte IPv4 header (no options) with its checksum at `off`; returns 20."""
    total = IPV4_HLEN + payload_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 total length {total} > 65535")
    _HDR.pack_into(buf, off, 0x45, tos, total, ident, 0x4000 if df else 0, ttl, proto, 0, src, dst)
    csum = finish(int.from_bytes(buf[off : off + IPV4_HLEN], "big"))
    struct.pack_into("!H", buf, off + 10, csum)
    return IPV4_HLEN


def ip4_str(a: bytes) -> str:
    return ".".join(str(b) for b in a)


def ip4_bytes(text: str) -> bytes:
    parts = [int(p) for p in text.split(".")]
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return bytes(parts)
