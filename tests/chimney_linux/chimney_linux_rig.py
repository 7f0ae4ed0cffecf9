"""Helpers for the chimney-against-Linux tests: our host bound through NDIS to the offload target on a TAP,
a Linux-side bulk peer run in the namespace, a wire watcher, an offload/upload churn timer and one driver.

`build_rig(..., ims=N, monitor=True, capture=PATH)` puts N pass-through chimney IMs (and a monitoring IM)
into the binding and records the TAP side with our capture writer; `close_exchange` runs the four close
modes against `CLOSE_PEER`, and `tcp_segments` / `one_connection` read a capture back as TCP segments.

The Linux peer and our stack both send the seeded stream of `chimney.host.apps.bulk_chunks` (same
interpreter, so `random.Random(seed).randbytes` gives the same bytes on both ends), half-close after
sending, read to EOF and report sha256 both ways; the peer also reports how its read ended (eof / reset /
timeout), its 4-tuple and TCP_INFO (options, retransmissions), so "Linux saw one uninterrupted connection"
is checked from Linux's own view as well as from the frames on the TAP.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import select
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimney.host.apps import BulkResult, bulk_digest, bulk_exchange, bulk_send
from chimney.host.chimney import OffloadManager
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import SHUT_WR, Socket
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology
from chimney.links.tap import TapPort
from chimney.ndis.offload_state import OffloadStateType
from chimney.ndis.verifier import Mode, Verifier
from chimney.serve import TapOffloadHost, build_tap_offload_host
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import sleep, spawn
from chimney.trace import Capture, PacketRecord
from linux_peer import PEER

PORT = 5002
SOAK = os.environ.get("CHIMNEY_SOAK", "") not in ("", "0")
NO_LEAKS = "no live NBLs (all owners)"


class WireWatch:
    """A TapPort observer: per direction ("tx" ours, "rx" Linux's) TCP segments, SYN / FIN / RST counts,
    payload bytes, and every 4-tuple (as seen from our side) that crossed the TAP.

    `rst_live` counts only RSTs seen while `alive()` says our connection is still open: once our TCB is
    in TIME-WAIT or CLOSED (both FINs sent and acknowledged), a stale segment held back by the reordering
    impairment correctly draws a RST from the peer's closed port (RFC 9293 3.10.7.1), as it would from Linux.
    """

    __slots__ = ("alive", "fin", "payload", "rst", "rst_live", "segments", "syn", "tuples")

    def __init__(self) -> None:
        self.segments = {"tx": 0, "rx": 0}
        self.syn = {"tx": 0, "rx": 0}
        self.fin = {"tx": 0, "rx": 0}
        self.rst = {"tx": 0, "rx": 0}
        self.rst_live = {"tx": 0, "rx": 0}
        self.payload = {"tx": 0, "rx": 0}
        self.tuples: set[tuple[bytes, int, bytes, int]] = set()
        self.alive: Callable[[], bool] | None = None

    def __call__(self, direction: str, frame: bytes, meta: str | None) -> None:
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return
        ihl = (frame[14] & 15) * 4
        t = 14 + ihl
        flags = frame[t + 13]
        total = (frame[16] << 8) | frame[17]
        self.segments[direction] += 1
        self.payload[direction] += total - ihl - (frame[t + 12] >> 4) * 4
        sport = (frame[t] << 8) | frame[t + 1]
        dport = (frame[t + 2] << 8) | frame[t + 3]
        src, dst = bytes(frame[26:30]), bytes(frame[30:34])
        self.tuples.add((src, sport, dst, dport) if direction == "tx" else (dst, dport, src, sport))
        if flags & 0x02:
            self.syn[direction] += 1
        if flags & 0x01:
            self.fin[direction] += 1
        if flags & 0x04:
            self.rst[direction] += 1
            if self.alive is None or self.alive():
                self.rst_live[direction] += 1


class Churn:
    """Every `period_ns` (real time), flips `tcb` between the host and the target: offloaded -> upload with
    `reason`, in the host -> offload. A tick that finds a hand-over still in flight waits for the next one.
    `on_tick(churn)` (optional) runs first on every tick, for extra actions such as target-side events."""

    def __init__(self, manager: OffloadManager, tcb: Tcb, period_ns: int, *, reason: str = "explicit",
                 max_cycles: int | None = None, on_tick: Callable[[Churn], None] | None = None) -> None:
        self.manager = manager
        self.tcb = tcb
        self.period_ns = period_ns
        self.reason = reason
        self.max_cycles = max_cycles
        self.on_tick = on_tick
        self.offloads_started = 0
        self.uploads_started = 0
        self.ticks = 0
        self.stopped = False
        self._timer: Any = manager.scheduler.call_later(period_ns, self._tick, label="churn")

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.stopped or self.tcb.closed:
            return
        self.ticks += 1
        if self.on_tick is not None:
            self.on_tick(self)
        m = self.manager
        if m.is_offloaded(self.tcb):
            self.uploads_started += m.upload(self.tcb, reason=self.reason)
        elif self.tcb not in m.paths and (self.max_cycles is None or self.offloads_started < self.max_cycles):
            self.offloads_started += m.offload(self.tcb)
        self._timer = m.scheduler.call_later(self.period_ns, self._tick, label="churn")


@dataclass
class Rig:
    """Namespace + TAP, the real-time scheduler, the port and our offload host on it."""

    topo: TapTopology
    sched: RealTimeScheduler
    port: TapPort
    node: TapOffloadHost
    watch: WireWatch
    capture: Capture | None = None

    @property
    def manager(self) -> OffloadManager:
        return self.node.manager

    def hand_overs(self, tcb: Tcb) -> tuple[list[str], list[str]]:
        """(offload details, upload details) the manager's history records for `tcb`, in order."""
        offs = [d for _t, kind, t, d in self.manager.history if t is tcb and kind == "offload"]
        ups = [d for _t, kind, t, d in self.manager.history if t is tcb and kind == "upload"]
        return offs, ups

    def target_ctx(self, tcb: Tcb) -> Any:
        return self.node.target.tcps[(tcb.local, tcb.remote, tcb.local_port, tcb.remote_port)]

    def run_for(self, ns: int, predicate: Callable[[], bool] | None = None) -> None:
        self.sched.run_until(until=self.sched.now + ns, predicate=predicate)

    def wind_down(self, drain_ns: int = 2 * NS_PER_S) -> str:
        """Bring back anything still offloaded (UPLOAD_ALL path), halt the adapter, return the leak report
        ("" when no NBL is live anywhere: R-NBL-02)."""
        m = self.manager
        if m.paths:
            m.upload_all("shutdown")
        self.run_for(drain_ns, lambda: not m.paths and not m.busy())
        assert not m.paths, f"still offloaded after {drain_ns // NS_PER_MS} ms: {m.paths}"
        self.node.ndis.halt_adapter(self.node.ndis.adapters[0])
        text = self.node.leak_report()
        return "" if text == NO_LEAKS else text


def build_rig(topo: TapTopology, sched: RealTimeScheduler, policy: OffloadPolicy, *, ims: int = 0,
              monitor: bool = False, capture: Path | None = None, **kw: Any) -> Rig:
    """Our host on `topo`'s TAP through NDIS (strict verifier, host chimney checks) to an OffloadTarget,
    with `ims` pass-through IMs and optionally a monitoring IM in the binding; `capture` records the TAP
    side (both directions, as our port sends and receives) into that file (".pcap" or pcapng)."""
    port = topo.port(sched)
    cap: Capture | None = None
    if capture is not None:
        cap = Capture(capture, sched)
        cap.attach(port, name=topo.tap_name)
    node = build_tap_offload_host(sched, port, f"{topo.our_ip}/24", policy=policy, verifier=Verifier(Mode.STRICT),
                                  ims=ims, monitor=monitor, **kw)
    watch = WireWatch()
    port.add_observer(watch)
    return Rig(topo, sched, port, node, watch, cap)


@dataclass
class Exchange:
    """What both ends saw of one two-way transfer."""

    ours: BulkResult
    linux: dict[str, Any]
    tcb: Tcb
    seconds: float
    tcb_state_after: str = ""
    churn: Churn | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_line(p: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout_s)
    return p.stdout.readline().strip() if ready else b""


def _stderr(p: subprocess.Popen[bytes]) -> str:
    if p.poll() is None or p.stderr is None:
        return ""
    return p.stderr.read().decode(errors="replace")[-2000:]


def exchange(
    rig: Rig,
    *,
    linux_role: str,
    nbytes: int,
    seed: int,
    timeout_s: float,
    on_connected: Callable[[Tcb], Churn | None] | None = None,
) -> Exchange:
    """`nbytes` each way between our stack and a Linux socket, Linux as "client" or "server".

    `on_connected(tcb)` runs once our socket is connected (it may start a `Churn`, which is stopped when our
    side has sent and received everything). Our side closes after the exchange; the scheduler then runs
    until the Linux peer exited and a little longer so our last ACK leaves. The peer is killed on any error.
    """
    if linux_role not in ("client", "server"):
        raise ValueError(f"linux_role must be 'client' or 'server', not {linux_role!r}")
    topo, sched, stack = rig.topo, rig.sched, rig.node.host
    deadline = time.monotonic() + timeout_s
    args = [str(a) for a in (topo.our_ip, PORT, nbytes, seed + 1, 65536, timeout_s)]
    holder: dict[str, Any] = {}

    def connected(s: Socket) -> None:
        holder["s"] = s
        tcb = s.tcb
        rig.watch.alive = lambda: tcb is None or not (tcb.closed or tcb.state.name == "TimeWait")
        if on_connected is not None and tcb is not None:
            holder["churn"] = on_connected(tcb)

    t0 = time.monotonic()
    if linux_role == "client":
        lsock = stack.listen(PORT)
        p = topo.ns.python(PEER, "client", *args)

        async def ours() -> BulkResult:
            s, _ = await lsock.aaccept()
            lsock.close()
            connected(s)
            return await bulk_exchange(s, nbytes, seed)
    else:
        p = topo.ns.python(PEER, "server", *args)
        line = _read_line(p, min(timeout_s, 10.0))
        if line != b"ready":
            p.kill()
            p.wait(5)
            raise AssertionError(f"Linux server did not start: {line!r} {_stderr(p)}")

        async def ours() -> BulkResult:
            s = stack.socket()
            await s.aconnect((topo.linux_ip, PORT))
            connected(s)
            return await bulk_exchange(s, nbytes, seed)

    try:
        task = spawn(sched, ours(), name=f"chimney-linux-{linux_role}")
        sched.run_until(until=sched.now + int(timeout_s * NS_PER_S), predicate=task.done)
        churn: Churn | None = holder.get("churn")
        if churn is not None:
            churn.stop()
        if not task.done():
            raise AssertionError(f"our side did not finish in {timeout_s} s; port {rig.port.counter_dict()} "
                                 f"manager {rig.manager.stats} target {rig.node.target.counters}")
        result = task.result()
        seconds = time.monotonic() - t0
        sock: Socket = holder["s"]
        tcb = sock.tcb
        assert tcb is not None
        sock.close()
        while p.poll() is None and time.monotonic() < deadline:
            sched.run_until(until=sched.now + 20 * NS_PER_MS)
        if p.poll() is None:
            raise AssertionError("Linux peer did not finish in time")
        out, err = p.communicate(timeout=5)
        assert p.returncode == 0, err.decode(errors="replace")
        lines = out.decode().splitlines()
        assert lines, f"Linux peer printed nothing; {err.decode(errors='replace')}"
        linux = json.loads(lines[-1])
        # Let our final ACK (after Linux's FIN) leave and any late RST arrive before counting.
        sched.run_until(until=sched.now + 200 * NS_PER_MS)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    return Exchange(result, linux, tcb, seconds, tcb_state_after=tcb.state.name, churn=churn)


def linux_rtx_bound(hand_overs: int) -> int:
    """Retransmissions Linux may need on a clean TAP: a few for scheduling stalls of our Python stack (a
    spurious RTO), plus at most 2 per hand-over. A hand-over that lost in-flight data or stalled the
    connection for an RTO would cost Linux a window's worth (tens of segments) each time."""
    return 10 + 2 * hand_overs


def assert_intact_and_uninterrupted(rig: Rig, ex: Exchange, nbytes: int, seed: int, *,
                                    stale_rst_ok: bool = False) -> None:
    """Every byte arrived both ways (sha256 on both ends against an independent digest); Linux read a clean
    EOF, its 4-tuple is our TCB's and the only one on the TAP, one SYN each way, FINs both ways, no RST
    (with `stale_rst_ok`: none while our connection existed, see `WireWatch`)."""
    ours, linux = ex.ours, ex.linux
    assert linux["send_error"] is None, linux
    assert (ours.sent, linux["received"]) == (nbytes, nbytes), (ours.sent, linux["received"])
    assert ours.sent_sha256 == linux["received_sha256"] == bulk_digest(nbytes, seed)
    assert (linux["sent"], ours.received) == (nbytes, nbytes), (linux["sent"], ours.received)
    assert linux["sent_sha256"] == ours.received_sha256 == bulk_digest(nbytes, seed + 1)
    assert linux["end"] == "eof", f"Linux read ended with {linux['end']}"
    tcb = ex.tcb
    assert tcb.peer_closed and tcb.error == 0, (tcb, tcb.error, tcb.close_reason, rig.hand_overs(tcb), ours.errors)
    ends = {("Closed", "normal"), ("TimeWait", None)}
    if stale_rst_ok:
        # A stale segment of ours, held back by the impairment past Linux's close, draws its RST into our
        # TIME-WAIT, which it ends (RFC 9293 3.10.7.4; RFC 1337 protection is off by default).
        ends.add(("Closed", "time_wait_reset"))
    assert (ex.tcb_state_after, tcb.close_reason) in ends, (ex.tcb_state_after, tcb.close_reason)
    # One connection: Linux's own 4-tuple is ours, and no other TCP 4-tuple crossed the TAP.
    ip = rig.topo.our_ip
    assert (linux["peer"][0], linux["peer"][1]) == (ip, tcb.local_port), (linux["peer"], tcb)
    assert (linux["local"][0], linux["local"][1]) == (rig.topo.linux_ip, tcb.remote_port), (linux["local"], tcb)
    assert rig.watch.tuples == {(tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)}, rig.watch.tuples
    assert rig.watch.syn == {"tx": 1, "rx": 1}, f"SYNs on the TAP: {rig.watch.syn} (a reconnect?)"
    rst = rig.watch.rst_live if stale_rst_ok else rig.watch.rst
    assert rst == {"tx": 0, "rx": 0}, f"RSTs on the TAP: {rig.watch.rst} (while connected: {rig.watch.rst_live})"
    assert rig.watch.fin["tx"] >= 1 and rig.watch.fin["rx"] >= 1, rig.watch.fin


# -- four closes after a two-way exchange, through the host stack and the offload target --------------------

CLOSE_MODES = ("linux-graceful", "ours-graceful", "linux-abort", "ours-abort")

CLOSE_PEER = r"""
import hashlib, json, random, socket, struct, sys
host, port, n, seed, mode, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
c = socket.create_connection((host, port), timeout=timeout)
out = {"local": list(c.getsockname()), "peer": list(c.getpeername()), "mode": mode}
def recv_exact(k):
    buf = bytearray()
    while len(buf) < k:
        d = c.recv(min(1 << 20, k - len(buf)))
        if not d:
            break
        buf += d
    return bytes(buf)
got = recv_exact(n)
out["received"] = len(got); out["received_sha256"] = hashlib.sha256(got).hexdigest()
h = hashlib.sha256(); rng = random.Random(seed); left = n
while left > 0:
    k = min(65536, left); b = rng.randbytes(k); h.update(b); c.sendall(b); left -= k
out["sent"] = n; out["sent_sha256"] = h.hexdigest()
out["ours_received_sha256"] = recv_exact(64).decode()
end = "none"
try:
    if mode == "linux-graceful":
        c.shutdown(socket.SHUT_WR)
        end = "eof" if c.recv(1) == b"" else "data"
    elif mode == "linux-abort":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        end = "rst sent"
    elif mode == "ours-graceful":
        c.sendall(b"C")
        end = "eof" if c.recv(1) == b"" else "data"
    else:
        end = "eof" if c.recv(1) == b"" else "data"
except ConnectionResetError:
    end = "reset"
except socket.timeout:
    end = "timeout"
out["end"] = end
c.close()
print(json.dumps(out), flush=True)
"""
"""The Linux client of `close_exchange`. argv: host port nbytes seed mode timeout_s. It reads our `nbytes`,
sends its own `nbytes` (seeded stream, `seed`), reads the sha256 hex we computed of them (so it knows every
byte reached our socket), then closes per `mode`: linux-graceful shutdown(SHUT_WR) and read to EOF;
linux-abort SO_LINGER {1, 0} + close (RST); ours-graceful sends one byte "C" (go ahead) and reads to our
FIN; ours-abort just waits for our RST (we abort once it acknowledged the digest). Prints one JSON line."""


@dataclass
class CloseRun:
    """What both ends saw of one exchange-and-close (`close_exchange`)."""

    mode: str
    linux: dict[str, Any]
    ours: dict[str, Any]
    tcb: Tcb
    seconds: float
    entries_while_offloaded: list[int] = field(default_factory=list)  # per IM, live TCP offload entries


async def _recv_exact(sock: Socket, n: int) -> tuple[int, str]:
    h = hashlib.sha256()
    got = 0
    while got < n:
        data = await sock.arecv_view(min(1 << 20, n - got))
        if not data:
            break
        h.update(data)
        got += len(data)
    return got, h.hexdigest()


def close_exchange(rig: Rig, mode: str, *, nbytes: int, seed: int, timeout_s: float) -> CloseRun:
    """A Linux client (`CLOSE_PEER`) connects to our listener; once the connection is offloaded our side sends
    `nbytes` (seed), reads Linux's `nbytes` (seed + 1) and answers their sha256; then the close `mode`
    (CLOSE_MODES) runs: graceful from Linux (we answer with shutdown -> NdisOffloadTcpDisconnect graceful),
    graceful from us (shutdown first, then EOF), abortive from Linux (its RST reaches the target, which
    indicates the abort), abortive from us (abort -> NdisOffloadTcpDisconnect abortive -> the target's RST).
    Returns when our connection is closed (or in TIME-WAIT) and the Linux client has exited; the scheduler
    then runs a little longer so the last ACKs are on the wire (and in the capture)."""
    if mode not in CLOSE_MODES:
        raise ValueError(f"mode must be one of {CLOSE_MODES}, not {mode!r}")
    topo, sched, m = rig.topo, rig.sched, rig.manager
    deadline = time.monotonic() + timeout_s
    holder: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    lsock = rig.node.host.listen(PORT)
    p = topo.ns.python(CLOSE_PEER, *(str(a) for a in (topo.our_ip, PORT, nbytes, seed + 1, mode, timeout_s)))

    async def run() -> None:
        s, _ = await lsock.aaccept()
        lsock.close()
        holder["s"] = s
        tcb = s.tcb
        assert tcb is not None
        rig.watch.alive = lambda: not tcb.closed
        for _ in range(1000):  # bounded: 1000 x 2 ms
            if m.is_offloaded(tcb):
                break
            await sleep(sched, 2 * NS_PER_MS)
        ours["offloaded_before_data"] = m.is_offloaded(tcb)
        holder["entries"] = [sum(1 for e in im.entries.values() if e.type == OffloadStateType.TcpOffloadState)
                             for im in rig.node.ims]
        ours["sent_sha256"] = await bulk_send(s, nbytes, seed, shutdown=False)
        ours["received"], ours["received_sha256"] = await _recv_exact(s, nbytes)
        await s.asendall(ours["received_sha256"].encode())
        try:
            if mode == "linux-graceful":
                ours["after"] = bytes(await s.arecv(1))  # b"": Linux's FIN, indicated by the target
                s.close()  # CLOSE-WAIT -> our FIN, offloaded (graceful NdisOffloadTcpDisconnect)
            elif mode == "linux-abort":
                ours["after"] = bytes(await s.arecv(1))
                s.close()
            elif mode == "ours-graceful":
                ours["go"] = bytes(await s.arecv(1))
                s.shutdown(SHUT_WR)
                ours["after"] = bytes(await s.arecv(1))
                s.close()
            else:
                # Abort once Linux acknowledged everything (the target completed every send), so the RST
                # discards nothing and follows no unacknowledged byte.
                for _ in range(1000):  # bounded: 1000 x 2 ms
                    if tcb.path.send_queued == 0:
                        break
                    await sleep(sched, 2 * NS_PER_MS)
                ours["unacked_at_abort"] = tcb.path.send_queued
                s.abort()
        except OSError as e:
            ours["error"] = errno.errorcode.get(e.errno or 0, str(e.errno))
            s.close()

    t0 = time.monotonic()
    try:
        task = spawn(sched, run(), name=f"close-{mode}")
        sched.run_until(until=sched.now + int(timeout_s * NS_PER_S), predicate=task.done)
        if not task.done():
            raise AssertionError(f"our side did not finish in {timeout_s} s ({mode}); port {rig.port.counter_dict()} "
                                 f"manager {m.stats} target {rig.node.target.counters}")
        task.result()
        tcb = holder["s"].tcb
        assert tcb is not None
        # Closed, or TIME-WAIT (the target hands a connection back on entering it, R-TMR-03), and back home.
        while time.monotonic() < deadline and not ((tcb.closed or tcb.state.name == "TimeWait") and not m.paths
                                                   and not m.busy() and p.poll() is not None):
            sched.run_until(until=sched.now + 10 * NS_PER_MS)
        if p.poll() is None:
            raise AssertionError(f"Linux client did not finish in time ({mode})")
        out, err = p.communicate(timeout=5)
        assert p.returncode == 0, err.decode(errors="replace")
        lines = out.decode().splitlines()
        assert lines, f"Linux client printed nothing; {err.decode(errors='replace')}"
        linux = json.loads(lines[-1])
        sched.run_until(until=sched.now + 200 * NS_PER_MS)  # the last ACKs and any late RST reach the capture
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        lsock.close()  # idempotent; still open when the accept never happened
    ours["state_after"] = tcb.state.name
    ours["close_reason"] = tcb.close_reason
    return CloseRun(mode, linux, ours, tcb, time.monotonic() - t0, holder.get("entries", []))


# -- reading a capture back as TCP segments -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seg:
    """One TCP segment of a capture: `side` "ours" or "linux" (by source address); `rseq` / `rack` relative
    to the sender's / receiver's ISN (the SYN has rseq 0, the first data byte 1)."""

    t_ns: int
    side: str
    flags: int
    seq: int
    ack: int
    length: int
    tuple4: tuple[str, int, str, int]
    rseq: int = 0
    rack: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def syn(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def rst(self) -> bool:
        return bool(self.flags & 0x04)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & 0x10)

    def key(self) -> tuple[str, int, int, int, int]:
        """What both vantage points of one wire agree on (not the time)."""
        return (self.side, self.flags, self.rseq, self.rack, self.length)

    def __str__(self) -> str:
        names = "".join(c for bit, c in ((2, "S"), (1, "F"), (4, "R"), (8, "P"), (16, ".")) if self.flags & bit)
        return f"{self.side:5} [{names}] seq {self.rseq} ack {self.rack} len {self.length}"


def tcp_segments(records: Iterable[PacketRecord], our_ip: str) -> list[Seg]:
    """Ethernet / IPv4 / TCP frames of a capture, in capture order, with sequence numbers made relative to
    each side's SYN (frames before a side's SYN keep rseq = seq). Other frames (ARP, ...) are skipped."""
    ours = ipaddress.ip_address(our_ip).packed
    raw: list[Seg] = []
    for r in records:
        f = r.data
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 15) * 4
        t = 14 + ihl
        total = int.from_bytes(f[16:18], "big")
        src, dst = f[26:30], f[30:34]
        sport, dport = int.from_bytes(f[t:t + 2], "big"), int.from_bytes(f[t + 2:t + 4], "big")
        length = total - ihl - (f[t + 12] >> 4) * 4
        raw.append(Seg(r.timestamp_ns, "ours" if src == ours else "linux", f[t + 13],
                       int.from_bytes(f[t + 4:t + 8], "big"), int.from_bytes(f[t + 8:t + 12], "big"), length,
                       (str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport)))
    isn: dict[str, int] = {}
    for sg in raw:
        if sg.syn:
            isn.setdefault(sg.side, sg.seq)
    out = []
    for sg in raw:
        own, other = isn.get(sg.side, 0), isn.get("linux" if sg.side == "ours" else "ours", 0)
        out.append(Seg(sg.t_ns, sg.side, sg.flags, sg.seq, sg.ack, sg.length, sg.tuple4,
                       (sg.seq - own) & 0xFFFFFFFF, (sg.ack - other) & 0xFFFFFFFF if sg.has_ack else 0))
    return out


@dataclass
class SideView:
    """One direction of one connection as a capture shows it (relative sequence numbers)."""

    segments: list[Seg]
    data_end: int  # one past the highest payload byte sent (1 + bytes when nothing was lost)
    payload_bytes: int  # payload bytes in all segments, retransmissions included
    fins: list[Seg]
    rsts: list[Seg]
    max_ack: int  # highest acknowledgment of the other side's sequence space

    @property
    def fin_seq(self) -> int | None:
        return self.fins[0].rseq if self.fins else None

    def payload_at_or_after(self, rseq: int) -> int:
        """Payload bytes that lie at or beyond `rseq` (data after a FIN if `rseq` is the FIN's)."""
        return sum(max(0, sg.rseq + sg.length - max(sg.rseq, rseq)) for sg in self.segments if sg.length)


def one_connection(segs: list[Seg]) -> dict[str, SideView]:
    """Per side ("ours", "linux"): the segments and what they add up to. Asserts one 4-tuple only."""
    tuples = {sg.tuple4 if sg.side == "ours" else (sg.tuple4[2], sg.tuple4[3], sg.tuple4[0], sg.tuple4[1])
              for sg in segs}
    assert len(tuples) == 1, f"more than one TCP connection in the capture: {tuples}"
    views = {}
    for side in ("ours", "linux"):
        mine = [sg for sg in segs if sg.side == side]
        views[side] = SideView(
            mine,
            max((sg.rseq + sg.length for sg in mine if sg.length), default=1),
            sum(sg.length for sg in mine),
            [sg for sg in mine if sg.fin],
            [sg for sg in mine if sg.rst],
            max((sg.rack for sg in mine if sg.has_ack), default=0),
        )
    return views


__all__ = [
    "CLOSE_MODES",
    "CLOSE_PEER",
    "NO_LEAKS",
    "PEER",
    "PORT",
    "SOAK",
    "Churn",
    "CloseRun",
    "Exchange",
    "Rig",
    "Seg",
    "SideView",
    "WireWatch",
    "assert_intact_and_uninterrupted",
    "build_rig",
    "close_exchange",
    "exchange",
    "linux_rtx_bound",
    "one_connection",
    "tcp_segments",
]
