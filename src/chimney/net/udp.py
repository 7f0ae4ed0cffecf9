"""UDP header codec (header only: the stack dispatches UDP to nobody, but counts and checks it).
`parse_udp(mv, src_ip, dst_ip, verify=True) -> UdpHeader | Drop`; `encode_udp(...) -> bytes`.
"""

from __future__ import annotations

import struct

from chimney.net.checksum import finish_udp, raw_sum, verify_raw
from chimney.net.drops import Drop, DropReason

IPPROTO_UDP = 17
UDP_HLEN = 8
_HDR = struct.Struct("!HHHH")


class UdpHeader:
    """Parsed UDP header; `payload` is a view trimmed to the UDP length."""

    __slots__ = ("checksum", "dst_port", "length", "payload", "src_port")

    def __init__(self, src_port: int, dst_port: int, length: int, checksum: int, payload: memoryview) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.length = length
        self.checksum = checksum
        self.payload = payload


def parse_udp(mv: memoryview, src_ip: bytes, dst_ip: bytes, verify: bool = True) -> UdpHeader | Drop:
    """Parse a UDP datagram (`mv` is the IP payload). A zero checksum means "none" over IPv4 and is a
    BAD_UDP_CHECKSUM drop over IPv6 (RFC 8200 §8.1)."""
    n = len(mv)
    if n < UDP_HLEN:
        return Drop(DropReason.TRUNCATED_UDP, f"{n} bytes")
    sport, dport, length, csum = _HDR.unpack_from(mv)
    if length < UDP_HLEN or length > n:
        return Drop(DropReason.BAD_UDP_LENGTH, f"UDP length {length}, {n} bytes present")
    if verify:
        if csum == 0:
            if len(src_ip) == 16:
                return Drop(DropReason.BAD_UDP_CHECKSUM, "zero checksum over IPv6")
        else:
            s = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + IPPROTO_UDP + length
            if not verify_raw(s + raw_sum(mv[:length])):
                return Drop(DropReason.BAD_UDP_CHECKSUM, f"checksum {csum:#06x}")
    return UdpHeader(sport, dport, length, csum, mv[UDP_HLEN:length])


def encode_udp(src_ip: bytes, dst_ip: bytes, src_port: int, dst_port: int, payload: bytes = b"") -> bytes:
    """A whole UDP datagram with its checksum (0 computed -> 0xFFFF on the wire, RFC 768)."""
    length = UDP_HLEN + len(payload)
    hdr = _HDR.pack(src_port, dst_port, length, 0)
    s = int.from_bytes(src_ip, "big") + int.from_bytes(dst_ip, "big") + IPPROTO_UDP + length
    csum = finish_udp(s + raw_sum(hdr + payload))
    return _HDR.pack(src_port, dst_port, length, csum) + payload
