"""ARP (RFC 826) for Ethernet/IPv4 only: parse and build requests and replies.
`parse_arp(mv) -> ArpPacket | Drop`; `write_arp(buf, off, ...) -> 28`; `arp_bytes(...) -> bytes`.
"""

from __future__ import annotations

import struct

from chimney.net.drops import Drop, DropReason

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket:
    __slots__ = ("op", "sender_ip", "sender_mac", "target_ip", "target_mac")

    def __init__(self, op: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes) -> None:
        self.op = op
        self.sender_mac = sender_mac
        self.sender_ip = sender_ip
        self.target_mac = target_mac
        self.target_ip = target_ip

    def __repr__(self) -> str:
        return f"<ARP op {self.op} {self.sender_mac.hex()}/{self.sender_ip.hex()} -> {self.target_ip.hex()}>"


def parse_arp(mv: memoryview) -> ArpPacket | Drop:
    """Parse an ARP packet (trailing Ethernet padding ignored)."""
    if len(mv) < ARP_LEN:
        return Drop(DropReason.TRUNCATED_ARP, f"{len(mv)} bytes")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(mv)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return Drop(DropReason.BAD_ARP, f"htype {htype} ptype {ptype:#06x} hlen {hlen} plen {plen}")
    if op not in (ARP_REQUEST, ARP_REPLY):
        return Drop(DropReason.BAD_ARP, f"opcode {op}")
    return ArpPacket(op, sha, spa, tha, tpa)


def write_arp(
    buf: bytearray | memoryview,
    off: int,
    op: int,
    sender_mac: bytes,
    sender_ip: bytes,
    target_mac: bytes,
    target_ip: bytes,
) -> int:
    _ARP.pack_into(buf, off, 1, 0x0800, 6, 4, op, sender_mac, sender_ip, target_mac, target_ip)
    return ARP_LEN


def arp_bytes(op: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes) -> bytes:
    """ARP packet bytes. A request carries an all-zero target MAC."""
    return _ARP.pack(1, 0x0800, 6, 4, op, sender_mac, sender_ip, target_mac, target_ip)
