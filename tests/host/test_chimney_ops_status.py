"""Chimney status indications, power and statistics from the host side: OFFLOAD_PAUSE / OFFLOAD_RESUME
(new capacity honoured), UPLOAD_ALL (TCP, then paths, then neighbors: R-TRM-04), media disconnect per
policy (R-EVT-12), low power (R-PM-01/02) and the stats OIDs (R-STAT-02..04). Verifier STRICT; sha256 of
both streams checked."""

from __future__ import annotations

import dataclasses
from typing import Any

from test_chimney_ops_update import PORT, WIRE, check_clean, run_for, run_until

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.ndis.blocklist import iter_tree
from chimney.ndis.offload_state import Layer
from chimney.ndis.status import NdisStatus
from chimney.sim.scheduler import NS_PER_MS, SimScheduler
from chimney.sim.tasks import spawn

N = 1_500_000


def setup(policy: OffloadPolicy, clients: int = 1, n: int = N, **target: Any) -> tuple[OffloadPair, list[Any]]:
    p = build_offload_pair(SimScheduler(5), 5, WIRE, target or None, policy=policy)
    warm = apps.discard_server(p.host_b, 9)
    w = spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", 9, 100, 1))
    run_until(p, w.done)
    warm.close()
    run_for(p, 60)  # the warm-up connection is gone from the host (and from the target if it was offloaded)
    apps.bulk_server(p.host_b, PORT, n, 7)
    futs = [spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", PORT, n, 11 + i))
            for i in range(clients)]
    return p, futs


def conns(p: OffloadPair) -> list[Any]:
    return [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]


def finish(p: OffloadPair, futs: list[Any], n: int = N) -> None:
    run_until(p, lambda: all(f.done() for f in futs))
    for i, f in enumerate(futs):
        r = f.result()
        assert not r.errors and r.received == n
        assert r.received_sha256 == apps.bulk_digest(n, 7) and r.sent_sha256 == apps.bulk_digest(n, 11 + i)
    check_clean(p)


def indicate(p: OffloadPair, status: int, buffer: Any = None) -> None:
    """NdisMIndicateStatusEx as the target raises it."""
    p.ndis.m_indicate_status_ex(p.target.adapter, status, buffer)


def test_pause_blocks_new_offloads_until_resume_which_honours_the_new_capacity() -> None:
    p, futs = setup(OffloadPolicy.explicit(), clients=3)
    run_for(p, 20)
    a, b, c = conns(p)
    m = p.manager
    assert m.offload(a) == 1
    run_for(p, 2)
    indicate(p, NdisStatus.OFFLOAD_PAUSE)
    assert m.offload([b, c]) == 0 and m.stats["status_pause"] == 1
    ctx = p.target.tcps[(a.local, a.remote, a.local_port, a.remote_port)]
    una, got = ctx.conn.snd_una, m.stats["ind_bytes"]
    run_for(p, 20)
    # I/O continues while paused, both ways
    assert m.is_offloaded(a) and ctx.conn.snd_una - una > 50_000 and m.stats["ind_bytes"] > got
    caps = dataclasses.replace(p.target.capabilities(), tcp_connection_offload_capacity=2)
    indicate(p, NdisStatus.OFFLOAD_RESUME, caps)
    assert m.capacity == 2 and m.stats["status_resume"] == 1
    assert m.offload([b, c]) == 1  # one slot left of the new capacity
    run_for(p, 2)
    assert sum(m.is_offloaded(t) for t in (a, b, c)) == 2
    finish(p, futs)


def test_upload_all_terminates_tcp_then_paths_then_neighbors_and_transfers_continue() -> None:
    p, futs = setup(OffloadPolicy.explicit(), clients=2)
    run_for(p, 20)
    m = p.manager
    assert m.offload(conns(p)) == 2
    run_for(p, 2)
    layers: list[set[Layer]] = []
    real = p.ndis.terminate_offload

    def terminate(bh: Any, pbl: Any) -> None:
        layers.append({n.layer for n in iter_tree(pbl)})
        real(bh, pbl)

    p.ndis.terminate_offload = terminate  # type: ignore[method-assign]
    p.target.hardware_reset()
    assert m.offload(conns(p)) == 0  # nothing new until everything is back
    run_until(p, lambda: not m.paths and not m.path_objs and not m.neighbor_objs, 1)
    run_for(p, 1)
    assert layers == [{Layer.TCP}, {Layer.PATH}, {Layer.NEIGHBOR}]
    assert m.stats["status_upload_all"] == 1 and not m.upload_all_active
    assert m.offload(conns(p)) == 2  # offloads again after the reset
    finish(p, futs)


def test_media_disconnect_keeps_connections_offloaded_by_default() -> None:
    p, futs = setup(OffloadPolicy.explicit())
    run_for(p, 20)
    (tcb,) = conns(p)
    m = p.manager
    m.offload(tcb)
    run_for(p, 2)
    p.link.set_up(False)
    run_for(p, 50)
    assert m.stats["media_disconnects"] == 1 and m.is_offloaded(tcb) and not p.binding.chimney_ready
    p.link.set_up(True)
    run_for(p, 1)
    assert p.binding.chimney_ready
    finish(p, futs)


def test_media_disconnect_uploads_everything_when_the_policy_says_so() -> None:
    p, futs = setup(OffloadPolicy(upload_on_media_disconnect=True))
    run_for(p, 20)
    (tcb,) = conns(p)
    m = p.manager
    m.offload(tcb)
    run_for(p, 2)
    p.link.set_up(False)
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.history[-1][3].startswith("media_disconnect:")
    p.link.set_up(True)
    finish(p, futs)


def test_low_power_terminates_everything_before_the_oid_and_d0_offloads_again() -> None:
    """R-PM-01 (checked by the core's verifier at the OID): every object terminated first; R-PM-02: the
    OID completes SUCCESS; back in D0 the policy offloads again."""
    p, futs = setup(OffloadPolicy.established(cooldown_ns=5 * NS_PER_MS), clients=2, n=3_000_000)
    m = p.manager
    run_until(p, lambda: len(m.offloaded()) == 2, 1)
    fut = m.set_power(True)
    assert not fut.done()
    run_until(p, fut.done, 1)
    assert fut.result() == NdisStatus.SUCCESS
    assert not m.paths and not m.neighbor_objs and p.target._object_count() == 0
    run_for(p, 20)
    assert m.offloaded() == [] and m.stats["initiates"] == 1  # nothing offloaded while in low power
    up = m.set_power(False)
    run_until(p, up.done, 1)
    assert up.result() == NdisStatus.SUCCESS
    run_until(p, lambda: len(m.offloaded()) == 2, 1)
    finish(p, futs, 3_000_000)


def test_stats_oids_count_only_offloaded_traffic_and_reset_on_set() -> None:
    """R-STAT-02/03/04: host-path traffic is not counted; offloaded traffic is; a set resets."""
    p, futs = setup(OffloadPolicy.explicit())
    m = p.manager
    run_for(p, 20)
    tcp, ip = m.offload_stats(4)
    assert (tcp.in_segments, tcp.out_segments, ip.in_receives, ip.out_requests) == (0, 0, 0, 0)
    (tcb,) = conns(p)
    m.offload(tcb)
    run_for(p, 20)
    tcp, ip = m.offload_stats(4)
    assert tcp.in_segments > 0 and tcp.out_segments > 100 and tcp.currently_established == 1
    assert ip.out_requests >= tcp.out_segments and ip.out_octets > 100 * 1000 and ip.in_delivers > 0
    tcp6, ip6 = m.offload_stats(6)
    assert (tcp6.in_segments, tcp6.out_segments, ip6.in_receives) == (0, 0, 0)  # R-STAT-01
    m.reset_offload_stats(4)
    tcp, ip = m.offload_stats(4)
    assert (tcp.out_segments, ip.out_requests) == (0, 0) and tcp.currently_established == 1
    finish(p, futs)
