"""What `chimney serve` runs: our host stack bound through NDIS to the offload target, whose emulated NIC
sits on a TAP device facing Linux in a network namespace this process creates (and removes on exit).

`build_tap_offload_host` is `build_offload_pair`'s wiring with a real port and no second host, optionally
with pass-through IMs and a monitoring IM in the binding (`--ims N --monitor`); `parse_policy` reads the
CLI's policy spelling; `serve` runs an app until Ctrl-C / SIGTERM / a duration and reports every offload
and upload as it happens (and can record the TAP side into a pcap / pcapng file).

NDIS names here: NdisIMInitializeDeviceInstanceEx -> `Ndis.add_im` (via `build_tap_offload_host`).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimney.filters.checks import ImChecks, im_checks
from chimney.filters.monitor import MonitoringIm
from chimney.filters.passthrough import PassThroughChimneyIm
from chimney.host import apps
from chimney.host.chimney import HostChimneyChecks, OffloadManager
from chimney.host.ndis_binding import NdisHostBinding
from chimney.host.policy import OffloadPolicy
from chimney.host.stack import HostStack
from chimney.host.tcp import Tcb
from chimney.links.netns import DEFAULT_LINUX_ADDR, DEFAULT_NS, DEFAULT_OUR_ADDR, DEFAULT_TAP, TapTopology
from chimney.ndis.core import Ndis
from chimney.ndis.oid import NdisTcpConnectionOffloadParameters
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.target import EmulatedNic, OffloadTarget, TargetLimits
from chimney.trace import Capture

APPS = ("echo", "discard", "http")
DEFAULT_PORTS = {"echo": 7, "discard": 9, "http": 80}
POLL_NS = 20 * NS_PER_MS  # how often new connections and offload events are looked for
DRAIN_NS = NS_PER_S  # at exit: time allowed for offloaded connections to come back
MAX_IMS = 16  # a sanity bound for --ims: every IM is a Python hop on each chimney call


def parse_policy(spec: str) -> OffloadPolicy:
    """never | always | after-bytes:N | after-ms:N (N > 0 integer)."""
    s = spec.strip().lower()
    if s == "never":
        return OffloadPolicy.never()
    if s == "always":
        return OffloadPolicy.established()
    kind, sep, arg = s.partition(":")
    if sep and kind in ("after-bytes", "after-ms"):
        if not arg.isdigit():
            raise ValueError(f"offload policy {spec!r}: N must be a non-negative integer")
        n = int(arg)
        if kind == "after-bytes":
            return OffloadPolicy.after_bytes_moved(n)
        return OffloadPolicy.after_time(n * NS_PER_MS)
    raise ValueError(f"offload policy {spec!r}: use never, always, after-bytes:N or after-ms:N")


def parse_app(spec: str) -> tuple[str, Path | None]:
    """echo | discard | http | http:DIR."""
    name, sep, arg = spec.partition(":")
    if name not in APPS:
        raise ValueError(f"app {spec!r}: use echo, discard, http or http:DIR")
    if sep and name != "http":
        raise ValueError(f"app {spec!r}: only http takes a directory")
    root = Path(arg) if sep else None
    if root is not None and not root.is_dir():
        raise ValueError(f"app {spec!r}: {root} is not a directory")
    return name, root


class TapImChecks(ImChecks, HostChimneyChecks):
    """With IMs in the binding: the IM rules (R-IM-04..12, ImChecks) plus the host's SourceHandle stamping
    of the initiate chain (R-OFF-22/23, R-TRM-11); MRO runs ImChecks, ChimneyChecks, then the host shim."""


@dataclass
class TapOffloadHost:
    """Our host on a real port: the stack, NDIS, the target on the port, the binding and the manager;
    `ims` the intermediate drivers between target and binding, bottom-up (the monitor, if any, is last)."""

    host: HostStack
    ndis: Ndis
    target: OffloadTarget
    binding: NdisHostBinding
    manager: OffloadManager
    verifier: Verifier
    ims: tuple[PassThroughChimneyIm, ...] = ()
    monitor: MonitoringIm | None = None

    def leak_report(self) -> str:
        return "\n".join(x for x in [self.ndis.leak_report().strip(), *self.manager.leaks()] if x)

    def im_audit(self) -> list[str]:
        """IM completions / receive returns never passed on (R-IM-08/09, reported through the verifier) and
        state operations an IM still has in flight. Empty when every IM is clean. (Offload entries may
        legitimately stay: neighbor and path objects remain offloaded while the host keeps them.)"""
        chk = im_checks(self.ndis)
        msgs = chk.audit() if chk is not None else []
        msgs.extend(f"{im.name}: {len(im.call_entries)} state operation(s) in flight" for im in self.ims
                    if im.call_entries)
        return msgs


def build_tap_offload_host(
    scheduler: Any,
    port: Any,
    address: str,
    *,
    policy: OffloadPolicy,
    verifier: Verifier | None = None,
    ticks_per_second: int = 1000,
    target_options: dict[str, Any] | None = None,
    name: str = "tap",
    ims: int = 0,
    monitor: bool = False,
    monitor_max_records: int | None = 100_000,
) -> TapOffloadHost:
    """Host stack bound through NDIS (with the host chimney checks) to an `OffloadTarget` whose
    `EmulatedNic` sends and receives on `port` (a TapPort); `address` is "ip/prefix".

    `ims` pass-through chimney IMs (`PassThroughChimneyIm`) are stacked on the target's adapter, and with
    `monitor` a `MonitoringIm` on top of them (right below the host, so it sees the host's calls as made);
    the host binds to the topmost virtual miniport. With any IM the IM contract checks run too."""
    if not 0 <= ims <= MAX_IMS:
        raise ValueError(f"ims must be between 0 and {MAX_IMS}, not {ims}")
    v = verifier if verifier is not None else Verifier(Mode.RECORD)
    ndis = Ndis(scheduler, v, checks=TapImChecks if ims or monitor else HostChimneyChecks)
    nic = EmulatedNic(port)
    target = OffloadTarget(f"toe-{name}", nic, scheduler, TargetLimits(**(target_options or {})))
    ndis.register_miniport_driver(target)
    adapter = ndis.add_adapter(target, f"nic-{name}")
    stacked: list[PassThroughChimneyIm] = [PassThroughChimneyIm(f"im{i}-{name}") for i in range(ims)]
    mon = MonitoringIm(f"monitor-{name}", max_records=monitor_max_records) if monitor else None
    if mon is not None:
        stacked.append(mon)
    for im in stacked:
        adapter = ndis.add_im(im, adapter, f"{im.name}-vm")
    host = HostStack(scheduler, "chimney")
    binding = NdisHostBinding(host, params=NdisTcpConnectionOffloadParameters(ticks_per_second=ticks_per_second))
    binding.attach(ndis, adapter, mac=nic.mac, addresses=[address], mtu=port.mtu, name=name)
    manager = OffloadManager(host, binding, policy)
    return TapOffloadHost(host, ndis, target, binding, manager, v, tuple(stacked), mon)


def start_app(host: HostStack, app: str, port: int, root: Path | None) -> apps.Server:
    if app == "echo":
        return apps.echo_server(host, port)
    if app == "discard":
        return apps.discard_server(host, port)
    return apps.HttpServer(host, port, root).start()


@dataclass
class ServeOptions:
    app: str = "http"
    root: Path | None = None
    policy: str = "always"
    port: int | None = None
    netns: str = DEFAULT_NS
    tap: str = DEFAULT_TAP
    duration_s: float | None = None
    linux_addr: str = DEFAULT_LINUX_ADDR
    our_addr: str = DEFAULT_OUR_ADDR
    ims: int = 0  # pass-through chimney IMs in the binding
    monitor: bool = False  # a MonitoringIm on top of them
    pcap: Path | None = None  # capture of the TAP side (".pcap" classic, otherwise pcapng)

    def check(self) -> None:
        """Refuse what `serve` could not honour, before any namespace is created."""
        if not 0 <= self.ims <= MAX_IMS:
            raise ValueError(f"--ims must be between 0 and {MAX_IMS}, not {self.ims}")
        if self.pcap is not None and not self.pcap.parent.is_dir():
            raise ValueError(f"--pcap {self.pcap}: {self.pcap.parent} is not a directory")


@dataclass
class ServeSummary:
    connections: int = 0
    offloads: int = 0
    uploads: int = 0
    offloaded_at_exit: int = 0
    target_tx_frames: int = 0  # every frame through the NIC: the host's own (normal path) and offloaded
    target_tx_bytes: int = 0
    offloaded_segments_out: int = 0  # TCP segments the target built for offloaded connections
    offloaded_payload_out: int = 0  # their TCP payload bytes (retransmissions included)
    send_completed: int = 0
    indications: int = 0
    verifier_violations: int = 0
    violation_rules: list[str] = field(default_factory=list)
    leaks: str = ""
    stopped_by: str = ""
    ims: int = 0
    im_problems: list[str] = field(default_factory=list)
    monitor_totals: dict[str, int] = field(default_factory=dict)  # NDIS handler name -> records
    captured_frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Watcher:
    """Reports connections appearing, being offloaded / uploaded and going away (polled)."""

    def __init__(self, node: TapOffloadHost, emit: Callable[[str], None], t0: int) -> None:
        self.node = node
        self.emit = emit
        self.t0 = t0
        self.seen: dict[Tcb, int] = {}
        self.last_seen: tuple[Any, ...] | None = None
        self.next_id = 1

    def _name(self, tcb: Tcb) -> str:
        n = self.seen.get(tcb)
        if n is None:
            n = self.seen[tcb] = self.next_id
            self.next_id += 1
        return f"conn {n} {ipaddress.ip_address(tcb.remote)}:{tcb.remote_port}"

    def _t(self, ns: int) -> str:
        return f"[{(ns - self.t0) / NS_PER_S:8.3f}s]"

    def _new_history(self) -> list[tuple[int, str, Tcb, str]]:
        """Entries appended since the last poll (the manager keeps a bounded deque: find the last one seen
        by identity, walking back from the newest)."""
        new: list[tuple[int, str, Tcb, str]] = []
        for entry in reversed(self.node.manager.history):
            if entry is self.last_seen:
                break
            new.append(entry)
        if new:
            self.last_seen = new[0]
        new.reverse()
        return new

    def poll(self) -> None:
        m = self.node.manager
        now = m.scheduler.now
        new = self._new_history()
        first_at: dict[Tcb, int] = {}
        for t, _kind, tcb, _detail in new:
            first_at.setdefault(tcb, t)
        live = set()
        for tcb in m.transport.connections():
            live.add(tcb)
            if tcb not in self.seen:
                # Seen by polling: stamped no later than its first hand-over, so the lines stay in order.
                self.emit(f"{self._t(min(now, first_at.get(tcb, now)))} {self._name(tcb)} connected (host stack)")
        for t, kind, tcb, detail in new:
            if kind == "offload":
                self.emit(f"{self._t(t)} {self._name(tcb)} offloaded to the target ({detail})")
            else:
                reason, _, state = detail.rpartition(":")
                self.emit(f"{self._t(t)} {self._name(tcb)} uploaded to the host stack (reason {reason}, {state})")
        for tcb in [t for t in self.seen if t not in live]:
            self.emit(f"{self._t(now)} {self._name(tcb)} closed")
            del self.seen[tcb]


def serve(opts: ServeOptions, emit: Callable[[str], None] = print) -> ServeSummary:
    """Create the namespace + TAP, serve `opts.app` until Ctrl-C / SIGTERM / `duration_s`, tear down."""
    policy = parse_policy(opts.policy)
    opts.check()
    port_no = opts.port if opts.port is not None else DEFAULT_PORTS[opts.app]
    linux_if = ipaddress.ip_interface(opts.linux_addr)
    our_cidr = f"{ipaddress.ip_address(opts.our_addr)}/{linux_if.network.prefixlen}"
    summary = ServeSummary(ims=opts.ims)
    capture: Capture | None = None
    # The scheduler outlives the topology: closing the TAP port unregisters its fd from the scheduler.
    with RealTimeScheduler() as sched, \
            TapTopology(opts.netns, tap_name=opts.tap, linux_addr=opts.linux_addr, our_addr=opts.our_addr) as topo, \
            ExitStack() as cleanup:
        port = topo.port(sched)
        if opts.pcap is not None:
            capture = Capture(opts.pcap, sched)
            cleanup.callback(capture.close)  # also when building the host fails (close is idempotent)
            capture.attach(port, name=opts.tap)
        node = build_tap_offload_host(sched, port, our_cidr, policy=policy, ims=opts.ims, monitor=opts.monitor)
        server = start_app(node.host, opts.app, port_no, opts.root)
        watcher = _Watcher(node, emit, sched.now)
        _instructions(emit, opts, topo, port_no)
        deadline = time.monotonic() + opts.duration_s if opts.duration_s is not None else None
        try:
            # Bounded by the deadline or Ctrl-C/SIGTERM (TapTopology turns SIGTERM into SystemExit).
            while deadline is None or time.monotonic() < deadline:
                sched.run_until(until=sched.now + POLL_NS)
                watcher.poll()
            summary.stopped_by = "duration"
        except KeyboardInterrupt:
            summary.stopped_by = "interrupt"
        except SystemExit:
            summary.stopped_by = "signal"
        finally:
            server.close()
            try:
                _wind_down(node, sched, watcher, summary)
            finally:
                if capture is not None:
                    summary.captured_frames = capture.packets
                    capture.close()
    if node.monitor is not None:
        emit(node.monitor.summary())
    if capture is not None:
        emit(f"{summary.captured_frames} frames captured into {opts.pcap}")
    emit(f"namespace {opts.netns} and its TAP removed")
    return summary


def _wind_down(node: TapOffloadHost, sched: RealTimeScheduler, watcher: _Watcher, summary: ServeSummary) -> None:
    """Take every offloaded connection back (UPLOAD_ALL path) before the adapter halts, then count."""
    m = node.manager
    summary.offloaded_at_exit = len(m.offloaded())
    if m.paths:
        m.upload_all("shutdown")
        sched.run_until(until=sched.now + DRAIN_NS, predicate=lambda: not m.paths and not m.busy())
    watcher.poll()
    summary.connections = watcher.next_id - 1
    summary.offloads = sum(1 for h in m.history if h[1] == "offload")
    summary.uploads = sum(1 for h in m.history if h[1] == "upload")
    tc = node.target.counters
    summary.target_tx_frames = node.target.nic.tx_frames
    summary.target_tx_bytes = node.target.nic.tx_bytes
    ip4, ip6 = node.target.ip_stats
    summary.offloaded_segments_out = ip4.out_requests + ip6.out_requests
    # out_octets count IP + TCP headers (20 + 20, or 40 + 20 for IPv6; the target sends no IP options).
    summary.offloaded_payload_out = ip4.out_octets - 40 * ip4.out_requests + ip6.out_octets - 60 * ip6.out_requests
    summary.send_completed = tc["send_completed"]
    summary.indications = tc["ind_calls"]
    if node.monitor is not None:
        summary.monitor_totals = dict(sorted(node.monitor.totals().items()))
    if not m.paths:
        summary.im_problems = node.im_audit()
        node.ndis.halt_adapter(node.ndis.adapters[0])
        text = node.leak_report()
        summary.leaks = "" if text == "no live NBLs (all owners)" else text
    else:
        summary.leaks = f"{len(m.paths)} connection(s) still offloaded after {DRAIN_NS // NS_PER_MS} ms"
    v = node.verifier.violations  # counted last: the IM audit reports through the verifier
    summary.verifier_violations = len(v)
    summary.violation_rules = [f"{x.rule_id}: {x}" for x in v[:20]]


def _instructions(emit: Callable[[str], None], opts: ServeOptions, topo: TapTopology, port: int) -> None:
    ns = opts.netns
    who = f"{topo.our_ip}:{port}"
    emit(f"serving {opts.app} on {who} (offload policy {opts.policy}); Linux is {topo.linux_if} in namespace {ns}")
    if opts.ims or opts.monitor:
        below = ["target"] + [f"pass-through IM x{opts.ims}"] * bool(opts.ims) + ["monitoring IM"] * opts.monitor
        emit(f"  binding: host stack -> {' -> '.join(reversed(below))}")
    if opts.app == "http":
        suffix = "" if port == 80 else f":{port}"
        emit(f"  try: ip netns exec {ns} curl -o /dev/null http://{topo.our_ip}{suffix}/bytes/1000000")
    elif opts.app == "echo":
        emit(f"  try: ip netns exec {ns} bash -c 'echo hello | nc -q1 {topo.our_ip} {port}'")
    else:
        emit(f"  try: ip netns exec {ns} bash -c 'head -c 10000000 /dev/zero | nc -q1 {topo.our_ip} {port}'")
    emit("  stop with Ctrl-C" + (f" (or after {opts.duration_s:g} s)" if opts.duration_s is not None else ""))


__all__ = [
    "MAX_IMS",
    "ServeOptions",
    "ServeSummary",
    "TapImChecks",
    "TapOffloadHost",
    "build_tap_offload_host",
    "parse_app",
    "parse_policy",
    "serve",
    "start_app",
]
