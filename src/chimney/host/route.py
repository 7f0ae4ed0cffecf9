"""The path layer's routing table and path objects: where a destination goes and with what MTU.

A `Path` (source, destination, next-hop neighbor, path MTU) is the route-cache entry the chimney
offloads in the middle of a state tree; many TCP connections share one path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from chimney.sim.scheduler import NS_PER_S

IPV4_MIN_MTU = 576  # RFC 1122 3.3.3: every IPv4 host must accept 576-byte datagrams
IPV6_MIN_MTU = 1280  # RFC 8200 §5
# RFC 1191 §7 plateau table, for frag-needed messages from routers that do not report a next-hop MTU
_PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)


@dataclass(slots=True)
class Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: bytes | None  # None: destination is on-link
    interface: str
    metric: int = 0
    mtu: int | None = None  # route MTU; None = the interface MTU

    def __str__(self) -> str:
        via = f" via {ipaddress.ip_address(self.gateway)}" if self.gateway else ""
        return f"{self.network}{via} dev {self.interface} metric {self.metric}"


class RouteTable:
    """Longest-prefix match over IPv4 and IPv6 routes, ties broken by metric."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(
        self,
        prefix: str,
        interface: str,
        gateway: str | bytes | None = None,
        metric: int = 0,
        mtu: int | None = None,
    ) -> Route:
        net = ipaddress.ip_network(prefix, strict=False)
        gw = ipaddress.ip_address(gateway).packed if isinstance(gateway, str) else gateway
        if gw is not None and len(gw) != (4 if net.version == 4 else 16):
            raise ValueError(f"gateway {gateway!r} is not of the family of {prefix}")
        r = Route(net, gw, interface, metric, mtu)
        self._routes.append(r)
        # most specific first, then lowest metric: lookup takes the first match
        self._routes.sort(key=lambda x: (-x.network.prefixlen, x.metric))
        return r

    def remove(self, route: Route) -> None:
        self._routes.remove(route)

    def routes(self) -> list[Route]:
        return list(self._routes)

    def lookup(self, dst: bytes) -> Route | None:
        addr = ipaddress.ip_address(dst)
        for r in self._routes:
            if r.network.version == addr.version and addr in r.network:
                return r
        return None

    def next_hop(self, dst: bytes) -> tuple[Route, bytes] | None:
        """The route and the next-hop IP (the gateway, or `dst` itself when on-link)."""
        r = self.lookup(dst)
        if r is None:
            return None
        return r, (r.gateway if r.gateway is not None else dst)


@dataclass(slots=True)
class PmtuEntry:
    mtu: int
    learned_at: int


class PathMtuCache:
    """Path MTU per destination learned from ICMP (RFC 1191 / RFC 8201), aged back to the link MTU."""

    def __init__(self, aging: int = 600 * NS_PER_S) -> None:
        self.aging = aging
        self._entries: dict[bytes, PmtuEntry] = {}
        self.listeners: list[Callable[[bytes, int], None]] = []

    def get(self, dst: bytes, link_mtu: int, now: int) -> int:
        e = self._entries.get(dst)
        if e is None:
            return link_mtu
        if now - e.learned_at >= self.aging:
            del self._entries[dst]  # RFC 1191 §6.3: periodically try the larger MTU again
            return link_mtu
        return min(e.mtu, link_mtu)

    def learn(self, dst: bytes, reported_mtu: int, current_mtu: int, now: int) -> int | None:
        """Apply an ICMP fragmentation-needed / packet-too-big report. Returns the new PMTU if it dropped."""
        floor = IPV4_MIN_MTU if len(dst) == 4 else IPV6_MIN_MTU
        if reported_mtu == 0 and len(dst) == 4:
            # old router without next-hop MTU: next plateau below the size that failed
            reported_mtu = next((p for p in _PLATEAUS if p < current_mtu), IPV4_MIN_MTU)
        if reported_mtu >= current_mtu:
            return None  # a report can only lower the PMTU (RFC 1191 §3)
        mtu = max(reported_mtu, floor)
        self._entries[dst] = PmtuEntry(mtu, now)
        for cb in self.listeners:
            cb(dst, mtu)
        return mtu

    def entries(self) -> dict[bytes, int]:
        return {k: v.mtu for k, v in self._entries.items()}


@dataclass(eq=False)
class Path:
    """Route-cache state for one (source, destination) pair: the chimney's path state object.

    Constant: source and destination address. Cached: the path MTU. (No delegated path variables.)
    """

    source: bytes
    destination: bytes
    interface: str
    next_hop: bytes
    mtu: int
    offload_refs: int = 0  # offloaded TCP connections on this path
    tcp_users: set[object] = field(default_factory=set)

    @property
    def family(self) -> int:
        return 4 if len(self.source) == 4 else 6
