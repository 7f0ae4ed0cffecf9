"""Packet captures of the emulated (or TAP) network and their replay.

Owns `Capture` (records Ports/Links/Switches into pcapng or pcap), `read_capture` and `Replayer`.

Timestamps are `scheduler.now` (virtual ns in simulation). The `meta` string given to `Port.send` becomes
the packet's pcapng comment; link impairments append "reordered", "corrupted", "duplicate" to the
comment of the frames they touched when captured at delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from chimney.links.base import Port, PortObserver
from chimney.links.p2p import Link
from chimney.links.switch import Switch
from chimney.sim.scheduler import Scheduler
from chimney.trace.pcap import MAGIC_NS, MAGIC_US, PacketRecord, PcapFormatError, PcapWriter, read_pcap
from chimney.trace.pcapng import BT_SHB, PcapngWriter, read_pcapng

CapturePoint = Literal["send", "deliver", "both"]


class Capture:
    """A capture file being written. `format` "pcapng" (default; one interface per port / link direction,
    comments, directions) or "pcap" (one merged interface, no comments); by default taken from the suffix.
    """

    def __init__(
        self,
        path: str | Path,
        scheduler: Scheduler,
        *,
        format: Literal["pcapng", "pcap"] | None = None,
        snaplen: int = 0,
    ) -> None:
        self.path = Path(path)
        self.scheduler = scheduler
        if format is None:
            format = "pcap" if self.path.suffix == ".pcap" else "pcapng"
        if format not in ("pcapng", "pcap"):
            raise ValueError(f"capture format must be 'pcapng' or 'pcap', not {format!r}")
        self.format = format
        self.snaplen = snaplen
        self._ng: PcapngWriter | None = None
        self._pcap: PcapWriter | None = None
        if format == "pcapng":
            self._ng = PcapngWriter(self.path)
        else:
            self._pcap = PcapWriter(self.path, nanosecond=True, snaplen=snaplen or 262144)
        self._hooks: list[tuple[Port, PortObserver]] = []
        self._iface_names: list[str] = []
        self.closed = False

    @property
    def packets(self) -> int:
        return self._ng.packets if self._ng is not None else self._pcap.packets  # type: ignore[union-attr]

    @property
    def interfaces(self) -> list[str]:
        return list(self._iface_names)

    def _new_interface(self, name: str, description: str | None) -> int:
        self._iface_names.append(name)
        if self._ng is not None:
            return self._ng.add_interface(name, snaplen=self.snaplen, description=description)
        return 0

    def _record(self, if_id: int, frame: bytes, meta: str | None, direction: str) -> None:
        now = self.scheduler.now
        if self._ng is not None:
            self._ng.write_packet(if_id, now, frame, meta, direction=direction)
        else:
            self._pcap.write_packet(now, frame)  # type: ignore[union-attr]

    def _hook(self, port: Port, observer: PortObserver) -> None:
        port.add_observer(observer)
        self._hooks.append((port, observer))

    def attach(self, target: Port | Link | Switch, *, at: CapturePoint = "send", name: str | None = None) -> list[int]:
        """Start recording `target`; returns the interface ids created.

        Port: one interface with both directions (frames it sends marked "out", frames it delivers "in").
        Link: one interface per direction, "<link> a_to_b" and "<link> b_to_a"; `at` picks where frames
        are seen: "send" (entering the link), "deliver" (leaving it, after the impairments) or "both".
        Switch: every current port, as a Port (seen from the attached host).
        """
        if self.closed:
            raise ValueError("capture is closed")
        if at not in ("send", "deliver", "both"):
            raise ValueError(f"at must be 'send', 'deliver' or 'both', not {at!r}")
        if isinstance(target, Link):
            base = name or target.name
            ids = []
            for direction, src, dst in (("a_to_b", target.a, target.b), ("b_to_a", target.b, target.a)):
                if_id = self._new_interface(f"{base} {direction}", f"{src.name} -> {dst.name}, captured at {at}")
                ids.append(if_id)
                if at in ("send", "both"):
                    self._hook(src, self._observer(if_id, only="tx"))
                if at in ("deliver", "both"):
                    self._hook(dst, self._observer(if_id, only="rx"))
            return ids
        if isinstance(target, Switch):
            return [i for port in target.ports for i in self.attach(port)]
        if isinstance(target, Port):
            if_id = self._new_interface(name or target.name, f"port {target.name}")
            self._hook(target, self._observer(if_id, only=None))
            return [if_id]
        raise TypeError(f"cannot capture a {type(target).__name__}; expected a Port, Link or Switch")

    def _observer(self, if_id: int, only: str | None) -> PortObserver:
        record = self._record

        def observe(direction: str, frame: bytes, meta: str | None) -> None:
            if only is None or direction == only:
                record(if_id, frame, meta, "out" if direction == "tx" else "in")

        return observe

    def flush(self) -> None:
        if self._ng is not None:
            self._ng.flush()
        elif self._pcap is not None:
            self._pcap.flush()

    def close(self) -> None:
        """Stop observing every port and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for port, observer in self._hooks:
            port.remove_observer(observer)
        self._hooks.clear()
        if self._ng is not None:
            self._ng.close()
        if self._pcap is not None:
            self._pcap.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_capture(source: str | Path | bytes) -> Iterator[PacketRecord]:
    """Read a pcap or pcapng file, whichever it is (detected from the first four bytes)."""
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(buf) < 4:
        raise PcapFormatError(f"capture too short ({len(buf)} bytes)")
    first_le = int.from_bytes(buf[:4], "little")
    if first_le == BT_SHB:
        return read_pcapng(buf)
    if first_le in (MAGIC_US, MAGIC_NS) or int.from_bytes(buf[:4], "big") in (MAGIC_US, MAGIC_NS):
        return read_pcap(buf)
    raise PcapFormatError(f"not a pcap or pcapng file (first word 0x{first_le:08x})")


class Replayer:
    """Inject the frames of a capture into a Port at their relative timestamps on a scheduler.

    The first selected record goes out at `start_ns` (default: now when `start()` is called); the others
    keep their offsets, divided by `speed`. Records out of time order go out right after their
    predecessor. `interface` keeps only records of that interface (name or id). Frames are sent with the
    capture comment as meta prefixed with "replay".
    """

    def __init__(
        self,
        scheduler: Scheduler,
        port: Port,
        records: Iterable[PacketRecord],
        *,
        interface: str | int | None = None,
        speed: float = 1.0,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.scheduler = scheduler
        self.port = port
        self.speed = speed
        self.on_done = on_done
        self.injected = 0
        self.done = False
        self._records = self._select(records, interface)
        self._first_ts: int | None = None
        self._start = 0
        self._last = 0
        self._next: PacketRecord | None = None

    @staticmethod
    def _select(records: Iterable[PacketRecord], interface: str | int | None) -> Iterator[PacketRecord]:
        for r in records:
            if interface is None or interface in (r.interface_id, r.interface_name):
                yield r

    def start(self, start_ns: int | None = None) -> None:
        self._start = self.scheduler.now if start_ns is None else start_ns
        self._last = self._start
        self._advance()

    def _due(self, rec: PacketRecord) -> int:
        if self._first_ts is None:
            self._first_ts = rec.timestamp_ns
        delta = rec.timestamp_ns - self._first_ts
        # integer arithmetic at normal speed: float ns lose precision past 2**53 (about 104 days)
        t = self._start + (delta if self.speed == 1.0 else int(delta / self.speed))
        return t if t > self._last else self._last

    def _advance(self) -> None:
        rec = next(self._records, None)
        if rec is None:
            self.done = True
            if self.on_done is not None:
                self.on_done()
            return
        self._next = rec
        t = self._due(rec)
        self._last = t
        self.scheduler.call_at(t, self._fire, label="replay")

    def _fire(self) -> None:
        rec = self._next
        assert rec is not None
        self.port.send(rec.data, f"replay: {rec.comment}" if rec.comment else "replay")
        self.injected += 1
        self._advance()
