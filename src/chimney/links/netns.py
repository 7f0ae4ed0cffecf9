"""Network namespaces as test beds: `NetNamespace`, `TapTopology` (Linux <-> our stack over a TAP)
and `VethTopology` (Linux <-> Linux reference), with tc impairments and guaranteed teardown.

Everything here lives in namespaces this process creates; the host's own interfaces, routes and
namespaces are never touched. The TAP is created directly inside its namespace (the /dev/net/tun fd
is opened by a thread that entered the namespace, see `tap.run_in_netns`), so it never appears in
the root namespace. Addresses come only from the benchmarking ranges: 198.18.0.0/15 (RFC 2544) and
2001:2::/48 (RFC 5180).

Teardown is unconditional: `__exit__` kills the processes started with `popen`, closes the TAP
(its fd pins the namespace) and deletes the namespaces even when the body raised; SIGTERM/SIGHUP
are turned into SystemExit while a topology is open so they unwind through `__exit__` too (SIGINT
already raises KeyboardInterrupt), and the previous handlers are restored afterwards. An atexit hook
removes anything still registered if the interpreter exits without unwinding.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any

from chimney.links.tap import NETNS_RUN_DIR, TUN_PATH, TapDevice, TapPort, run_in_netns

DEFAULT_NS = "chimney"
DEFAULT_TAP = "chimney0"
DEFAULT_LINUX_ADDR = "198.18.0.1/24"
DEFAULT_OUR_ADDR = "198.18.0.2"
DEFAULT_LINUX_ADDR6 = "2001:2::1/64"
DEFAULT_OUR_ADDR6 = "2001:2::2"
#: Locally administered unicast MAC for our stack's end of the TAP (02:.. bit set, 198.18.0.2 in the tail).
DEFAULT_OUR_MAC = bytes.fromhex("02c612000002")

_V4_ALLOWED = ipaddress.ip_network("198.18.0.0/15")
_V6_ALLOWED = ipaddress.ip_network("2001:2::/48")
_CMD_TIMEOUT = 10.0

_counter = itertools.count()
_live: dict[str, NetNamespace] = {}
_live_lock = threading.Lock()


class NetnsError(RuntimeError):
    """A namespace/ip/tc operation failed; the message carries the command and its stderr."""


class ImpairmentUnsupported(NetnsError):
    """The kernel refuses the requested qdisc (e.g. built without CONFIG_NET_SCH_NETEM)."""


def run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = _CMD_TIMEOUT, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; failures raise NetnsError with stderr."""
    try:
        cp = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input, check=False)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{shlex.join(cmd)}: timed out after {timeout} s") from e
    except FileNotFoundError as e:
        raise NetnsError(f"{cmd[0]}: command not found") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{shlex.join(cmd)} failed ({cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def unique_name(prefix: str = "chimney-test") -> str:
    """A namespace name unique to this process: `<prefix>-<pid>-<n>`."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def check_address(addr: str) -> None:
    """Refuse addresses outside the benchmarking ranges (198.18.0.0/15, 2001:2::/48)."""
    ip = ipaddress.ip_interface(addr).ip
    allowed = _V4_ALLOWED if ip.version == 4 else _V6_ALLOWED
    if ip not in allowed:
        raise ValueError(f"address {addr} is outside the benchmarking range {allowed}")


@functools.cache
def kernel_supports_netns() -> tuple[bool, str]:
    """(True, "") when namespaces and TAPs can be created here, else (False, why the kernel refused)."""
    if os.geteuid() != 0:
        return False, "needs root (CAP_NET_ADMIN) to create network namespaces and TAP devices"
    if not os.path.exists(TUN_PATH):
        return False, f"{TUN_PATH} missing: kernel without TUN/TAP"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' command not found"
    probe = unique_name("chimney-probe")
    try:
        run(["ip", "netns", "add", probe])
    except NetnsError as e:
        return False, f"'ip netns add' refused: {e}"
    try:
        TapDevice("probe0", netns=probe).close()
    except OSError as e:
        return False, f"cannot create a TAP inside a namespace: {e}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return True, ""


@functools.cache
def kernel_supports_netem() -> tuple[bool, str]:
    """Whether tc netem works (many minimal kernels lack CONFIG_NET_SCH_NETEM)."""
    ok, why = kernel_supports_netns()
    if not ok:
        return ok, why
    if shutil.which("tc") is None:
        return False, "iproute2 'tc' command not found"
    with NetNamespace(unique_name("chimney-probe")) as ns:
        ns.ip("link", "set", "lo", "up")
        cp = ns.tc("qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
        if cp.returncode != 0:
            return False, f"kernel refuses the netem qdisc: {cp.stderr.strip()}"
    return True, ""


def netem_args(
    spec: str | Sequence[str] | None = None,
    *,
    loss: float | None = None,
    delay_ms: float | None = None,
    jitter_ms: float | None = None,
    reorder: float | None = None,
    rate: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """tc netem arguments from a raw spec ("loss 1% delay 5ms") and/or keyword settings.

    `reorder` (percent) needs a delay to reorder against, as netem itself requires.
    """
    args = shlex.split(spec) if isinstance(spec, str) else list(spec or ())
    if limit is not None:
        args += ["limit", str(limit)]
    if delay_ms is not None:
        args += ["delay", f"{delay_ms}ms"]
        if jitter_ms is not None:
            args.append(f"{jitter_ms}ms")
    elif jitter_ms is not None:
        raise ValueError("jitter needs a delay")
    if loss is not None:
        if not 0 <= loss <= 100:
            raise ValueError(f"loss {loss}% out of range 0..100")
        args += ["loss", f"{loss}%"]
    if reorder is not None:
        if delay_ms is None and "delay" not in args:
            raise ValueError("netem reorders only against a delay: give delay_ms too")
        args += ["reorder", f"{reorder}%"]
    if rate is not None:
        args += ["rate", rate]
    if not args:
        raise ValueError("empty netem specification")
    return args


def _register(ns: NetNamespace) -> None:
    with _live_lock:
        _live[ns.name] = ns


def _unregister(ns: NetNamespace) -> None:
    with _live_lock:
        _live.pop(ns.name, None)


@atexit.register
def _cleanup_at_exit() -> None:
    with _live_lock:
        leftovers = list(_live.values())
    for ns in leftovers:
        with contextlib.suppress(Exception):
            ns.delete()


class _SignalGuard:
    """Turn SIGTERM/SIGHUP into SystemExit while active so `finally`/`__exit__` run; restores on exit."""

    _SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._saved: list[tuple[int, Any]] = []

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._saved.append((sig, signal.signal(sig, self._raise)))
        return self

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        while self._saved:
            sig, handler = self._saved.pop()
            signal.signal(sig, handler)


_PINGER = r"""
import os, select, socket, struct, sys, time
addr, count, timeout, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
v6 = ":" in addr
fam = socket.AF_INET6 if v6 else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
got = 0
for seq in range(count):
    body = struct.pack("!d", time.time()) + bytes(48)
    t = 128 if v6 else 8
    h = struct.pack("!BBHHH", t, 0, 0, ident, seq)
    c = 0 if v6 else csum(h + body)
    s.sendto(struct.pack("!BBHHH", t, 0, c, ident, seq) + body, (addr, 0))
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]: break
        pkt = s.recv(65535)
        icmp = pkt if v6 else pkt[(pkt[0] & 15) * 4:]
        rt, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        if rt == (129 if v6 else 0) and rid == ident and rseq == seq:
            got += 1; break
    if seq + 1 < count: time.sleep(interval)
print(f"{count} packets transmitted, {got} received")
sys.exit(0 if got else 1)
"""
_RECEIVED_RE = re.compile(r"(\d+) (?:packets )?received")


class NetNamespace:
    """A named network namespace we created (or adopted with `exist_ok`), deleted on exit.

    `keep=True` leaves it in place at `__exit__` and at interpreter exit (for `chimney netns up`).

    `exec` runs a command inside and returns the CompletedProcess; `popen` starts one and tracks
    it so teardown can kill it; `sysctl` writes /proc/sys inside the namespace directly.
    """

    def __init__(self, name: str = DEFAULT_NS, *, exist_ok: bool = False, keep: bool = False) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid namespace name {name!r}")
        self.name = name
        self.exist_ok = exist_ok
        self.keep = keep
        self.created = False
        self._procs: list[subprocess.Popen[Any]] = []

    @classmethod
    def unique(cls, prefix: str = "chimney-test") -> NetNamespace:
        return cls(unique_name(prefix))

    # -- lifetime --------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return os.path.join(NETNS_RUN_DIR, self.name)

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    def create(self) -> NetNamespace:
        if self.exists:
            if not self.exist_ok:
                raise NetnsError(f"network namespace {self.name!r} already exists")
        else:
            run(["ip", "netns", "add", self.name])
            self.created = True
        if not self.keep:
            _register(self)
        self.ip("link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        """Kill our processes inside, then remove the namespace. Idempotent."""
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=2.0)
        self._procs.clear()
        if self.exists:
            run(["ip", "netns", "del", self.name])
        # Only now: if the deletion was interrupted, the atexit hook still knows to retry it.
        _unregister(self)

    def __enter__(self) -> NetNamespace:
        return self.create()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.keep:
            _unregister(self)
            return
        try:
            self.delete()
        except NetnsError:
            if et is None:
                raise

    # -- running things inside -------------------------------------------------------------
    def _argv(self, cmd: Sequence[str] | str) -> list[str]:
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(
        self,
        cmd: Sequence[str] | str,
        *,
        check: bool = True,
        timeout: float = _CMD_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside (a string goes through `sh -c`); raises NetnsError when `check` and it fails."""
        return run(self._argv(cmd), check=check, timeout=timeout, input=input)

    def popen(self, cmd: Sequence[str] | str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `cmd` inside; it is killed at teardown if still running."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(self._argv(cmd), **kwargs)
        self._procs.append(p)
        return p

    def python(self, code: str, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start this interpreter inside the namespace running `code` (for bounded traffic sources)."""
        return self.popen([sys.executable, "-c", code, *args], **kwargs)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, "tc", *args], check=check)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set `key` (dotted, e.g. net.ipv4.ip_forward) inside this namespace."""
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:
                f.write(str(value))

        try:
            run_in_netns(self.name, write)
        except OSError as e:
            raise NetnsError(f"sysctl {key}={value} in {self.name}: {e}") from e

    def get_sysctl(self, key: str) -> str:
        path = "/proc/sys/" + key.replace(".", "/")

        def read() -> str:
            with open(path) as f:
                return f.read().strip()

        return run_in_netns(self.name, read)

    # -- probes ----------------------------------------------------------------------------
    def ping_popen(
        self, addr: str, count: int = 3, timeout_s: float = 1.0, interval_s: float = 0.2
    ) -> subprocess.Popen[str]:
        """Start a Linux-stack ping from inside (`ping` if installed, else a raw-socket pinger)."""
        if not 1 <= count <= 1000:
            raise ValueError(f"ping count {count} out of range 1..1000")
        if shutil.which("ping"):
            cmd = ["ping", "-n", "-c", str(count), "-W", str(max(1, round(timeout_s))), "-i", str(interval_s), addr]
        else:
            cmd = [sys.executable, "-c", _PINGER, addr, str(count), str(timeout_s), str(interval_s)]
        return self.popen(cmd, text=True)

    def ping(self, addr: str, count: int = 3, timeout_s: float = 1.0, interval_s: float = 0.2) -> int:
        """Blocking ping from inside; returns the number of replies. Bounded by count * (timeout + interval)."""
        p = self.ping_popen(addr, count, timeout_s, interval_s)
        return ping_result(p, count * (timeout_s + interval_s) + 5.0)

    def __repr__(self) -> str:
        return f"<NetNamespace {self.name}{'' if self.exists else ' (gone)'}>"


def ping_result(p: subprocess.Popen[str], timeout_s: float = 30.0) -> int:
    """Wait for a `ping_popen` process and return how many replies it got."""
    try:
        out, _ = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    m = _RECEIVED_RE.search(out or "")
    return int(m.group(1)) if m else 0


def _guarded_steps(steps: Sequence[tuple[str, Any]], body_failed: bool) -> None:
    """Run every teardown step even when one fails; report the first failure if the body did not."""
    first: BaseException | None = None
    for _what, fn in steps:
        try:
            fn()
        except Exception as e:
            first = first or e
    if first is not None and not body_failed:
        raise first


class TapTopology:
    """Linux in namespace `ns_name` on one side of a TAP, our stack (through `port()`) on the other.

    Inside the namespace: interface `tap_name` with `linux_addr` (and `linux_addr6` when given),
    up, with optional `routes` (each an `ip route add` argument list, e.g. ["198.19.0.0/16", "via",
    "198.18.0.2"]) and optional netem impairment. IPv6 is disabled on the TAP unless `linux_addr6`
    is set, so no router solicitations or MLD reports show up unasked. With `static_neigh`, Linux
    gets a permanent ARP/ND entry for our address so it never asks.
    """

    def __init__(
        self,
        ns_name: str = DEFAULT_NS,
        *,
        tap_name: str = DEFAULT_TAP,
        linux_addr: str = DEFAULT_LINUX_ADDR,
        our_addr: str = DEFAULT_OUR_ADDR,
        linux_addr6: str | None = None,
        our_addr6: str = DEFAULT_OUR_ADDR6,
        our_mac: bytes = DEFAULT_OUR_MAC,
        mtu: int = 1500,
        vnet_hdr: bool = False,
        vnet_hdr_sz: int = 10,
        offload: int | None = None,
        netem: str | Sequence[str] | None = None,
        routes: Sequence[Sequence[str]] = (),
        static_neigh: bool = False,
        handle_signals: bool = True,
        exist_ok: bool = False,
    ) -> None:
        for a in (linux_addr, our_addr, *((linux_addr6, our_addr6) if linux_addr6 else ())):
            check_address(a)
        if len(our_mac) != 6:
            raise ValueError("our_mac must be 6 bytes")
        self.ns = NetNamespace(ns_name, exist_ok=exist_ok)
        self.tap_name = tap_name
        self.linux_if = ipaddress.ip_interface(linux_addr)
        self.linux_ip = str(self.linux_if.ip)
        self.our_ip = str(ipaddress.ip_address(our_addr))
        self.linux_if6 = ipaddress.ip_interface(linux_addr6) if linux_addr6 else None
        self.linux_ip6 = str(self.linux_if6.ip) if self.linux_if6 else None
        self.our_ip6 = our_addr6 if linux_addr6 else None
        self.our_mac = bytes(our_mac)
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.vnet_hdr_sz = vnet_hdr_sz
        self.offload = offload
        self.netem = netem
        self.routes = [list(r) for r in routes]
        self.static_neigh = static_neigh
        self.tap: TapDevice | None = None
        self.linux_mac = b""
        self._ports: list[TapPort] = []
        self._guard = _SignalGuard() if handle_signals else None

    @classmethod
    def unique(cls, prefix: str = "chimney-test", **kwargs: Any) -> TapTopology:
        return cls(unique_name(prefix), **kwargs)

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> TapTopology:
        if self._guard is not None:
            self._guard.__enter__()
        try:
            self._setup()
        except BaseException:
            self._teardown(body_failed=True)
            raise
        return self

    def _setup(self) -> None:
        ns = self.ns
        ns.create()
        tap = TapDevice(
            self.tap_name,
            netns=ns.name,
            vnet_hdr=self.vnet_hdr,
            vnet_hdr_sz=self.vnet_hdr_sz,
            offload=self.offload,
            mtu=self.mtu,
        )
        self.tap = tap
        self.linux_mac = tap.mac
        configure_linux_side(
            ns,
            self.tap_name,
            str(self.linux_if),
            str(self.linux_if6) if self.linux_if6 else None,
            routes=self.routes,
        )
        if self.static_neigh:
            lladdr = ":".join(f"{b:02x}" for b in self.our_mac)
            ns.ip("neigh", "replace", self.our_ip, "lladdr", lladdr, "nud", "permanent", "dev", self.tap_name)
            if self.our_ip6:
                ns.ip("neigh", "replace", self.our_ip6, "lladdr", lladdr, "nud", "permanent", "dev", self.tap_name)
        if self.netem is not None:
            self.set_netem(self.netem)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._teardown(body_failed=et is not None)

    def close(self) -> None:
        self._teardown(body_failed=False)

    def _teardown(self, body_failed: bool) -> None:
        def close_ports() -> None:
            while self._ports:
                self._ports.pop().close()

        def close_tap() -> None:
            # The TUN fd holds a reference on the namespace: close it first or the namespace
            # (and the interface in it) would outlive `ip netns del`.
            if self.tap is not None:
                self.tap.close()

        def restore_signals() -> None:
            if self._guard is not None:
                self._guard.__exit__()

        _guarded_steps(
            [("ports", close_ports), ("tap", close_tap), ("netns", self.ns.delete), ("signals", restore_signals)],
            body_failed,
        )

    # -- our side --------------------------------------------------------------------------
    def port(self, scheduler: Any, **kwargs: Any) -> TapPort:
        """A `TapPort` on this topology's TAP (closed at teardown); `mac` defaults to `our_mac`."""
        if self.tap is None or self.tap.closed:
            raise NetnsError("topology is not set up")
        kwargs.setdefault("mac", self.our_mac)
        p = TapPort(self.tap, scheduler, **kwargs)
        self._ports.append(p)
        return p

    # -- impairments on the Linux side ------------------------------------------------------
    def set_netem(self, spec: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        """Replace the TAP's root qdisc with netem (see `netem_args`). Affects Linux -> our stack."""
        set_netem(self.ns, self.tap_name, spec, **kwargs)

    def set_rate(self, rate: str, burst: str = "32kb", latency: str = "50ms") -> None:
        """Rate limit Linux -> our stack with tbf (available where netem is not)."""
        set_rate(self.ns, self.tap_name, rate, burst, latency)

    def clear_netem(self) -> None:
        """Back to the default qdisc (also removes a `set_rate` limit)."""
        clear_qdisc(self.ns, self.tap_name)

    def qdisc(self) -> str:
        return self.ns.tc("qdisc", "show", "dev", self.tap_name).stdout

    def __repr__(self) -> str:
        return f"<TapTopology ns={self.ns.name} tap={self.tap_name} linux={self.linux_if} ours={self.our_ip}>"


def configure_linux_side(
    ns: NetNamespace,
    ifname: str,
    addr: str | None,
    addr6: str | None = None,
    *,
    routes: Sequence[Sequence[str]] = (),
    mtu: int | None = None,
) -> None:
    """Addresses, MTU, IPv6 policy, link up and routes for one interface inside `ns`."""
    if mtu is not None:
        ns.ip("link", "set", "dev", ifname, "mtu", str(mtu))
    if addr6 is None:
        ns.sysctl(f"net.ipv6.conf.{ifname}.disable_ipv6", 1)
    else:
        check_address(addr6)
        # No duplicate address detection: the address must be usable the moment the test starts.
        ns.sysctl(f"net.ipv6.conf.{ifname}.accept_dad", 0)
        ns.sysctl(f"net.ipv6.conf.{ifname}.router_solicitations", 0)
        ns.ip("-6", "addr", "add", addr6, "dev", ifname, "nodad")
    if addr is not None:
        check_address(addr)
        ns.ip("addr", "add", addr, "dev", ifname)
    ns.ip("link", "set", "dev", ifname, "up")
    for r in routes:
        ns.ip("route", "add", *r)


def set_netem(ns: NetNamespace, ifname: str, spec: str | Sequence[str] | None = None, **kwargs: Any) -> None:
    args = netem_args(spec, **kwargs)
    cp = ns.tc("qdisc", "replace", "dev", ifname, "root", "netem", *args, check=False)
    if cp.returncode != 0:
        err = cp.stderr.strip()
        if "unknown" in err.lower() and "qdisc" in err.lower():
            raise ImpairmentUnsupported(f"kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): {err}")
        raise NetnsError(f"tc qdisc replace dev {ifname} root netem {shlex.join(args)}: {err}")


def set_rate(ns: NetNamespace, ifname: str, rate: str, burst: str = "32kb", latency: str = "50ms") -> None:
    cp = ns.tc(
        "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", rate, "burst", burst, "latency", latency, check=False
    )
    if cp.returncode != 0:
        err = cp.stderr.strip()
        if "unknown" in err.lower():
            raise ImpairmentUnsupported(f"kernel has no tbf qdisc: {err}")
        raise NetnsError(f"tc tbf on {ifname}: {err}")


def clear_qdisc(ns: NetNamespace, ifname: str) -> None:
    cp = ns.tc("qdisc", "del", "dev", ifname, "root", check=False)
    # Deleting the default qdisc fails harmlessly; that is the state we want anyway.
    if cp.returncode != 0 and "No such file" not in cp.stderr and "Cannot delete qdisc" not in cp.stderr:
        raise NetnsError(f"tc qdisc del dev {ifname} root: {cp.stderr.strip()}")


class VethTopology:
    """Two namespaces joined by a veth pair: Linux-to-Linux reference measurements.

    Namespace `<prefix>-a` holds `veth-a` with `addr_a`, `<prefix>-b` holds `veth-b` with `addr_b`.
    """

    def __init__(
        self,
        prefix: str = "chimney-veth",
        *,
        addr_a: str = "198.18.1.1/24",
        addr_b: str = "198.18.1.2/24",
        mtu: int = 1500,
        handle_signals: bool = True,
    ) -> None:
        check_address(addr_a)
        check_address(addr_b)
        self.a = NetNamespace(f"{prefix}-a")
        self.b = NetNamespace(f"{prefix}-b")
        self.if_a = "veth-a"
        self.if_b = "veth-b"
        self.addr_a = addr_a
        self.addr_b = addr_b
        self.ip_a = str(ipaddress.ip_interface(addr_a).ip)
        self.ip_b = str(ipaddress.ip_interface(addr_b).ip)
        self.mtu = mtu
        self._guard = _SignalGuard() if handle_signals else None

    @classmethod
    def unique(cls, prefix: str = "chimney-veth", **kwargs: Any) -> VethTopology:
        return cls(unique_name(prefix), **kwargs)

    def __enter__(self) -> VethTopology:
        if self._guard is not None:
            self._guard.__enter__()
        try:
            self.a.create()
            self.b.create()
            # Created inside `a` with the peer placed straight into `b`: never in the root namespace.
            self.a.ip("link", "add", self.if_a, "mtu", str(self.mtu), "type", "veth",
                      "peer", "name", self.if_b, "netns", self.b.name, "mtu", str(self.mtu))  # fmt: skip
            configure_linux_side(self.a, self.if_a, self.addr_a)
            configure_linux_side(self.b, self.if_b, self.addr_b)
        except BaseException:
            self._teardown(body_failed=True)
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._teardown(body_failed=et is not None)

    def _teardown(self, body_failed: bool) -> None:
        def restore() -> None:
            if self._guard is not None:
                self._guard.__exit__()

        _guarded_steps([("a", self.a.delete), ("b", self.b.delete), ("signals", restore)], body_failed)

    def set_netem(self, side: str, spec: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        """Impair what `side` ("a" or "b") sends."""
        ns, ifname = (self.a, self.if_a) if side == "a" else (self.b, self.if_b)
        set_netem(ns, ifname, spec, **kwargs)

    def clear_netem(self, side: str) -> None:
        ns, ifname = (self.a, self.if_a) if side == "a" else (self.b, self.if_b)
        clear_qdisc(ns, ifname)


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.01) -> bool:
    """Poll `predicate()` until true or `timeout_s` passes (bounded by time and by count)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(max(1, int(timeout_s / interval_s) + 1)):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    return bool(predicate())


def list_namespaces(prefix: str = "") -> Iterator[str]:
    """Names under /run/netns starting with `prefix` (used by tests to prove nothing leaked)."""
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith(prefix):
            yield n


def drive(scheduler: Any, predicate: Any, timeout_s: float, tick_s: float = 0.02) -> bool:
    """Run a RealTimeScheduler until `predicate()` or `timeout_s`; True when the predicate held.

    A repeating tick timer makes the scheduler re-check the predicate even when nothing arrives
    (e.g. while waiting for a child process in the namespace to exit).
    """
    tick_ns = int(tick_s * 1e9)
    state: dict[str, Any] = {}

    def tick() -> None:
        state["t"] = scheduler.call_later(tick_ns, tick, label="netns.drive tick")

    tick()
    try:
        why = scheduler.run_until(until=scheduler.now + int(timeout_s * 1e9), predicate=predicate)
    finally:
        state["t"].cancel()
    return why == "predicate" or bool(predicate())
