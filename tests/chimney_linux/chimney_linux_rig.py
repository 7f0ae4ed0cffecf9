"""Helpers for the chimney-against-Linux tests: our host bound through NDIS to the offload target on a TAP,
a Linux-side bulk peer run in the namespace, a wire watcher, an offload/upload churn timer and one driver.

The Linux peer and our stack both send the seeded stream of `chimney.host.apps.bulk_chunks` (same
interpreter, so `random.Random(seed).randbytes` gives the same bytes on both ends), half-close after
sending, read to EOF and report sha256 both ways; the peer also reports how its read ended (eof / reset /
timeout), its 4-tuple and TCP_INFO (options, retransmissions), so "Linux saw one uninterrupted connection"
is checked from Linux's own view as well as from the frames on the TAP.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chimney.host.apps import BulkResult, bulk_digest, bulk_exchange
from chimney.host.chimney import OffloadManager
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import Socket
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology
from chimney.links.tap import TapPort
from chimney.ndis.verifier import Mode, Verifier
from chimney.serve import TapOffloadHost, build_tap_offload_host
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import spawn
from linux_peer import PEER

PORT = 5002
SOAK = os.environ.get("CHIMNEY_SOAK", "") not in ("", "0")
NO_LEAKS = "no live NBLs (all owners)"


class WireWatch:
    """A TapPort observer: per direction ("tx" ours, "rx" Linux's) TCP segments, SYN / FIN / RST counts,
    payload bytes, and every 4-tuple (as seen from our side) that crossed the TAP.

    `rst_live` counts only RSTs seen while `alive()` says our connection still exists: once our TCB is
    CLOSED, a stale segment held back by the reordering impairment correctly draws a RST from the closed
    port (RFC 9293 3.10.7.1), as it would from Linux.
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


def build_rig(topo: TapTopology, sched: RealTimeScheduler, policy: OffloadPolicy, **kw: Any) -> Rig:
    """Our host on `topo`'s TAP through NDIS (strict verifier, host chimney checks) to an OffloadTarget."""
    port = topo.port(sched)
    node = build_tap_offload_host(sched, port, f"{topo.our_ip}/24", policy=policy, verifier=Verifier(Mode.STRICT),
                                  **kw)
    watch = WireWatch()
    port.add_observer(watch)
    return Rig(topo, sched, port, node, watch)


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
        rig.watch.alive = lambda: tcb is None or not tcb.closed
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
    assert (ex.tcb_state_after, tcb.close_reason) in (("Closed", "normal"), ("TimeWait", None)), (
        ex.tcb_state_after, tcb.close_reason)
    # One connection: Linux's own 4-tuple is ours, and no other TCP 4-tuple crossed the TAP.
    ip = rig.topo.our_ip
    assert (linux["peer"][0], linux["peer"][1]) == (ip, tcb.local_port), (linux["peer"], tcb)
    assert (linux["local"][0], linux["local"][1]) == (rig.topo.linux_ip, tcb.remote_port), (linux["local"], tcb)
    assert rig.watch.tuples == {(tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)}, rig.watch.tuples
    assert rig.watch.syn == {"tx": 1, "rx": 1}, f"SYNs on the TAP: {rig.watch.syn} (a reconnect?)"
    rst = rig.watch.rst_live if stale_rst_ok else rig.watch.rst
    assert rst == {"tx": 0, "rx": 0}, f"RSTs on the TAP: {rig.watch.rst} (while connected: {rig.watch.rst_live})"
    assert rig.watch.fin["tx"] >= 1 and rig.watch.fin["rx"] >= 1, rig.watch.fin


__all__ = [
    "NO_LEAKS",
    "PEER",
    "PORT",
    "SOAK",
    "Churn",
    "Exchange",
    "Rig",
    "WireWatch",
    "assert_intact_and_uninterrupted",
    "build_rig",
    "exchange",
    "linux_rtx_bound",
]
