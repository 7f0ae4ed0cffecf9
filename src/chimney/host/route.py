"""The path layer's routing table and path objects: where a destination goes and with what MTU.

A `Path` (source, destination, next-hop neighbor, path MTU) is the route-cache entry the chimney
offloads in the middle of a state tree; many TCP connections share one path. Route-table edits and
PMTU changes either way are told to listeners (the chimney re-links, invalidates or updates paths).
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


class _Keep:
    """Marker type of `KEEP`."""


KEEP = _Keep  # RouteTable.replace: leave this field as it is

RouteListener = Callable[[str, Route], None]  # ("add" | "remove", route); a replace is a remove then an add


class RouteTable:
    """Longest-prefix match over IPv4 and IPv6 routes, ties broken by metric. `listeners` are called
    after every change, with the table already in its new state."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self.listeners: list[RouteListener] = []

    def _notify(self, what: str, route: Route) -> None:
        for cb in tuple(self.listeners):
            cb(what, route)

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
        self._insert(r)
        self._notify("add", r)
        return r

    def _insert(self, r: Route) -> None:
        self._routes.append(r)
        # most specific first, then lowest metric: lookup takes the first match
        self._routes.sort(key=lambda x: (-x.network.prefixlen, x.metric))

    def remove(self, route: Route) -> None:
        self._routes.remove(route)
        self._notify("remove", route)

    def replace(
        self,
        route: Route,
        *,
        interface: str | None = None,
        gateway: str | bytes | type[_Keep] | None = _Keep,
        metric: int | None = None,
        mtu: int | type[_Keep] | None = _Keep,
    ) -> Route:
        """`ip route replace`: swap `route` for one with the given fields changed (the others kept), in one
        step, so no lookup ever sees the prefix without a route. Fields not given are kept; `gateway=None`
        makes the route on-link, `mtu=None` makes it use the interface MTU."""
        gw: bytes | None
        if gateway is KEEP:
            gw = route.gateway
        elif isinstance(gateway, str):
            gw = ipaddress.ip_address(gateway).packed
        else:
            gw = gateway  # type: ignore[assignment]
        if gw is not None and len(gw) != (4 if route.network.version == 4 else 16):
            raise ValueError(f"gateway {gateway!r} is not of the family of {route.network}")
        new = Route(route.network, gw, interface if interface is not None else route.interface,
                    metric if metric is not None else route.metric,
                    route.mtu if mtu is KEEP else mtu)  # type: ignore[arg-type]
        self._routes.remove(route)
        self._insert(new)
        self._notify("remove", route)
        self._notify("add", new)
        return new

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


PmtuListener = Callable[[bytes, "int | None"], None]


class PathMtuCache:
    """Path MTU per destination learned from ICMP (RFC 1191 / RFC 8201), aged back to the link MTU.

    `listeners(dst, mtu)` hear of every change of a destination's estimate: `mtu` is the new, lower
    value after a report; None when the learned value is gone (aged out by `expire`, or `forget`), the
    PMTU then rises back to the route / link MTU, which only the caller knows."""

    def __init__(self, aging: int = 600 * NS_PER_S) -> None:
        self.aging = aging
        self._entries: dict[bytes, PmtuEntry] = {}
        self.listeners: list[PmtuListener] = []

    def _notify(self, dst: bytes, mtu: int | None) -> None:
        for cb in tuple(self.listeners):
            cb(dst, mtu)

    def get(self, dst: bytes, link_mtu: int, now: int) -> int:
        """The PMTU to use for `dst`. An estimate past its age no longer counts (RFC 1191 §6.3: try the
        larger MTU again) but stays until `expire` drops it and tells the listeners: a lookup never calls
        them, since they look paths up and issue requests themselves (no re-entry into a host lookup)."""
        e = self._entries.get(dst)
        if e is None or now - e.learned_at >= self.aging:
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
        # Aged estimates stay until expire(): drop (and tell) them here too, so a host nobody runs expire()
        # for keeps only live ones (this is ICMP input, not a lookup).
        self.expire(now)
        mtu = max(reported_mtu, floor)
        self._entries[dst] = PmtuEntry(mtu, now)
        self._notify(dst, mtu)
        return mtu

    def deadline(self, dst: bytes) -> int | None:
        """When `dst`'s learned value ages out (ns); None when none is learned."""
        e = self._entries.get(dst)
        return None if e is None else e.learned_at + self.aging

    def expire(self, now: int) -> list[bytes]:
        """Drop the estimates older than `aging` (RFC 1191 §6.3 / RFC 8201 §4: try the larger MTU again)
        and tell the listeners (holders of a copy, such as offloaded paths, that never call `get`; they
        call this from a timer at `deadline`). `get` already ignores an aged estimate but leaves the
        telling to this."""
        old = [d for d, e in self._entries.items() if now - e.learned_at >= self.aging]
        for d in old:
            del self._entries[d]
        for d in old:
            self._notify(d, None)
        return old

    def forget(self, dst: bytes) -> bool:
        """Drop `dst`'s learned value now (`ip route flush cache`); True if there was one."""
        if self._entries.pop(dst, None) is None:
            return False
        self._notify(dst, None)
        return True

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
