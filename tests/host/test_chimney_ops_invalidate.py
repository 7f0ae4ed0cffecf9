"""Host-driven NdisInvalidateOffload (R-INV-*): a removed route or a neighbor the host's cache gives up on
invalidates the offloaded path / neighbor; the target stops sending and asks for the upload
(TcpIndicateRetrieve/InvalidState), the host terminates the connections, then the objects (R-TRM-04),
and the data continues in the host path, intact. Verifier STRICT."""

from __future__ import annotations

from test_chimney_ops_update import (
    PORT,
    check_bulk,
    check_clean,
    offloaded_bulk,
    pair_with,
    run_for,
    run_until,
)

from chimney.host import apps
from chimney.host.neighbor import NeighborConfig, NeighborState
from chimney.net.icmp import build_icmp_echo
from chimney.sim.scheduler import NS_PER_MS
from chimney.sim.tasks import spawn

B = bytes([198, 18, 0, 2])


def test_route_removed_invalidates_the_path_and_the_connection_comes_back_to_the_host() -> None:
    """R-INV-04: after the path is invalidated the target itself asks for the connection's upload with
    TcpIndicateRetrieve(InvalidState); the host does not have to upload it on its own."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    m = p.manager
    pobj = tcb.path.path_obj
    ip = p.host_a.ip
    (route,) = [r for r in ip.routes.routes() if str(r.network) == "198.18.0.0/24"]
    ip.routes.remove(route)
    m.route_changed()
    assert pobj.invalid and m.stats["invalidates"] == 1
    assert m.update_tcp(tcb, {"nagle": False}) is False and m.stats["updates"] == 0  # nothing above it
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.stats["retrieves"] >= 1 and m.stats["invalidate_host_uploads"] == 0  # R-INV-04 by the target
    assert m.history[-1][3].startswith("retrieve:InvalidState")
    run_for(p, 10)
    assert pobj.key not in m.path_objs and not m.neighbor_objs  # terminated after their dependents
    ip.routes.add("198.18.0.0/24", "eth0")
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)


def test_neighbor_failed_in_the_host_cache_invalidates_the_neighbor() -> None:
    """Host B stops answering ARP; host A's own traffic to it (a ping) makes its cache probe the entry
    until FAILED; the offloaded neighbor is invalidated, the connection uploaded; once B answers again the
    host re-resolves and the transfer finishes in the host path."""
    p = pair_with()
    cache = p.host_a.ip.neighbors["eth0"]
    cache.config = NeighborConfig(reachable_time=30 * NS_PER_MS, retrans_timer=20 * NS_PER_MS,
                                  delay_first_probe_time=20 * NS_PER_MS, failed_retention=300 * NS_PER_MS)
    fut, tcb = offloaded_bulk(p, 6_000_000)
    m = p.manager
    nobj = tcb.path.path_obj.parent
    real_arp = p.host_b.ip._input_arp
    p.host_b.ip._input_arp = lambda iface, f: None  # type: ignore[method-assign]
    run_for(p, 40)  # REACHABLE -> STALE
    p.host_a.ip.send_ip(B, 1, build_icmp_echo(1, 1, b"ping"))
    run_until(p, lambda: cache.get(B).state is NeighborState.FAILED, 2)
    run_until(p, lambda: nobj.invalid, 1)
    assert m.stats["invalidates"] == 1 and nobj.kind == "neighbor"
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.history[-1][3].startswith("retrieve:InvalidState")
    p.host_b.ip._input_arp = real_arp  # type: ignore[method-assign]
    run_until(p, fut.done, 300)
    check_bulk(fut, 6_000_000)
    check_clean(p)


def test_invalidated_objects_are_not_linked_by_new_offloads() -> None:
    """An invalidated path waits for its terminate and takes no new connection; once it is gone a fresh
    path object is offloaded for the same addresses."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 1_500_000)
    fut2 = spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", PORT, 1_500_000, 12))
    run_for(p, 1)
    (tcb2,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT and t is not tcb]
    run_until(p, lambda: tcb2.established, 2)
    m = p.manager
    pobj = tcb.path.path_obj
    ip = p.host_a.ip
    (route,) = [r for r in ip.routes.routes() if str(r.network) == "198.18.0.0/24"]
    ip.routes.remove(route)
    m.route_changed()
    ip.routes.add("198.18.0.0/24", "eth0")  # back at once: the invalidate is already under way
    assert pobj.invalid and m.offload(tcb2) == 0
    run_until(p, lambda: tcb.path.kind == "host" and pobj.key not in m.path_objs, 1)
    assert m.offload(tcb2) == 1
    run_for(p, 3)
    assert m.is_offloaded(tcb2) and tcb2.path.path_obj is not pobj
    run_until(p, lambda: fut.done() and fut2.done())
    check_bulk(fut, 1_500_000)
    r = fut2.result()
    assert r.received_sha256 == apps.bulk_digest(1_500_000, 7) and r.sent_sha256 == apps.bulk_digest(1_500_000, 12)
    check_clean(p)


def test_reachability_query_returns_hrd_in_ticks_and_a_failed_probe_invalidates_the_neighbor() -> None:
    """R-NBR-06: the HRD written back is the host's last confirmation in TicksPerSecond units (100 here).
    The host's own confirmation is older than NceStaleTicks, so it probes the neighbor; B does not answer
    ARP any more: the entry FAILS and the neighbor is invalidated, the connection continues in the host.
    The target does not raise this indication yet (R-NBR-04), so the test makes the call as it would."""
    from test_chimney_ops_update import WIRE

    from chimney.host.chimney import build_offload_pair
    from chimney.host.policy import OffloadPolicy
    from chimney.ndis.blocklist import MiniportOffloadBlockList
    from chimney.ndis.offload_state import (
        IndicateOffloadEvent,
        NeighborOffloadStateCached,
        NeighborOffloadStateConst,
        NeighborOffloadStateDelegated,
        OffloadStateType,
    )
    from chimney.ndis.status import NdisStatus
    from chimney.sim.scheduler import SimScheduler

    p = build_offload_pair(SimScheduler(7), 7, WIRE, policy=OffloadPolicy.explicit(), ticks_per_second=100)
    p.binding.params.nce_stale_ticks = 20  # 200 ms
    p.binding.negotiate()
    cache = p.host_a.ip.neighbors["eth0"]
    cache.config = NeighborConfig(reachable_time=30 * NS_PER_MS, retrans_timer=20 * NS_PER_MS,
                                  delay_first_probe_time=20 * NS_PER_MS, failed_retention=300 * NS_PER_MS)
    fut, tcb = offloaded_bulk(p, 6_000_000)
    m = p.manager
    nobj = tcb.path.path_obj.parent
    real_arp = p.host_b.ip._input_arp
    p.host_b.ip._input_arp = lambda iface, f: None  # type: ignore[method-assign]
    run_for(p, 250)
    nctx = nobj.handle.miniport_offload_context.value
    cached = NeighborOffloadStateCached(dl_destination_address=nctx.cached.dl_destination_address,
                                        host_reachability_delta=0)
    mbl = MiniportOffloadBlockList(OffloadStateType.NeighborOffloadState, None, nctx.handle,
                                   [NeighborOffloadStateConst(), cached, NeighborOffloadStateDelegated(0)])
    mbl.status = NdisStatus.SUCCESS
    p.ndis.m_offload_event_indicate(p.ndis.adapters[0], mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
    n = cache.get(B)
    assert cached.host_reachability_delta == (p.host_a.scheduler.now - n.confirmed_at) * 100 // 10**9 >= 25
    run_until(p, lambda: nobj.invalid, 1)
    assert n.state is NeighborState.FAILED and m.stats["invalidates"] == 1
    run_until(p, lambda: tcb.path.kind == "host", 1)
    p.host_b.ip._input_arp = real_arp  # type: ignore[method-assign]
    run_until(p, fut.done, 300)
    check_bulk(fut, 6_000_000)
    check_clean(p)


def test_neighbor_entry_removed_from_the_cache_invalidates_at_once_without_polling() -> None:
    """The cache tells the manager as the entry goes (`ip neigh del`): the invalidate is issued inside the
    removal, before any timer runs; the connection comes back and finishes in the host."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    m = p.manager
    nobj = tcb.path.path_obj.parent
    p.host_a.ip.neighbors["eth0"].remove(B)
    assert nobj.invalid and m.stats["invalidates"] == 1 and m.stats["neighbor_removals"] == 1
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.history[-1][3].startswith("retrieve:InvalidState")
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)


def test_route_removed_from_the_table_alone_invalidates_the_path() -> None:
    """No explicit route_changed(): the route table's own notification makes the manager look, once per
    batch of edits (a delete and re-add in one go is one pass)."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    m = p.manager
    pobj = tcb.path.path_obj
    ip = p.host_a.ip
    (route,) = [r for r in ip.routes.routes() if str(r.network) == "198.18.0.0/24"]
    ip.routes.remove(route)
    assert not pobj.invalid  # looked at after the caller's edits, in the next scheduler turn
    run_for(p, 0.001)
    assert pobj.invalid and m.stats["invalidates"] == 1
    run_until(p, lambda: tcb.path.kind == "host", 1)
    ip.routes.add("198.18.0.0/24", "eth0")
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)
