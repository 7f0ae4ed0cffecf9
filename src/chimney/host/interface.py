"""A host network interface: link-layer address, MTU, 802.1Q setting and IP addresses.

Frames leave through `transmit` (a Port's `send`, or later an NDIS miniport binding); the IP layer
feeds received frames back with `HostIp.input_frame`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

Transmit = Callable[[bytes, "str | None"], None]


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
    _addr_set: set[bytes] = field(default_factory=set, repr=False)
    _addr_key: tuple[int, int] = field(default=(-1, -1), repr=False)

    def addresses(self, family: int) -> list[bytes]:
        addrs = self.ipv4 if family == 4 else self.ipv6
        return [a.ip.packed for a in addrs]

    def has_address(self, ip: bytes) -> bool:
        # per-frame check: a set of packed addresses, rebuilt only when the address lists change
        if self._addr_key != (len(self.ipv4), len(self.ipv6)):
            self._addr_set = {a.ip.packed for a in self.ipv4} | {a.ip.packed for a in self.ipv6}
            self._addr_key = (len(self.ipv4), len(self.ipv6))
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

    def send(self, frame: bytes, meta: str | None = None) -> None:
        if self.transmit is None or not self.up:
            return
        self.transmit(frame, meta)
