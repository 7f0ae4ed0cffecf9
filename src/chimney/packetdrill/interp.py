"""The packetdrill interpreter: runs a parsed `Script` against our host stack in simulated time.

Owns event timing, inbound packet injection, outbound packet matching and the system call mapping onto
`chimney.host.socket.Socket` (Linux return values and errno). Conventions (packetdrill's, where it has one):
  time      `0.1` absolute, `+0.1` relative to the previous event (to the actual send time after a `>`
            line, to the start of a blocking call), `lo~hi` range, `*` any time; tolerance 4 ms
            (`--tolerance_usecs`); `start...end` a blocking call returning at `end` (relative to start
            when either side has `+`), inbound events keep running while it blocks.
  numbers   our side (outbound seq, inbound ack and SACK blocks) relative to the ISN of our last SYN;
            the script side (inbound seq, outbound ack/SACK) absolute. Outbound TS val is mapped to its
            live value so inbound TS ecr can echo it; TS ecr is checked unless `*`.
  options   outbound options compared in wire order with NOPs (trailing EOL padding ignored); no
            `<...>` means "no options"; `<...>` means "not checked". Inbound options go out byte for byte.
  strict    an outbound packet no `>` line claimed by the next event (or the end) fails the script.
  syscalls  socket bind listen accept connect read write send recv sendto recvfrom readv writev sendmsg
            recvmsg (iovecs `[{..., len}]`, no ancillary data) shutdown close fcntl(F_GETFL/F_SETFL
            O_NONBLOCK) getsockopt setsockopt poll ioctl(SIOCINQ/SIOCOUTQ); recv flags MSG_PEEK/
            MSG_DONTWAIT/MSG_WAITALL, send flags MSG_DONTWAIT/MSG_NOSIGNAL; addresses are always `...`
            (bind: local:8080, connect: remote:8080). Anything else: `unsupported: ... at line N`.
  TS val    checked only with --tcp_ts_tick_usecs: it must advance as the script's values do.
"""

from __future__ import annotations

import errno as errno_mod
import struct
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field

from chimney.host import socket as so
from chimney.host.socket import Socket
from chimney.net.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment
from chimney.packetdrill.ast import (
    Event,
    Expr,
    MarkerEvent,
    OptionEvent,
    PacketEvent,
    Script,
    ShellEvent,
    SyscallEvent,
    TcpOption,
    UnsupportedEvent,
)
from chimney.packetdrill.harness import (
    LOCAL_PORT,
    Harness,
    ModeStep,
    OffloadError,
    apply_shell,
    check_script_address,
    mode_step,
    profile_config,
)
from chimney.sim.scheduler import NS_PER_S

MASK = 0xFFFFFFFF
DEFAULT_TOLERANCE_USECS = 4000  # packetdrill's default
_FLAG_BITS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, ".": ACK, "E": ECE, "W": CWR, "U": URG}
_OPT_NAMES = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 8: "TS"}

O_RDWR = 0x2
O_NONBLOCK = 0x800
F_GETFL = 3
F_SETFL = 4
CONSTANTS: dict[str, int] = {
    "AF_INET": 2, "AF_INET6": 10, "PF_INET": 2, "PF_INET6": 10, "SOCK_STREAM": 1,
    "IPPROTO_TCP": 6, "SOL_TCP": 6, "SOL_SOCKET": so.SOL_SOCKET, "O_RDWR": O_RDWR, "O_RDONLY": 0,
    "O_WRONLY": 1, "O_NONBLOCK": O_NONBLOCK, "F_GETFL": F_GETFL, "F_SETFL": F_SETFL,
    "SHUT_RD": so.SHUT_RD, "SHUT_WR": so.SHUT_WR, "SHUT_RDWR": so.SHUT_RDWR,
    "POLLIN": so.POLLIN, "POLLPRI": so.POLLPRI, "POLLOUT": so.POLLOUT, "POLLERR": so.POLLERR,
    "POLLHUP": so.POLLHUP, "POLLNVAL": so.POLLNVAL, "POLLRDHUP": so.POLLRDHUP,
    "SO_REUSEADDR": so.SO_REUSEADDR, "SO_ERROR": so.SO_ERROR, "SO_SNDBUF": so.SO_SNDBUF,
    "SO_RCVBUF": so.SO_RCVBUF, "SO_KEEPALIVE": so.SO_KEEPALIVE, "SO_LINGER": so.SO_LINGER,
    "TCP_NODELAY": so.TCP_NODELAY, "TCP_MAXSEG": so.TCP_MAXSEG, "TCP_KEEPIDLE": so.TCP_KEEPIDLE,
    "TCP_KEEPINTVL": so.TCP_KEEPINTVL, "TCP_KEEPCNT": so.TCP_KEEPCNT,
    "TCP_USER_TIMEOUT": so.TCP_USER_TIMEOUT, "TCP_LINGER2": so.TCP_LINGER2, "MSG_PEEK": 0x2, "MSG_DONTWAIT": 0x40, "MSG_WAITALL": 0x100,
    "MSG_NOSIGNAL": 0x4000, "SIOCINQ": 0x541B, "FIONREAD": 0x541B, "SIOCOUTQ": 0x5411, "TIOCOUTQ": 0x5411,
}
MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_NOSIGNAL = 0x2, 0x40, 0x100, 0x4000
SIOCINQ, SIOCOUTQ = 0x541B, 0x5411
_RECV_FLAGS = MSG_PEEK | MSG_DONTWAIT | MSG_WAITALL
_SEND_FLAGS = MSG_DONTWAIT | MSG_NOSIGNAL  # no SIGPIPE here: MSG_NOSIGNAL changes nothing
CONSTANTS.update({name: code for code, name in errno_mod.errorcode.items()})  # e.g. [ECONNREFUSED] in SO_ERROR
_SUPPORTED_OPTS = {
    ("SOL_SOCKET", n) for n in ("SO_REUSEADDR", "SO_ERROR", "SO_SNDBUF", "SO_RCVBUF", "SO_KEEPALIVE", "SO_LINGER")
} | {
    (lvl, n) for lvl in ("IPPROTO_TCP", "SOL_TCP")
    for n in ("TCP_NODELAY", "TCP_MAXSEG", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT",
              "TCP_LINGER2")
}


class Mismatch(Exception):
    """The stack did not do what the script says, at `line`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class Unsupported(Exception):
    def __init__(self, construct: str, line: int) -> None:
        super().__init__(f"unsupported: {construct} at line {line}")
        self.construct = construct
        self.line = line


class _WouldBlock(Exception):
    pass


@dataclass
class ScriptResult:
    """Outcome of one script in one mode. `status`: "pass", "fail", "unsupported"."""

    path: str
    mode: str
    status: str
    message: str = ""
    line: int | None = None
    notes: list[str] = field(default_factory=list)
    outbound: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    stayed_on_host: list[str] = field(default_factory=list)  # offload mode: connections kept, with why
    never_offloaded: list[str] = field(default_factory=list)  # offload mode: established, never offloaded
    # outbound index -> why only this mode sends it (matched an `@host` / `@offload` line)
    mode_only: dict[int, str] = field(default_factory=dict)


@dataclass
class _Pending:
    ev: SyscallEvent
    start: int
    ready: Callable[[], bool]
    attempt: Callable[[], int]
    deadline: int | None = None
    on_deadline: int = 0


def flags_mask(flags: str) -> int:
    m = 0
    for c in flags:
        m |= _FLAG_BITS.get(c, 0)
    return m


def flags_text(mask: int) -> str:
    s = "".join(c for c, b in _FLAG_BITS.items() if c != "." and mask & b)
    return (s + ("." if mask & ACK else "")) or "-"


class Runner:
    """Runs one script in one mode. `run()` never raises for script problems: it returns a result."""

    def __init__(
        self,
        script: Script,
        *,
        mode: str = "host",
        seed: int = 1,
        tolerance_usecs: int | None = None,
        profile: str | None = None,
    ) -> None:
        self.script = script
        self.mode: ModeStep = mode_step(mode)
        self.seed = seed
        opts = script.options
        tol = opts.get("tolerance_usecs")
        if tol is not None and not tol.isdigit():
            raise ValueError(f"--tolerance_usecs={tol}: not a number of microseconds")
        self.tol = int(tol if tol is not None else (tolerance_usecs or DEFAULT_TOLERANCE_USECS)) * 1000
        self.profile = profile or opts.get("profile", "rfc")
        tick = opts.get("tcp_ts_tick_usecs")
        if tick is not None and (not tick.isdigit() or int(tick) == 0):
            raise ValueError(f"--tcp_ts_tick_usecs={tick}: not a positive number of microseconds")
        self.ts_tick_usecs = int(tick) if tick is not None else 0  # 0: outbound TS val not checked
        self.ts_first: tuple[int, int] | None = None  # (script TS val, live TS val) of the first checked
        self.notes: list[str] = []
        self.outbound: list[str] = []
        self.mode_only: dict[int, str] = {}
        self.pending: list[_Pending] = []
        self.local_isn: int | None = None
        self.ts_map: list[tuple[int, int]] = []  # (script TS val, live TS val) of matched outbound packets
        self.h: Harness | None = None
        self.t0 = 0
        self.current_line = 0

    # -- entry point --------------------------------------------------------------------------------

    def run(self) -> ScriptResult:
        started = _time.perf_counter()
        res = ScriptResult(self.script.path, self.mode.name, "pass")
        try:
            why = self.mode.available()
            if why is not None:
                raise Unsupported(why, 1)
            self._setup()
            self._run_events()
            assert self.h is not None
            self.mode.finish(self.h)
        except Unsupported as e:
            res.status, res.message, res.line = "unsupported", str(e), e.line
        except Mismatch as e:
            res.status, res.message, res.line = "fail", str(e), e.line
        except Exception as e:  # a stack exception is a failure of the script, reported with its line
            res.status, res.line = "fail", self.current_line
            res.message = f"line {self.current_line}: stack raised {type(e).__name__}: {e}"
        res.notes = self.notes + (self.h.notes if self.h is not None else [])
        res.outbound = self.outbound
        res.mode_only = self.mode_only
        if self.h is not None:
            res.stayed_on_host = list(self.h.stayed_on_host)
            res.never_offloaded = list(self.h.never_offloaded)
        res.elapsed_s = _time.perf_counter() - started
        return res

    def _setup(self) -> None:
        opts = self.script.options
        ipv = opts.get("ip_version", "ipv4")
        if ipv not in ("ipv4", "ipv6"):
            raise Unsupported(f"--ip_version={ipv}", self.script.option_lines.get("ip_version", 1))
        try:
            cfg = profile_config(self.profile)
        except ValueError:
            raise Unsupported(f"profile {self.profile}", self.script.option_lines.get("profile", 1)) from None
        ipv6 = ipv == "ipv6"
        mtu = 1500
        if "mss" in opts:
            mtu = int(opts["mss"]) + (60 if ipv6 else 40)
        addrs: dict[str, str] = {}
        for name in ("local_ip", "remote_ip"):
            if name in opts:
                why = check_script_address(opts[name], ipv6)
                if why is not None:
                    raise Unsupported(f"--{name} ({why})", self.script.option_lines[name])
                addrs[name] = opts[name]
        if addrs.get("local_ip") is not None and addrs.get("local_ip") == addrs.get("remote_ip"):
            raise Unsupported("--local_ip equal to --remote_ip", self.script.option_lines["remote_ip"])
        for name in opts:
            if name not in ("ip_version", "tolerance_usecs", "mss", "profile", "local_ip", "remote_ip",
                            "tcp_ts_tick_usecs"):
                self.notes.append(f"ignored: --{name}")
        self.h = Harness.create(self.seed, cfg, ipv6, mtu, offload=self.mode.name == "offload", **addrs)
        if any(isinstance(ev, MarkerEvent) and ev.only_mode in (None, self.mode.name) for ev in self.script.events) \
                and hasattr(self.mode, "markers_only"):
            self.mode.markers_only = True
        self.t0 = self.h.sched.now

    # -- timing -------------------------------------------------------------------------------------

    def _ns(self, seconds: float) -> int:
        return round(seconds * NS_PER_S)

    def _fmt(self, ns: int) -> str:
        return f"{(ns - self.t0) / NS_PER_S:.6f}"

    def _window(self, ev: Event, prev: int) -> tuple[int | None, int | None]:
        t = ev.time
        if t is None or t.kind == "any":
            return None, None
        base = prev if t.kind == "rel" else self.t0
        lo = base + self._ns(t.value)
        hi = None
        if t.upper is not None:
            hi = (prev if t.upper_rel else self.t0) + self._ns(t.upper)
        return lo, hi

    def _advance(self, until: int) -> None:
        h = self.h
        assert h is not None
        sched = h.sched
        if until < sched.now:
            until = sched.now
        while True:
            why = sched.run_until(until=until, predicate=self._pending_done if self.pending else None)
            if why != "predicate":
                self._pending_done()
                return

    def _pending_done(self) -> bool:
        """Try to finish blocking calls; True when one finished (its result is checked here)."""
        h = self.h
        assert h is not None
        now = h.sched.now
        for p in list(self.pending):
            result: int | OSError | None = None
            if p.ready():
                try:
                    result = p.attempt()
                except _WouldBlock:
                    result = None
                except OSError as e:
                    result = e
            if result is None and p.deadline is not None and now >= p.deadline:
                result = p.on_deadline
            if result is None:
                continue
            self.pending.remove(p)
            self._check_result(p.ev, result)
            self._check_block_time(p, now)
            return True
        return False

    def _block_end(self, p: _Pending) -> int | None:
        t = p.ev.time
        if t is None or t.block_end is None:
            return None
        return (p.start if t.block_end_rel else self.t0) + self._ns(t.block_end)

    def _check_block_time(self, p: _Pending, now: int) -> None:
        t = p.ev.time
        assert t is not None
        if t.block_end is None:
            if now - p.start > self.tol:
                raise Mismatch(p.ev.line, f"{p.ev.text}: blocked until {self._fmt(now)}, expected to return at "
                                          f"{self._fmt(p.start)} (use start...end for a blocking call)")
            return
        end = (p.start if t.block_end_rel else self.t0) + self._ns(t.block_end)
        if abs(now - end) > self.tol:
            raise Mismatch(p.ev.line, f"{p.ev.text}: returned at {self._fmt(now)}, expected at {self._fmt(end)}")

    # -- the event loop -----------------------------------------------------------------------------

    def _run_events(self) -> None:
        h = self.h
        assert h is not None
        prev = self.t0
        for ev in self.script.events:
            self.current_line = ev.line
            if isinstance(ev, OptionEvent) or (ev.only_mode is not None and ev.only_mode != self.mode.name):
                continue
            if isinstance(ev, UnsupportedEvent):
                raise Unsupported(ev.construct, ev.line)
            lo, hi = self._window(ev, prev)
            if isinstance(ev, PacketEvent) and ev.direction == ">":
                prev = self._expect_outbound(ev, lo, hi)
                continue
            at = h.sched.now if lo is None else lo
            self._advance(at)
            self._check_unexpected(ev.line)
            prev = at
            if isinstance(ev, ShellEvent):
                self.notes.extend(f"line {ev.line}: {n}" for n in apply_shell(h, ev.command))
            elif isinstance(ev, PacketEvent):
                self._inject(ev)
            elif isinstance(ev, SyscallEvent):
                self._syscall(ev)
            elif isinstance(ev, MarkerEvent):
                try:
                    self.mode.at_marker(h, self._flow_socket(ev.line))
                except OffloadError as e:
                    raise Mismatch(ev.line, str(e)) from None
            self._settle()
        self.current_line = self.script.events[-1].line if self.script.events else 0
        self._settle()
        # A blocking call may be due after the last event: run until it is (plus tolerance).
        ends = [self._block_end(p) for p in self.pending]
        if self.pending and all(e is not None for e in ends):
            self._advance(max(e for e in ends if e is not None) + self.tol)
        if self.pending:
            p = self.pending[0]
            raise Mismatch(p.ev.line, f"{p.ev.text}: blocking call never returned (script ended at "
                                      f"{self._fmt(h.sched.now)})")
        if h.port.captured:
            t, seg, _ = h.port.captured[0]
            raise Mismatch(self.current_line, f"unexpected outbound packet after the last event: "
                                              f"{self.render(seg)} at {self._fmt(t)}")

    def _settle(self) -> None:
        """Blocking calls that an event just made ready return now (same virtual instant); the mode
        step (offload) sees every event."""
        while self.pending and self._pending_done():
            pass
        if self.h is not None:
            try:
                self.mode.after_event(self.h)
            except OffloadError as e:
                raise Mismatch(self.current_line, str(e)) from None

    def _flow_socket(self, line: int) -> Socket:
        h = self.h
        assert h is not None
        for s in h.fds.values():
            if s.tcb is not None:
                return s
        raise Mismatch(line, "no connected socket for chimney_offload")

    def _check_unexpected(self, line: int) -> None:
        h = self.h
        assert h is not None
        cap = h.port.captured
        if cap and cap[0][0] < h.sched.now - self.tol:
            t, seg, _ = cap[0]
            raise Mismatch(line, f"unexpected outbound packet {self.render(seg)} at {self._fmt(t)} "
                                 f"(no '>' line expects it before line {line})")

    # -- packets ------------------------------------------------------------------------------------

    def render(self, seg: TcpSegment) -> str:
        """A live segment in script notation (sequence numbers relative to our ISN)."""
        isn = self.local_isn or 0
        rel = (seg.seq - isn) & MASK
        n = len(seg.payload)
        s = f"{flags_text(seg.flags)} {rel}:{(rel + n) & MASK}({n})"
        if seg.flags & ACK:
            s += f" ack {seg.ack}"
        s += f" win {seg.window}"
        opts = _live_options(seg.options)
        if opts:
            s += " <" + ",".join(opts) + ">"
        return s

    def _expect_outbound(self, ev: PacketEvent, lo: int | None, hi: int | None) -> int:
        h = self.h
        assert h is not None
        cap = h.port.captured
        if not cap:
            if lo is None:
                self._run_until_packet(None)
            else:
                self._run_until_packet((hi if hi is not None else lo) + self.tol)
        if not cap:
            when = "any time" if lo is None else self._fmt(lo)
            raise Mismatch(ev.line, f"expected outbound {ev.text} at {when}; nothing was sent "
                                    f"(time now {self._fmt(h.sched.now)})")
        self._settle()
        t, seg, _ = cap.pop(0)
        if seg.flags & SYN:
            self.local_isn = seg.seq  # each connection's numbers are relative to its own SYN
        self.outbound.append(f"{self._fmt(t)} {self.render(seg)}")
        if ev.only_mode is not None:
            self.mode_only[len(self.outbound) - 1] = self._mode_only_reason(ev, t, seg)
        if lo is not None:
            top = (hi if hi is not None else lo) + self.tol
            if t < lo - self.tol:
                raise Mismatch(ev.line, f"outbound {self.render(seg)} sent at {self._fmt(t)}, too early: "
                                        f"expected at {self._fmt(lo)} ({ev.text})")
            if t > top:
                raise Mismatch(ev.line, f"outbound {self.render(seg)} sent at {self._fmt(t)}, too late: "
                                        f"expected by {self._fmt(top)} ({ev.text})")
        diffs = self._compare(ev, seg)
        if diffs:
            raise Mismatch(ev.line, "outbound packet mismatch: " + "; ".join(diffs)
                           + f"\n    expected: {ev.text}\n    actual:   > {self.render(seg)}  (at {self._fmt(t)})")
        return t

    def _mode_only_reason(self, ev: PacketEvent, t: int, seg: TcpSegment) -> str:
        """Why an `@host` / `@offload` outbound line is expected in this mode only: R-TMR-04 when it is
        a bare ACK sent at the instant a connection was offloaded (the host flushed the owed delayed ACK)."""
        h = self.h
        assert h is not None
        where = f"line {ev.line}: {self._fmt(t)} {self.render(seg)}"
        bare_ack = seg.flags == ACK and not seg.payload
        if h.manager is not None and bare_ack and any(
                when == t and kind == "offload" for when, kind, _, _ in h.manager.history):
            return f"R-TMR-04: the owed delayed ACK flushed at the offload ({where})"
        return f"{ev.only_mode} mode only ({where})"

    def _run_until_packet(self, until: int | None) -> None:
        h = self.h
        assert h is not None
        cap = h.port.captured
        sched = h.sched
        if until is not None and until < sched.now:
            return

        def pred() -> bool:
            return bool(cap) or (bool(self.pending) and self._pending_done())

        while True:
            why = sched.run_until(until=until, predicate=pred)
            if why != "predicate" or cap:
                return

    def _compare(self, ev: PacketEvent, seg: TcpSegment) -> list[str]:
        d: list[str] = []
        want = flags_mask(ev.flags)
        if seg.flags != want:
            d.append(f"flags {flags_text(seg.flags)} != {flags_text(want)}")
        isn = self.local_isn or 0
        rel = (seg.seq - isn) & MASK
        if rel != ev.seq & MASK:
            d.append(f"seq {rel} != {ev.seq}")
        if len(seg.payload) != ev.length:
            d.append(f"payload length {len(seg.payload)} != {ev.length}")
        if ev.ack is not None and seg.ack != ev.ack & MASK:
            d.append(f"ack {seg.ack} != {ev.ack}")
        if ev.win is not None and seg.window != ev.win:
            d.append(f"win {seg.window} != {ev.win}")
        if ev.urg is not None and seg.urg_ptr != ev.urg:
            d.append(f"urg {seg.urg_ptr} != {ev.urg}")
        if not ev.any_options:
            d.extend(self._compare_options(ev.options or [], seg.options))
        return d

    def _compare_options(self, want: list[TcpOption], have: TcpOptions | None) -> list[str]:
        live = _live_option_list(have)
        exp = list(want)
        while exp and exp[-1].kind == "eol":
            exp.pop()
        if [o[0] for o in live] != [o.kind for o in exp]:
            return [f"options <{','.join(_live_options(have))}> != <{','.join(str(o) for o in exp)}>"]
        d: list[str] = []
        for (kind, val), o in zip(live, exp):
            if kind in ("mss", "wscale") and val != o.value:
                d.append(f"{kind} {val} != {o.value}")
            elif kind == "sack" and tuple(val) != o.blocks:
                d.append(f"sack {_blocks(val)} != {_blocks(o.blocks)}")
            elif kind == "TS":
                tsval, ecr = val
                if o.ts_ecr is not None and ecr != o.ts_ecr & MASK:
                    d.append(f"TS ecr {ecr} != {o.ts_ecr}")
                if o.ts_val is not None:
                    if self.ts_tick_usecs:
                        d.extend(self._check_ts_val(o.ts_val, tsval))
                    self.ts_map.append((o.ts_val, tsval))
        return d

    def _check_ts_val(self, script_val: int, live_val: int) -> list[str]:
        """--tcp_ts_tick_usecs: our TS val must advance as the script's does (script ticks of that many
        us; ours of 1/ts_hz s), counted from the first checked one, within the tolerance plus a tick."""
        first = self.ts_first
        if first is None:
            self.ts_first = (script_val, live_val)
            return []
        h = self.h
        assert h is not None
        tick_us = self.ts_tick_usecs
        want_us = _signed((script_val - first[0]) & MASK) * tick_us
        got_us = _signed((live_val - first[1]) & MASK) * 1_000_000 // h.config.ts_hz
        slack_us = self.tol // 1000 + tick_us + 1_000_000 // h.config.ts_hz
        if abs(got_us - want_us) > slack_us:
            return [f"TS val advanced {got_us} us since the first checked one, script says {want_us} us "
                    f"(TS val {script_val}, --tcp_ts_tick_usecs={tick_us})"]
        return []

    def _inject(self, ev: PacketEvent) -> None:
        h = self.h
        assert h is not None
        isn = self.local_isn or 0
        flags = flags_mask(ev.flags)
        ack = (isn + ev.ack) & MASK if ev.ack is not None else 0
        if ev.any_options:
            raise Unsupported("<...> options on an inbound packet", ev.line)
        raw: bytes | None = None
        if ev.options is not None:
            out = bytearray()
            for o in ev.options:
                if o.kind == "nop":
                    out.append(1)
                elif o.kind == "eol":
                    out.append(0)
                elif o.kind == "mss":
                    out += struct.pack("!BBH", 2, 4, (o.value or 0) & 0xFFFF)
                elif o.kind == "wscale":
                    out += bytes((3, 3, (o.value or 0) & 0xFF))
                elif o.kind == "sackOK":
                    out += b"\x04\x02"
                elif o.kind == "sack":
                    out += bytes((5, 2 + 8 * len(o.blocks)))
                    for left, right in o.blocks:
                        out += struct.pack("!II", (isn + left) & MASK, (isn + right) & MASK)
                elif o.kind == "TS":
                    if o.ts_val is None or o.ts_ecr is None:
                        raise Unsupported("TS wildcard on an inbound packet", ev.line)
                    out += struct.pack("!BBII", 8, 10, o.ts_val & MASK, self._live_ecr(o.ts_ecr))
            out += b"\x00" * (-len(out) & 3)
            if len(out) > 40:
                raise Mismatch(ev.line, f"inbound TCP options take {len(out)} bytes, more than 40")
            raw = bytes(out)
        win = ev.win if ev.win is not None else 65535
        seg = TcpSegment(h.remote_port, h.local_port, ev.seq & MASK, ack, flags, win, bytes(ev.length), None,
                         ev.urg or 0)
        h.inject(seg, raw)

    def _live_ecr(self, script_ecr: int) -> int:
        """Inbound TS ecr echoes one of our TS vals: translate the script's value to the live clock."""
        if script_ecr == 0 or not self.ts_map:
            return script_ecr & MASK
        for sv, lv in reversed(self.ts_map):
            if sv == script_ecr:
                return lv
        sv, lv = self.ts_map[-1]
        return (lv + script_ecr - sv) & MASK

    # -- system calls -------------------------------------------------------------------------------

    def _syscall(self, ev: SyscallEvent) -> None:
        h = self.h
        assert h is not None
        handler = getattr(self, f"_sys_{ev.name}", None)
        if handler is None:
            raise Unsupported(f"system call {ev.name}()", ev.line)
        try:
            result: int | OSError = handler(ev, ev.args)
        except _WouldBlock:
            return  # the handler registered a pending blocking call
        except OSError as e:
            result = e
        self._check_result(ev, result)
        t = ev.time
        if t is not None and t.block_end is not None:
            end = (h.sched.now if t.block_end_rel else self.t0) + self._ns(t.block_end)
            if abs(h.sched.now - end) > self.tol:
                raise Mismatch(ev.line, f"{ev.text}: returned at once ({self._fmt(h.sched.now)}), expected to "
                                        f"block until {self._fmt(end)}")

    def _check_result(self, ev: SyscallEvent, result: int | OSError) -> None:
        if isinstance(result, OSError):
            code = result.errno if result.errno is not None else errno_mod.EIO
            name = errno_mod.errorcode.get(code, str(code))
            got = f"-1 {name} ({result.strerror})"
            if ev.ret is None:
                return
            if ev.ret != -1 or (ev.errno_name is not None and ev.errno_name != name):
                raise Mismatch(ev.line, f"{ev.text}: returned {got}, expected {_expected(ev)}")
            return
        if ev.ret is not None and (ev.ret != result or ev.errno_name is not None):
            raise Mismatch(ev.line, f"{ev.text}: returned {result}, expected {_expected(ev)}")

    def _block_or_fail(self, ev: SyscallEvent, fd: int, ready: Callable[[], bool], attempt: Callable[[], int],
                       deadline: int | None = None, on_deadline: int = 0, force_block: bool = False,
                       nonblocking: bool | None = None) -> int:
        """Run `attempt`; if it would block on a blocking fd (`nonblocking` overrides the fd's O_NONBLOCK),
        register it as pending (raises _WouldBlock)."""
        h = self.h
        assert h is not None
        if nonblocking is None:
            nonblocking = fd in h.nonblocking
        try:
            return attempt()
        except _WouldBlock:
            if nonblocking and not force_block:
                raise OSError(errno_mod.EAGAIN, "Resource temporarily unavailable") from None
        self.pending.append(_Pending(ev, h.sched.now, ready, attempt, deadline, on_deadline))
        if deadline is not None:
            h.sched.call_at(deadline, _noop, label="packetdrill poll timeout")
        raise _WouldBlock

    def _fd(self, ev: SyscallEvent, args: list[Expr], i: int = 0) -> tuple[int, Socket]:
        h = self.h
        assert h is not None
        fd = self._int(ev, args, i)
        s = h.fds.get(fd)
        if s is None:
            raise OSError(errno_mod.EBADF, "Bad file descriptor")
        return fd, s

    def _int(self, ev: SyscallEvent, args: list[Expr], i: int) -> int:
        if i >= len(args):
            raise Mismatch(ev.line, f"{ev.name}(): missing argument {i + 1}")
        return self._value(ev, args[i])

    def _value(self, ev: SyscallEvent, e: Expr) -> int:
        if e.kind == "int":
            return int(e.value)
        if e.kind == "name":
            if e.value not in CONSTANTS:
                raise Unsupported(f"constant {e.value}", ev.line)
            return CONSTANTS[e.value]
        if e.kind == "or":
            v = 0
            for item in e.items:
                v |= self._value(ev, item)
            return v
        if e.kind == "list" and len(e.items) == 1:
            return self._value(ev, e.items[0])
        raise Unsupported(f"argument {e} of {ev.name}()", ev.line)

    def _sys_socket(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        if len(a) != 3:
            raise Mismatch(ev.line, "socket() takes 3 arguments")
        if a[1].kind != "ellipsis" and self._value(ev, a[1]) != 1:
            raise Unsupported(f"socket type {a[1]}", ev.line)
        if a[2].kind != "ellipsis" and self._value(ev, a[2]) not in (0, 6):
            raise Unsupported(f"socket protocol {a[2]}", ev.line)
        fd = h.alloc_fd()
        s = h.stack.socket()
        s.settimeout(0.0)
        h.fds[fd] = s
        return fd

    def _sys_bind(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        _, s = self._fd(ev, a)
        if len(a) < 2 or a[1].kind != "ellipsis":
            raise Unsupported("bind() to an explicit address (use ...)", ev.line)
        s.bind((h.local_ip, LOCAL_PORT))
        h.local_port = LOCAL_PORT
        return 0

    def _sys_listen(self, ev: SyscallEvent, a: list[Expr]) -> int:
        _, s = self._fd(ev, a)
        s.listen(self._int(ev, a, 1))
        return 0

    def _sys_accept(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        fd, s = self._fd(ev, a)

        def attempt() -> int:
            try:
                c, _addr = s.accept()
            except BlockingIOError:
                raise _WouldBlock from None
            c.settimeout(0.0)
            nfd = h.alloc_fd()
            h.fds[nfd] = c
            return nfd

        return self._block_or_fail(ev, fd, lambda: s.poll(so.POLLIN) != 0, attempt)

    def _sys_connect(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        fd, s = self._fd(ev, a)
        if len(a) < 2 or a[1].kind != "ellipsis":
            raise Unsupported("connect() to an explicit address (use ...)", ev.line)
        try:
            s.connect((h.remote_ip, LOCAL_PORT))
            return 0
        except BlockingIOError as e:
            if e.errno != errno_mod.EINPROGRESS:
                raise
            tcb = s.tcb
            assert tcb is not None
            h.local_port, h.remote_port = tcb.local_port, LOCAL_PORT
            if fd in h.nonblocking:
                raise

        def attempt() -> int:
            if s.tcb is not None and not s.tcb.established and not s.tcb.closed and not s.tcb.error:
                raise _WouldBlock
            err = s.getsockopt(so.SOL_SOCKET, so.SO_ERROR)
            if err:
                raise OSError(err, errno_mod.errorcode.get(err, str(err)))
            return 0

        return self._block_or_fail(ev, fd, lambda: s.poll(so.POLLOUT) != 0, attempt, force_block=True)

    def _data_len(self, ev: SyscallEvent, a: list[Expr]) -> int:
        if len(a) < 3:
            raise Mismatch(ev.line, f"{ev.name}() needs fd, buffer, length")
        return self._int(ev, a, 2)

    def _flags_arg(self, ev: SyscallEvent, a: list[Expr], i: int, allowed: int) -> int:
        """The MSG_* flags argument at `i` (absent or `...`: 0); flags outside `allowed` are unsupported."""
        if i >= len(a) or a[i].kind == "ellipsis":
            return 0
        flags = self._value(ev, a[i])
        if flags & ~allowed:
            raise Unsupported(f"{ev.name}() flags {a[i]}", ev.line)
        return flags

    def _iov_len(self, ev: SyscallEvent, iov: Expr) -> int:
        """Total length of an iovec array `[{..., 10}, {iov_base=..., iov_len=20}]`."""
        if iov.kind != "list":
            raise Unsupported(f"iovec {iov} of {ev.name}() (want [{{..., len}}, ...])", ev.line)
        total = 0
        for item in iov.items:
            if item.kind != "struct":
                raise Unsupported(f"iovec entry {item} of {ev.name}()", ev.line)
            if "iov_len" in item.fields:
                total += self._value(ev, item.fields["iov_len"])
            elif len(item.items) == 2:
                total += self._value(ev, item.items[1])
            else:
                raise Unsupported(f"iovec entry {item} of {ev.name}()", ev.line)
        return total

    def _msghdr_len(self, ev: SyscallEvent, a: list[Expr]) -> int:
        """Total iovec length of a `{msg_name(...)=..., msg_iov(1)=[...], msg_flags=0}` argument; ancillary
        data (msg_control) is not supported."""
        if len(a) < 2 or a[1].kind != "struct" or "msg_iov" not in a[1].fields:
            raise Mismatch(ev.line, f"{ev.name}(fd, {{msg_iov(N)=[...], ...}}, flags)")
        m = a[1].fields
        for name in ("msg_control", "msg_controllen"):
            if name in m and m[name].kind != "ellipsis" and not (m[name].kind == "int" and m[name].value == 0):
                raise Unsupported(f"{ev.name}() {name}", ev.line)
        return self._iov_len(ev, m["msg_iov"])

    def _sys_write(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._write(ev, a, self._data_len(ev, a))

    def _write(self, ev: SyscallEvent, a: list[Expr], n: int, flags: int = 0) -> int:
        fd, s = self._fd(ev, a)
        data = bytes(n)
        sent = 0
        h = self.h
        assert h is not None
        nonblocking = fd in h.nonblocking or bool(flags & MSG_DONTWAIT)

        def attempt() -> int:
            nonlocal sent
            while sent < n:
                try:
                    sent += s.send(data[sent:])
                except BlockingIOError:
                    if sent and nonblocking:
                        return sent
                    raise _WouldBlock from None
                except OSError:
                    if sent:
                        return sent
                    raise
            return n

        if n == 0:
            return 0
        return self._block_or_fail(ev, fd, lambda: s.poll(so.POLLOUT) != 0, attempt, nonblocking=nonblocking)

    def _sys_send(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._write(ev, a, self._data_len(ev, a), self._flags_arg(ev, a, 3, _SEND_FLAGS))

    def _sys_sendto(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._sys_send(ev, a)

    def _sys_writev(self, ev: SyscallEvent, a: list[Expr]) -> int:
        if len(a) < 2:
            raise Mismatch(ev.line, "writev(fd, iov, iovcnt)")
        return self._write(ev, a, self._iov_len(ev, a[1]))

    def _sys_sendmsg(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._write(ev, a, self._msghdr_len(ev, a), self._flags_arg(ev, a, 2, _SEND_FLAGS))

    def _sys_read(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._read(ev, a, self._data_len(ev, a))

    def _read(self, ev: SyscallEvent, a: list[Expr], n: int, flags: int = 0) -> int:
        """read()/recv() and friends; MSG_PEEK counts what a read would return without taking it,
        MSG_WAITALL blocks until `n` bytes (or EOF/error), MSG_DONTWAIT never blocks."""
        fd, s = self._fd(ev, a)
        h = self.h
        assert h is not None
        nonblocking = fd in h.nonblocking or bool(flags & MSG_DONTWAIT)
        got = 0

        def attempt() -> int:
            nonlocal got
            if flags & MSG_PEEK:
                tcb = s.tcb
                r = tcb.path.readable if tcb is not None and n else 0
                if r:
                    return min(n, r)
                try:
                    return len(s.recv(0))  # EOF (0), the error, or would block
                except BlockingIOError:
                    raise _WouldBlock from None
            while True:
                try:
                    k = len(s.recv(n - got))
                except BlockingIOError:
                    if got and (nonblocking or not flags & MSG_WAITALL):
                        return got
                    raise _WouldBlock from None
                except OSError:
                    if got:
                        return got
                    raise
                got += k
                if k == 0 or got >= n or not flags & MSG_WAITALL:
                    return got

        return self._block_or_fail(ev, fd, lambda: s.poll(so.POLLIN) != 0, attempt, nonblocking=nonblocking)

    def _sys_recv(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._read(ev, a, self._data_len(ev, a), self._flags_arg(ev, a, 3, _RECV_FLAGS))

    def _sys_recvfrom(self, ev: SyscallEvent, a: list[Expr]) -> int:
        return self._sys_recv(ev, a)

    def _sys_readv(self, ev: SyscallEvent, a: list[Expr]) -> int:
        if len(a) < 2:
            raise Mismatch(ev.line, "readv(fd, iov, iovcnt)")
        return self._read(ev, a, self._iov_len(ev, a[1]))

    def _sys_recvmsg(self, ev: SyscallEvent, a: list[Expr]) -> int:
        n = self._msghdr_len(ev, a)
        want = a[1].fields.get("msg_flags")
        if want is not None and want.kind != "ellipsis" and self._value(ev, want) != 0:
            # A TCP recvmsg() of ours never sets MSG_TRUNC/MSG_EOR/MSG_CTRUNC/MSG_OOB.
            raise Mismatch(ev.line, f"{ev.text}: msg_flags 0, expected {want}")
        return self._read(ev, a, n, self._flags_arg(ev, a, 2, _RECV_FLAGS))

    def _sys_ioctl(self, ev: SyscallEvent, a: list[Expr]) -> int:
        """SIOCINQ (FIONREAD): bytes readable; SIOCOUTQ (TIOCOUTQ): bytes in the send queue (unsent and
        unacknowledged); EINVAL on a listener, as Linux."""
        _, s = self._fd(ev, a)
        if len(a) < 3:
            raise Mismatch(ev.line, "ioctl(fd, request, [value])")
        req = self._int(ev, a, 1)
        if req not in (SIOCINQ, SIOCOUTQ):
            raise Unsupported(f"ioctl request {a[1]}", ev.line)
        if s.tcb is None:
            if s.listener is not None:
                raise OSError(errno_mod.EINVAL, "Invalid argument")
            got = 0
        else:
            path = s.tcb.path
            got = path.readable if req == SIOCINQ else path.send_queued
        if a[2].kind != "ellipsis":
            want = self._value(ev, a[2])
            if got != want:
                raise Mismatch(ev.line, f"{ev.text}: value {got}, expected {want}")
        return 0

    def _sys_shutdown(self, ev: SyscallEvent, a: list[Expr]) -> int:
        _, s = self._fd(ev, a)
        s.shutdown(self._int(ev, a, 1))
        return 0

    def _sys_close(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        fd, s = self._fd(ev, a)
        s.close()
        del h.fds[fd]
        h.nonblocking.discard(fd)
        return 0

    def _sys_fcntl(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        fd, _ = self._fd(ev, a)
        cmd = self._int(ev, a, 1)
        if cmd == F_GETFL:
            return O_RDWR | (O_NONBLOCK if fd in h.nonblocking else 0)
        if cmd == F_SETFL:
            if self._int(ev, a, 2) & O_NONBLOCK:
                h.nonblocking.add(fd)
            else:
                h.nonblocking.discard(fd)
            return 0
        raise Unsupported(f"fcntl command {a[1]}", ev.line)

    def _sockopt(self, ev: SyscallEvent, a: list[Expr]) -> tuple[Socket, int, int]:
        _, s = self._fd(ev, a)
        if len(a) < 4:
            raise Mismatch(ev.line, f"{ev.name}() needs fd, level, option, value")
        lvl, opt = a[1], a[2]
        if lvl.kind != "name" or opt.kind != "name":
            raise Unsupported(f"numeric socket option in {ev.name}()", ev.line)
        if (lvl.value, opt.value) not in _SUPPORTED_OPTS:
            raise Unsupported(f"socket option {lvl.value}/{opt.value} (not in our stack)", ev.line)
        return s, CONSTANTS[lvl.value], CONSTANTS[opt.value]

    def _sys_setsockopt(self, ev: SyscallEvent, a: list[Expr]) -> int:
        s, level, opt = self._sockopt(ev, a)
        v = a[3]
        value: object
        if v.kind == "struct":
            if set(v.fields) != {"l_onoff", "l_linger"}:
                raise Unsupported(f"setsockopt struct {v}", ev.line)
            value = (self._value(ev, v.fields["l_onoff"]), self._value(ev, v.fields["l_linger"]))
        else:
            value = self._value(ev, v)
        s.setsockopt(level, opt, value)
        return 0

    def _sys_getsockopt(self, ev: SyscallEvent, a: list[Expr]) -> int:
        s, level, opt = self._sockopt(ev, a)
        got = s.getsockopt(level, opt)
        v = a[3]
        if v.kind == "ellipsis":
            return 0
        if v.kind == "struct":
            want: object = (self._value(ev, v.fields.get("l_onoff", Expr("int", 0))),
                            self._value(ev, v.fields.get("l_linger", Expr("int", 0))))
            got = tuple(got) if isinstance(got, tuple) else got
        else:
            want = self._value(ev, v)
        if got != want:
            raise Mismatch(ev.line, f"{ev.text}: option value {got}, expected {want}")
        return 0

    def _sys_poll(self, ev: SyscallEvent, a: list[Expr]) -> int:
        h = self.h
        assert h is not None
        if len(a) != 3 or a[0].kind != "list":
            raise Mismatch(ev.line, "poll([{fd=..., events=..., revents=...}], nfds, timeout)")
        entries: list[tuple[Socket | None, int, int | None]] = []
        for item in a[0].items:
            if item.kind != "struct" or "fd" not in item.fields or "events" not in item.fields:
                raise Mismatch(ev.line, f"poll entry {item} needs fd= and events=")
            fd = self._value(ev, item.fields["fd"])
            rev = item.fields.get("revents")
            entries.append((h.fds.get(fd), self._value(ev, item.fields["events"]),
                            None if rev is None else self._value(ev, rev)))
        timeout_ms = self._int(ev, a, 2)

        def revents() -> list[int]:
            return [so.POLLNVAL if s is None else s.poll(events) for s, events, _ in entries]

        def check(values: list[int]) -> int:
            for (_, _, want), got in zip(entries, values):
                if want is not None and got != want:
                    raise Mismatch(ev.line, f"{ev.text}: revents {_poll_names(got)}, expected {_poll_names(want)}")
            return sum(1 for v in values if v)

        def attempt() -> int:
            values = revents()
            if not any(values):
                raise _WouldBlock
            return check(values)

        if any(revents()) or timeout_ms == 0:
            return check(revents())
        deadline = None if timeout_ms < 0 else h.sched.now + timeout_ms * 1_000_000

        return self._block_or_fail(ev, -1, lambda: any(revents()), attempt, deadline, 0, force_block=True)


def _noop() -> None:
    return None


def _signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def _poll_names(mask: int) -> str:
    names = [n for n in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDHUP")
             if mask & CONSTANTS[n]]
    return "|".join(names) or "0"


def _expected(ev: SyscallEvent) -> str:
    s = str(ev.ret)
    if ev.errno_name:
        s += f" {ev.errno_name}"
    return s


def _blocks(blocks: object) -> str:
    return " ".join(f"{a}:{b}" for a, b in blocks)  # type: ignore[attr-defined]


def _live_option_list(opts: TcpOptions | None) -> list[tuple[str, object]]:
    if opts is None:
        return []
    order = list(opts.order)
    while order and order[-1] == 0:
        order.pop()
    out: list[tuple[str, object]] = []
    for k in order:
        name = _OPT_NAMES.get(k, f"opt{k}")
        if k == 2:
            out.append((name, opts.mss))
        elif k == 3:
            out.append((name, opts.wscale))
        elif k == 5:
            out.append((name, tuple(opts.sack_blocks)))
        elif k == 8:
            out.append((name, (opts.ts_val, opts.ts_ecr)))
        else:
            out.append((name, None))
    return out


def _live_options(opts: TcpOptions | None) -> list[str]:
    out = []
    for kind, val in _live_option_list(opts):
        if kind in ("mss", "wscale"):
            out.append(f"{kind} {val}")
        elif kind == "sack":
            out.append("sack " + _blocks(val))
        elif kind == "TS":
            out.append(f"TS val {val[0]} ecr {val[1]}")  # type: ignore[index]
        else:
            out.append(kind)
    return out


def run_script(script: Script, **kwargs: object) -> ScriptResult:
    return Runner(script, **kwargs).run()  # type: ignore[arg-type]


__all__ = ["DEFAULT_TOLERANCE_USECS", "Mismatch", "Runner", "ScriptResult", "Unsupported", "run_script"]
