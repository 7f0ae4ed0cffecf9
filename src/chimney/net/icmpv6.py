"""ICMPv6 codec: echo, neighbor solicitation/advertisement with link-layer address options, router
solicitation/advertisement (minimal), packet too big (MTU) and other errors with the quoted packet.
"""

from __future__ import annotations

import struct

from chimney.net.checksum import finish, raw_sum, verify_raw
from chimney.net.drops import Drop, DropReason

NH_ICMPV6 = 58
ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_MTU = 5
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20
ERROR_TYPES = frozenset((ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM))
IPV6_MIN_MTU = 1280

_HDR = struct.Struct("!BBHI")
_RA = struct.Struct("!BBHII")  # after the 4-byte type/code/checksum
_QUOTE6 = struct.Struct("!6xB1x16s16s")
_PORTS_SEQ = struct.Struct("!HHI")


class Icmp6Message:
    """Parsed ICMPv6 message. Fields not used by a type keep their defaults (0 / None / b"")."""

    __slots__ = (
        "checksum",
        "code",
        "cur_hop_limit",
        "data",
        "ident",
        "mtu",
        "na_flags",
        "quote",
        "quoted_dport",
        "quoted_dst",
        "quoted_next_header",
        "quoted_seq",
        "quoted_sport",
        "quoted_src",
        "ra_flags",
        "reachable_time",
        "retrans_timer",
        "router_lifetime",
        "seq",
        "source_lladdr",
        "target",
        "target_lladdr",
        "type",
    )

    def __init__(self, type_: int, code: int, csum: int, data: memoryview) -> None:
        self.type = type_
        self.code = code
        self.checksum = csum
        self.data = data  # everything after the first 4 bytes (type, code, checksum)
        self.ident = 0
        self.seq = 0
        self.mtu = 0
        self.target = b""
        self.na_flags = 0
        self.source_lladdr: bytes | None = None
        self.target_lladdr: bytes | None = None
        self.cur_hop_limit = 0
        self.ra_flags = 0
        self.router_lifetime = 0
        self.reachable_time = 0
        self.retrans_timer = 0
        self.quote: memoryview | None = None
        self.quoted_src = b""
        self.quoted_dst = b""
        self.quoted_next_header = 0
        self.quoted_sport = 0
        self.quoted_dport = 0
        self.quoted_seq = 0

    @property
    def solicited(self) -> bool:
        return bool(self.na_flags & NA_FLAG_SOLICITED)

    @property
    def override(self) -> bool:
        return bool(self.na_flags & NA_FLAG_OVERRIDE)

    @property
    def router(self) -> bool:
        return bool(self.na_flags & NA_FLAG_ROUTER)

    def __repr__(self) -> str:
        return f"<ICMPv6 type {self.type} code {self.code}>"


def _parse_nd_options(m: Icmp6Message, opts: memoryview) -> Drop | None:
    i = 0
    n = len(opts)
    while i < n:
        if i + 2 > n:
            return Drop(DropReason.BAD_ICMPV6_OPTION, f"option header truncated at {i}")
        otype = opts[i]
        olen = opts[i + 1] * 8
        if olen == 0 or i + olen > n:  # RFC 4861 §4.6: a zero length must be discarded
            return Drop(DropReason.BAD_ICMPV6_OPTION, f"option {otype} length {olen} at {i} of {n}")
        if otype == OPT_SOURCE_LLADDR and olen >= 8:
            m.source_lladdr = bytes(opts[i + 2 : i + 8])
        elif otype == OPT_TARGET_LLADDR and olen >= 8:
            m.target_lladdr = bytes(opts[i + 2 : i + 8])
        elif otype == OPT_MTU and olen == 8:
            m.mtu = int.from_bytes(opts[i + 4 : i + 8], "big")
        i += olen
    return None


def parse_icmpv6(mv: memoryview, src_ip: bytes, dst_ip: bytes, verify: bool = True) -> Icmp6Message | Drop:
    """Parse an ICMPv6 message (`mv` is exactly the upper-layer payload), checksum over the pseudo-header."""
    n = len(mv)
    if n < 8:
        return Drop(DropReason.TRUNCATED_ICMPV6, f"{n} bytes")
    t, code, csum, word = _HDR.unpack_from(mv)
    if verify:
        s = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + NH_ICMPV6 + n + raw_sum(mv)
        if not verify_raw(s):
            return Drop(DropReason.BAD_ICMPV6_CHECKSUM, f"checksum {csum:#06x}")
    m = Icmp6Message(t, code, csum, mv[4:])
    bad: Drop | None = None  # Drop is falsy: compare with None, never `or`
    if t in (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY):
        m.ident = word >> 16
        m.seq = word & 0xFFFF
    elif t in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        if n < 24:
            return Drop(DropReason.TRUNCATED_ICMPV6, f"neighbor discovery message of {n} bytes")
        m.na_flags = word >> 24 if t == ND_NEIGHBOR_ADVERT else 0
        m.target = bytes(mv[8:24])
        bad = _parse_nd_options(m, mv[24:])
    elif t == ND_ROUTER_SOLICIT:
        bad = _parse_nd_options(m, mv[8:])
    elif t == ND_ROUTER_ADVERT:
        if n < 16:
            return Drop(DropReason.TRUNCATED_ICMPV6, f"router advertisement of {n} bytes")
        m.cur_hop_limit, m.ra_flags, m.router_lifetime, m.reachable_time, m.retrans_timer = _RA.unpack_from(mv, 4)
        bad = _parse_nd_options(m, mv[16:])
    elif t in ERROR_TYPES:
        if t == ICMP6_PACKET_TOO_BIG:
            m.mtu = word
        q = mv[8:]
        if len(q) < 48 or q[0] >> 4 != 6:
            return Drop(DropReason.TRUNCATED_ICMPV6, f"quote of {len(q)} bytes lacks an IPv6 header + 8 bytes")
        m.quoted_next_header, m.quoted_src, m.quoted_dst = _QUOTE6.unpack_from(q)
        m.quoted_sport, m.quoted_dport, m.quoted_seq = _PORTS_SEQ.unpack_from(q, 40)
        m.quote = q
    return m if bad is None else bad


def finish_icmpv6(src_ip: bytes, dst_ip: bytes, body: bytes) -> bytes:
    """Fill the checksum of an ICMPv6 message whose checksum field is 0."""
    s = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + NH_ICMPV6 + len(body) + raw_sum(body)
    return body[:2] + finish(s).to_bytes(2, "big") + body[4:]


def _lladdr_opt(otype: int, mac: bytes | None) -> bytes:
    return bytes((otype, 1)) + mac if mac is not None else b""


def build_icmpv6_echo(
    src_ip: bytes, dst_ip: bytes, ident: int, seq: int, data: bytes = b"", reply: bool = False
) -> bytes:
    t = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO_REQUEST
    return finish_icmpv6(src_ip, dst_ip, _HDR.pack(t, 0, 0, (ident << 16) | seq) + data)


def build_neighbor_solicit(src_ip: bytes, dst_ip: bytes, target: bytes, source_lladdr: bytes | None) -> bytes:
    """NS for `target`; `source_lladdr` must be None when src_ip is unspecified (DAD, RFC 4861 §4.3)."""
    body = _HDR.pack(ND_NEIGHBOR_SOLICIT, 0, 0, 0) + target + _lladdr_opt(OPT_SOURCE_LLADDR, source_lladdr)
    return finish_icmpv6(src_ip, dst_ip, body)


def build_neighbor_advert(
    src_ip: bytes,
    dst_ip: bytes,
    target: bytes,
    target_lladdr: bytes | None,
    *,
    router: bool = False,
    solicited: bool = True,
    override: bool = True,
) -> bytes:
    flags = (NA_FLAG_ROUTER if router else 0) | (NA_FLAG_SOLICITED if solicited else 0)
    flags |= NA_FLAG_OVERRIDE if override else 0
    body = _HDR.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags << 24) + target + _lladdr_opt(OPT_TARGET_LLADDR, target_lladdr)
    return finish_icmpv6(src_ip, dst_ip, body)


def build_packet_too_big(src_ip: bytes, dst_ip: bytes, mtu: int, original_packet: bytes | memoryview) -> bytes:
    """Packet Too Big quoting as much of the original as fits in the IPv6 minimum MTU (RFC 4443 §3.2)."""
    quote = bytes(original_packet[: IPV6_MIN_MTU - 40 - 8])
    return finish_icmpv6(src_ip, dst_ip, _HDR.pack(ICMP6_PACKET_TOO_BIG, 0, 0, mtu) + quote)


def solicited_node_multicast(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX for a unicast address (RFC 4291 §2.7.1)."""
    return bytes.fromhex("ff02" + "00" * 9 + "01ff") + bytes(addr[13:16])


def multicast_mac(addr: bytes) -> bytes:
    """33:33 + low 32 bits of an IPv6 multicast address (RFC 2464 §7)."""
    return b"\x33\x33" + bytes(addr[12:16])
