"""NdisQueryOffloadState from the host (R-QRY-*): `netstat` rows of offloaded connections carry the
target's live delegated values; concurrent queries of one connection; terminate waits for queries
(R-TRM-05). Verifier STRICT, sha256 of both streams checked."""

from __future__ import annotations

from typing import Any

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.netstat import format_table, list_connections, list_connections_async
from chimney.host.policy import OffloadPolicy
from chimney.links.impair import Impairments
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

PORT = 5001
WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)
N = 1_500_000


def setup(clients: int = 2) -> tuple[OffloadPair, list[Any]]:
    p = build_offload_pair(SimScheduler(3), 3, WIRE, policy=OffloadPolicy.explicit())
    warm = apps.discard_server(p.host_b, 9)
    w = spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", 9, 100, 1))
    run_until(p, w.done)
    warm.close()
    apps.bulk_server(p.host_b, PORT, N, 7)
    futs = [spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", PORT, N, 11 + i))
            for i in range(clients)]
    run_for(p, 20)
    return p, futs


def run_until(p: OffloadPair, pred: Any, limit_s: float = 120) -> None:
    sched = p.host_a.scheduler
    sched.run_until(sched.now + int(limit_s * NS_PER_S), predicate=pred)
    assert pred()


def run_for(p: OffloadPair, ms: float) -> None:
    sched = p.host_a.scheduler
    sched.run_until(sched.now + int(ms * NS_PER_MS))


def conns(p: OffloadPair) -> list[Any]:
    return sorted((t for t in p.host_a.tcp.connections() if t.remote_port == PORT), key=lambda t: t.local_port)


def target_ctx(p: OffloadPair, tcb: Any) -> Any:
    return p.target.tcps[(tcb.local, tcb.remote, tcb.local_port, tcb.remote_port)]


def finish(p: OffloadPair, futs: list[Any]) -> None:
    run_until(p, lambda: all(f.done() for f in futs))
    for i, f in enumerate(futs):
        r = f.result()
        assert not r.errors and r.received == N
        assert r.received_sha256 == apps.bulk_digest(N, 7) and r.sent_sha256 == apps.bulk_digest(N, 11 + i)
    m = p.manager
    run_until(p, lambda: not m.busy() and not m.paths and not p.binding.tx_outstanding, 300)
    assert m.leaks() == []
    p.ndis.halt_adapter(p.ndis.adapters[0])
    assert p.ndis.leak_report().strip() == "no live NBLs (all owners)"


def test_netstat_shows_live_target_values_for_offloaded_and_host_values_for_the_rest() -> None:
    """R-QRY-02/05/06/07: the offloaded row comes from the target (state, sequence numbers moving on past
    the values frozen at offload, cwnd, SRtt descaled from 8 x ticks, backlogs); the other row from the
    host engine."""
    p, futs = setup()
    off, host = conns(p)
    assert p.manager.offload(off) == 1
    run_for(p, 2)
    frozen_una = off.conn.snd_una  # the host's copy stopped at the offload
    run_for(p, 30)
    rows = list_connections(p.manager)
    by_port = {r.local.rsplit(":", 1)[1]: r for r in rows if r.remote.endswith(f":{PORT}")}
    r_off, r_host = by_port[str(off.local_port)], by_port[str(host.local_port)]
    ctx = target_ctx(p, off)
    assert (r_off.where, r_off.source, r_off.state) == ("offloaded", "target", "Established")
    assert (r_off.snd_una - frozen_una) % (1 << 32) > 100_000  # live, not the frozen host state
    assert 0 <= (ctx.conn.snd_una - r_off.snd_una) % (1 << 32) < N  # not ahead of the target now
    assert r_off.cwnd > 0 and r_off.send_backlog is not None and r_off.receive_backlog is not None
    assert r_off.srtt_ms is not None and abs(r_off.srtt_ms - ctx.conn.srtt / NS_PER_MS) <= 1.0
    assert (r_host.where, r_host.source) == ("host", "host")
    assert r_host.snd_una == host.conn.snd_una & 0xFFFFFFFF and r_host.cwnd == host.conn.cc.cwnd
    text = format_table(rows)
    assert "offloaded" in text and text.splitlines()[0].startswith("Local")
    finish(p, futs)


def test_concurrent_queries_of_one_connection_all_complete() -> None:
    """R-QRY-04: several queries of the same connection outstanding at once."""
    p, futs = setup(1)
    (tcb,) = conns(p)
    p.manager.offload(tcb)
    run_for(p, 2)
    qs = [p.manager.query(tcb) for _ in range(4)]
    many = list_connections_async(p.manager)
    assert p.manager.ops_out == 5 and tcb.path.ops == 5
    run_until(p, lambda: all(q.done() for q in qs) and many.done(), 1)
    assert all(q.result() is not None for q in qs)
    assert [r.source for r in many.result() if r.remote.endswith(f":{PORT}")] == ["target"]
    finish(p, futs)


def test_upload_waits_for_an_outstanding_query() -> None:
    """R-TRM-05: the terminate of a connection follows the completion of its query."""
    p, futs = setup(1)
    (tcb,) = conns(p)
    p.manager.offload(tcb)
    run_for(p, 2)
    q = p.manager.query(tcb)
    assert p.manager.upload(tcb) == 0 and tcb.path.upload_wait == "explicit"
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert q.done() and q.result() is not None
    finish(p, futs)


def test_query_of_a_host_connection_resolves_none_without_a_request() -> None:
    p, futs = setup(1)
    (tcb,) = conns(p)
    q = p.manager.query(tcb)
    assert q.done() and q.result() is None and p.manager.stats["queries"] == 0
    finish(p, futs)


def test_demo_report_carries_a_netstat_of_offloaded_connections_queried_from_the_target() -> None:
    """`chimney demo` shows host A's connection list mid-transfer: the offloaded rows come from
    NdisQueryOffloadState (source "target"), with the target's sequence numbers and SRtt."""
    from chimney.demo import run_offload_demo

    r = run_offload_demo(3, connections=2, nbytes=600_000)
    assert r["ok"]
    ns = r["netstat"]
    assert ns is not None and 0 < ns["t_ms"] < r["transfer_ms"] + 100
    rows = [row for row in ns["rows"] if row["local"].endswith(":5001")]
    assert len(rows) == 2 and {row["source"] for row in rows} <= {"target", "host", "stale"}
    queried = [row for row in rows if row["source"] == "target"]
    assert queried and all(row["where"] == "offloaded" and row["srtt_ms"] is not None for row in queried)
    assert all(row["send_backlog"] is not None and row["cwnd"] > 0 for row in queried)
