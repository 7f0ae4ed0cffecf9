"""A learning Ethernet switch: MAC learning with ageing, flooding, per-port egress impairments.

Owns `Switch`, `SwitchPort`, `SwitchCounters`.

A host attaches either directly (the host uses the `SwitchPort` as its own `Port`) or through anything
else offering the `Port` interface, e.g. `switch.add_port(peer=link.b)` for a host behind a `Link`, or a
TAP port. Forwarded frames always leave through a scheduled event, never re-entrantly inside `send`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from chimney.links.base import ETH_HLEN, DropCause, Port, format_mac, max_frame_len
from chimney.links.impair import Channel, Impairments
from chimney.sim.scheduler import NS_PER_S, Scheduler

DEFAULT_AGEING_NS = 300 * NS_PER_S  # the 802.1D default ageing time


@dataclass(slots=True)
class SwitchCounters:
    frames_in: int = 0
    forwarded: int = 0  # unicast to a learned port
    flooded: int = 0  # frames flooded (each counted once, whatever the fan-out)
    filtered: int = 0  # destination learned on the ingress port: not sent back
    learned: int = 0  # new table entries
    moved: int = 0  # a known MAC seen on another port
    aged_out: int = 0
    table_full: int = 0  # source not learned because the table was full

    def summary(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


class SwitchPort(Port):
    """A switch port. `send` puts a frame into the switch (ingress, counted in `counters`); frames the
    switch forwards leave through `egress` (a `Channel` with this port's impairments) to the receiver."""

    __slots__ = ("egress", "index", "peer", "switch")

    def __init__(self, switch: Switch, index: int, name: str, impairments: Impairments | None) -> None:
        super().__init__(name, mtu=(impairments.mtu if impairments is not None else 1500))
        self.switch = switch
        self.index = index
        self.peer: Port | None = None
        self.egress = Channel(switch.scheduler, switch.name, f"port{index}", impairments, self.deliver)

    def _transmit(self, frame: bytes, meta: str | None) -> None:
        c = self.counters
        c.sent += 1
        c.bytes_sent += len(frame)
        if len(frame) < ETH_HLEN:
            c.dropped[DropCause.RUNT] += 1
            return
        if len(frame) > max_frame_len(frame, self.mtu):
            c.dropped[DropCause.MTU] += 1
            return
        c.delivered += 1
        c.bytes_delivered += len(frame)
        self.switch._ingress(self, frame, meta)


class Switch:
    """A transparent learning bridge (no VLAN awareness, no spanning tree)."""

    __slots__ = ("_table", "ageing_ns", "counters", "max_entries", "name", "ports", "scheduler")

    def __init__(
        self,
        scheduler: Scheduler,
        name: str,
        *,
        ageing_ns: int = DEFAULT_AGEING_NS,
        max_entries: int = 8192,
    ) -> None:
        if ageing_ns <= 0:
            raise ValueError(f"ageing_ns must be positive, got {ageing_ns}")
        self.scheduler = scheduler
        self.name = name
        self.ageing_ns = ageing_ns
        self.max_entries = max_entries
        self.ports: list[SwitchPort] = []
        self.counters = SwitchCounters()
        # MAC -> (port, last seen ns)
        self._table: dict[bytes, tuple[SwitchPort, int]] = {}

    def add_port(self, peer: Port | None = None, impairments: Impairments | None = None) -> SwitchPort:
        """A new port; with `peer` (a link end, a TAP port...) the two are cabled together:
        frames the peer receives enter the switch, frames leaving the port are sent by the peer."""
        index = len(self.ports)
        port = SwitchPort(self, index, f"{self.name}.p{index}", impairments)
        self.ports.append(port)
        if peer is not None:
            port.peer = peer
            peer.set_receiver(port.send)
            port.set_receiver(peer.send)
        return port

    # -- forwarding -------------------------------------------------------------------------------------
    def _ingress(self, port: SwitchPort, frame: bytes, meta: str | None) -> None:
        self.counters.frames_in += 1
        now = self.scheduler.now
        self._learn(frame[6:12], port, now)
        dst = frame[0:6]
        if not dst[0] & 1:
            out = self._lookup(dst, now)
            if out is not None:
                if out is port:
                    self.counters.filtered += 1
                else:
                    self.counters.forwarded += 1
                    out.egress.send(frame, meta)
                return
        self.counters.flooded += 1
        for p in self.ports:
            if p is not port:
                p.egress.send(frame, meta)

    def _learn(self, src: bytes, port: SwitchPort, now: int) -> None:
        if src[0] & 1:  # a group address is never a source
            return
        table = self._table
        entry = table.get(src)
        if entry is None:
            if len(table) >= self.max_entries:
                self.expire()
                if len(table) >= self.max_entries:
                    self.counters.table_full += 1
                    return
            self.counters.learned += 1
        elif entry[0] is not port:
            self.counters.moved += 1
        table[src] = (port, now)

    def _lookup(self, dst: bytes, now: int) -> SwitchPort | None:
        entry = self._table.get(dst)
        if entry is None:
            return None
        if now - entry[1] > self.ageing_ns:
            del self._table[dst]
            self.counters.aged_out += 1
            return None
        return entry[0]

    # -- management -------------------------------------------------------------------------------------
    def expire(self) -> int:
        """Remove every entry older than the ageing time; returns how many went."""
        now = self.scheduler.now
        old = [mac for mac, (_, seen) in self._table.items() if now - seen > self.ageing_ns]
        for mac in old:
            del self._table[mac]
        self.counters.aged_out += len(old)
        return len(old)

    def lookup(self, mac: bytes) -> SwitchPort | None:
        """The port `mac` was learned on, if the entry is still fresh."""
        return self._lookup(bytes(mac), self.scheduler.now)

    def table(self) -> dict[str, int]:
        """Fresh entries as {"aa:bb:..": port index}."""
        now = self.scheduler.now
        return {format_mac(m): p.index for m, (p, seen) in self._table.items() if now - seen <= self.ageing_ns}

    def flush(self) -> None:
        self._table.clear()

    def __repr__(self) -> str:
        return f"<Switch {self.name} ports={len(self.ports)} entries={len(self._table)}>"
