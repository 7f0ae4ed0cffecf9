"""Query / update / invalidate on offloaded objects, forwarded segments, the push timer, throttled
send-backlog events, OID_PNP_SET_POWER pending until every object is terminated, and halt."""

from __future__ import annotations

from target_harness import Rig, pattern

from chimney.links.impair import Impairments
from chimney.ndis.blocklist import ProtocolOffloadBlockList
from chimney.ndis.buffers import NblInfo, nbl_from_bytes
from chimney.ndis.offload_state import (
    TIMER_NOT_RUNNING,
    OffloadStateType,
    PathOffloadStateCached,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import OID_PNP_SET_POWER, NdisDevicePowerState, NdisOidRequest
from chimney.ndis.status import NdisStatus

M = 0xFFFFFFFF


def test_query_returns_live_delegated_state_r_qry() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.peer.read = False
    rig.peer.send_stream(pattern(1000, 1))
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    rig.run(20)
    assert rig.handles is not None
    q = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, rig.handles[2], [TcpOffloadStateDelegated()])
    rig.ndis.query_offload_state(rig.binding, q)
    rig.run(until=lambda: bool(rig.host.completions["query"]))
    d = q.state[0]
    ctx = next(iter(rig.target.tcps.values()))
    assert q.status == NdisStatus.SUCCESS
    assert d.rcv_nxt == ctx.conn.rcv_nxt & M and d.snd_una == ctx.conn.snd_una & M
    assert d.receive_backlog_size == 1000  # buffered in the target, refused by the host
    assert d.send_backlog_size == rig.target.send_backlog(ctx.conn)
    assert d.send_data_head is None and d.buffered_data is None  # §2.4 union members per operation
    assert d.keep_alive.timeout_delta == TIMER_NOT_RUNNING


def test_update_cached_ttl_and_path_mtu_r_upd() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    assert rig.handles is not None
    new_cached = TcpOffloadStateCached(**{f: getattr(rig.cached, f) for f in ("flags", "initial_rcv_wnd")})
    new_cached.ttl_or_hop_limit = 17
    u_t = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadCachedState, rig.handles[2], [new_cached])
    rig.ndis.update_offload(rig.binding, u_t)
    rig.run(until=lambda: bool(rig.host.completions["update"]))
    u_p = ProtocolOffloadBlockList(OffloadStateType.Ip4OffloadCachedState, rig.handles[1], [PathOffloadStateCached(path_mtu=1280)])
    rig.ndis.update_offload(rig.binding, u_p)
    rig.run(until=lambda: len(rig.host.completions["update"]) == 2)
    assert u_t.status == u_p.status == NdisStatus.SUCCESS
    seen = len(rig.peer.frames_in)
    rig.send(pattern(10_000, 2))
    rig.run(until=lambda: len(rig.peer.received) == 10_000)
    frames = rig.peer.frames_in[seen:]
    assert all(f.ttl == 17 for f in frames)
    assert max(f.ip_total_len for f in frames) <= 1280


def test_invalidate_requests_upload_invalid_state_section_6_7() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    assert rig.handles is not None
    inv = ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadState, rig.handles[0])
    rig.ndis.invalidate_offload(rig.binding, inv)
    rig.run(until=lambda: bool(rig.host.completions["invalidate"]))
    assert inv.status == NdisStatus.SUCCESS
    assert (TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.InvalidState) in rig.host.events
    late = rig.send(b"no sending on invalid state")
    rig.run(1)
    assert rig.host.send_done[-1][:2] == (late[0], NdisStatus.UPLOAD_IN_PROGRESS)


def test_forwarded_segment_is_processed_like_a_wire_segment_r_fwd_05() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    # The host received this segment itself (e.g. it needed IP-option handling) and did not ACK it.
    nic_rx = rig.link.a.receiver
    held: list[bytes] = []
    rig.link.a.set_receiver(held.append)
    rig.peer.send_stream(b"forwarded!")
    rig.run(1)
    rig.link.a.set_receiver(nic_rx)
    (frame,) = held
    fwd = nbl_from_bytes(frame[14 + 20 :], rig.host.name)  # one segment, starting at the TCP header
    assert rig.ndis.offload_tcp_forward(rig.tcp_handle, fwd) == NdisStatus.PENDING
    rig.run(until=lambda: bool(rig.host.fwd_done))
    assert rig.host.fwd_done == [fwd] and fwd.status == NdisStatus.SUCCESS
    rig.run(until=lambda: bytes(rig.host.received) == b"forwarded!")  # delivered through the chimney


def test_push_timer_completes_partly_filled_push_request_r_recv_06_r_tmr_16() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    buf = bytearray(10_000)
    post = nbl_from_bytes(buf, rig.host.name)
    post.info[NblInfo.TcpReceiveNoPush] = False
    rig.ndis.offload_tcp_receive(rig.tcp_handle, post)
    # The peer's segment has no PSH: only the push timer (TcpPushTicks, 500 ms) completes the request.
    rig.peer.strip_psh = True
    rig.peer.send_stream(b"no push")
    rig.run(400)
    assert not rig.host.recv_done
    rig.run(200)
    assert rig.host.recv_done == [(post, NdisStatus.SUCCESS, 7)]
    assert bytes(buf[:7]) == b"no push"


def test_non_push_request_waits_until_full_r_recv_05() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    buf = bytearray(3000)
    post = nbl_from_bytes(buf, rig.host.name)
    post.info[NblInfo.TcpReceiveNoPush] = True
    rig.ndis.offload_tcp_receive(rig.tcp_handle, post)
    rig.peer.send_stream(pattern(1000, 1))
    rig.run(1000)
    assert not rig.host.recv_done
    rig.peer.send_stream(pattern(2500, 2))
    rig.run(until=lambda: bool(rig.host.recv_done))
    assert rig.host.recv_done[0] == (post, NdisStatus.SUCCESS, 3000)
    assert bytes(buf) == pattern(1000, 1) + pattern(2500, 2)[:2000]


def test_send_backlog_events_are_throttled_r_evt_09_10() -> None:
    imp = Impairments(rate_bps=20_000_000, delay_ns=5_000_000)
    rig = Rig(to_peer=imp, to_target=Impairments(delay_ns=5_000_000))
    rig.connect()
    rig.offload()
    rig.send(pattern(3_000_000, 3), pieces=30)
    rig.run(until=lambda: len(rig.peer.received) == 3_000_000)
    times = [i for i, (e, _) in enumerate(rig.host.events) if e == TcpOffloadEventType.TcpIndicateSendBacklogChange]
    values = [v for e, v in rig.host.events if e == TcpOffloadEventType.TcpIndicateSendBacklogChange]
    assert values, "the window grew: the preferred backlog changed"
    assert len(values) <= 1 + rig.sched.now // 1_000_000_000  # at most one per second
    assert all(v >= 2 * 1448 for v in values) and len(times) == len(values)


def test_set_power_pends_until_every_object_terminated_r_pm_02() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    done: list[int] = []
    rig.host.oid_request_complete = lambda ctx, req, status: done.append(status)  # type: ignore[method-assign]
    req = NdisOidRequest.set(OID_PNP_SET_POWER, NdisDevicePowerState.D3)
    rig.verifier.mode = rig.verifier.mode.__class__.RECORD  # the host breaks R-PM-01 on purpose here
    assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.PENDING
    assert [v.rule_id for v in rig.verifier.violations] == ["R-PM-01"]
    rig.verifier.mode = rig.verifier.mode.__class__.STRICT
    rig.terminate()
    assert done == [NdisStatus.SUCCESS]


def test_halt_after_every_indication_returned_closes_pools_r_ind_14() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.host.auto_return = False
    rig.peer.send_stream(pattern(5000, 4))
    rig.run(until=lambda: len(rig.host.received) == 5000)
    assert rig.target.indicated_outstanding() == len(rig.host.held) > 0
    rig.host.return_held()
    assert rig.target.indicated_outstanding() == 0
    rig.terminate()
    rig.ndis.halt_adapter(rig.adapter)
    assert rig.target.ind_pool is not None and rig.target.ind_pool.closed


def test_offload_statistics_per_ip_version_r_stat_01_04_08() -> None:
    from chimney.ndis.oid import OID_IP4_OFFLOAD_STATS, OID_TCP4_OFFLOAD_STATS, OID_TCP6_OFFLOAD_STATS

    rig = Rig(to_peer=Impairments(loss=0.05), seed=3)
    rig.connect()
    rig.offload()
    rig.send(pattern(100_000, 1), pieces=4)
    rig.run(until=lambda: len(rig.peer.received) == 100_000)

    def query(oid: int) -> object:
        req = NdisOidRequest.query(oid)
        assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.SUCCESS
        return req.buffer

    tcp4 = query(OID_TCP4_OFFLOAD_STATS)
    ip4 = query(OID_IP4_OFFLOAD_STATS)
    tcp6 = query(OID_TCP6_OFFLOAD_STATS)
    lost = rig.link.a_to_b.counters.dropped_total
    assert lost > 0
    assert tcp4.retransmitted_segments >= lost  # type: ignore[attr-defined]
    assert tcp4.out_segments + tcp4.retransmitted_segments >= ip4.out_requests - lost  # type: ignore[attr-defined]
    assert tcp4.in_segments == ip4.in_receives > 0 and tcp4.currently_established == 1  # type: ignore[attr-defined]
    assert ip4.in_octets >= 52 * ip4.in_receives  # type: ignore[attr-defined]  # IP header + TCP (R-STAT-06)
    assert tcp6.in_segments == tcp6.out_segments == 0  # type: ignore[attr-defined]
    assert rig.ndis.oid_request(rig.binding, NdisOidRequest.set(OID_TCP4_OFFLOAD_STATS, tcp4)) == NdisStatus.SUCCESS
    assert query(OID_TCP4_OFFLOAD_STATS).in_segments == 0  # type: ignore[attr-defined]  # R-STAT-04


def test_media_disconnect_is_only_reported_r_evt_12() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.link.set_up(False)
    rig.run(5)
    assert [i.status_code for i in rig.host.status] == [NdisStatus.MEDIA_DISCONNECT]
    assert len(rig.target.tcps) == 1 and not rig.host.events  # no upload requested by the target
    rig.link.set_up(True)
    assert rig.host.status[-1].status_code == NdisStatus.MEDIA_CONNECT


def test_r_stat_06_octets_are_whole_ip_datagrams_of_the_counted_ones() -> None:
    """R-STAT-06: after a reset, OutOctets is the sum of the IP total lengths (header + TCP header with
    options + data) of exactly the OutRequests datagrams the peer received, and InOctets that of the
    InReceives datagrams the target took from the peer; timestamps make every TCP header 32 bytes, which
    a count of 40 header bytes per datagram misses."""
    from chimney.ndis.oid import OID_IP4_OFFLOAD_STATS
    from chimney.net.frame import parse_frame

    rig = Rig()
    rig.connect()
    rig.offload()
    rig.run(300)  # idle: nothing in flight when the counters restart
    assert rig.ndis.oid_request(rig.binding, NdisOidRequest.set(OID_IP4_OFFLOAD_STATS, None)) == NdisStatus.SUCCESS
    to_target: list[int] = []
    rig.link.b.add_observer(lambda d, fr, _m: to_target.append(parse_frame(fr).ip_total_len) if d == "tx" else None)
    seen = len(rig.peer.frames_in)
    rig.send(pattern(20_000, 1))
    rig.run(until=lambda: len(rig.peer.received) == 20_000)
    rig.run(300)
    req = NdisOidRequest.query(OID_IP4_OFFLOAD_STATS)
    assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.SUCCESS
    ip4 = req.buffer
    out = [f.ip_total_len for f in rig.peer.frames_in[seen:]]
    assert ip4.out_requests == len(out) > 10  # type: ignore[attr-defined]
    assert ip4.out_octets == sum(out)  # type: ignore[attr-defined]
    assert ip4.in_receives == len(to_target) > 0  # type: ignore[attr-defined]
    assert ip4.in_octets == sum(to_target)  # type: ignore[attr-defined]
