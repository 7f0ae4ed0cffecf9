"""Neighbor reachability on the target (R-NBR-01..09): NRT/HRT bookkeeping from the offloaded deltas,
forward progress refreshing NRT, the staleness test before every send and the NeighborReachabilityQuery
indication whose HRD the host writes back synchronously."""

from __future__ import annotations

from itertools import pairwise

from target_harness import Rig, pattern

from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    NdisOidRequest,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.status import NdisStatus
from chimney.target.context import NeighborCtx

S_MS = 1000  # ms per second (Rig.run takes ms)


def stale_rig(stale_ticks: int = 2000) -> Rig:
    """An offloaded connection on a target whose NceStaleTicks is `stale_ticks` (1 ms ticks)."""
    rig = Rig()
    params = NdisTcpConnectionOffloadParameters(ticks_per_second=rig.tps, nce_stale_ticks=stale_ticks)
    req = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, params)
    assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.SUCCESS
    rig.connect()
    rig.offload()
    return rig


def neighbor(rig: Rig) -> NeighborCtx:
    return next(iter(rig.target.neighbors))


def test_deltas_at_offload_set_nrt_and_hrt_r_nbr_01_02() -> None:
    rig = Rig(tps=100)  # 10 ms ticks: deltas are scaled by TicksPerSecond (R-NBR-02)
    rig.connect()
    tree = rig.offload_tree()
    tree.state[1].host_reachability_delta = 70  # HRD 700 ms
    tree.state[2].nic_reachability_delta = 30  # NRD 300 ms
    rig.ndis.initiate_offload(rig.binding, tree)
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    nb = neighbor(rig)
    now = rig.sched.now
    assert now - nb.hrt == 700 * 1_000_000 and now - nb.nrt == 300 * 1_000_000


def test_stale_neighbor_is_queried_before_sending_and_host_answer_applies_r_nbr_04_05_06() -> None:
    rig = stale_rig()
    rig.run(3 * S_MS)  # idle: neither side confirms reachability for 3 s > NceStaleTicks (2 s)
    rig.host.hrd_answer = 0  # the host has just confirmed the neighbor
    rig.send(pattern(100))
    rig.run(1)
    assert len(rig.host.nbr_queries) == 1
    _t, hrd, nrd = rig.host.nbr_queries[0]
    assert 3000 <= hrd <= 3010 and 3000 <= nrd <= 3010  # current HRD in CACHED, NRD in DELEGATED (ticks)
    assert rig.sched.now - neighbor(rig).hrt < 2_000_000  # R-NBR-06: HRT = NCT - 0
    rig.send(pattern(100, 1))
    rig.run(300)  # the peer's delayed ACK releases the Nagle-held second write
    assert len(rig.host.nbr_queries) == 1  # the host's answer made it fresh again
    assert bytes(rig.peer.received).endswith(pattern(100) + pattern(100, 1))


def test_forward_progress_keeps_the_neighbor_fresh_without_queries_r_nbr_03() -> None:
    rig = stale_rig()
    rig.run(1500)
    rig.send(pattern(100))  # acknowledged (after the peer's delayed ACK): NRT = NCT
    rig.run(300)
    assert rig.sched.now - neighbor(rig).nrt < 300_000_000
    rig.run(1400)  # HRT is 3 s old, NRT only 1.5 s
    rig.send(pattern(100, 1))
    rig.run(5)
    assert rig.host.nbr_queries == []


def test_unanswered_neighbor_is_asked_on_every_send_without_progress_r_nbr_04_09() -> None:
    """No forward progress (the peer is gone): every retransmission past NceStaleTicks asks again while
    the host does not confirm reachability either."""
    rig = stale_rig(stale_ticks=500)
    rig.link.b.set_receiver(lambda frame: None)
    rig.run(600)
    rig.send(pattern(100))
    rig.run(3 * S_MS)
    q = rig.host.nbr_queries
    assert len(q) >= 3  # first send + retransmissions
    assert all(b[2] > a[2] for a, b in pairwise(q))  # NRD keeps growing: no progress
