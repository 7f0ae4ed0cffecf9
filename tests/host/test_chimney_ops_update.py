"""Host-driven NdisUpdateOffload (R-UPD-*): socket options, a neighbor's new MAC, a PMTU drop and a route
change reach the offloaded objects as updates; the connection stays offloaded and the transfer intact.

Every scenario runs with the verifier STRICT and checks both sha256 digests.
"""

from __future__ import annotations

from typing import Any

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpCachedFlags
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

PORT = 5001
WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)


def pair_with(seed: int = 1, policy: OffloadPolicy | None = None, **target: Any) -> OffloadPair:
    return build_offload_pair(SimScheduler(seed), seed, WIRE, target or None, policy=policy or OffloadPolicy.explicit())


def run_until(p: OffloadPair, pred: Any, limit_s: float = 120) -> None:
    sched = p.host_a.scheduler
    why = sched.run_until(sched.now + int(limit_s * NS_PER_S), predicate=pred)
    assert pred(), f"scheduler stopped ({why}) before the condition held"


def run_for(p: OffloadPair, ms: float) -> None:
    sched = p.host_a.scheduler
    sched.run_until(sched.now + int(ms * NS_PER_MS))


def start_bulk(p: OffloadPair, nbytes: int, dst: str = "198.18.0.2") -> Any:
    warm = apps.discard_server(p.host_b, 9)
    w = spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", 9, 100, 1))
    run_until(p, w.done)
    warm.close()
    apps.bulk_server(p.host_b, PORT, nbytes, 7)
    return spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, dst, PORT, nbytes, 11))


def offloaded_bulk(p: OffloadPair, nbytes: int, dst: str = "198.18.0.2") -> tuple[Any, Tcb]:
    fut = start_bulk(p, nbytes, dst)
    run_for(p, 20)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    assert p.manager.offload(tcb) == 1
    run_for(p, 2)
    assert p.manager.is_offloaded(tcb)
    return fut, tcb


def check_bulk(fut: Any, nbytes: int) -> None:
    r = fut.result()
    assert not r.errors, r.errors
    assert r.received == nbytes
    assert r.received_sha256 == apps.bulk_digest(nbytes, 7)
    assert r.sent_sha256 == apps.bulk_digest(nbytes, 11)


def target_ctx(p: OffloadPair, tcb: Tcb) -> Any:
    return p.target.tcps[(tcb.local, tcb.remote, tcb.local_port, tcb.remote_port)]


def check_clean(p: OffloadPair) -> None:
    m = p.manager
    run_until(p, lambda: not m.busy() and not m.paths and not p.binding.tx_outstanding, 300)
    assert m.leaks() == []
    p.ndis.halt_adapter(p.ndis.adapters[0])
    assert p.ndis.leak_report().strip() == "no live NBLs (all owners)"


# ------------------------------------------------------------------------------------------------ TCP cached


def test_tcp_nodelay_on_offloaded_connection_is_an_update_not_an_upload() -> None:
    """R-UPD-02: TCP_NODELAY clears TCP_FLAG_NAGLING_ENABLED in the target's cached state by
    NdisUpdateOffload; the connection stays offloaded and the transfer finishes intact."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 1_500_000)
    assert target_ctx(p, tcb).cached.flags & TcpCachedFlags.NAGLING_ENABLED
    tcb.path.configure(nagle=False)  # what Socket.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1) calls
    run_for(p, 2)
    m = p.manager
    assert m.stats["updates"] == 1 and m.stats["uploads_done"] == 0
    assert m.is_offloaded(tcb) and tcb.path.kind == "chimney"
    assert not target_ctx(p, tcb).cached.flags & TcpCachedFlags.NAGLING_ENABLED
    assert not target_ctx(p, tcb).conn.cfg.nagle  # reached the target's engine
    assert not tcb.path.cached.flags & TcpCachedFlags.NAGLING_ENABLED
    run_until(p, fut.done)
    check_bulk(fut, 1_500_000)
    check_clean(p)


class UpdateRecorder:
    """Counts NdisUpdateOffload requests in flight per offload handle (R-UPD-05 seen from NDIS)."""

    def __init__(self, p: OffloadPair) -> None:
        from chimney.ndis.blocklist import iter_tree

        self.in_flight: dict[int, int] = {}
        self.max_in_flight = 0
        self.trees: list[list[Any]] = []
        ndis, manager = p.ndis, p.manager
        real_update, real_done = ndis.update_offload, manager.update_offload_complete

        def update(bh: Any, pbl: Any) -> None:
            nodes = list(iter_tree(pbl))
            self.trees.append([(n.offload_handle.owner, list(n.state)) for n in nodes])
            for n in nodes:
                k = id(n.offload_handle)
                self.in_flight[k] = self.in_flight.get(k, 0) + 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight[k])
            real_update(bh, pbl)

        def done(pbl: Any) -> None:
            for n in iter_tree(pbl):
                self.in_flight[id(n.offload_handle)] -= 1
            real_done(pbl)

        ndis.update_offload = update  # type: ignore[method-assign]
        manager.update_offload_complete = done  # type: ignore[method-assign]


def test_several_options_queue_one_update_in_flight_and_reach_the_target() -> None:
    """R-UPD-05: one update per object in flight, the next queued (latest values win); keepalive, receive
    buffer and user timeout arrive as cached variables with their flags (R-UPD-08..12)."""
    p = pair_with()
    rec = UpdateRecorder(p)
    fut, tcb = offloaded_bulk(p, 1_500_000)
    cp = tcb.path
    cp.configure(keepalive=True)
    cp.configure(keepalive_idle_ns=30 * NS_PER_S, keepalive_interval_ns=5 * NS_PER_S, keepalive_count=4)
    cp.configure(rcv_buf=131_072)
    cp.configure(user_timeout_ns=20 * NS_PER_S)
    run_for(p, 3)
    m = p.manager
    assert rec.max_in_flight == 1
    assert m.stats["updates"] == 2  # the first, then the other three merged
    assert m.stats["uploads_done"] == 0 and m.is_offloaded(tcb)
    sent = rec.trees[-1][0][1][0]
    assert sent.flags & TcpCachedFlags.UPDATE_RCV_WND and sent.flags & TcpCachedFlags.MAX_RT_RESTART
    assert sent.flags & TcpCachedFlags.KEEP_ALIVE_RESTART
    c = target_ctx(p, tcb).cached
    tps = p.binding.params.ticks_per_second
    assert c.flags & TcpCachedFlags.KEEP_ALIVE_ENABLED
    assert (c.ka_timeout, c.ka_interval, c.ka_probe_count) == (30 * tps, 5 * tps, 4)
    assert c.initial_rcv_wnd == 131_072 and c.max_rt == 20 * tps
    engine = target_ctx(p, tcb).conn
    assert engine.cfg.keepalive and engine.cfg.keepalive_count == 4 and engine._ka_deadline is not None
    # The host's copy keeps the values, not the one-shot flags.
    assert cp.cached.flags & 0x1C == 0 and cp.cached.initial_rcv_wnd == 131_072
    run_until(p, fut.done)
    check_bulk(fut, 1_500_000)
    # Uploaded: the host engine runs with every option the user set (max_rt_ns back to its own value).
    assert m.upload(tcb) in (0, 1)
    run_until(p, lambda: tcb.path.kind == "host")
    cfg = tcb.conn.cfg
    assert cfg.keepalive and cfg.keepalive_count == 4 and cfg.rcv_buf == 131_072
    assert cfg.user_timeout_ns == 20 * NS_PER_S and cfg.max_rt_ns == p.host_a.tcp.config.max_rt_ns
    check_clean(p)


def test_option_set_while_offloading_is_sent_after_the_offload_completes() -> None:
    """R-UPD-05: no update of an object being offloaded; it follows the initiate completion."""
    p = pair_with()
    fut = start_bulk(p, 800_000)
    run_for(p, 20)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    rec = UpdateRecorder(p)
    assert p.manager.offload(tcb) == 1
    tcb.path.configure(nagle=False)
    assert rec.trees == []
    run_for(p, 3)
    assert len(rec.trees) == 1 and p.manager.is_offloaded(tcb)
    assert not target_ctx(p, tcb).cached.flags & TcpCachedFlags.NAGLING_ENABLED
    run_until(p, fut.done)
    check_bulk(fut, 800_000)
    check_clean(p)


def test_upload_asked_during_an_update_waits_for_its_completion() -> None:
    """R-TRM-05: a connection is terminated only after its update completed."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 1_000_000)
    terminated_during_update: list[bool] = []
    real = p.ndis.terminate_offload

    def terminate(bh: Any, pbl: Any) -> None:
        cp = pbl.offload_handle.owner
        terminated_during_update.append(getattr(cp, "ops", 0) > 0)
        real(bh, pbl)

    p.ndis.terminate_offload = terminate  # type: ignore[method-assign]
    tcb.path.configure(nagle=False)
    assert p.manager.upload(tcb) == 0  # deferred
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert terminated_during_update == [False]
    assert p.manager.history[-1][3].startswith("explicit:")
    run_until(p, fut.done)
    check_bulk(fut, 1_000_000)
    check_clean(p)


def test_update_failure_terminates_the_connection_and_data_continues_in_the_host() -> None:
    """R-UPD-14: a node completed with FAILURE: the host terminates that object and goes on."""
    from chimney.ndis.blocklist import iter_tree
    from chimney.ndis.status import NdisStatus

    p = pair_with()
    fut, tcb = offloaded_bulk(p, 1_000_000)
    real = p.ndis.m_update_offload_complete

    def failing(adapter: Any, mbl: Any) -> None:
        for n in iter_tree(mbl):
            n.status = NdisStatus.FAILURE  # the target could not apply it (e.g. hardware state lost)
        real(adapter, mbl)

    p.ndis.m_update_offload_complete = failing  # type: ignore[method-assign]
    tcb.path.configure(keepalive=True)
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert p.manager.stats["update_failed"] == 1
    assert p.manager.history[-1][3].startswith("update_failed:")
    assert tcb.conn.cfg.keepalive
    run_until(p, fut.done)
    check_bulk(fut, 1_000_000)
    check_clean(p)


# ------------------------------------------------------------------------------------------------ neighbor / path


def frames_at_b(p: OffloadPair) -> list[bytes]:
    """Every frame host B's IP layer is handed from now on."""
    seen: list[bytes] = []
    ip = p.host_b.ip
    real = ip.input_frame

    def tap(iface: Any, frame: Any) -> None:
        seen.append(bytes(frame))
        real(iface, frame)

    ip.input_frame = tap  # type: ignore[method-assign]
    return seen


def test_gratuitous_arp_with_a_new_mac_updates_the_offloaded_neighbor() -> None:
    """R-UPD-13: host B moves to a new MAC and announces it; host A's cache learns it and updates the
    offloaded neighbor's DlDestinationAddress; the target's frames go to the new MAC (B drops anything
    else) and no path is re-linked."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    seen = frames_at_b(p)
    new_mac = bytes.fromhex("0200000000bb")
    iface_b = p.host_b.ip.interfaces["eth0"]
    iface_b.mac = new_mac
    p.host_b.ip.announce("eth0", bytes([198, 18, 0, 2]))
    m = p.manager
    run_until(p, lambda: m.stats["neighbor_mac_updates"] > 0, 1)
    run_for(p, 2)
    assert m.stats["neighbor_mac_updates"] == 1 and m.stats["updates"] == 1 and m.stats["relinks"] == 0
    assert m.is_offloaded(tcb) and m.stats["uploads_done"] == 0
    assert target_ctx(p, tcb).path.neighbor.dst_mac == new_mac
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)  # B drops frames to its old MAC: the rest of the stream used the new one
    old_mac = [i for i, f in enumerate(seen) if f[:6] != new_mac and f[:6] != b"\xff" * 6]
    assert old_mac and len(seen) - old_mac[-1] > 500  # only what was on the wire before the update
    check_clean(p)


def test_pmtu_drop_updates_the_path_and_the_target_segments_shrink() -> None:
    """ICMP fragmentation-needed for an offloaded path: PathMtu is updated (no upload) and the target's
    segments fit the new MTU from then on."""
    from chimney.net.icmp import build_icmp_frag_needed

    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    seen = frames_at_b(p)
    run_for(p, 5)
    big = next(f for f in seen if len(f) > 1200)
    p.host_b.ip.send_ip(bytes([198, 18, 0, 1]), 1, build_icmp_frag_needed(1000, big[14:]))
    run_for(p, 3)
    m = p.manager
    assert m.stats["pmtu_updates"] == 1 and m.stats["updates"] == 1 and m.stats["icmp_pmtu_kept"] == 1
    assert m.is_offloaded(tcb) and m.stats["uploads_done"] == 0
    assert target_ctx(p, tcb).path.cached.path_mtu == 1000
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    ip4 = [f for f in seen if f[12:14] == b"\x08\x00"]
    too_big = [i for i, f in enumerate(ip4) if len(f) - 14 > 1000]
    # Only what was already on the wire when the update completed was bigger than the new PMTU.
    assert too_big and len(ip4) - too_big[-1] > 500
    check_clean(p)


def test_route_change_relinks_the_path_to_the_new_next_hop_neighbor() -> None:
    """R-UPD-03/04: host B's second address is first reached on-link, then via B's first address as a
    gateway: the new next hop's neighbor is offloaded, the path re-linked to it by an update tree rooted
    at it (no TCP node), and the old neighbor terminated once nothing depends on it."""
    p = pair_with()
    p.host_b.ip.add_address("eth0", "198.18.1.2/24")
    onlink = p.host_a.ip.routes.add("198.18.1.2/32", "eth0", metric=10)
    rec = UpdateRecorder(p)
    fut, tcb = offloaded_bulk(p, 2_000_000, dst="198.18.1.2")
    m = p.manager
    old = tcb.path.path_obj.parent
    assert old.key[1] == bytes([198, 18, 1, 2])
    p.host_a.ip.routes.add("198.18.1.2/32", "eth0", gateway="198.18.0.2", metric=0)
    p.host_a.ip.routes.remove(onlink)
    m.route_changed()
    run_for(p, 5)
    assert m.stats["relinks"] == 1 and m.is_offloaded(tcb) and m.stats["uploads_done"] == 0
    new = tcb.path.path_obj.parent
    assert new is not old and new.key[1] == bytes([198, 18, 0, 2])
    (tree,) = [t for t in rec.trees if len(t) == 2]
    assert tree[0][0] is new and tree[1][0] is tcb.path.path_obj  # neighbor root, path dependent only
    assert old.key not in m.neighbor_objs  # terminated: refcount 0 (R-TRM-04)
    assert target_ctx(p, tcb).path.neighbor is new.handle.miniport_offload_context.value
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)


def test_ttl_and_tos_of_an_offloaded_connection_are_updated() -> None:
    """TtlOrHopLimit / TosOrTrafficClass are cached TCP variables: IP_TTL / IP_TOS become an update and
    the target's headers carry them."""
    p = pair_with()
    fut, tcb = offloaded_bulk(p, 1_500_000)
    seen = frames_at_b(p)
    assert p.manager.set_ip_options(tcb, ttl=33, tos=0x20)
    run_until(p, fut.done)
    check_bulk(fut, 1_500_000)
    assert p.manager.stats["updates"] == 1 and p.manager.stats["uploads_done"] == 0
    ip4 = [f for f in seen if f[12:14] == b"\x08\x00" and f[23] == 6]
    new = [i for i, f in enumerate(ip4) if (f[22], f[15]) == (33, 0x20)]
    assert new and all((f[22], f[15]) == (33, 0x20) for f in ip4[new[0]:])
    check_clean(p)


def test_pmtu_increase_when_the_learned_value_ages_out_updates_the_path_and_segments_grow_again() -> None:
    """A PMTU increase is a cached-variable update too: the estimate learnt from ICMP ages out (RFC 1191
    §6.3 / RFC 8201 §4) at its deadline, with no host traffic asking the cache; the offloaded path's PathMtu
    goes back to the link MTU and the target's segments use it."""
    from chimney.net.icmp import build_icmp_frag_needed

    p = pair_with()
    ip = p.host_a.ip
    ip.pmtu.aging = 30 * NS_PER_MS
    fut, tcb = offloaded_bulk(p, 3_000_000)
    seen = frames_at_b(p)
    run_for(p, 3)
    big = next(f for f in seen if len(f) > 1200)
    p.host_b.ip.send_ip(bytes([198, 18, 0, 1]), 1, build_icmp_frag_needed(1000, big[14:]))
    m = p.manager
    run_until(p, lambda: m.stats["pmtu_updates"] == 1, 1)
    t_learn = p.host_a.scheduler.now
    run_until(p, lambda: m.stats["pmtu_increases"] == 1, 1)
    assert p.host_a.scheduler.now - t_learn <= 31 * NS_PER_MS  # at the aging deadline, not later
    run_for(p, 2)
    assert target_ctx(p, tcb).path.cached.path_mtu == 1500 and tcb.ip_path.mtu == 1500
    assert m.stats["updates"] == 2 and m.is_offloaded(tcb) and m.stats["uploads_done"] == 0
    n_before = len(seen)
    run_until(p, fut.done)
    check_bulk(fut, 3_000_000)
    # Full-size segments again once the frames queued on the link before the update went through.
    assert max(len(f) for f in seen[n_before + 400:]) == 1514
    check_clean(p)


def test_pmtu_flush_and_a_route_mtu_change_update_the_offloaded_path() -> None:
    """`ip route flush cache` (PathMtuCache.forget) raises the PMTU back; `ip route replace ... mtu 1280` on
    the path's route lowers it: both become PathMtu updates of the offloaded path (same neighbor, no
    re-link, no upload), told by the caches themselves."""
    from chimney.net.icmp import build_icmp_frag_needed

    p = pair_with()
    fut, tcb = offloaded_bulk(p, 2_000_000)
    seen = frames_at_b(p)
    run_for(p, 3)
    big = next(f for f in seen if len(f) > 1200)
    p.host_b.ip.send_ip(bytes([198, 18, 0, 1]), 1, build_icmp_frag_needed(1100, big[14:]))
    m = p.manager
    run_until(p, lambda: m.stats["pmtu_updates"] == 1, 1)
    ip = p.host_a.ip
    assert ip.pmtu.forget(bytes([198, 18, 0, 2]))
    run_for(p, 2)
    assert m.stats["pmtu_increases"] == 1 and target_ctx(p, tcb).path.cached.path_mtu == 1500
    (route,) = [r for r in ip.routes.routes() if str(r.network) == "198.18.0.0/24"]
    ip.routes.replace(route, mtu=1280)
    run_for(p, 2)
    assert m.stats["pmtu_updates"] == 2 and target_ctx(p, tcb).path.cached.path_mtu == 1280
    assert m.stats["relinks"] == 0 and m.stats["invalidates"] == 0 and m.is_offloaded(tcb)
    n_before = len(seen)
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    ip4 = [f for f in seen[n_before:] if f[12:14] == b"\x08\x00"]
    too_big = [i for i, f in enumerate(ip4) if len(f) - 14 > 1280]
    # Only what was already on the wire when the update completed was bigger than the route MTU.
    assert too_big and len(ip4) - too_big[-1] > 500
    check_clean(p)


def test_relink_whose_new_neighbor_node_fails_takes_the_connection_back_and_terminates_in_order() -> None:
    """R-UPD-14 on a re-link tree: the new neighbor's node completes with FAILURE, its path node with
    SUCCESS (the path did move under it): the host terminates everything on the failed neighbor, the
    connection first, then the path, then the neighbor (R-TRM-04), and the old neighbor once nothing is
    left under it; the transfer finishes in the host."""
    from chimney.ndis.blocklist import iter_dependents, iter_tree
    from chimney.ndis.status import NdisStatus

    p = pair_with()
    p.host_b.ip.add_address("eth0", "198.18.1.2/24")
    onlink = p.host_a.ip.routes.add("198.18.1.2/32", "eth0")
    fut, tcb = offloaded_bulk(p, 2_000_000, dst="198.18.1.2")
    m = p.manager
    real = p.ndis.m_update_offload_complete

    def fail_new_neighbor(adapter: Any, mbl: Any) -> None:
        if list(iter_dependents(mbl)):
            mbl.status = NdisStatus.FAILURE
        real(adapter, mbl)

    p.ndis.m_update_offload_complete = fail_new_neighbor  # type: ignore[method-assign]
    terminated: list[Any] = []
    real_terminate = p.ndis.terminate_offload

    def record(bh: Any, pbl: Any) -> None:
        terminated.extend(n.offload_handle.owner for n in iter_tree(pbl))
        real_terminate(bh, pbl)

    p.ndis.terminate_offload = record  # type: ignore[method-assign]
    pobj, old = tcb.path.path_obj, tcb.path.path_obj.parent
    cp = tcb.path
    p.host_a.ip.routes.replace(onlink, gateway="198.18.0.2")
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.stats["relinks"] == 1 and m.stats["update_failed"] == 1
    assert m.history[-1][3].startswith("update_failed:")
    new = pobj.parent
    assert new is not old and new.key[1] == bytes([198, 18, 0, 2])
    run_until(p, lambda: not m.path_objs and not m.neighbor_objs, 1)
    assert sorted(map(terminated.index, (cp, pobj, new))) == [terminated.index(x) for x in (cp, pobj, new)]
    assert old in terminated
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)


def test_a_host_lookup_when_the_learned_pmtu_ages_out_issues_no_update_from_inside_the_lookup() -> None:
    """A host path lookup (e.g. a new connection to the same destination) runs at the very instant the
    learned PMTU ages out, before the manager's aging timer: the lookup sees the link MTU but calls no
    listener, so no NdisUpdateOffload is issued from inside it; the increase reaches the offloaded path
    from the aging timer, once."""
    from chimney.net.icmp import build_icmp_frag_needed

    p = pair_with()
    ip = p.host_a.ip
    ip.pmtu.aging = 30 * NS_PER_MS
    fut, tcb = offloaded_bulk(p, 3_000_000)
    m = p.manager
    dst = bytes([198, 18, 0, 2])
    in_lookup = [False]
    lookups: list[int] = []
    updates_in_lookup: list[Any] = []
    real_update = p.ndis.update_offload

    def update(bh: Any, pbl: Any) -> None:
        if in_lookup[0]:
            updates_in_lookup.append(pbl)
        real_update(bh, pbl)

    p.ndis.update_offload = update  # type: ignore[method-assign]

    def lookup() -> None:
        in_lookup[0] = True
        try:
            path = ip.path(tcb.local, dst)
        finally:
            in_lookup[0] = False
        assert path is not None
        lookups.append(path.mtu)

    def at_learn(d: bytes, mtu: int | None) -> None:
        when = ip.pmtu.deadline(d)
        if mtu is not None and when is not None:
            p.host_a.scheduler.call_at(when, lookup)  # queued before the manager arms its aging timer

    ip.pmtu.listeners.insert(0, at_learn)
    seen = frames_at_b(p)
    run_for(p, 3)
    big = next(f for f in seen if len(f) > 1200)
    p.host_b.ip.send_ip(bytes([198, 18, 0, 1]), 1, build_icmp_frag_needed(1000, big[14:]))
    run_until(p, lambda: m.stats["pmtu_updates"] == 1, 1)
    run_until(p, lambda: m.stats["pmtu_increases"] == 1, 1)
    run_for(p, 2)
    assert lookups == [1500] and updates_in_lookup == []
    assert m.stats["pmtu_increases"] == 1 and m.stats["updates"] == 2
    assert target_ctx(p, tcb).path.cached.path_mtu == 1500 and m.is_offloaded(tcb)
    run_until(p, fut.done)
    check_bulk(fut, 3_000_000)
    check_clean(p)
