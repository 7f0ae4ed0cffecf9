"""A host network interface: link-layer address, MTU, 802.1Q setting, IP addresses and offload capabilities.
Owns what the IP and TCP layers may ask of the link below (checksum offload, GSO/TSO super-frames).

Frames leave through `transmit` (a Port's `send`, or later an NDIS miniport binding); the IP layer
feeds received frames back with `HostIp.input_frame`.

Offloads (the Linux virtio_net_hdr model, NDIS's TcpIpChecksum / TcpLargeSend out-of-band info):
  * `rx_csum_offload`: trust a received frame's NEEDS_CSUM / DATA_VALID flag instead of verifying
    the TCP/UDP checksum in software (the IPv4 header checksum is still verified);
  * `rx_gso`: accept GSO super-frames (one TCP segment up to 64 KB, longer than the MTU);
  * `tso_max`: largest TCP payload the link will cut into MSS-sized frames for us (0: no TSO);
    with it, frames go out through `transmit_vnet(frame, VnetHdr)` with only the pseudo-header
    checksum filled in (NEEDS_CSUM), the link finishing the checksums.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Transmit = Callable[[bytes, "str | None"], None]
#: `transmit_vnet(frame, hdr)`: a frame with offload work for the link (hdr is a `links.vnet.VnetHdr`);
#: `frame` is bytes-like or a tuple of parts (headers, payload view) written with one writev.
TransmitVnet = Callable[[Any, Any], bool]

#: IPv4 total length / IPv6 payload length is 16 bits: the largest TSO payload a super-frame can carry.
TSO_LIMIT = 65535 - 20 - 60


@dataclass(eq=False)
class Interface:
    name: str
    mac: bytes
    mtu: int = 1500
    vlan_id: int = 0  # 0: untagged; non-zero: every frame is tagged and only matching frames accepted
    vlan_prio: int = 0
    transmit: Transmit | None = None
    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    multicast_macs: set[bytes] = field(default_factory=set)
    up: bool = True
    rx_csum_offload: bool = False
    rx_gso: bool = False
    tso_max: int = 0
    rx_batched: bool = False  # the link calls HostIp.drain_end after each burst of received frames
    transmit_vnet: TransmitVnet | None = None
    _addr_set: set[bytes] = field(default_factory=set, repr=False)
    _addr_key: tuple[tuple[Any, ...], tuple[Any, ...]] = field(default=((None,), ()), repr=False)

    def addresses(self, family: int) -> list[bytes]:
        addrs = self.ipv4 if family == 4 else self.ipv6
        return [a.ip.packed for a in addrs]

    def has_address(self, ip: bytes) -> bool:
        # per-frame check: a set of packed addresses, rebuilt only when the address lists change (the
        # lists are public and edited in place; comparing their elements is an identity check each)
        key = (tuple(self.ipv4), tuple(self.ipv6))
        if self._addr_key != key:
            self._addr_set = {a.ip.packed for a in self.ipv4} | {a.ip.packed for a in self.ipv6}
            self._addr_key = key
        return ip in self._addr_set

    def source_for(self, dst: bytes) -> bytes | None:
        """The address to send from towards `dst`: one on the same subnet if any, else the first."""
        addrs = self.ipv4 if len(dst) == 4 else self.ipv6
        if not addrs:
            return None
        d = ipaddress.ip_address(dst)
        for a in addrs:
            if d in a.network:
                return a.ip.packed
        return addrs[0].ip.packed

    def set_offloads(self, *, tso: bool | int | None = None, rx_csum: bool | None = None, rx_gso: bool | None = None) -> None:
        """Turn offloads on or off; `tso=True` means the largest super-frame (`TSO_LIMIT` payload bytes),
        an int a smaller cap. TSO needs a link that takes offload headers (`transmit_vnet`)."""
        if tso is not None:
            cap = TSO_LIMIT if tso is True else int(tso)
            if cap and self.transmit_vnet is None:
                raise ValueError(f"{self.name}: TSO needs a link with offload headers (a vnet-header TAP)")
            if cap < 0:
                raise ValueError(f"{self.name}: negative TSO size {cap}")
            self.tso_max = min(cap, TSO_LIMIT)
        if rx_csum is not None:
            self.rx_csum_offload = rx_csum
        if rx_gso is not None:
            self.rx_gso = rx_gso

    def send(self, frame: bytes, meta: str | None = None) -> None:
        if self.transmit is None or not self.up:
            return
        self.transmit(frame, meta)
