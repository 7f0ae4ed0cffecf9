"""Host side of the chimney end to end: host A bound through NDIS to the offload target (its emulated NIC on
the link), host B a plain HostStack; bulk transfers with connections offloaded and uploaded mid-flight.

Every scenario runs with the verifier STRICT (any contract violation raises), checks both sha256 digests,
that every send NBL completed exactly once and in order, and that nothing is leaked once the adapter halts.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import (
    IndicateOffloadEvent,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    TcpConnectionState,
    TcpUploadReason,
)
from chimney.ndis.status import NdisStatus
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

PORT = 5001
WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)
S = TcpConnectionState


def pair_with(seed: int = 1, impair: Any = WIRE, policy: OffloadPolicy | None = None, **target: Any) -> OffloadPair:
    sched = SimScheduler(seed)
    return build_offload_pair(sched, seed, impair, target or None, policy=policy or OffloadPolicy.explicit())


def start_bulk(p: OffloadPair, nbytes: int, *, clients: int = 1) -> tuple[Any, list[Any]]:
    # Warm the ARP caches of both hosts first, so simultaneous SYNs are not held behind resolution.
    warm = apps.discard_server(p.host_b, 9)
    w = spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", 9, 100, 1))
    run_until(p, w.done)
    warm.close()
    srv = apps.bulk_server(p.host_b, PORT, nbytes, 7)
    futs = [spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", PORT, nbytes, 11 + i))
            for i in range(clients)]
    return srv, futs


def run_until(p: OffloadPair, pred: Any, limit_s: float = 120) -> None:
    sched = p.host_a.scheduler
    why = sched.run_until(sched.now + int(limit_s * NS_PER_S), predicate=pred)
    assert pred(), f"scheduler stopped ({why}) before the condition held"


def run_for(p: OffloadPair, ms: float) -> None:
    sched = p.host_a.scheduler
    sched.run_until(sched.now + int(ms * NS_PER_MS))


def a_conns(p: OffloadPair) -> list[Tcb]:
    return [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]


def check_bulk(futs: list[Any], nbytes: int) -> None:
    for i, f in enumerate(futs):
        r = f.result()
        assert not r.errors, r.errors
        assert r.received == nbytes
        assert r.received_sha256 == apps.bulk_digest(nbytes, 7)
        assert r.sent_sha256 == apps.bulk_digest(nbytes, 11 + i)


def check_clean(p: OffloadPair) -> None:
    """Every send completed once, in order; after the connections finished and the adapter halts, NDIS
    and the host hold nothing (R-NBL-02, R-IND-14)."""
    m = p.manager
    assert m.stats["send_completed_out_of_order"] == 0
    assert m.stats["send_completed_unknown"] == 0
    assert m.stats["trm_chain_mismatch"] == 0
    assert m.stats["trm_sends_outstanding"] == 0
    run_until(p, lambda: not m.busy() and not m.paths and not p.binding.tx_outstanding, 300)
    assert m.leaks() == []
    p.ndis.halt_adapter(p.ndis.adapters[0])
    assert p.ndis.leak_report().strip() == "no live NBLs (all owners)"


def target_ctx(p: OffloadPair, tcb: Tcb) -> Any:
    return p.target.tcps[(tcb.local, tcb.remote, tcb.local_port, tcb.remote_port)]


# ------------------------------------------------------------------------------------------------ basic


def test_offload_mid_transfer_then_upload_keeps_both_streams_intact() -> None:
    p = pair_with()
    _srv, futs = start_bulk(p, 2_000_000)
    run_for(p, 20)
    (tcb,) = a_conns(p)
    assert p.manager.offload(tcb) == 1
    run_for(p, 2)
    assert p.manager.is_offloaded(tcb) and tcb.path.kind == "chimney"
    run_for(p, 40)
    assert p.manager.upload(tcb) == 1
    run_for(p, 2)
    assert tcb.path.kind == "host"
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 2_000_000)
    assert p.manager.stats["initiate_tcp_ok"] == 1 and p.manager.stats["uploads_done"] >= 1
    assert p.manager.stats["send_bytes_acked"] > 0 and p.manager.stats["ind_bytes"] > 0
    check_clean(p)


def test_repeated_offload_and_upload_policy_and_target_requested() -> None:
    """Offloaded by policy, uploaded at the target's request (TcpIndicateRetrieve, mandatory reason) and
    by the host, several times; the policy re-offloads after its cooldown."""
    p = pair_with(policy=OffloadPolicy.established(cooldown_ns=5 * NS_PER_MS))
    _srv, futs = start_bulk(p, 3_000_000)
    target_uploads = host_uploads = 0
    for i in range(12):
        run_for(p, 8)
        if futs[0].done():
            break
        conns = [t for t in a_conns(p) if p.manager.is_offloaded(t)]
        if not conns:
            continue
        if i % 2:
            p.target.request_upload(target_ctx(p, conns[0]), TcpUploadReason.UploadRequested)
            target_uploads += 1
        else:
            host_uploads += p.manager.upload(conns[0])
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 3_000_000)
    offloads = [h for h in p.manager.history if h[1] == "offload"]
    assert len(offloads) >= 3
    assert target_uploads >= 2 and host_uploads >= 2
    assert any(h[3].startswith("retrieve:UploadRequested") for h in p.manager.history if h[1] == "upload")
    check_clean(p)


def test_optional_upload_request_is_ignored_by_default_and_connection_keeps_running() -> None:
    """§5.4 / R-EVT-07: an optional reason (LowActivity) does not force the host; the target carries on.
    Asked while both directions are open (more than the chimney send backlog still to send)."""
    p = pair_with()
    _srv, futs = start_bulk(p, 2_000_000)
    run_for(p, 10)
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 2)
    ctx = target_ctx(p, tcb)
    assert tcb.path.tcp_state is S.Established
    p.target.h_event(ctx.handle, 3, int(TcpUploadReason.LowActivity))  # TcpIndicateRetrieve
    run_for(p, 5)
    assert p.manager.stats["retrieves_ignored"] == 1 and p.manager.stats["retrieves_half_closed"] == 0
    assert p.manager.is_offloaded(tcb)
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 2_000_000)
    check_clean(p)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_bulk_under_loss_reorder_duplication_with_offload_churn(seed: int) -> None:
    imp = Impairments(rate_bps=100_000_000, delay_ns=300_000, queue_limit_frames=300, loss=0.01,
                      duplicate=0.01, reorder=0.02, reorder_delay_ns=400_000)
    p = pair_with(seed, imp, OffloadPolicy.established(cooldown_ns=3 * NS_PER_MS))
    _srv, futs = start_bulk(p, 1_000_000)
    rng = p.host_a.scheduler.rng("test-churn")
    sched = p.host_a.scheduler
    deadline = sched.now + 60 * NS_PER_S
    while not futs[0].done() and sched.now < deadline:
        run_for(p, rng.uniform(2, 10))
        for t in a_conns(p):
            if p.manager.is_offloaded(t):
                if rng.random() < 0.5:
                    p.target.request_upload(target_ctx(p, t))
                else:
                    p.manager.upload(t)
    run_until(p, lambda: futs[0].done(), 300)
    check_bulk(futs, 1_000_000)
    assert p.manager.stats["initiate_tcp_ok"] >= 2
    check_clean(p)


# ------------------------------------------------------------------------------------------- capacity


def test_more_connections_than_capacity_partial_offload_rest_stay_in_host() -> None:
    """4 connections in one tree, capacity 2: the target fails two TCP nodes with OFFLOAD_TCP_ENTRIES,
    the shared path gets OFFLOAD_PARTIAL_SUCCESS (R-OFF-05) and the failed ones keep running in the host."""
    p = pair_with(max_tcp=2)
    _srv, futs = start_bulk(p, 600_000, clients=4)
    run_until(p, lambda: len(a_conns(p)) == 4 and all(t.state is S.Established for t in a_conns(p)))
    conns = a_conns(p)
    assert p.manager.offload(conns, force=True) == 4  # force: past the advertised capacity
    run_for(p, 2)
    assert p.manager.initiate_results == {"SUCCESS": 2, "OFFLOAD_TCP_ENTRIES": 2}
    kinds = sorted(t.path.kind for t in conns)
    assert kinds == ["chimney", "chimney", "host", "host"]
    run_until(p, lambda: all(f.done() for f in futs))
    check_bulk(futs, 600_000)
    check_clean(p)


def test_policy_respects_advertised_capacity() -> None:
    p = pair_with(policy=OffloadPolicy.established(), max_tcp=2)
    _srv, futs = start_bulk(p, 400_000, clients=3)
    run_for(p, 15)
    assert len(p.manager.offloaded()) == 2
    assert "OFFLOAD_TCP_ENTRIES" not in p.manager.initiate_results
    run_until(p, lambda: all(f.done() for f in futs))
    check_bulk(futs, 400_000)
    check_clean(p)


def test_shared_path_and_neighbor_use_linkers_and_are_terminated_last() -> None:
    """The second connection links to the path and neighbor the first one offloaded; they are terminated
    only after the last connection above them is back (R-TRM-04)."""
    p = pair_with()
    _srv, futs = start_bulk(p, 800_000, clients=2)
    run_for(p, 10)
    c1, c2 = a_conns(p)
    p.manager.offload(c1)
    run_for(p, 1)
    assert len(p.target.paths) == 1 and len(p.target.neighbors) == 1
    p.manager.offload(c2)
    run_for(p, 1)
    assert p.manager.is_offloaded(c2)
    assert len(p.target.paths) == 1 and len(p.target.tcps) == 2  # linked, not offloaded twice
    p.manager.upload(c1)
    run_for(p, 1)
    assert len(p.target.paths) == 1 and len(p.target.neighbors) == 1
    p.manager.upload(c2)
    run_for(p, 2)
    assert not p.target.tcps and not p.target.paths and not p.target.neighbors
    run_until(p, lambda: all(f.done() for f in futs))
    check_bulk(futs, 800_000)
    check_clean(p)


# --------------------------------------------------------------------------------------- upload all


def test_hardware_reset_upload_all_during_transfer_loses_nothing() -> None:
    """NDIS_STATUS_UPLOAD_ALL: every connection, path and neighbor comes back; transfers finish in the host;
    the policy offloads again once the target is empty."""
    p = pair_with(policy=OffloadPolicy.established(cooldown_ns=20 * NS_PER_MS))
    _srv, futs = start_bulk(p, 1_500_000, clients=3)
    run_for(p, 15)
    assert len(p.manager.offloaded()) == 3
    p.target.hardware_reset()
    run_for(p, 3)
    assert not p.target.tcps and not p.target.paths and not p.target.neighbors
    assert all(t.path.kind == "host" for t in a_conns(p))
    run_for(p, 30)
    assert p.manager.stats["initiate_tcp_ok"] > 3  # offloaded again after the reset
    run_until(p, lambda: all(f.done() for f in futs))
    check_bulk(futs, 1_500_000)
    check_clean(p)


def test_offload_pause_stops_new_offloads_resume_allows_them() -> None:
    p = pair_with()
    _srv, futs = start_bulk(p, 500_000)
    run_for(p, 5)
    (tcb,) = a_conns(p)
    p.ndis.m_indicate_status_ex(p.ndis.adapters[0], NdisStatus.OFFLOAD_PAUSE)
    assert p.manager.offload(tcb) == 0
    p.ndis.m_indicate_status_ex(p.ndis.adapters[0], NdisStatus.OFFLOAD_RESUME, p.target.capabilities())
    assert p.manager.offload(tcb) == 1
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 500_000)
    check_clean(p)


# ------------------------------------------------------------------------------ receive flow control


def test_slow_reader_refuses_indications_and_reenables_with_zero_byte_receive() -> None:
    """A full socket buffer refuses indications (R-IND-05/06); reading posts a zero-byte receive request
    that re-enables them (R-IND-08/10); the stream arrives intact."""
    p = pair_with()
    sched = p.host_a.scheduler
    lsock = p.host_b.listen(PORT)
    lsock.setblocking(False)
    data = bytes(range(256)) * 4000  # 1 MB
    got = bytearray()
    sa = p.host_a.socket()
    sa.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sa.connect(("198.18.0.2", PORT))
    run_for(p, 5)
    sb, _ = lsock.accept()
    sb.setblocking(False)
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 1)
    assert p.manager.is_offloaded(tcb)
    async def writer() -> None:
        await sb.asendall(data)
        sb.shutdown(1)

    spawn(sched, writer())
    run_for(p, 300)  # nobody reads on A: the buffer fills, indications are refused
    assert p.manager.stats["ind_refused"] + p.manager.stats["ind_partial"] >= 1
    while len(got) < len(data):
        try:
            chunk = sa.recv(65536)
        except BlockingIOError:
            run_for(p, 2)
            continue
        if not chunk:
            break
        got += chunk
    assert bytes(got) == data
    assert p.manager.stats["zero_posts"] >= 1
    sa.close()
    sb.close()
    check_clean(p)


# ---------------------------------------------------------------------------- one-way and teardown


@pytest.mark.parametrize("direction", ["a-sends", "b-sends"])
def test_one_way_transfer_offloaded_does_not_stall(direction: str) -> None:
    """Only one side sends: send-space wake-ups come from send completions alone (a-sends), or data only
    arrives through indications (b-sends)."""
    p = pair_with()
    sched = p.host_a.scheduler
    n = 1_500_000
    sender_stack, receiver_stack = (p.host_a, p.host_b) if direction == "a-sends" else (p.host_b, p.host_a)
    server = apps.discard_server(receiver_stack, PORT)
    dst = "198.18.0.2" if direction == "a-sends" else "198.18.0.1"

    async def send() -> str:
        s = sender_stack.socket()
        await s.aconnect((dst, PORT))
        digest = await apps.bulk_send(s, n, 5)
        s.close()
        return digest

    fut = spawn(sched, send())
    run_for(p, 3)
    (tcb,) = [t for t in p.host_a.tcp.connections() if PORT in (t.local_port, t.remote_port)]
    p.manager.offload(tcb)
    run_until(p, lambda: bool(server.results), 60)
    assert fut.done() and server.results == [n]
    assert p.manager.stats["initiate_tcp_ok"] == 1
    check_clean(p)


def test_peer_reset_while_offloaded_reaches_the_socket() -> None:
    """TcpIndicateAbort: the socket sees ECONNRESET, the connection is uploaded (the target keeps its
    resources until then, R-EVT-04) and ends CLOSED in the host."""
    import errno

    p = pair_with()
    lsock = p.host_b.listen(PORT)
    lsock.setblocking(False)
    sa = p.host_a.socket()
    sa.setblocking(False)
    with pytest.raises(BlockingIOError):
        sa.connect(("198.18.0.2", PORT))
    run_for(p, 3)
    sb, _ = lsock.accept()
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 1)
    assert p.manager.is_offloaded(tcb)
    sb.abort()
    run_until(p, lambda: tcb.closed)
    assert p.manager.stats["aborts_indicated"] == 1
    with pytest.raises(OSError) as ei:
        sa.recv(10)
    assert ei.value.errno == errno.ECONNRESET
    sa.close()
    check_clean(p)


def test_local_abort_while_offloaded_sends_rst_through_the_target() -> None:
    """An abortive close goes out as NdisOffloadTcpDisconnect(ABORTIVE); the peer sees the reset."""
    import errno

    p = pair_with()
    lsock = p.host_b.listen(PORT)
    lsock.setblocking(False)
    sa = p.host_a.socket()
    sa.setblocking(False)
    with pytest.raises(BlockingIOError):
        sa.connect(("198.18.0.2", PORT))
    run_for(p, 3)
    sb, _ = lsock.accept()
    sb.setblocking(False)
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 1)
    sa.abort()
    run_until(p, lambda: tcb.closed)
    run_for(p, 2)
    with pytest.raises(OSError) as ei:
        sb.recv(10)
    assert ei.value.errno == errno.ECONNRESET
    sb.close()
    check_clean(p)


# ------------------------------------------------------------- segments during offload / terminate


def test_segments_arriving_during_a_slow_offload_are_forwarded_and_during_upload_fed_to_host() -> None:
    """A slow NIC (3 ms to process each initiate/terminate): segments the host receives meanwhile for the
    frozen connection are kept; after the offload they go to the target with NdisOffloadTcpForward
    (R-FWD-02/03), after the upload they are fed to the resumed host engine (R-TRM-19)."""
    p = pair_with()
    sched = p.host_a.scheduler
    t = p.target
    slow_initiate, slow_terminate = t._process_initiate, t._process_terminate

    def later(fn: Any) -> Any:
        return lambda mbl: sched.call_later(3 * NS_PER_MS, fn, mbl)

    t._process_initiate = later(slow_initiate)  # type: ignore[method-assign]
    t._process_terminate = later(slow_terminate)  # type: ignore[method-assign]
    _srv, futs = start_bulk(p, 1_500_000)
    run_for(p, 10)
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 10)
    assert p.manager.is_offloaded(tcb)
    assert p.manager.stats["forwarded"] > 0
    p.manager.upload(tcb)
    run_for(p, 10)
    assert tcb.path.kind == "host"
    assert p.manager.stats["held_segments_fed"] > 0
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 1_500_000)
    check_clean(p)


def test_neighbor_reachability_query_gets_the_host_delta() -> None:
    """§3.4 / §6.10: on NeighborReachabilityQuery the host writes its HRD (ticks since it last confirmed the
    next hop) into the CACHED struct before returning. The target does not raise this indication yet
    (R-NBR-04, reported), so the test makes the NdisMOffloadEventIndicate call itself, as the target would."""
    from chimney.ndis.blocklist import MiniportOffloadBlockList

    p = pair_with()
    _srv, futs = start_bulk(p, 300_000)
    run_for(p, 5)
    (tcb,) = a_conns(p)
    p.manager.offload(tcb)
    run_for(p, 1)
    nctx = next(iter(p.target.neighbors))
    cached = NeighborOffloadStateCached(dl_destination_address=nctx.cached.dl_destination_address,
                                        host_reachability_delta=0)
    mbl = MiniportOffloadBlockList(OffloadStateType.NeighborOffloadState, None, nctx.handle,
                                   [NeighborOffloadStateConst(), cached, NeighborOffloadStateDelegated(0)])
    mbl.status = NdisStatus.SUCCESS
    run_for(p, 50)
    p.ndis.m_offload_event_indicate(p.ndis.adapters[0], mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
    expect = (p.host_a.scheduler.now - tcb.neighbor.confirmed_at) // NS_PER_MS
    assert p.manager.stats["reachability_queries"] == 1
    assert cached.host_reachability_delta == expect and expect >= 50
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 300_000)
    check_clean(p)




@pytest.mark.parametrize("depth", [1, 3])
def test_offload_and_upload_through_pass_through_intermediate_drivers(depth: int) -> None:
    """The same mid-transfer offload and upload with `depth` pass-through IMs between host and target
    (R-IM-01..13 are checked inside the IMs): both streams intact, nothing leaked."""
    sched = SimScheduler(3)
    p = build_offload_pair(sched, 3, WIRE, policy=OffloadPolicy.explicit(), ims=depth)
    assert len(p.ims) == depth
    _srv, futs = start_bulk(p, 1_000_000)
    run_for(p, 20)
    (tcb,) = a_conns(p)
    assert p.manager.offload(tcb) == 1
    run_for(p, 30)
    assert p.manager.is_offloaded(tcb) and tcb.path.kind == "chimney"
    assert p.manager.upload(tcb) == 1
    run_until(p, lambda: futs[0].done())
    check_bulk(futs, 1_000_000)
    assert p.manager.stats["ind_bytes"] > 0 and p.manager.stats["send_bytes_acked"] > 0
    check_clean(p)
