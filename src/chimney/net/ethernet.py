"""Ethernet II framing with one optional 802.1Q tag: parse and build.
Owns the R-VLAN-05 transmit tagging rule (no tag / VID-0 priority tag / VLAN tag, CFI always 0).
"""

from __future__ import annotations

import struct

from chimney.net.drops import Drop, DropReason

ETH_P_IPV4 = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_HLEN = 14
VLAN_HLEN = 4
BROADCAST = b"\xff" * 6

_ETH = struct.Struct("!6s6sH")
_TCI_TYPE = struct.Struct("!HH")
_ETH_TAGGED = struct.Struct("!6s6sHHH")


class EthernetHeader:
    """A parsed Ethernet II header. `vlan_id`/`vlan_prio` are None when untagged; `payload` is a view."""

    __slots__ = ("dst", "ethertype", "header_len", "payload", "src", "vlan_id", "vlan_prio")

    def __init__(
        self,
        dst: bytes,
        src: bytes,
        ethertype: int,
        vlan_id: int | None,
        vlan_prio: int | None,
        header_len: int,
        payload: memoryview,
    ) -> None:
        self.dst = dst
        self.src = src
        self.ethertype = ethertype
        self.vlan_id = vlan_id
        self.vlan_prio = vlan_prio
        self.header_len = header_len
        self.payload = payload


def parse_ethernet(mv: memoryview) -> EthernetHeader | Drop:
    """Parse Ethernet II (+ one 802.1Q tag). The payload includes any trailing Ethernet padding."""
    if len(mv) < ETH_HLEN:
        return Drop(DropReason.TRUNCATED_ETHERNET, f"{len(mv)} bytes")
    dst, src, et = _ETH.unpack_from(mv)
    if et != ETH_P_8021Q:
        return EthernetHeader(dst, src, et, None, None, ETH_HLEN, mv[ETH_HLEN:])
    if len(mv) < ETH_HLEN + VLAN_HLEN:
        return Drop(DropReason.TRUNCATED_VLAN, f"{len(mv)} bytes")
    tci, et = _TCI_TYPE.unpack_from(mv, ETH_HLEN)
    return EthernetHeader(dst, src, et, tci & 0x0FFF, tci >> 13, ETH_HLEN + VLAN_HLEN, mv[ETH_HLEN + VLAN_HLEN :])


def needs_tag(vlan_id: int, vlan_prio: int) -> bool:
    """R-VLAN-05: tag unless both VlanId and UserPriority are 0."""
    return bool(vlan_id or vlan_prio)


def eth_header_len(vlan_id: int = 0, vlan_prio: int = 0) -> int:
    return ETH_HLEN + VLAN_HLEN if (vlan_id or vlan_prio) else ETH_HLEN


def write_ethernet(
    buf: bytearray | memoryview,
    off: int,
    dst: bytes,
    src: bytes,
    ethertype: int,
    vlan_id: int = 0,
    vlan_prio: int = 0,
) -> int:
    """Write an Ethernet II header at `off`; returns its length (14, or 18 when tagged).

    R-VLAN-05: VlanId 0 & prio 0 -> no tag; VlanId 0 & prio != 0 -> priority tag with VID 0;
    VlanId != 0 -> tag with VlanId and prio. CFI/DEI is always 0.
    """
    if not (0 <= vlan_id <= 0xFFF and 0 <= vlan_prio <= 7):
        raise ValueError(f"vlan_id {vlan_id} / vlan_prio {vlan_prio} out of range")
    if vlan_id or vlan_prio:
        _ETH_TAGGED.pack_into(buf, off, dst, src, ETH_P_8021Q, (vlan_prio << 13) | vlan_id, ethertype)
        return ETH_HLEN + VLAN_HLEN
    _ETH.pack_into(buf, off, dst, src, ethertype)
    return ETH_HLEN


def encode_ethernet(dst: bytes, src: bytes, ethertype: int, vlan_id: int = 0, vlan_prio: int = 0) -> bytes:
    """The Ethernet header as bytes (for prebuilt per-connection templates)."""
    buf = bytearray(ETH_HLEN + VLAN_HLEN)
    n = write_ethernet(buf, 0, dst, src, ethertype, vlan_id, vlan_prio)
    return bytes(buf[:n])


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """'02:00:00:00:00:01' -> 6 bytes."""
    b = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return b
