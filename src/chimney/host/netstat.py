"""`netstat` for the host stack: one row per TCP connection, host path and offloaded alike; offloaded rows
carry the target's live delegated values obtained with NdisQueryOffloadState (R-QRY-02/05..08).

NDIS name -> Python name: NdisQueryOffloadState -> OffloadManager.query (used by `list_connections_async`);
ProtocolQueryOffloadComplete -> OffloadManager.query_offload_complete.

    rows = list_connections(manager)           # runs the simulation until every query completed
    fut = list_connections_async(manager)      # SimFuture[list[ConnRow]] (await it in a task)
    print(format_table(rows))
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chimney.ndis.offload_state import TcpConnectionState
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import SimFuture

if TYPE_CHECKING:
    from chimney.host.chimney import OffloadManager
    from chimney.host.stack import HostStack
    from chimney.host.tcp import Tcb
    from chimney.ndis.offload_state import TcpOffloadStateDelegated

NOT_SUPPORTED = 0xFFFFFFFF  # SendBacklogSize / ReceiveBacklogSize of a target without the feature (R-QRY-05/06)
QUERY_LIMIT_NS = NS_PER_S  # how long `list_connections` lets the simulation run for the queries


@dataclass(frozen=True, slots=True)
class ConnRow:
    """One connection. `where`: "host", "offloaded", "offloading", "uploading". `source`: "host" when the
    values come from the host engine, "target" when from a query, "stale" when the query failed and the
    row falls back to the host's last known values. Sequence numbers are modulo 2^32. `srtt_ms` is
    descaled (the query reports 8 x SRtt in ticks, R-QRY-07); None before the first RTT sample.
    Backlogs are None when the target does not report them."""

    local: str
    remote: str
    state: str
    where: str
    source: str
    snd_una: int
    snd_nxt: int
    rcv_nxt: int
    cwnd: int
    srtt_ms: float | None
    send_backlog: int | None
    receive_backlog: int | None


def _manager_and_stack(x: Any) -> tuple[OffloadManager | None, HostStack]:
    from chimney.host.chimney import ChimneyPath, OffloadManager

    if isinstance(x, OffloadManager):
        return x, x.stack
    for tcb in x.tcp.connections():
        if isinstance(tcb.path, ChimneyPath):
            return tcb.path.manager, x
    return None, x


def _endpoint(addr: bytes, port: int) -> str:
    a = ipaddress.ip_address(addr)
    return f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}"


def _host_row(tcb: Tcb, where: str, source: str = "host") -> ConnRow:
    conn = tcb.conn
    path = tcb.path
    srtt = conn.srtt / NS_PER_MS if conn.have_rtt else None
    return ConnRow(
        _endpoint(tcb.local, tcb.local_port), _endpoint(tcb.remote, tcb.remote_port), path.state.name, where,
        source, conn.snd_una & 0xFFFFFFFF, conn.snd_nxt & 0xFFFFFFFF, conn.rcv_nxt & 0xFFFFFFFF, conn.cc.cwnd,
        srtt, path.send_queued, path.readable,
    )


def _target_row(tcb: Tcb, d: TcpOffloadStateDelegated, tps: int) -> ConnRow:
    srtt = d.srtt / 8 * 1000 / tps if d.srtt else None  # R-QRY-07: exchanged as 8 x SRtt ticks
    return ConnRow(
        _endpoint(tcb.local, tcb.local_port), _endpoint(tcb.remote, tcb.remote_port),
        TcpConnectionState(d.state).name, "offloaded", "target", d.snd_una, d.snd_nxt, d.rcv_nxt, d.cwnd, srtt,
        None if d.send_backlog_size == NOT_SUPPORTED else d.send_backlog_size,
        None if d.receive_backlog_size == NOT_SUPPORTED else d.receive_backlog_size,
    )


def list_connections_async(stack_or_manager: Any) -> SimFuture[list[ConnRow]]:
    """Query every offloaded connection at once (concurrent queries are legal, R-QRY-04) and resolve with
    all rows, in the stack's connection order."""
    manager, stack = _manager_and_stack(stack_or_manager)
    tcbs = list(stack.tcp.connections())
    rows: list[ConnRow | None] = [None] * len(tcbs)
    queries: list[tuple[int, Tcb, SimFuture[Any]]] = []
    for i, tcb in enumerate(tcbs):
        kind = tcb.path.kind
        if manager is not None and manager.is_offloaded(tcb):
            queries.append((i, tcb, manager.query(tcb)))
        elif kind == "chimney":
            phase = tcb.path.phase.value  # type: ignore[attr-defined]
            rows[i] = _host_row(tcb, "offloading" if phase == "offloading" else "uploading", "stale")
        else:
            rows[i] = _host_row(tcb, "host")
    out: SimFuture[list[ConnRow]] = SimFuture()
    left = [len(queries)]

    def finish() -> None:
        out.set_result([r for r in rows if r is not None])

    def one_done(i: int, tcb: Tcb, f: SimFuture[Any]) -> None:
        d = f.result()
        assert manager is not None
        rows[i] = _target_row(tcb, d, manager.tps) if d is not None else _host_row(tcb, "offloaded", "stale")
        left[0] -= 1
        if left[0] == 0:
            finish()

    if not queries:
        finish()
    for i, tcb, f in queries:
        f.add_done_callback(lambda f, i=i, tcb=tcb: one_done(i, tcb, f))
    return out


def list_connections(stack_or_manager: Any) -> list[ConnRow]:
    """Synchronous form for tools and tests: runs the simulation (at most QUERY_LIMIT_NS) until every
    query completed. Not for use from inside a scheduler callback (use `list_connections_async`)."""
    fut = list_connections_async(stack_or_manager)
    if not fut.done():
        _manager, stack = _manager_and_stack(stack_or_manager)
        sched = stack.scheduler
        sched.run_until(sched.now + QUERY_LIMIT_NS, predicate=fut.done)
        if not fut.done():
            raise TimeoutError("NdisQueryOffloadState did not complete")
    return fut.result()


def format_table(rows: list[ConnRow]) -> str:
    head = ("Local", "Remote", "State", "Where", "SndUna", "SndNxt", "RcvNxt", "Cwnd", "SRtt(ms)", "SndQ", "RcvQ")
    lines = [head]
    for r in rows:
        lines.append((
            r.local, r.remote, r.state, r.where, str(r.snd_una), str(r.snd_nxt), str(r.rcv_nxt), str(r.cwnd),
            "-" if r.srtt_ms is None else f"{r.srtt_ms:.2f}",
            "-" if r.send_backlog is None else str(r.send_backlog),
            "-" if r.receive_backlog is None else str(r.receive_backlog),
        ))
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


__all__ = ["ConnRow", "format_table", "list_connections", "list_connections_async"]
