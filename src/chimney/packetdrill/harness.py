"""The packetdrill harness: a simulated host stack behind a capturing `Port`, script-side addressing,
stack configuration from script options/shell lines, and the pluggable connection mode step.

`ScriptPort` captures every TCP frame our stack sends and answers its ARP/neighbor solicitations for
the script's remote address (so resolution never shows up as script-visible packets or delay).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from chimney.host.socket import Socket
from chimney.host.stack import HostStack
from chimney.links.base import Port
from chimney.net.arp import ARP_REPLY, ARP_REQUEST
from chimney.net.frame import (
    encode_arp_frame,
    encode_ipv4_frame,
    encode_ipv6_frame,
    encode_tcp_frame,
    parse_frame,
)
from chimney.net.icmpv6 import ND_NEIGHBOR_SOLICIT, NH_ICMPV6, build_neighbor_advert
from chimney.net.tcp import TcpSegment, tcp_checksum
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.tcp import TcpConfig, linux_profile

# Script addresses (198.18.0.0/15 and 2001:2::/48 only); packetdrill's defaults are elsewhere.
LOCAL_V4, REMOTE_V4 = "198.18.0.1", "198.18.0.2"
LOCAL_V6, REMOTE_V6 = "2001:2::1", "2001:2::2"
LOCAL_PORT = 8080  # what bind(fd, ..., ...) binds and connect(fd, ..., ...) connects to
REMOTE_PORT = 40000  # the script side's port of a passive connection
REMOTE_MAC = bytes.fromhex("020000000002")
ALLOWED_V4 = ipaddress.ip_network("198.18.0.0/15")
ALLOWED_V6 = ipaddress.ip_network("2001:2::/48")


def check_script_address(text: str, ipv6: bool) -> str | None:
    """None if `text` may be used as a script address (198.18.0.0/15 or 2001:2::/48), else why not."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not an IP address"
    net = ALLOWED_V6 if ipv6 else ALLOWED_V4
    if a.version != net.version or a not in net:
        return f"{text} is outside {net}"
    return None
PROFILES = ("rfc", "linux")
_TCP_HDR = struct.Struct("!HHIIBBHHH")


# TcpConfig fields NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS carries (per adapter, R-INIT-12).
ADAPTER_SETTINGS = frozenset(
    {"delayed_ack", "delack_timeout_ns", "ack_frequency", "max_retransmissions", "dupack_threshold"}
)


def adapter_parameters(cfg: TcpConfig) -> Any:
    """The adapter-wide offload parameters for the stack's settings (delayed ACK, retry limit, dupACK
    threshold), re-sent when a script's sysctls change them."""
    from chimney.host.ndis_binding import offload_parameters

    return offload_parameters(cfg, ticks_per_second=1000)


def profile_config(name: str) -> TcpConfig:
    """`rfc`: our RFC defaults (`TcpConfig()`); `linux`: `linux_profile()` with Linux's socket option
    semantics too (SO_RCVBUF/SO_SNDBUF doubled, TCP_MAXSEG limits), as scripts written for Linux assume."""
    if name == "linux":
        return linux_profile(linux_sockopts=True)
    if name == "rfc":
        return TcpConfig()
    raise ValueError(f"unknown profile {name!r} (want one of {', '.join(PROFILES)})")


class ScriptPort(Port):
    """The wire as the script sees it: outbound TCP frames are queued as (time_ns, segment, frame)."""

    __slots__ = ("captured", "remote_ip", "sched")

    def __init__(self, sched: SimScheduler, remote_ip: bytes, mtu: int) -> None:
        super().__init__("pd0", mtu=mtu, mac=bytes.fromhex("020000000001"))
        self.sched = sched
        self.remote_ip = remote_ip
        self.captured: list[tuple[int, TcpSegment, bytes]] = []

    def _transmit(self, frame: bytes, meta: str | None) -> None:
        f = parse_frame(frame, verify_checksums=True)
        if not hasattr(f, "l3"):
            raise AssertionError(f"our stack sent an unparseable frame: {f!r}")
        if f.tcp is not None:  # type: ignore[union-attr]
            self.captured.append((self.sched.now, f.tcp, frame))  # type: ignore[union-attr]
            return
        a = f.arp  # type: ignore[union-attr]
        if a is not None and a.op == ARP_REQUEST and a.target_ip == self.remote_ip:
            reply = encode_arp_frame(ARP_REPLY, REMOTE_MAC, a.target_ip, a.sender_ip, target_mac=a.sender_mac)
            self.sched.call_soon(self.deliver, reply)
            return
        m = f.icmp6 if f.ip_version == 6 else None  # type: ignore[union-attr]
        if m is not None and m.type == ND_NEIGHBOR_SOLICIT and m.target == self.remote_ip:
            src = f.ip_src  # type: ignore[union-attr]
            na = build_neighbor_advert(self.remote_ip, src, self.remote_ip, REMOTE_MAC, solicited=True)
            reply = encode_ipv6_frame(REMOTE_MAC, f.eth_src, self.remote_ip, src, NH_ICMPV6, na,  # type: ignore[union-attr]
                                      hop_limit=255)
            self.sched.call_soon(self.deliver, reply)


@dataclass
class Harness:
    """One script run's world: scheduler, stack, port, addresses, fd table and the script flow."""

    sched: SimScheduler
    stack: HostStack
    port: ScriptPort
    ipv6: bool
    local_ip: str
    remote_ip: str
    local_mac: bytes
    fds: dict[int, Socket] = field(default_factory=dict)
    nonblocking: set[int] = field(default_factory=set)
    local_port: int = LOCAL_PORT
    remote_port: int = REMOTE_PORT
    notes: list[str] = field(default_factory=list)
    stayed_on_host: list[str] = field(default_factory=list)  # offload mode: why connections were kept
    never_offloaded: list[str] = field(default_factory=list)  # offload mode: established, never offloaded
    manager: Any = None  # chimney.host.chimney.OffloadManager in offload mode
    ndis: Any = None

    @classmethod
    def create(cls, seed: int, cfg: TcpConfig, ipv6: bool, mtu: int = 1500, *, offload: bool = False,
               local_ip: str | None = None, remote_ip: str | None = None) -> Harness:
        """The host stack on the script's wire; with `offload`, bound through NDIS to an offload target
        whose emulated NIC is that wire (the script then sees whichever side sends)."""
        sched = SimScheduler(seed)
        local, remote = (LOCAL_V6, REMOTE_V6) if ipv6 else (LOCAL_V4, REMOTE_V4)
        local, remote = local_ip or local, remote_ip or remote
        port = ScriptPort(sched, ipaddress.ip_address(remote).packed, mtu)
        stack = HostStack(sched, "pd", tcp_config=cfg)
        cidr = f"{local}/{ALLOWED_V6.prefixlen}" if ipv6 else f"{local}/{ALLOWED_V4.prefixlen}"
        manager = ndis = None
        if offload:
            manager, ndis, mac = _offload_world(sched, stack, port, cidr)
        else:
            mac = stack.attach(port, addresses=[cidr]).mac
        sched.run_until(sched.now)  # address announcements (ignored by the port)
        return cls(sched, stack, port, ipv6, local, remote, mac, manager=manager, ndis=ndis)

    @property
    def config(self) -> TcpConfig:
        return self.stack.tcp.config

    def set_config(self, **changes: object) -> None:
        """New sockets (and listeners created later) use the changed defaults, as sysctls do. In offload
        mode a change of an adapter-wide setting (delayed ACK, retransmission limit, dupACK threshold) is
        handed to the target as new NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS (R-INIT-11/12: they apply to
        every connection offloaded from then on), as a host re-sets them when its global settings change."""
        cfg = self.stack.tcp.config = self.stack.tcp.config.replace(**changes)
        if self.manager is not None and set(changes) & ADAPTER_SETTINGS:
            binding = self.manager.binding
            binding.params = adapter_parameters(cfg)
            binding.negotiate()

    def inject(self, seg: TcpSegment, option_bytes: bytes | None = None) -> None:
        """Deliver `seg` from the script side. `option_bytes` (padded to 4) replaces `seg.options` so the
        options reach the stack exactly as the script lists them (order, NOPs, EOL)."""
        src = ipaddress.ip_address(self.remote_ip).packed
        dst = ipaddress.ip_address(self.local_ip).packed
        if option_bytes is None:
            frame = encode_tcp_frame(seg, eth_src=REMOTE_MAC, eth_dst=self.local_mac, ip_src=src, ip_dst=dst)
        else:
            hl = 20 + len(option_bytes)
            l4 = bytearray(hl + len(seg.payload))
            _TCP_HDR.pack_into(l4, 0, seg.src_port, seg.dst_port, seg.seq, seg.ack, hl << 2, seg.flags, seg.window,
                               0, seg.urg_ptr)
            l4[20:hl] = option_bytes
            l4[hl:] = seg.payload
            struct.pack_into("!H", l4, 16, tcp_checksum(src, dst, l4))
            enc = encode_ipv6_frame if self.ipv6 else encode_ipv4_frame
            frame = enc(REMOTE_MAC, self.local_mac, src, dst, 6, bytes(l4))
        self.port.deliver(frame)

    def alloc_fd(self) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        return fd


# -- shell lines: sysctl / ip route settings mapped onto TcpConfig -------------------------------------

_SYSCTL_BOOL = {
    "net.ipv4.tcp_sack": "sack",
    "net.ipv4.tcp_dsack": "dsack",
    "net.ipv4.tcp_timestamps": "timestamps",
    "net.ipv4.tcp_window_scaling": "window_scaling",
    "net.ipv4.tcp_rfc1337": "rfc1337",
    "net.inet.tcp.sack.enable": "sack",
    "net.inet.tcp.delayed_ack": "delayed_ack",
}
_SYSCTL_INT = {
    "net.ipv4.tcp_syn_retries": ("syn_retries", 1),
    "net.ipv4.tcp_synack_retries": ("synack_retries", 1),
    "net.ipv4.tcp_retries2": ("max_retransmissions", 1),
    "net.ipv4.tcp_keepalive_time": ("keepalive_idle_ns", NS_PER_S),
    "net.ipv4.tcp_keepalive_intvl": ("keepalive_interval_ns", NS_PER_S),
    "net.ipv4.tcp_keepalive_probes": ("keepalive_count", 1),
    "net.ipv4.tcp_fin_timeout": ("fin_wait2_timeout_ns", NS_PER_S),
    "net.ipv4.tcp_challenge_ack_limit": ("challenge_ack_limit", 1),
    "net.ipv4.tcp_reordering": ("dupack_threshold", 1),
    "net.inet.tcp.delacktime": ("delack_timeout_ns", NS_PER_MS),
    "net.inet.tcp.initcwnd_segments": ("initial_window", 1),
    "net.inet.tcp.recvspace": ("rcv_buf", 1),
    "net.inet.tcp.sendspace": ("snd_buf", 1),
    "net.inet.tcp.rexmit_min": ("rto_min_ns", NS_PER_MS),
    "net.inet.tcp.msl": ("msl_ns", NS_PER_MS),
    "net.inet.tcp.keepidle": ("keepalive_idle_ns", NS_PER_MS),
    "net.inet.tcp.keepintvl": ("keepalive_interval_ns", NS_PER_MS),
    "net.inet.tcp.keepcnt": ("keepalive_count", 1),
}
# Settings with nothing to change here (no metrics cache, no host cache, offloads absent): accepted.
_SYSCTL_NOOP = {
    "net.ipv4.tcp_no_metrics_save", "net.inet.tcp.hostcache.purgenow", "net.inet.tcp.hostcache.purge",
    "net.ipv4.tcp_min_tso_segs", "net.ipv4.tcp_autocorking", "net.ipv4.tcp_moderate_rcvbuf",
    "net.ipv4.tcp_slow_start_after_idle", "net.inet.tcp.tso", "net.ipv4.tcp_tso_win_divisor",
}


def apply_shell(h: Harness, command: str) -> list[str]:
    """Run one backtick line's commands against the stack; returns notes ("ignored: <cmd>" for the rest)."""
    notes: list[str] = []
    for cmd in (c.strip() for c in re.split(r"[;\n]|&&", command)):
        if not cmd:
            continue
        try:
            words = shlex.split(cmd)
        except ValueError:
            notes.append(f"ignored: {cmd}")
            continue
        if words and words[0] == "sysctl":
            for w in words[1:]:
                if w.startswith("-"):
                    continue
                if "=" not in w:
                    notes.append(f"ignored: sysctl {w}")
                    continue
                key, _, val = w.partition("=")
                if not _apply_sysctl(h, key.strip(), val.strip()):
                    notes.append(f"ignored: sysctl {key}={val}")
        elif len(words) >= 3 and words[0] == "ip" and words[1] == "route" and "initcwnd" in words:
            i = words.index("initcwnd")
            h.set_config(initial_window=int(words[i + 1]))
        else:
            notes.append(f"ignored: {cmd}")
    return notes


def _apply_sysctl(h: Harness, key: str, val: str) -> bool:
    key = key.replace("/", ".")
    if key in _SYSCTL_BOOL:
        h.set_config(**{_SYSCTL_BOOL[key]: int(val) != 0})
        return True
    if key == "net.inet.tcp.rfc1323":  # FreeBSD: both window scaling and timestamps
        on = int(val) != 0
        h.set_config(window_scaling=on, timestamps=on)
        return True
    if key in _SYSCTL_INT:
        name, unit = _SYSCTL_INT[key]
        h.set_config(**{name: int(val) * unit})
        return True
    if key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        parts = val.replace('"', "").split()
        if len(parts) != 3:
            return False
        h.set_config(**{"rcv_buf" if key.endswith("rmem") else "snd_buf": int(parts[1])})
        return True
    if key == "net.ipv4.tcp_congestion_control" and val in ("reno", "cubic"):
        h.set_config(congestion_control="newreno" if val == "reno" else "cubic")
        return True
    if key == "net.ipv4.tcp_ecn":
        return int(val) == 0  # ECN is not implemented: only "off" is honoured
    return key in _SYSCTL_NOOP


# -- connection modes ------------------------------------------------------------------------------


class ModeStep(Protocol):
    """What a mode does to a connection: `host` nothing; `offload` hands it to the offload target when
    it is established (or at a `chimney_offload` marker), flushing an owed delayed ACK (R-TMR-04)."""

    name: str

    def available(self) -> str | None:
        """None when the mode can run, else why not (the script reports it as unsupported)."""
        ...

    def after_event(self, h: Harness) -> None:
        """Called after every script event (offload mode offloads newly established connections)."""
        ...

    def at_marker(self, h: Harness, sock: Socket) -> None: ...

    def finish(self, h: Harness) -> None:
        """Called once the script ended (offload mode reports connections it never offloaded)."""
        ...


class HostMode:
    name = "host"

    def available(self) -> str | None:
        return None

    def after_event(self, h: Harness) -> None:
        return None

    def at_marker(self, h: Harness, sock: Socket) -> None:
        # The host alone hands nothing over: a pending delayed ACK stays pending (its timer or the next
        # segment sends it). Only an offload flushes it (R-TMR-04), so the two modes' wire differs here
        # and scripts state that with `@offload` / `@host` lines.
        return None

    def finish(self, h: Harness) -> None:
        return None


class OffloadMode:
    """Hands each connection to the offload target (`chimney.host.chimney.OffloadManager`) as soon as it
    is established, or only at `chimney_offload` markers when the script has any. The host flushes a
    delayed ACK it owes at the hand-over (R-TMR-04), as a real host does: the script sees that ACK in
    offload mode only (`@offload` lines). A connection the host keeps, or takes back, because the chimney
    cannot carry one of its settings is reported in `Harness.stayed_on_host` (the script still has to
    pass, on the host engine); an established connection that was never offloaded for any other reason
    in `Harness.never_offloaded` ("never offloaded: <why>")."""

    name = "offload"

    def __init__(self) -> None:
        self.markers_only = False
        self.tried: set[object] = set()
        self.reported: set[object] = set()  # connections whose "stayed on host" reason is in the result
        self.established: dict[object, None] = {}  # every connection seen established, in order
        self.not_started: dict[object, str] = {}  # tried, but the manager did not start the offload

    def available(self) -> str | None:
        import importlib.util

        for mod in ("chimney.host.chimney", "chimney.target"):
            if importlib.util.find_spec(mod) is None:
                return "offload mode (no offload target available)"
        return None

    def after_event(self, h: Harness) -> None:
        self._report_kept(h)
        for tcb in h.stack.tcp.connections():
            if tcb.established and not tcb.closed:
                self.established.setdefault(tcb)
                # At once, even with a delayed ACK owed: the manager flushes it at the export (R-TMR-04).
                if not self.markers_only and tcb not in self.tried:
                    self._offload(h, tcb)

    def at_marker(self, h: Harness, sock: Socket) -> None:
        if sock.tcb is None:
            raise OffloadError("chimney_offload: the socket has no connection")
        self._offload(h, sock.tcb)
        if not h.manager.is_offloaded(sock.tcb):
            why = h.manager.declined.get(sock.tcb)
            raise OffloadError(f"chimney_offload: the connection was not offloaded ({sock.tcb!r})"
                               + (f": {why}" if why else ""))

    def _report_kept(self, h: Harness) -> None:
        """Connections the host kept (or took back) because the chimney cannot carry a setting."""
        for tcb, why in h.manager.declined.items():
            if tcb not in self.reported:
                self.reported.add(tcb)
                h.stayed_on_host.append(why)
                h.notes.append(f"stayed on host: {why}")

    def _offload(self, h: Harness, tcb: Any) -> None:
        self.tried.add(tcb)
        mgr = h.manager
        if not mgr.offload(tcb):
            if tcb in mgr.declined:
                self._report_kept(h)
                return
            why = f"the offload was not started ({_not_started_why(mgr, tcb)})"
            self.not_started[tcb] = why
            h.notes.append(f"offload not started for {tcb!r} (state {tcb.state.name})")
            return
        # The hand-over is a chain of NDIS calls and completions at this same virtual instant.
        h.sched.run_until(until=h.sched.now, predicate=lambda: not mgr.busy())
        if not mgr.is_offloaded(tcb):
            h.notes.append(f"offload of {tcb!r} did not complete at once")


    def finish(self, h: Harness) -> None:
        """Each connection that was established but never offloaded, and not kept on the host for a
        setting the chimney cannot carry (`stayed_on_host`), goes to `never_offloaded` with the reason."""
        self._report_kept(h)
        mgr = h.manager
        done = {id(t) for _, kind, t, _ in mgr.history if kind == "offload"}
        for tcb in self.established:
            if id(tcb) in done or mgr.is_offloaded(tcb) or tcb in mgr.declined or tcb in self.reported:
                continue
            if tcb in self.not_started:
                why = self.not_started[tcb]
            elif tcb in self.tried:
                why = "the offload did not complete"
            elif self.markers_only:
                why = "the script's chimney_offload markers did not reach it"
            else:
                why = "not offloadable at any event while it was established"
            h.never_offloaded.append(f"{tcb!r}: {why}")
            h.notes.append(f"never offloaded: {tcb!r}: {why}")


def _not_started_why(mgr: Any, tcb: Any) -> str:
    """Why `OffloadManager.offload` took no node for `tcb`, as far as the manager's state shows it."""
    if not mgr.binding.chimney_ready:
        return "the chimney binding is not ready"
    if mgr.power_low:
        return "the adapter is in a low-power state"
    if mgr.upload_all_active:
        return "an upload of all connections is in progress"
    return f"state {tcb.state.name}"


class OffloadError(Exception):
    """The offload step could not be carried out (reported as a script failure)."""


def _offload_world(sched: SimScheduler, stack: HostStack, port: ScriptPort, cidr: str) -> tuple[Any, Any, bytes]:
    from chimney.host.chimney import HostChimneyChecks, OffloadManager
    from chimney.host.ndis_binding import NdisHostBinding
    from chimney.host.policy import OffloadPolicy
    from chimney.ndis.core import Ndis
    from chimney.ndis.verifier import Mode, Verifier
    from chimney.target import EmulatedNic, OffloadTarget, TargetLimits

    ndis = Ndis(sched, Verifier(Mode.STRICT), checks=HostChimneyChecks)
    nic = EmulatedNic(port)
    # The target's firmware behaves as the profile's stack does where no chimney field reaches it
    # (Nagle variant, probe style, RST forms, rate limits, FIN_WAIT_2 timeout): the NIC set up for this host.
    target = OffloadTarget("toe-pd", nic, sched, TargetLimits(), engine_defaults=stack.tcp.config)
    ndis.register_miniport_driver(target)
    adapter = ndis.add_adapter(target, "nic-pd")
    # R-INIT-12: the target's delayed ACK (TcpDelayedAckTicks / TcpAckFrequency) follows the profile's TcpConfig.
    binding = NdisHostBinding(stack, params=adapter_parameters(stack.tcp.config))
    binding.attach(ndis, adapter, mac=nic.mac, addresses=[cidr], mtu=port.mtu)
    # The NIC was set up for the stack's settings at bind time: a connection whose settings the chimney
    # cannot carry differ from those (a later sysctl or socket option) stays on the host
    # (OffloadPolicy.baseline), with the reason. Unread data stays at the
    # target, so its window closes as the host engine's would (hold_unread_at_target).
    policy = OffloadPolicy.explicit()
    policy.baseline = stack.tcp.config
    return OffloadManager(stack, binding, policy, hold_unread_at_target=True), ndis, nic.mac


def mode_step(name: str) -> ModeStep:
    if name == "host":
        return HostMode()
    if name == "offload":
        return OffloadMode()
    raise ValueError(f"unknown mode {name!r}")


__all__ = [
    "LOCAL_PORT",
    "PROFILES",
    "REMOTE_PORT",
    "Harness",
    "HostMode",
    "ModeStep",
    "OffloadError",
    "OffloadMode",
    "ScriptPort",
    "apply_shell",
    "check_script_address",
    "mode_step",
    "profile_config",
]
