"""ICMPv4 codec: echo request/reply, destination unreachable (incl. fragmentation-needed with the RFC 1191
next-hop MTU), time exceeded; error messages expose the quoted original IP header + 8 bytes for matching.
"""

from __future__ import annotations

import struct

from chimney.net.checksum import checksum, raw_sum, verify_raw
from chimney.net.drops import Drop, DropReason

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAM_PROBLEM = 12
CODE_FRAG_NEEDED = 4
ERROR_TYPES = frozenset((ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM))
ICMP_HLEN = 8

_HDR = struct.Struct("!BBHHH")
_QUOTE_IP = struct.Struct("!B8xB2x4s4s")
_PORTS_SEQ = struct.Struct("!HHI")


class IcmpMessage:
    """Parsed ICMPv4 message. `ident`/`seq` are set for echo, `mtu` for fragmentation-needed (0 if the
    sender predates RFC 1191). For error types `quote` is the quoted original IP header + >= 8 bytes and
    `quoted_*` its addresses, protocol, ports and (TCP) sequence number; `data` is everything after the
    8-byte ICMP header (echo data or the quote)."""

    __slots__ = (
        "checksum",
        "code",
        "data",
        "ident",
        "mtu",
        "quote",
        "quoted_dport",
        "quoted_dst",
        "quoted_proto",
        "quoted_seq",
        "quoted_sport",
        "quoted_src",
        "seq",
        "type",
    )

    def __init__(self, type_: int, code: int, csum: int, data: memoryview) -> None:
        self.type = type_
        self.code = code
        self.checksum = csum
        self.data = data
        self.ident = 0
        self.seq = 0
        self.mtu = 0
        self.quote: memoryview | None = None
        self.quoted_src = b""
        self.quoted_dst = b""
        self.quoted_proto = 0
        self.quoted_sport = 0
        self.quoted_dport = 0
        self.quoted_seq = 0

    @property
    def is_frag_needed(self) -> bool:
        return self.type == ICMP_DEST_UNREACH and self.code == CODE_FRAG_NEEDED

    def __repr__(self) -> str:
        return f"<ICMP type {self.type} code {self.code} id {self.ident} seq {self.seq} mtu {self.mtu}>"


def parse_icmp(mv: memoryview, verify: bool = True) -> IcmpMessage | Drop:
    """Parse an ICMPv4 message (`mv` is exactly the IP payload)."""
    n = len(mv)
    if n < ICMP_HLEN:
        return Drop(DropReason.TRUNCATED_ICMP, f"{n} bytes")
    t, code, csum, a, b = _HDR.unpack_from(mv)
    if verify and not verify_raw(raw_sum(mv)):
        return Drop(DropReason.BAD_ICMP_CHECKSUM, f"checksum {csum:#06x}")
    m = IcmpMessage(t, code, csum, mv[ICMP_HLEN:])
    if t in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        m.ident = a
        m.seq = b
    elif t in ERROR_TYPES:
        if t == ICMP_DEST_UNREACH and code == CODE_FRAG_NEEDED:
            m.mtu = b
        q = m.data
        if len(q) < 20 or q[0] >> 4 != 4 or (q[0] & 0xF) < 5 or len(q) < ((q[0] & 0xF) << 2) + 8:
            return Drop(DropReason.TRUNCATED_ICMP, f"quote of {len(q)} bytes lacks an IPv4 header + 8 bytes")
        qhl = (q[0] & 0xF) << 2
        _, m.quoted_proto, m.quoted_src, m.quoted_dst = _QUOTE_IP.unpack_from(q)
        m.quoted_sport, m.quoted_dport, m.quoted_seq = _PORTS_SEQ.unpack_from(q, qhl)
        m.quote = q
    return m


def _finish(t: int, code: int, a: int, b: int, data: bytes | memoryview) -> bytes:
    body = _HDR.pack(t, code, 0, a, b) + bytes(data)
    c = checksum(body)
    return body[:2] + c.to_bytes(2, "big") + body[4:]


def build_icmp_echo(ident: int, seq: int, data: bytes = b"", reply: bool = False) -> bytes:
    """Echo request (or reply with `reply=True`) message bytes, checksum filled."""
    return _finish(ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST, 0, ident, seq, data)


def build_icmp_echo_reply(request: IcmpMessage) -> bytes:
    """Echo reply mirroring a parsed request's identifier, sequence number and data."""
    return build_icmp_echo(request.ident, request.seq, bytes(request.data), reply=True)


def quote_of(original_ip_packet: bytes | memoryview) -> bytes:
    """RFC 792 quote: the original IP header plus the first 8 bytes of its payload."""
    hl = (original_ip_packet[0] & 0xF) << 2
    return bytes(original_ip_packet[: hl + 8])


def build_icmp_error(type_: int, code: int, original_ip_packet: bytes | memoryview, mtu: int = 0) -> bytes:
    """Destination unreachable / time exceeded message quoting `original_ip_packet`."""
    return _finish(type_, code, 0, mtu, quote_of(original_ip_packet))


def build_icmp_frag_needed(mtu: int, original_ip_packet: bytes | memoryview) -> bytes:
    """Destination unreachable, fragmentation needed and DF set, with the next-hop MTU (RFC 1191)."""
    return build_icmp_error(ICMP_DEST_UNREACH, CODE_FRAG_NEEDED, original_ip_packet, mtu)


def icmp_message_ok(msg: bytes) -> bool:
    return verify_raw(raw_sum(msg))
