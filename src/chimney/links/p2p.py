"""The emulated point-to-point Ethernet link: two `Port` ends joined by two impaired `Channel`s.

Owns `Link` and `LinkPort`. `link.a.send(frame)` arrives at `link.b`'s receiver after the a_to_b impairments.
"""

from __future__ import annotations

from chimney.links.base import Port
from chimney.links.impair import Channel, Impairments
from chimney.sim.scheduler import Scheduler


class LinkPort(Port):
    """One end of a `Link`. `counters` are those of the direction leaving this end."""

    __slots__ = ("_out", "link")

    def __init__(self, link: Link, name: str, out: Channel, mac: bytes | None = None) -> None:
        super().__init__(name, mtu=out.imp.mtu, mac=mac)
        self.link = link
        self._out = out
        self.counters = out.counters

    def _transmit(self, frame: bytes, meta: str | None) -> None:
        self._out.send(frame, meta)

    @property
    def channel(self) -> Channel:
        """The direction leaving this end (impairments, queue state)."""
        return self._out

    @property
    def link_up(self) -> bool:
        return self.link.up


class Link:
    """A full-duplex point-to-point link between `link.a` and `link.b`.

    Each direction has its own `Impairments` (None: a perfect wire) and its own random stream
    `link/{name}/a_to_b` or `link/{name}/b_to_a`.
    """

    __slots__ = ("a", "a_to_b", "b", "b_to_a", "name", "scheduler", "up")

    def __init__(
        self,
        scheduler: Scheduler,
        name: str,
        a_to_b: Impairments | None = None,
        b_to_a: Impairments | None = None,
        *,
        mac_a: bytes | None = None,
        mac_b: bytes | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.name = name
        self.up = True
        # Channels and ports refer to each other: channels first, then wire each to the far port.
        self.a_to_b = Channel(scheduler, name, "a_to_b", a_to_b, None)
        self.b_to_a = Channel(scheduler, name, "b_to_a", b_to_a, None)
        self.a = LinkPort(self, f"{name}.a", self.a_to_b, mac_a)
        self.b = LinkPort(self, f"{name}.b", self.b_to_a, mac_b)
        self.a_to_b.connect(self.b.deliver)
        self.b_to_a.connect(self.a.deliver)

    def reconfigure(self, a_to_b: Impairments | None = None, b_to_a: Impairments | None = None) -> None:
        """Replace the impairments of the directions given (None leaves a direction as it is); the
        sending port's `mtu` follows its direction's new MTU."""
        for imp, channel, port in ((a_to_b, self.a_to_b, self.a), (b_to_a, self.b_to_a, self.b)):
            if imp is not None:
                channel.reconfigure(imp)
                port.mtu = imp.mtu

    def set_up(self, up: bool) -> None:
        """Plug/unplug the cable: both directions change, both ends' link listeners hear about it."""
        if up == self.up:
            return
        self.up = up
        self.a_to_b.set_up(up)
        self.b_to_a.set_up(up)
        self.a._notify_link(up)
        self.b._notify_link(up)

    def peer(self, port: Port) -> LinkPort:
        if port is self.a:
            return self.b
        if port is self.b:
            return self.a
        raise ValueError(f"{port!r} is not an end of link {self.name}")

    def summary(self) -> str:
        return f"link {self.name}: a_to_b {self.a_to_b.counters.summary()}; b_to_a {self.b_to_a.counters.summary()}"

    def __repr__(self) -> str:
        return f"<Link {self.name} {'up' if self.up else 'down'}>"
