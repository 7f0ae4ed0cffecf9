"""Offload policy modes (never / after establishment / after N bytes / after N ms / explicit with pinning)
and the host stack as an NDIS protocol driver (frames as NBLs, capability negotiation, status handling)."""

from __future__ import annotations

from typing import Any

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy, PolicyMode
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState, TcpUploadReason
from chimney.ndis.status import NdisStatus
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

PORT = 7001
WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)


def setup(policy: OffloadPolicy, **target: Any) -> OffloadPair:
    return build_offload_pair(SimScheduler(5), 5, WIRE, target or None, policy=policy)


def transfer(p: OffloadPair, nbytes: int) -> Any:
    apps.bulk_server(p.host_b, PORT, nbytes, 3)
    return spawn(p.host_a.scheduler, apps.bulk_client(p.host_a, "198.18.0.2", PORT, nbytes, 4))


def run(p: OffloadPair, ms: float) -> None:
    s = p.host_a.scheduler
    s.run_until(s.now + int(ms * NS_PER_MS))


def finish(p: OffloadPair, fut: Any, nbytes: int) -> None:
    s = p.host_a.scheduler
    s.run_until(s.now + 120 * NS_PER_S, predicate=fut.done)
    r = fut.result()
    assert r.received == nbytes and r.received_sha256 == apps.bulk_digest(nbytes, 3)
    assert r.sent_sha256 == apps.bulk_digest(nbytes, 4)
    m = p.manager
    s.run_until(s.now + 120 * NS_PER_S, predicate=lambda: not m.busy() and not m.paths and not p.binding.tx_outstanding)
    assert m.leaks() == []
    p.ndis.halt_adapter(p.ndis.adapters[0])
    assert p.ndis.leak_report().strip() == "no live NBLs (all owners)"


def offloads(p: OffloadPair) -> list[int]:
    return [h[0] for h in p.manager.history if h[1] == "offload"]


# ------------------------------------------------------------------------------------------- policy


def test_never_policy_keeps_everything_on_the_host_path_over_ndis() -> None:
    """Policy NEVER: no initiate at all; the host stack still runs entirely over its NDIS binding (frames
    out through NdisSendNetBufferLists, in through ProtocolReceiveNetBufferLists)."""
    p = setup(OffloadPolicy.never())
    fut = transfer(p, 500_000)
    run(p, 20)
    assert p.manager.stats["initiates"] == 0
    assert p.binding.counters["tx_frames"] > 100 and p.binding.counters["rx_frames"] > 100
    finish(p, fut, 500_000)
    assert p.target.counters["tx_normal"] == p.binding.counters["tx_frames"]


def test_established_policy_offloads_at_first_scan() -> None:
    p = setup(OffloadPolicy.established())
    fut = transfer(p, 800_000)
    run(p, 10)
    assert len(p.manager.offloaded()) == 1
    finish(p, fut, 800_000)


def test_after_bytes_policy_waits_for_the_volume() -> None:
    p = setup(OffloadPolicy.after_bytes_moved(400_000))
    fut = transfer(p, 1_000_000)
    run(p, 5)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    assert not p.manager.is_offloaded(tcb)
    conn = tcb.conn
    assert conn.snd_una - conn.iss + conn.rcv_nxt - conn._irs < 400_000
    s = p.host_a.scheduler
    s.run_until(s.now + NS_PER_S, predicate=lambda: p.manager.is_offloaded(tcb))
    assert p.manager.is_offloaded(tcb)
    moved = conn.snd_una - conn.iss + conn.rcv_nxt - conn._irs  # the frozen host engine's last view
    assert moved >= 400_000
    finish(p, fut, 1_000_000)


def test_after_time_policy_waits_for_the_age() -> None:
    p = setup(OffloadPolicy.after_time(30 * NS_PER_MS))
    fut = transfer(p, 1_500_000)
    run(p, 20)
    assert not offloads(p)
    run(p, 20)
    assert offloads(p)
    first_seen = min(p.manager.first_seen.values())
    assert offloads(p)[0] - first_seen >= 30 * NS_PER_MS
    finish(p, fut, 1_500_000)


def test_explicit_upload_with_pin_keeps_connection_in_host() -> None:
    p = setup(OffloadPolicy.established(cooldown_ns=NS_PER_MS))
    fut = transfer(p, 1_000_000)
    run(p, 5)
    (tcb,) = p.manager.offloaded()
    assert p.manager.upload(tcb, pin=True) == 1
    run(p, 30)
    assert not p.manager.is_offloaded(tcb) and len(offloads(p)) == 1
    finish(p, fut, 1_000_000)


def test_optional_reason_honoured_when_policy_says_so() -> None:
    """The target asks with an optional reason while both directions are still open (a half-closed
    connection is never asked discretionarily, R-EVT-08): the policy takes the connection back."""
    p = setup(OffloadPolicy(PolicyMode.EXPLICIT, honour_optional_uploads=True))
    fut = transfer(p, 2_000_000)  # more than the chimney send backlog: A has not shut down yet
    run(p, 5)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    p.manager.offload(tcb)
    run(p, 2)
    ctx = p.target.tcps[(tcb.local, tcb.remote, tcb.local_port, tcb.remote_port)]
    assert tcb.path.tcp_state is TcpConnectionState.Established
    p.target.h_event(ctx.handle, 3, int(TcpUploadReason.HighOutOfOrderPackets))
    run(p, 2)
    assert not p.manager.is_offloaded(tcb)
    assert p.manager.history[-1][3].startswith("retrieve:HighOutOfOrderPackets:")
    finish(p, fut, 2_000_000)


def test_policy_reasons_classification() -> None:
    pol = OffloadPolicy.explicit()
    assert pol.honours(TcpUploadReason.TimeoutExpiration) and pol.honours(TcpUploadReason.HardwareFailure)
    assert not pol.honours(TcpUploadReason.LowActivity) and not pol.honours(TcpUploadReason.SmallIO)
    assert pol.honours(99)  # unknown reason: take it back


# ------------------------------------------------------------------------------------------ binding


def test_capability_negotiation_sets_ticks_per_second_on_the_target() -> None:
    """R-INIT-11/14: the host sets OID_TCP_CONNECTION_OFFLOAD_PARAMETERS (TicksPerSecond) after reading the
    adapter's NDIS_TCP_CONNECTION_OFFLOAD."""
    sched = SimScheduler(9)
    p = build_offload_pair(sched, 9, None, {"max_tcp": 7}, ticks_per_second=100)
    assert p.binding.caps is not None and p.binding.caps.tcp_connection_offload_capacity == 7
    assert p.binding.params_accepted and p.target.params.ticks_per_second == 100
    assert p.manager.capacity == 7


def test_ticks_per_second_100_transfer_with_offload_round_trip() -> None:
    sched = SimScheduler(10)
    p = build_offload_pair(sched, 10, WIRE, policy=OffloadPolicy.explicit(), ticks_per_second=100)
    fut = transfer(p, 600_000)
    run(p, 5)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    p.manager.offload(tcb)
    run(p, 20)
    p.manager.upload(tcb)
    finish(p, fut, 600_000)


def test_media_disconnect_blocks_new_offloads_until_connect() -> None:
    """R-EVT-12: media status is the host's decision: nothing is uploaded, but nothing new is offloaded."""
    p = setup(OffloadPolicy.explicit())
    fut = transfer(p, 400_000)
    run(p, 5)
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    adapter = p.ndis.adapters[0]
    p.ndis.m_indicate_status_ex(adapter, NdisStatus.MEDIA_DISCONNECT)
    assert p.manager.offload(tcb) == 0
    p.ndis.m_indicate_status_ex(adapter, NdisStatus.MEDIA_CONNECT)
    assert p.manager.offload(tcb) == 1
    finish(p, fut, 400_000)


def test_receive_with_resources_flag_copies_and_does_not_return() -> None:
    """NDIS_RECEIVE_FLAGS_RESOURCES: the protocol copies and never returns those NBLs (the verifier checks
    R-NBL-02 on the way back)."""
    from chimney.ndis.buffers import nbl_from_bytes
    from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES

    p = setup(OffloadPolicy.never())
    frame = bytes.fromhex("ffffffffffff02000000000b0806") + bytes(28)  # a (bogus) ARP frame
    nbl = nbl_from_bytes(frame, p.target.name)
    p.ndis.m_indicate_receive_net_buffer_lists(p.ndis.adapters[0], nbl, 0, 1, NDIS_RECEIVE_FLAGS_RESOURCES)
    assert p.binding.counters["rx_resources_copies"] == 1
    assert nbl.owner == p.target.name
