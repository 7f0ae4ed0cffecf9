"""The framing layer's neighbor cache: ARP (IPv4) and neighbor discovery (IPv6) resolution state.

One `Neighbor` per next hop, shared by every path through it — the object the chimney offloads as
the root of a state tree (its MAC is cached state, its reachability times are HRD/NRD). Listeners
(`NeighborCache.listeners`) learn of every change an offloaded copy must follow: a new link-layer
address (an update), and an entry that became FAILED or was removed (an invalidate), as it happens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, Scheduler, Timer


class NeighborChange(Enum):
    """What a `NeighborCache` listener is told about an entry."""

    MAC = "mac"  # the link-layer address changed (ARP / NA with override): `old` is the previous MAC
    FAILED = "failed"  # resolution or NUD probing gave up: the neighbor is unreachable
    REMOVED = "removed"  # the entry left the cache (flush / administrative delete)


NeighborListener = Callable[["Neighbor", NeighborChange, "bytes | None"], None]


class NeighborState(Enum):
    """RFC 4861 §7.3.2 reachability states; ARP entries run the same machine (as Linux does)."""

    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    STALE = "stale"
    DELAY = "delay"
    PROBE = "probe"
    FAILED = "failed"


@dataclass(slots=True)
class NeighborConfig:
    reachable_time: int = 30 * NS_PER_S
    retrans_timer: int = 1 * NS_PER_S
    delay_first_probe_time: int = 5 * NS_PER_S
    max_multicast_solicit: int = 3
    max_unicast_solicit: int = 3
    queue_limit: int = 3  # packets held per unresolved entry (Linux unres_qlen default)
    failed_retention: int = 20 * NS_PER_S  # how long a FAILED entry answers "unreachable" before re-resolving


SendFn = Callable[[bytes], None]  # called with the resolved link-layer address


class Neighbor:
    """A next hop: IP address, link-layer address and reachability bookkeeping."""

    __slots__ = (
        "confirmed_at",
        "failed_at",
        "family",
        "ip",
        "mac",
        "offload_refs",
        "probes_sent",
        "queue",
        "state",
        "timer",
        "vlan_id",
    )

    def __init__(self, ip: bytes, vlan_id: int = 0) -> None:
        self.ip = ip
        self.family = 4 if len(ip) == 4 else 6
        self.mac: bytes | None = None
        self.state = NeighborState.INCOMPLETE
        self.confirmed_at = 0  # ns of the last forward-reachability confirmation (host side of HRD)
        self.failed_at = 0
        self.probes_sent = 0
        self.queue: deque[SendFn] = deque()
        self.timer: Timer | None = None
        self.vlan_id = vlan_id
        self.offload_refs = 0  # offloaded paths depending on this neighbor

    def __repr__(self) -> str:
        mac = self.mac.hex(":") if self.mac else "-"
        return f"<Neighbor {_fmt_ip(self.ip)} {mac} {self.state.value}>"


def _fmt_ip(ip: bytes) -> str:
    import ipaddress

    return str(ipaddress.ip_address(ip))


@dataclass(slots=True)
class NeighborCounters:
    solicits_multicast: int = 0
    solicits_unicast: int = 0
    resolved: int = 0
    failed: int = 0
    queued: int = 0
    queue_dropped: int = 0
    mac_changes: int = 0


class NeighborCache:
    """Resolves next hops, queues packets while resolving and runs reachability confirmation.

    `solicit(neighbor, unicast)` is the framing layer's hook that puts an ARP request or a neighbor
    solicitation on the wire; `on_change(neighbor, old_mac)` tells upper layers that a link-layer
    address changed. `listeners` (callables `(neighbor, NeighborChange, old_mac)`) hear of address
    changes, failures and removals: the chimney updates or invalidates an offloaded neighbor from them.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        solicit: Callable[[Neighbor, bool], None],
        config: NeighborConfig | None = None,
        on_change: Callable[[Neighbor, bytes | None], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.solicit = solicit
        self.config = config or NeighborConfig()
        self.on_change = on_change
        self.entries: dict[bytes, Neighbor] = {}
        self.counters = NeighborCounters()
        self.listeners: list[NeighborListener] = []

    def _notify(self, n: Neighbor, change: NeighborChange, old: bytes | None) -> None:
        for cb in tuple(self.listeners):  # a listener may unsubscribe itself
            cb(n, change, old)

    # -- lookups ----------------------------------------------------------------------------------

    def get(self, ip: bytes) -> Neighbor | None:
        return self.entries.get(ip)

    def entry(self, ip: bytes) -> Neighbor:
        """The entry for `ip`, created INCOMPLETE (without soliciting) if it does not exist."""
        n = self.entries.get(ip)
        if n is None:
            n = self.entries[ip] = Neighbor(ip)
        return n

    def resolve(self, ip: bytes, send: SendFn) -> bool:
        """Send through `ip`'s link-layer address now, or queue `send` until it resolves.

        Returns False only when the packet was dropped (entry FAILED, or queue overflow of this packet).
        """
        n = self.entries.get(ip)
        now = self.scheduler.now
        if n is None:
            n = self.entries[ip] = Neighbor(ip)
            self._start_resolution(n)
        st = n.state
        if st is NeighborState.FAILED:
            if now - n.failed_at < self.config.failed_retention:
                self.counters.queue_dropped += 1
                return False
            self._start_resolution(n)
            st = n.state
        if st is NeighborState.INCOMPLETE:
            if len(n.queue) >= self.config.queue_limit:
                n.queue.popleft()  # drop the oldest, as Linux does: the newest is most likely still wanted
                self.counters.queue_dropped += 1
            n.queue.append(send)
            self.counters.queued += 1
            return True
        assert n.mac is not None
        if st is NeighborState.STALE:
            # RFC 4861 7.3.3: first use of a STALE entry starts the DELAY timer
            n.state = NeighborState.DELAY
            self._arm(n, self.config.delay_first_probe_time)
        send(n.mac)
        return True

    # -- inputs -----------------------------------------------------------------------------------

    def learn(self, ip: bytes, mac: bytes, *, solicited: bool, override: bool = True) -> Neighbor | None:
        """An ARP reply/request or a neighbor advertisement told us `ip` is at `mac`.

        `solicited` replies confirm reachability; unsolicited ones (gratuitous ARP, an ARP request
        from the peer, an unsolicited NA) only update the address and leave the entry STALE
        (RFC 4861 7.2.5 / 7.2.3). Returns the entry if one exists or was created.
        """
        n = self.entries.get(ip)
        now = self.scheduler.now
        if n is None:
            if solicited:
                return None  # never solicited: ignore (RFC 4861 7.2.5)
            n = self.entries[ip] = Neighbor(ip)
            n.mac = mac
            n.state = NeighborState.STALE
            self._flush_queue(n)
            return n
        old = n.mac
        changed = old is not None and old != mac
        if n.state is NeighborState.INCOMPLETE:
            n.mac = mac
            if solicited:
                n.state = NeighborState.REACHABLE
                n.confirmed_at = now
                self._arm(n, self.config.reachable_time)
            else:
                n.state = NeighborState.STALE
                self._cancel(n)
            self.counters.resolved += 1
            self._flush_queue(n)
            return n
        if changed and not override:
            if n.state is NeighborState.REACHABLE:
                n.state = NeighborState.STALE
                self._cancel(n)
            return n
        if changed:
            n.mac = mac
            self.counters.mac_changes += 1
        if solicited:
            n.state = NeighborState.REACHABLE
            n.confirmed_at = now
            n.probes_sent = 0
            self._arm(n, self.config.reachable_time)
        elif changed:
            n.state = NeighborState.STALE
            self._cancel(n)
        if n.state is NeighborState.FAILED:
            n.state = NeighborState.STALE
        if changed:
            if self.on_change is not None:
                self.on_change(n, old)
            self._notify(n, NeighborChange.MAC, old)
        self._flush_queue(n)
        return n

    def confirm(self, ip: bytes) -> None:
        """Upper-layer reachability confirmation (TCP forward progress, RFC 4861 7.3.1)."""
        n = self.entries.get(ip)
        if n is None or n.mac is None:
            return
        n.confirmed_at = self.scheduler.now
        n.probes_sent = 0
        if n.state is not NeighborState.REACHABLE:
            n.state = NeighborState.REACHABLE
        self._arm(n, self.config.reachable_time)

    def remove(self, ip: bytes) -> None:
        n = self.entries.pop(ip, None)
        if n is not None:
            self._cancel(n)
            n.queue.clear()
            self._notify(n, NeighborChange.REMOVED, n.mac)

    def flush(self) -> None:
        for ip in list(self.entries):
            self.remove(ip)

    # -- internals --------------------------------------------------------------------------------

    def _start_resolution(self, n: Neighbor) -> None:
        n.state = NeighborState.INCOMPLETE
        n.probes_sent = 1
        self.counters.solicits_multicast += 1
        self.solicit(n, False)
        self._arm(n, self.config.retrans_timer)

    def _flush_queue(self, n: Neighbor) -> None:
        mac = n.mac
        assert mac is not None
        while n.queue:
            n.queue.popleft()(mac)

    def _cancel(self, n: Neighbor) -> None:
        if n.timer is not None:
            n.timer.cancel()
            n.timer = None

    def _arm(self, n: Neighbor, delay: int) -> None:
        self._cancel(n)
        n.timer = self.scheduler.call_later(delay, self._expire, n, label="neighbor-timer")

    def _expire(self, n: Neighbor) -> None:
        n.timer = None
        if self.entries.get(n.ip) is not n:
            return
        cfg = self.config
        st = n.state
        if st is NeighborState.INCOMPLETE:
            if n.probes_sent < cfg.max_multicast_solicit:
                n.probes_sent += 1
                self.counters.solicits_multicast += 1
                self.solicit(n, False)
                self._arm(n, cfg.retrans_timer)
            else:
                self._fail(n)
        elif st is NeighborState.REACHABLE:
            n.state = NeighborState.STALE
        elif st is NeighborState.DELAY:
            n.state = NeighborState.PROBE
            n.probes_sent = 1
            self.counters.solicits_unicast += 1
            self.solicit(n, True)
            self._arm(n, cfg.retrans_timer)
        elif st is NeighborState.PROBE:
            if n.probes_sent < cfg.max_unicast_solicit:
                n.probes_sent += 1
                self.counters.solicits_unicast += 1
                self.solicit(n, True)
                self._arm(n, cfg.retrans_timer)
            else:
                self._fail(n)

    def _fail(self, n: Neighbor) -> None:
        n.state = NeighborState.FAILED
        n.failed_at = self.scheduler.now
        dropped = len(n.queue)
        n.queue.clear()
        self.counters.failed += 1
        self.counters.queue_dropped += dropped
        self._notify(n, NeighborChange.FAILED, n.mac)


__all__ = [
    "NS_PER_MS",
    "Neighbor",
    "NeighborCache",
    "NeighborChange",
    "NeighborConfig",
    "NeighborCounters",
    "NeighborListener",
    "NeighborState",
]
