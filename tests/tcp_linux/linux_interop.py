"""Helpers for the Linux interop tests: the Linux-side peer program (run inside the namespace), a
TCP-flag capture on the TAP port, and one driver that runs a two-way bulk exchange in either role.

The Linux peer and our stack both send the seeded stream of `chimney.host.apps.bulk_chunks`
(same interpreter, so `random.Random(seed).randbytes` gives the same bytes on both ends), half-close
after sending, read to EOF, and report sha256 of both directions; the peer also reports its
TCP_INFO view of the negotiated options so both ends' views can be compared.
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

from chimney.host.apps import BulkResult, bulk_exchange
from chimney.host.socket import Socket
from chimney.host.stack import HostStack
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology
from chimney.links.tap import TapPort
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.tasks import spawn
from linux_peer import PEER

PORT = 5001
SOAK = os.environ.get("CHIMNEY_SOAK", "") not in ("", "0")

# Linux <netinet/tcp.h>: TCP_INFO and the tcpi_options bits.
TCP_INFO = 11
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4



class FlagCounter:
    """A port observer counting TCP segments with RST / FIN set, per direction ("tx" ours, "rx" Linux's).

    `rst_live` counts only RSTs seen while `alive()` says our connection still exists: once our
    TCB is CLOSED, a stale segment (e.g. a duplicate ACK held back by the reordering impairment)
    correctly draws a RST from the closed port (RFC 9293 3.10.7.1), as it would from Linux.
    """

    __slots__ = ("alive", "fin", "rst", "rst_live", "segments")

    def __init__(self) -> None:
        self.rst = {"tx": 0, "rx": 0}
        self.rst_live = {"tx": 0, "rx": 0}
        self.fin = {"tx": 0, "rx": 0}
        self.segments = {"tx": 0, "rx": 0}
        self.alive: Callable[[], bool] | None = None

    def __call__(self, direction: str, frame: bytes, meta: str | None) -> None:
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return
        flags = frame[14 + (frame[14] & 15) * 4 + 13]
        self.segments[direction] += 1
        if flags & 0x04:
            self.rst[direction] += 1
            if self.alive is None or self.alive():
                self.rst_live[direction] += 1
        if flags & 0x01:
            self.fin[direction] += 1


@dataclass
class Exchange:
    """What both ends saw of one two-way transfer."""

    ours: BulkResult
    linux: dict[str, Any]
    tcb: Tcb
    flags: FlagCounter
    port: TapPort
    seconds: float
    tcb_state_after: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def our_stack(topo: TapTopology, sched: RealTimeScheduler) -> tuple[HostStack, TapPort]:
    stack = HostStack(sched, "ours")
    port = topo.port(sched)
    stack.attach(port, mac=topo.our_mac, addresses=[f"{topo.our_ip}/24"], name="tap")
    return stack, port


def _read_line(p: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One stdout line from `p` within `timeout_s` (the peer's "ready"), b"" if none came."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout_s)
    return p.stdout.readline().strip() if ready else b""


def _drive_until_exit(sched: RealTimeScheduler, p: subprocess.Popen[bytes], deadline: float) -> None:
    while p.poll() is None and time.monotonic() < deadline:
        sched.run_until(until=sched.now + 20_000_000)


def exchange(
    topo: TapTopology,
    stack: HostStack,
    port: TapPort,
    *,
    linux_role: str,
    nbytes: int,
    seed: int,
    timeout_s: float,
) -> Exchange:
    """`nbytes` each way between our stack and a Linux socket, Linux as "client" or "server".

    Our side: accept (or connect), exchange, close; then the scheduler is driven until the Linux
    peer has exited (its FIN/ACK handshake completes against our engine) and a little longer so our
    last ACK leaves. Raises AssertionError with the peer's stderr when it does not finish in time.
    """
    if linux_role not in ("client", "server"):
        raise ValueError(f"linux_role must be 'client' or 'server', not {linux_role!r}")
    sched = stack.scheduler
    assert isinstance(sched, RealTimeScheduler)
    flags = FlagCounter()
    port.add_observer(flags)
    deadline = time.monotonic() + timeout_s
    args = [str(a) for a in (topo.our_ip, PORT, nbytes, seed + 1, 65536, timeout_s)]
    holder: dict[str, Socket] = {}
    t0 = time.monotonic()
    if linux_role == "client":
        lsock = stack.listen(PORT)
        p = topo.ns.python(PEER, "client", *args)

        async def ours() -> BulkResult:
            s, _ = await lsock.aaccept()
            holder["s"] = s
            flags.alive = _alive(s)
            lsock.close()
            return await bulk_exchange(s, nbytes, seed)
    else:
        p = topo.ns.python(PEER, "server", *args)
        line = _read_line(p, min(timeout_s, 10.0))
        assert line == b"ready", f"Linux server did not start: {line!r} {_stderr(p)}"

        async def ours() -> BulkResult:
            s = stack.socket()
            holder["s"] = s
            flags.alive = _alive(s)
            await s.aconnect((topo.linux_ip, PORT))
            return await bulk_exchange(s, nbytes, seed)

    task = spawn(sched, ours(), name=f"interop-{linux_role}")
    sched.run_until(until=sched.now + int(timeout_s * 1e9), predicate=task.done)
    if not task.done():
        p.kill()
        p.wait(5)
        raise AssertionError(f"our side did not finish in {timeout_s} s; port {port.counter_dict()} {_stderr(p)}")
    result = task.result()
    seconds = time.monotonic() - t0
    sock = holder["s"]
    tcb = sock.tcb
    assert tcb is not None
    sock.close()
    _drive_until_exit(sched, p, deadline)
    if p.poll() is None:
        p.kill()
        p.wait(5)
        raise AssertionError(f"Linux peer did not finish; {_stderr(p)}")
    out, err = p.communicate(timeout=5)
    assert p.returncode == 0, err.decode(errors="replace")
    lines = out.decode().splitlines()
    assert lines, f"Linux peer printed nothing; {err.decode(errors='replace')}"
    linux = json.loads(lines[-1])
    # Let our final ACK (after Linux's FIN) leave and any late RST arrive before counting; on a lossy path
    # our FIN may need a retransmission (an RTO) before Linux's orphaned socket acknowledges it.
    sched.run_until(until=sched.now + 100_000_000)
    sched.run_until(until=sched.now + 5_000_000_000, predicate=lambda: tcb.state.name in ("Closed", "TimeWait"))
    port.remove_observer(flags)
    return Exchange(result, linux, tcb, flags, port, seconds, tcb_state_after=tcb.state.name)


def _alive(s: Socket) -> Callable[[], bool]:
    return lambda: s.tcb is None or not s.tcb.closed


def _stderr(p: subprocess.Popen[bytes]) -> str:
    if p.poll() is None or p.stderr is None:
        return ""
    return p.stderr.read().decode(errors="replace")[-2000:]


def expected_digest(nbytes: int, seed: int) -> str:
    """sha256 of the seeded bulk stream, computed here independently of both senders."""
    from chimney.host.apps import bulk_digest

    return bulk_digest(nbytes, seed)


def assert_intact_and_clean(ex: Exchange, nbytes: int, seed: int, *, stale_rst_ok: bool = False) -> None:
    """Every byte arrived both ways (sha256 checked on both ends against an independent digest) and
    both ends closed with FINs: Linux read a clean EOF, we saw PeerClosed, and no RST crossed the TAP
    (with `stale_rst_ok`, only none while our connection existed: see `FlagCounter`)."""
    ours, linux = ex.ours, ex.linux
    our_stream = expected_digest(nbytes, seed)
    linux_stream = expected_digest(nbytes, seed + 1)
    assert linux["send_error"] is None, linux
    assert (ours.sent, linux["received"]) == (nbytes, nbytes)
    assert ours.sent_sha256 == linux["received_sha256"] == our_stream
    assert (linux["sent"], ours.received) == (nbytes, nbytes)
    assert linux["sent_sha256"] == ours.received_sha256 == linux_stream
    assert linux["end"] == "eof", f"Linux read ended with {linux['end']}"
    tcb = ex.tcb
    assert tcb.peer_closed and tcb.error == 0, (tcb, tcb.error)
    # Closed from LAST-ACK, or TIME-WAIT when our FIN left first (the host keeps TIME-WAIT, R-TMR-03).
    assert (ex.tcb_state_after, tcb.close_reason) in (("Closed", "normal"), ("TimeWait", None)), (
        ex.tcb_state_after, tcb.close_reason)
    rst = ex.flags.rst_live if stale_rst_ok else ex.flags.rst
    assert rst == {"tx": 0, "rx": 0}, f"RSTs seen on the TAP: {ex.flags.rst} (while connected: {ex.flags.rst_live})"
    assert ex.flags.fin["tx"] >= 1 and ex.flags.fin["rx"] >= 1, ex.flags.fin


def linux_options(linux: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(sack, timestamps, window scaling) as Linux's TCP_INFO reports them for the connection."""
    o = int(linux["options"])
    return bool(o & TCPI_OPT_SACK), bool(o & TCPI_OPT_TIMESTAMPS), bool(o & TCPI_OPT_WSCALE)


__all__ = [
    "PEER",
    "PORT",
    "SOAK",
    "Exchange",
    "FlagCounter",
    "assert_intact_and_clean",
    "exchange",
    "expected_digest",
    "linux_options",
    "our_stack",
]
