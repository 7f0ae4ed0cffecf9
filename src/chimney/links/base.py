"""The port interface every emulated or real network attachment offers, and the per-direction counters.

Owns `Port` (the base class a link end, a switch port or a TAP device implements), `LinkCounters`, `DropCause`.

A NIC miniport (or a host stack) talks to the wire only through a `Port`:

    port.send(frame, meta=None)      frame out; `meta` becomes a per-packet capture comment
    port.set_receiver(callback)      frames in: `callback(frame: bytes)`
    port.set_link_listener(cb)       media connect/disconnect: `cb(up: bool)` (the NIC reports it, R-EVT-12)
    port.mtu, port.mac, port.name, port.link_up, port.counters

Implementations override `_transmit(frame, meta)` and call `self.deliver(frame, meta)` for received frames;
`send` and `deliver` feed the observers that captures hook into (`add_observer`).

NDIS correspondence (the wire below a miniport):
    miniport puts a frame on the wire (MiniportSendNetBufferLists data path)  -> Port.send
    frame from the wire, then NdisMIndicateReceiveNetBufferLists              -> receiver callback
    NdisMIndicateStatusEx(NDIS_STATUS_LINK_STATE) media connect/disconnect    -> link listener
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

FrameReceiver = Callable[[bytes], None]
LinkListener = Callable[[bool], None]
# (direction "tx" | "rx", frame, meta) -- "tx" when the port sends, "rx" when it hands a frame to its receiver.
PortObserver = Callable[[str, bytes, "str | None"], None]

ETH_HLEN = 14
VLAN_TAG_LEN = 4
DEFAULT_MTU = 1500
_TAG_TPIDS = (0x8100, 0x88A8)


class DropCause(StrEnum):
    """Why a frame did not reach the far end."""

    QUEUE_FULL = "queue_full"
    LOSS = "loss"
    BURST_LOSS = "burst_loss"
    MTU = "mtu"
    RUNT = "runt"  # shorter than an Ethernet header: cannot be a frame at all
    LINK_DOWN = "link_down"
    NO_RECEIVER = "no_receiver"


@dataclass(slots=True)
class LinkCounters:
    """Counters of one direction of a link (or of one port's transmit side).

    `corrupted` frames are delivered (damaged), so they are not drops; `duplicated` counts extra copies,
    `reordered` frames held back by the reorder impairment.
    """

    sent: int = 0
    bytes_sent: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    corrupted: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped: dict[DropCause, int] = field(default_factory=lambda: dict.fromkeys(DropCause, 0))

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drop(self, cause: DropCause, n: int = 1) -> None:
        self.dropped[cause] += n

    def reset(self) -> None:
        self.sent = self.bytes_sent = self.delivered = self.bytes_delivered = 0
        self.corrupted = self.duplicated = self.reordered = 0
        for cause in self.dropped:
            self.dropped[cause] = 0

    def summary(self) -> str:
        drops = ", ".join(f"{c.value}={n}" for c, n in self.dropped.items() if n)
        text = (
            f"sent {self.sent} ({self.bytes_sent} B), delivered {self.delivered} ({self.bytes_delivered} B), "
            f"dropped {self.dropped_total}"
        )
        if drops:
            text += f" [{drops}]"
        extras = [
            f"{name} {n}"
            for name, n in (
                ("corrupted", self.corrupted),
                ("duplicated", self.duplicated),
                ("reordered", self.reordered),
            )
            if n
        ]
        if extras:
            text += ", " + ", ".join(extras)
        return text

    def __str__(self) -> str:
        return self.summary()


def max_frame_len(frame: bytes, mtu: int) -> int:
    """Longest acceptable frame for `mtu`: header + payload, plus one 802.1Q/802.1ad tag when tagged."""
    if len(frame) >= ETH_HLEN and ((frame[12] << 8) | frame[13]) in _TAG_TPIDS:
        return mtu + ETH_HLEN + VLAN_TAG_LEN
    return mtu + ETH_HLEN


def as_frame(frame: bytes | bytearray | memoryview) -> bytes:
    """The single conversion at a link entry; `bytes` pass through untouched (no copy)."""
    if type(frame) is bytes:
        return frame
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    raise TypeError(f"a frame must be bytes, bytearray or memoryview, not {type(frame).__name__}")


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class Port:
    """One attachment point to a network: a link end, a switch port, a TAP device.

    Subclasses implement `_transmit`; received frames go through `deliver`. The receiver callback gets
    only the frame; `meta` (a human-readable note such as "conn 3, offloaded, sent by the target") is for
    observers/captures and never changes what is delivered.
    """

    __slots__ = ("_link_listener", "_observers", "_receiver", "counters", "mac", "mtu", "name", "rx_bytes", "rx_frames")

    def __init__(self, name: str, mtu: int = DEFAULT_MTU, mac: bytes | None = None) -> None:
        if mtu <= 0:
            raise ValueError(f"port {name}: mtu must be positive, got {mtu}")
        if mac is not None and len(mac) != 6:
            raise ValueError(f"port {name}: a MAC address has 6 bytes, got {len(mac)}")
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.counters = LinkCounters()
        self.rx_frames = 0
        self.rx_bytes = 0
        self._receiver: FrameReceiver | None = None
        self._link_listener: LinkListener | None = None
        self._observers: list[PortObserver] = []

    # -- transmit side ------------------------------------------------------------------------------------
    def send(self, frame: bytes | bytearray | memoryview, meta: str | None = None) -> None:
        """Hand one Ethernet frame (no FCS) to the network. Never blocks; drops are counted, not raised."""
        if type(frame) is not bytes:
            frame = as_frame(frame)
        if self._observers:
            for obs in self._observers:
                obs("tx", frame, meta)
        self._transmit(frame, meta)

    def _transmit(self, frame: bytes, meta: str | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _transmit")

    # -- receive side -------------------------------------------------------------------------------------
    def set_receiver(self, callback: FrameReceiver | None) -> None:
        self._receiver = callback

    @property
    def receiver(self) -> FrameReceiver | None:
        return self._receiver

    def deliver(self, frame: bytes, meta: str | None = None) -> bool:
        """Give a received frame to the receiver; False (and a counted drop) when nobody listens."""
        if self._observers:
            for obs in self._observers:
                obs("rx", frame, meta)
        receiver = self._receiver
        if receiver is None:
            return False
        self.rx_frames += 1
        self.rx_bytes += len(frame)
        receiver(frame)
        return True

    # -- media state --------------------------------------------------------------------------------------
    def set_link_listener(self, callback: LinkListener | None) -> None:
        self._link_listener = callback

    @property
    def link_up(self) -> bool:
        return True

    def _notify_link(self, up: bool) -> None:
        if self._link_listener is not None:
            self._link_listener(up)

    # -- observers (captures) -----------------------------------------------------------------------------
    def add_observer(self, observer: PortObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: PortObserver) -> None:
        self._observers.remove(observer)

    def __repr__(self) -> str:
        mac = f" {format_mac(self.mac)}" if self.mac else ""
        return f"<{type(self).__name__} {self.name}{mac} mtu={self.mtu}>"
