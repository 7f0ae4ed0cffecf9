"""IPv6 header codec: fixed header plus extension-header walk (hop-by-hop, routing, destination options,
fragment recognised, AH skipped; anything else ends the walk as the upper-layer protocol) and build.
"""

from __future__ import annotations

import struct

from chimney.net.drops import Drop, DropReason

IPV6_HLEN = 40
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
# Walked generically: next header byte, length byte in 8-octet units not counting the first 8.
_OPTION_LIKE = frozenset((NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS))

_HDR = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BxHI")


class Ipv6Header:
    """Parsed IPv6 packet. `l4_proto` is the first non-extension next header, `payload` the view after
    the extension headers (trimmed to the payload length), `packet` the whole packet. Fragment header
    fields (`ident`, `mf`, `frag_offset` in 8-octet units) are 0/False without one."""

    __slots__ = (
        "dst",
        "ext_headers",
        "flow_label",
        "frag_offset",
        "has_frag_header",
        "hop_limit",
        "ident",
        "l4_offset",
        "l4_proto",
        "mf",
        "packet",
        "payload",
        "payload_len",
        "pseudo_dst",
        "src",
        "tclass",
    )

    def __init__(self) -> None:
        self.tclass = 0
        self.flow_label = 0
        self.payload_len = 0
        self.hop_limit = 0
        self.src = b""
        self.dst = b""
        self.pseudo_dst = b""  # final destination for upper-layer checksums (RFC 8200 §8.1)
        self.l4_proto = NH_NONE
        self.l4_offset = IPV6_HLEN
        self.ext_headers: tuple[int, ...] = ()
        self.has_frag_header = False
        self.ident = 0
        self.mf = False
        self.frag_offset = 0
        self.packet = memoryview(b"")
        self.payload = memoryview(b"")

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0


def parse_ipv6(mv: memoryview) -> Ipv6Header | Drop:
    """Parse an IPv6 packet at mv[0] and walk its extension headers. `mv` may carry link padding."""
    n = len(mv)
    if n < IPV6_HLEN:
        return Drop(DropReason.TRUNCATED_IPV6, f"{n} bytes")
    vtf, plen, nh, hlim, src, dst = _HDR.unpack_from(mv)
    if vtf >> 28 != 6:
        return Drop(DropReason.BAD_IP_VERSION, f"version {vtf >> 28} in IPv6 ethertype")
    total = IPV6_HLEN + plen
    if total > n:
        return Drop(DropReason.IP_TRUNCATED, f"payload length {plen} > {n - IPV6_HLEN} bytes present")
    h = Ipv6Header()
    h.tclass = (vtf >> 20) & 0xFF
    h.flow_label = vtf & 0xFFFFF
    h.payload_len = plen
    h.hop_limit = hlim
    h.src = src
    h.dst = h.pseudo_dst = dst
    off = IPV6_HLEN
    exts: list[int] = []
    while True:
        if nh in _OPTION_LIKE or nh == NH_AH:
            if off + 8 > total:
                return Drop(DropReason.IPV6_EXT_TRUNCATED, f"extension header {nh} at {off}")
            hlen = (mv[off + 1] + 2) * 4 if nh == NH_AH else (mv[off + 1] + 1) * 8
            if off + hlen > total:
                return Drop(DropReason.IPV6_EXT_TRUNCATED, f"extension header {nh} length {hlen} at {off}")
            if nh == NH_ROUTING and mv[off + 2] in (0, 2) and mv[off + 3] and hlen >= 24:
                # Segments left: we are not the final hop; the pseudo-header uses the last address.
                h.pseudo_dst = bytes(mv[off + hlen - 16 : off + hlen])
            exts.append(nh)
            nh = mv[off]
            off += hlen
        elif nh == NH_FRAGMENT:
            if off + 8 > total:
                return Drop(DropReason.IPV6_EXT_TRUNCATED, f"fragment header at {off}")
            nxt, offm, ident = _FRAG.unpack_from(mv, off)
            exts.append(nh)
            h.has_frag_header = True
            h.ident = ident
            h.frag_offset = offm >> 3
            h.mf = bool(offm & 1)
            nh = nxt
            off += 8
            if h.frag_offset:  # later fragments carry no upper-layer header
                break
        elif nh == NH_ESP:
            return Drop(DropReason.IPV6_UNKNOWN_EXT_HEADER, "ESP cannot be walked")
        else:
            break
    h.l4_proto = nh
    h.l4_offset = off
    h.ext_headers = tuple(exts)
    h.packet = mv[:total]
    h.payload = mv[off:total]
    return h


def write_ipv6_header(
    buf: bytearray | memoryview,
    off: int,
    src: bytes,
    dst: bytes,
    next_header: int,
    payload_len: int,
    *,
    hop_limit: int = 64,
    tclass: int = 0,
    flow_label: int = 0,
) -> int:
    """Write the 40-byte fixed IPv6 header (no extension headers) at `off`; returns 40."""
    if payload_len > 0xFFFF:
        raise ValueError(f"IPv6 payload length {payload_len} > 65535 (jumbograms unsupported)")
    _HDR.pack_into(
        buf, off, (6 << 28) | (tclass << 20) | (flow_label & 0xFFFFF), payload_len, next_header, hop_limit, src, dst
    )
    return IPV6_HLEN


def ip6_bytes(text: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(text).packed


def ip6_str(a: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(bytes(a)))
