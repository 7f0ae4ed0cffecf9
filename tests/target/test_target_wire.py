"""The emulated NIC on the wire: registration and capabilities (R-INIT-01..16), headers built from the
offload tree (R-OFF-08, R-SEND-12/17, R-VLAN-05), receive steering and the non-offload path (R-RX-01/02/
04/05/06/07/09, R-TRM-19)."""

from __future__ import annotations

import struct

import pytest
from target_harness import HOST_PORT, IP_HOST, IP_PEER, MAC_NIC, MAC_PEER, PEER_PORT, Rig, pattern

from chimney.links.impair import Impairments
from chimney.ndis.buffers import nbl_from_bytes
from chimney.ndis.offload_state import (
    NDIS_TCP_CHIMNEY_OFFLOAD,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    TcpOffloadEventType,
    TcpUploadReason,
)
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    NdisOidRequest,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.status import NdisStatus
from chimney.net.checksum import fold, raw_sum
from chimney.net.frame import TcpFrameBuilder, encode_arp_frame
from chimney.net.tcp import ACK, PSH, RST, SYN, URG, TcpSegment
from chimney.target import TargetLimits
from chimney.tcp import TcpConfig

M = 0xFFFFFFFF
RETRIEVE = TcpOffloadEventType.TcpIndicateRetrieve


def _ip_checksum(frame: bytearray, l2: int = 14) -> None:
    ihl = (frame[l2] & 0x0F) * 4
    struct.pack_into("!H", frame, l2 + 10, 0)
    s = fold(raw_sum(bytes(frame[l2 : l2 + ihl])))
    struct.pack_into("!H", frame, l2 + 10, (~s) & 0xFFFF)


def peer_frame(
    rig: Rig, flags: int = ACK | PSH, payload: bytes = b"", seq_delta: int = 0, urg: int = 0, vlan: int | None = None
) -> bytes:
    p = rig.peer_conn
    seg = TcpSegment(PEER_PORT, HOST_PORT, (p.snd_nxt + seq_delta) & M, p.rcv_nxt & M, flags, 1000, payload)
    seg.urg_ptr = urg
    b = rig.peer.builder if vlan is None else TcpFrameBuilder(MAC_PEER, MAC_NIC, IP_PEER, IP_HOST, vlan_id=vlan)
    return b.build_frame(seg, ip_id=77)


def test_registration_capabilities_and_parameters_r_init() -> None:
    """R-INIT-15/16: after MiniportInitializeEx the target holds two receive pools (chimney indications and
    non-offload receives), each handing out NBLs with exactly one NET_BUFFER."""
    rig = Rig(limits=TargetLimits(max_tcp=77, support_ipv6=False), tps=100)
    t = rig.target
    assert rig.adapter.chimney_capable  # R-INIT-01/02: both provider tables registered
    assert t.handlers.header.type == NDIS_TCP_CHIMNEY_OFFLOAD  # R-INIT-04/06
    assert t.h_send_complete == rig.ndis.tcp_offload_send_complete
    caps = rig.adapter.offload_caps
    assert caps.tcp_connection_offload_capacity == 77 and caps.support_ipv4 and not caps.support_ipv6
    assert t.params.ticks_per_second == 100 and t.tick_ns == 10_000_000  # R-INIT-11/14
    req = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, "not a parameter block")
    assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.NOT_SUPPORTED
    for pool in (t.ind_pool, t.rx_pool):  # R-INIT-15/16
        assert pool is not None
        nbl = pool.allocate()
        assert nbl is not None and nbl.first_net_buffer is not None and nbl.first_net_buffer.next is None
        pool.free(nbl)


def test_timers_tick_at_ticks_per_second_r_init_14() -> None:
    rig = Rig(tps=10)  # 100 ms ticks
    rig.connect()
    rig.offload()
    ctx = next(iter(rig.target.tcps.values()))
    rig.send(b"tick")
    assert ctx.timer_at is not None and ctx.timer_at % 100_000_000 == 0


def test_offloaded_frames_headers_r_off_08_send_12_17() -> None:
    """R-SEND-12 and R-SEND-17: every IPv4 datagram the target sends for 30 KB of data has DF set and an
    IP ID from the target's half of the space; none is an IP fragment (R-SEND-13)."""
    rig = Rig()
    rig.connect()
    rig.run(20)
    host_ids = [f.ip_id for f in rig.peer.frames_in]
    rig.offload()
    seen = len(rig.peer.frames_in)
    rig.send(pattern(30_000, 1))
    rig.run(until=lambda: len(rig.peer.received) == 30_000)
    frames = rig.peer.frames_in[seen:]
    assert frames and all(0x8000 <= f.ip_id <= 0xFFFF for f in frames)  # R-SEND-12
    assert all(i < 0x8000 for i in host_ids)
    assert all(f.df for f in frames)  # R-SEND-17
    assert all(f.eth_src == MAC_NIC and f.eth_dst == MAC_PEER for f in frames)  # R-OFF-08
    assert all(f.ip_src == IP_HOST and f.ip_dst == IP_PEER and f.ttl == rig.cached.ttl_or_hop_limit for f in frames)
    assert all(f.tcp.options is not None and f.tcp.options.ts_val is not None for f in frames)  # R-TS-07
    assert max(len(f.tcp.payload) for f in frames) <= 1500 - 40 - 12  # no IP fragments (R-SEND-13)
    assert not any(f.is_fragment for f in frames)


@pytest.mark.parametrize(("vid", "prio", "tag"), [(0, 0, None), (0, 5, (0, 5)), (7, 3, (7, 3))])
def test_vlan_tag_on_transmit_r_vlan_05(vid: int, prio: int, tag: tuple[int, int] | None) -> None:
    rig = Rig(vlan_id=vid)
    rig.connect()
    rig.offload(user_priority=prio)
    seen = len(rig.peer.frames_in)
    rig.send(pattern(3000, 2))
    rig.run(until=lambda: len(rig.peer.received) == 3000)
    frames = rig.peer.frames_in[seen:]
    got = {(f.vlan_id, f.vlan_prio) if f.vlan_id is not None else None for f in frames}
    assert got == {tag}


def test_vlan_receive_filter_r_rx_09() -> None:
    rig = Rig(vlan_id=7)
    rig.connect()
    rig.offload()
    ctx = next(iter(rig.target.tcps.values()))
    before = ctx.conn.stats.segs_in
    rig.link.b.send(peer_frame(rig, payload=b"untagged", vlan=0))  # the neighbor has VlanId 7: drop
    rig.run(1)
    assert rig.target.counters["rx_vlan_drop"] == 1 and ctx.conn.stats.segs_in == before
    rig.peer.send_stream(b"tagged")
    rig.run(until=lambda: bytes(rig.host.received) == b"tagged")


def test_management_fragments_and_options_take_the_normal_path_r_rx_04_05_06() -> None:
    """R-RX-12 too: a first IP fragment for the offloaded connection is indicated to the host, never held
    for reassembly or processed by the target."""
    rig = Rig()
    rig.connect()
    rig.offload()
    ctx = next(iter(rig.target.tcps.values()))
    before_engine = ctx.conn.stats.segs_in
    before_normal = len(rig.host.normal_frames)
    arp = encode_arp_frame(1, MAC_PEER, IP_PEER, IP_HOST)
    frag = bytearray(peer_frame(rig, payload=b"fragment"))
    struct.pack_into("!H", frag, 20, 0x2000)  # MF set: a first fragment
    _ip_checksum(frag)
    base = peer_frame(rig, payload=b"options")
    opt = bytearray(base[:34] + b"\x01\x01\x01\x01" + base[34:])  # 4 NOPs of IP options
    opt[14] = 0x46
    struct.pack_into("!H", opt, 16, struct.unpack_from("!H", base, 16)[0] + 4)
    _ip_checksum(opt)
    for f in (arp, bytes(frag), bytes(opt)):
        rig.link.b.send(f)
    rig.run(1)
    assert len(rig.host.normal_frames) - before_normal == 3
    kinds = [("arp" if f.arp else "frag" if f.is_fragment else "opts") for f in rig.host.normal_frames[-3:]]
    assert kinds == ["arp", "frag", "opts"]
    assert ctx.conn.stats.segs_in == before_engine  # the target processed none of them (R-RX-12)


def test_in_order_syn_uploads_connection_r_rx_02() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.link.b.send(peer_frame(rig, flags=SYN))
    rig.run(1)
    assert rig.host.events == [(RETRIEVE, TcpUploadReason.UploadRequested)]
    tree = rig.terminate()
    assert tree.dependent_block_list.dependent_block_list.state[0].state == 0  # type: ignore[union-attr]


def test_urgent_data_held_then_indicated_on_normal_path_after_upload_r_rx_07() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    ctx = next(iter(rig.target.tcps.values()))
    rcv_before = ctx.conn.rcv_nxt
    urgent = peer_frame(rig, flags=ACK | URG | PSH, payload=b"!", urg=1)
    after = peer_frame(rig, payload=b"later", seq_delta=1)
    rig.link.b.send(urgent)
    rig.link.b.send(after)
    rig.run(1)
    assert rig.host.events == [(RETRIEVE, TcpUploadReason.ReceivedUrgentData)]
    assert ctx.conn.rcv_nxt == rcv_before  # not acknowledged
    n = len(rig.host.normal_frames)
    rig.terminate()
    payloads = [bytes(f.tcp.payload) for f in rig.host.normal_frames[n:] if f.tcp is not None]
    assert payloads == [b"!", b"later"]


def test_segments_during_terminate_go_up_the_normal_path_r_trm_19() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    from chimney.ndis.blocklist import ProtocolOffloadBlockList

    assert rig.handles is not None
    steered = rig.target.counters["rx_steered"]
    n = len(rig.host.normal_frames)
    done = len(rig.host.completions["terminate"])
    from chimney.ndis.offload_state import OffloadStateType, TcpOffloadStateDelegated

    t = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, rig.handles[2], [TcpOffloadStateDelegated()])
    rig.ndis.terminate_offload(rig.binding, t)
    rig.link.a.deliver(peer_frame(rig, payload=b"mid-terminate"))  # arrives before the terminate ran
    rig.run(until=lambda: len(rig.host.completions["terminate"]) > done)
    assert rig.target.counters["rx_steered"] == steered
    assert [bytes(f.tcp.payload) for f in rig.host.normal_frames[n:]] == [b"mid-terminate"]
    assert t.status == NdisStatus.SUCCESS


def test_syn_in_time_wait_goes_to_the_host_r_rx_01() -> None:
    from chimney.ndis.buffers import nbl_from_bytes
    from chimney.ndis.offload_state import TCP_DISCONNECT_GRACEFUL_CLOSE

    rig = Rig()
    rig.connect()
    rig.offload()
    rig.ndis.offload_tcp_disconnect(rig.tcp_handle, nbl_from_bytes(b"", rig.host.name), TCP_DISCONNECT_GRACEFUL_CLOSE)
    rig.run(5)
    rig.peer_conn.shutdown(rig.sched.now)
    rig.peer.pump()
    rig.run(until=lambda: (RETRIEVE, TcpUploadReason.UploadRequested) in rig.host.events)
    ctx = next(iter(rig.target.tcps.values()))
    assert ctx.conn.state.name == "TimeWait"
    n = len(rig.host.normal_frames)
    rig.link.b.send(peer_frame(rig, flags=SYN, seq_delta=100_000))  # a new incarnation's SYN
    rig.run(1)
    assert [f.tcp.flags & SYN for f in rig.host.normal_frames[n:]] == [SYN]


def test_retransmit_timer_resumes_from_delegated_delta_r_tmr_19() -> None:
    """Offloaded 50 ms after sending unacknowledged data: the target's first retransmission fires when
    the host's timer would have (Retransmit.TimeoutDelta), on a tick boundary, not a fresh RTO later."""
    rig = Rig()
    rig.connect()
    conn = rig.host.conn
    assert conn is not None
    wire: list[int] = []
    rig.link.b.set_receiver(lambda frame: wire.append(rig.sched.now))  # the peer is unreachable
    conn.send(pattern(1000, 1), rig.sched.now)
    rig.host.pump()
    deadline = conn.next_deadline()
    assert deadline is not None
    rig.run(50)
    sent_before = len(wire)
    rig.offload()
    rig.run(until=lambda: len(wire) > sent_before)
    first_rtx = wire[sent_before]
    assert deadline <= first_rtx <= deadline + 1_000_000  # within one 1 ms tick of the host's deadline


def test_syn_rst_at_rcv_nxt_is_an_acceptable_rst_not_an_in_order_syn_r_evt_02() -> None:
    """RFC 9293 3.10.7.4 checks RST before SYN: SYN|RST at RCV.NXT aborts (TcpIndicateAbort, R-EVT-02)
    instead of uploading the connection in CLOSED state as an in-order SYN would (R-RX-02)."""
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.link.b.send(peer_frame(rig, flags=SYN | RST))
    rig.run(1)
    assert rig.host.events == [(TcpOffloadEventType.TcpIndicateAbort, 0)]
    ctx = next(iter(rig.target.tcps.values()))
    assert ctx.conn.state.name == "Closed" and ctx.aborted and not ctx.closed_by_syn


def test_exact_rst_in_last_ack_indicates_abort_r_evt_02() -> None:
    """RST at RCV.NXT in LAST-ACK closes the engine's TCB without a user signal (RFC 9293 3.10.7.4); the
    offloaded connection must still be reported so the host terminates it (R-EVT-02/04)."""
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.peer_conn.shutdown(rig.sched.now)  # peer FIN: CLOSE-WAIT
    rig.peer.pump()
    rig.run(until=lambda: (TcpOffloadEventType.TcpIndicateDisconnect, 0) in rig.host.events)
    held: list[bytes] = []
    rig.link.b.set_receiver(held.append)  # our FIN is never acknowledged
    disc = nbl_from_bytes(b"", rig.host.name)
    assert rig.ndis.offload_tcp_disconnect(rig.tcp_handle, disc, TCP_DISCONNECT_GRACEFUL_CLOSE) == NdisStatus.PENDING
    rig.run(5)
    ctx = next(iter(rig.target.tcps.values()))
    assert ctx.conn.state.name == "LastAck"
    rig.link.b.send(peer_frame(rig, flags=RST))  # SEG.SEQ = RCV.NXT (the peer's FIN is counted)
    rig.run(1)
    assert ctx.conn.state.name == "Closed"
    assert rig.host.events[-1] == (TcpOffloadEventType.TcpIndicateAbort, 0)
    assert rig.host.disc_done[0][:2] == (disc, NdisStatus.REQUEST_ABORTED)  # R-EVT-03


@pytest.mark.parametrize(("ticks", "freq", "ack_after_ms"), [(40, 2, 40), (200, 2, 200), (0, 2, 0), (40, 1, 0)])
def test_delayed_ack_follows_offload_parameters_r_init_12(ticks: int, freq: int, ack_after_ms: int) -> None:
    """TcpDelayedAckTicks / TcpAckFrequency from OID_TCP_CONNECTION_OFFLOAD_PARAMETERS set the offloaded
    connection's delayed ACK: 0 ticks or a frequency of 1 acknowledge at once (R-INIT-12)."""
    rig = Rig(host_cfg=TcpConfig(timestamps=False))  # the hand-made segment below carries no TSopt
    params = NdisTcpConnectionOffloadParameters(ticks_per_second=rig.tps, tcp_delayed_ack_ticks=ticks,
                                                tcp_ack_frequency=freq)
    req = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, params)
    assert rig.ndis.oid_request(rig.binding, req) == NdisStatus.SUCCESS
    rig.connect()
    rig.offload()
    seen = len(rig.peer.frames_in)
    start = rig.sched.now
    rig.link.b.send(peer_frame(rig, payload=b"one small segment"))
    rig.run(until=lambda: any(f.tcp is not None for f in rig.peer.frames_in[seen:]))
    waited_ms = (rig.sched.now - start) // 1_000_000
    assert ack_after_ms <= waited_ms <= ack_after_ms + 1  # tick rounding


def test_r_off_17_in_flight_bytes_at_offload_are_retransmitted_and_acked() -> None:
    """R-OFF-17: two segments the host sent (SndUna..SndNxt) are all lost on the wire when the connection is
    offloaded; the target treats them as sent and unacknowledged: it retransmits them (nothing past SndNxt
    exists), the peer gets them once, and the peer's ACK completes the NetBufferListChain with SUCCESS."""
    rig = Rig()
    rig.connect()
    rig.link.reconfigure(a_to_b=Impairments(loss=1.0))
    data = pattern(2 * 1448, 17)  # two full segments: Nagle holds nothing back
    conn = rig.host.conn
    assert conn is not None
    conn.send(data, rig.sched.now)
    rig.host.pump()
    rig.run(1)
    una, nxt = conn.snd_una & 0xFFFFFFFF, conn.snd_nxt & 0xFFFFFFFF
    assert (nxt - una) & 0xFFFFFFFF == len(data) and rig.peer.received == b""
    tree = rig.offload()
    rig.link.reconfigure(a_to_b=Impairments())
    seen = len(rig.peer.frames_in)
    rig.run(until=lambda: len(rig.peer.received) == len(data))
    rig.run(500)  # past the peer's delayed ACK
    assert bytes(rig.peer.received) == data
    resent = [f.tcp for f in rig.peer.frames_in[seen:] if f.tcp is not None and f.tcp.payload]
    assert resent and resent[0].seq == una
    assert all(((s.seq - una) & 0xFFFFFFFF) < len(data) for s in resent)
    chain = tree.dependent_block_list.dependent_block_list.net_buffer_list_chain  # type: ignore[union-attr]
    assert chain is not None
    done = {id(n): st for n, st, _b in rig.host.send_done}
    assert done.get(id(chain)) == NdisStatus.SUCCESS
