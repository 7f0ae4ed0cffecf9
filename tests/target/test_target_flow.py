"""End-to-end flows through the offload target: a live engine connection is offloaded, moves data both
ways through the chimney (sends completed only after ACK, indications, receive-return recycling), is
terminated, and resumes in a fresh engine Connection with both byte streams intact."""

from __future__ import annotations

from target_harness import MS, Rig, nbls_of, pattern, sha

from chimney.ndis.status import NdisStatus
from chimney.tcp import TcpConfig


def test_bulk_both_ways_offload_then_upload_resumes_streams_intact() -> None:
    rig = Rig()
    rig.connect()
    up0 = pattern(3000, 1)
    rig.host.conn.send(up0, rig.sched.now)  # type: ignore[union-attr]
    rig.host.pump()
    rig.run(50)
    rig.offload()
    tree = rig.host.completions["initiate"][0]
    assert tree.status == NdisStatus.SUCCESS
    up1 = pattern(200_000, 2)
    down = pattern(150_000, 3)
    nbls = rig.send(up1, pieces=7)
    rig.peer.send_stream(down)
    rig.run(until=lambda: len(rig.peer.received) == len(up0) + len(up1) and len(rig.host.received) == len(down))
    rig.run(50)
    done = [(n, st, k) for n, st, k in rig.host.send_done if n in nbls]
    assert [n for n, _, _ in done] == nbls  # FIFO, each once (R-SEND-03)
    assert all(st == NdisStatus.SUCCESS for _, st, _ in done)
    assert [k for _, _, k in done] == [len(up1) // 7 + 1] * 6 + [len(up1) - 6 * (len(up1) // 7 + 1)]
    tree = rig.terminate()
    assert tree.dependent_block_list.dependent_block_list.status == NdisStatus.SUCCESS
    conn = rig.resume(tree)
    up2 = pattern(5000, 4)
    down2 = pattern(7000, 5)
    conn.send(up2, rig.sched.now)
    rig.host.pump()
    rig.peer.send_stream(down2)
    rig.run(until=lambda: len(rig.peer.received) == len(up0 + up1 + up2) and len(rig.host.received) == len(down + down2))
    assert sha(rig.peer.received) == sha(up0 + up1 + up2)
    assert sha(rig.host.received) == sha(down + down2)


def test_ipv6_connection_offload_and_upload_r_init_08() -> None:
    rig = Rig(v6=True, host_cfg=TcpConfig(ip_header_size=40), peer_cfg=TcpConfig(ip_header_size=40))
    rig.connect()
    rig.offload()
    assert rig.host.completions["initiate"][0].dependent_block_list.status == NdisStatus.SUCCESS
    up, down = pattern(50_000, 1), pattern(40_000, 2)
    seen = len(rig.peer.frames_in)
    rig.send(up, pieces=3)
    rig.peer.send_stream(down)
    rig.run(until=lambda: len(rig.peer.received) == len(up) and len(rig.host.received) == len(down))
    frames = [f for f in rig.peer.frames_in[seen:] if f.tcp is not None]
    assert all(f.ip_version == 6 and f.ttl == rig.cached.ttl_or_hop_limit for f in frames)
    assert max(len(f.tcp.payload) for f in frames) <= 1500 - 60 - 12
    tree = rig.terminate()
    conn = rig.resume(tree)
    conn.send(b"after", rig.sched.now)
    rig.host.pump()
    rig.run(until=lambda: len(rig.peer.received) == len(up) + 5)
    assert bytes(rig.peer.received) == up + b"after" and bytes(rig.host.received) == down


def test_lossy_link_mid_transfer_terminate_returns_unacked_sends_in_order_r_trm_11_12_13() -> None:
    """Data in flight both ways at terminate: unacked NBLs come back in their original order with
    SendDataHead/Tail and SndUna consistent; acked-undelivered data comes back as BufferedData (R-TRM-15);
    the fresh engine connection finishes both streams byte-exactly."""
    from chimney.links.impair import Impairments

    def imp() -> Impairments:
        return Impairments(rate_bps=100_000_000, delay_ns=2 * MS, loss=0.02)

    rig = Rig(to_peer=imp(), to_target=imp(), seed=7)
    rig.connect()
    rig.offload()
    up = pattern(400_000, 8)
    down = pattern(300_000, 9)
    nbls = rig.send(up, pieces=40)
    rig.peer.send_stream(down)
    rig.host.policy = lambda n: (NdisStatus.SUCCESS, n)
    rig.run(10)
    # The host stops accepting indications: data piles up in the target (acked, undelivered).
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    rig.run(20)
    done_before = {id(n) for n, _, _ in rig.host.send_done}
    tree = rig.terminate()
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    dlg = t.state[0]
    returned = nbls_of(t.net_buffer_list_chain)
    completed = [n for n in nbls if id(n) in {id(x) for x, _, _ in rig.host.send_done}]
    assert returned, "the transfer was still in flight"
    assert completed + returned == nbls  # every NBL exactly once, original order (R-TRM-12, R-OFF-22)
    assert dlg.send_data_head is returned[0] and dlg.send_data_tail is returned[-1]  # R-TRM-13
    assert (dlg.snd_max - dlg.snd_una) & 0xFFFFFFFF <= sum(n.data_length() for n in returned)
    assert dlg.buffered_data is not None  # R-TRM-15
    assert len(done_before) <= len(completed)
    rig.resume(tree)
    rig.run(until=lambda: len(rig.peer.received) == len(up) and len(rig.host.received) == len(down))
    assert sha(rig.peer.received) == sha(up)
    assert sha(rig.host.received) == sha(down)
    assert rig.target.indicated_outstanding() == 0


def test_sends_complete_only_after_ack_r_send_05() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    held: list[bytes] = []
    rig.link.b.set_receiver(held.append)  # the peer hears nothing: no ACK can come back
    nbls = rig.send(pattern(20_000, 1), pieces=4)
    rig.run(100)
    assert held, "the target transmitted the data"
    assert not rig.host.send_done
    rig.link.b.set_receiver(rig.peer.on_frame)
    for f in held:
        rig.peer.on_frame(f)
    rig.run(until=lambda: len(rig.host.send_done) == 4)
    assert [n for n, _, _ in rig.host.send_done] == nbls
    assert all(st == NdisStatus.SUCCESS and k == 5000 for _, st, k in rig.host.send_done)
    assert all(n.first_net_buffer.data_length == 0 for n in nbls)  # advanced by the acked bytes (R-SEND-04)


def test_multi_nb_send_nbl_advances_every_nb_section_6_33() -> None:
    from chimney.ndis.buffers import NetBuffer, NetBufferList, chain_net_buffers, mdls_over

    rig = Rig()
    rig.connect()
    rig.offload()
    parts = [pattern(3000, i) for i in range(3)]
    nbs = [NetBuffer(mdls_over(p, 1000), 0, len(p)) for p in parts]
    nbl = NetBufferList(chain_net_buffers(*nbs), rig.host.name)
    assert rig.ndis.offload_tcp_send(rig.tcp_handle, nbl) == NdisStatus.PENDING
    rig.run(until=lambda: len(rig.host.send_done) == 1 and len(rig.peer.received) == 9000)
    (n, st, k), = rig.host.send_done
    assert n is nbl and st == NdisStatus.SUCCESS and k == 9000
    assert [nb.data_length for nb in nbs] == [0, 0, 0]
    assert bytes(rig.peer.received) == b"".join(parts)


def test_indications_recycle_nbls_and_respect_rcv_indication_size_r_ind_11() -> None:
    rig = Rig()
    rig.connect()
    tree = rig.offload_tree()
    tcp = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    tcp.state[1].rcv_indication_size = 1000
    rig.ndis.initiate_offload(rig.binding, tree)
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    down = pattern(60_000, 2)
    rig.peer.send_stream(down)
    rig.run(until=lambda: len(rig.host.received) == len(down))
    assert bytes(rig.host.received) == down
    assert max(rig.host.indication_sizes) <= 1000
    c = rig.target.counters
    assert c["ind_calls"] == len(rig.host.indication_sizes) >= 60
    # Returned NBLs are recycled, never freed: allocations only grow with the peak held by the host.
    pool = rig.target.ind_pool
    assert pool is not None
    assert c["ind_nbl_recycled"] > 0 and c["ind_nbl_allocated"] + c["ind_nbl_recycled"] == c["ind_calls"]
    assert pool.freed == 0 and pool.allocated == c["ind_nbl_allocated"] == pool.peak
    rig.run(10)
    assert rig.target.indicated_outstanding() == 0


def test_refused_indication_not_repeated_until_receive_posted_r_ind_05_08_10() -> None:
    from chimney.ndis.buffers import nbl_from_bytes

    rig = Rig()
    rig.connect()
    rig.offload()
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 100)
    rig.peer.send_stream(pattern(5000, 1))
    rig.run(50)
    assert rig.host.indication_sizes == [rig.host.indication_sizes[0]]  # exactly one, then silence
    more = pattern(3000, 2)
    rig.peer.send_stream(more)
    rig.run(50)
    assert len(rig.host.indication_sizes) == 1  # R-IND-08: new data does not re-enable indications
    # A zero-byte receive re-enables indications and is completed with 0 bytes (R-IND-10).
    rig.host.policy = lambda n: (NdisStatus.SUCCESS, n)
    zero = nbl_from_bytes(b"", rig.host.name)
    assert rig.ndis.offload_tcp_receive(rig.tcp_handle, zero) == NdisStatus.PENDING
    rig.run(until=lambda: len(rig.host.received) == 8000)
    assert rig.host.recv_done[0][0] is zero and rig.host.recv_done[0][1:] == (NdisStatus.SUCCESS, 0)
    assert bytes(rig.host.received) == pattern(5000, 1) + more
    assert rig.host.log.index(f"receive_complete {0:#x} 0") < rig.host.log.index(
        next(e for e in rig.host.log[1:] if e.startswith("indicate") and not e.endswith("-> 100"))
    )


def test_posted_receives_fill_fifo_and_push_completes_r_recv_02_06() -> None:
    from chimney.ndis.buffers import NblInfo, nbl_from_bytes

    rig = Rig()
    rig.connect()
    rig.offload()
    bufs = [bytearray(4000), bytearray(4000), bytearray(10_000)]
    posts = [nbl_from_bytes(b, rig.host.name) for b in bufs]
    posts[0].info[NblInfo.TcpReceiveNoPush] = True
    posts[1].info[NblInfo.TcpReceiveNoPush] = True
    posts[0].next, posts[1].next = posts[1], posts[2]
    assert rig.ndis.offload_tcp_receive(rig.tcp_handle, posts[0]) == NdisStatus.PENDING
    data = pattern(9000, 3)
    rig.peer.send_stream(data)
    rig.run(until=lambda: len(rig.host.recv_done) == 3)
    assert [n for n, _, _ in rig.host.recv_done] == posts  # FIFO (R-RECV-02)
    assert [(st, k) for _, st, k in rig.host.recv_done] == [(0, 4000), (0, 4000), (0, 1000)]
    assert bytes(bufs[0]) + bytes(bufs[1]) + bytes(bufs[2][:1000]) == data
    assert not rig.host.indication_sizes  # posted buffers are used before indications (R-IND-01)


def test_no_indication_before_initiate_completion_r_off_09_15() -> None:
    """Data the host acked but its application has not read travels as BufferedData (copied, R-OFF-13)
    and is indicated only after NdisMInitiateOffloadComplete returned, before any later data."""
    rig = Rig()
    rig.connect()
    rig.host.app_reads = False
    first = pattern(2000, 5)
    rig.peer.send_stream(first)
    rig.run(until=lambda: rig.host.conn.readable == len(first))  # type: ignore[union-attr]
    tree = rig.offload_tree()
    buffered = tree.dependent_block_list.dependent_block_list.state[2].buffered_data  # type: ignore[union-attr]
    assert buffered is not None and buffered.data_length() == len(first)
    rig.ndis.initiate_offload(rig.binding, tree)
    rig.peer.send_stream(pattern(1000, 6))
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    first_indication = next(i for i, e in enumerate(rig.host.log) if e.startswith("indicate"))
    assert rig.host.log.index("initiate_complete") < first_indication
    rig.run(10)
    assert bytes(rig.host.received) == first + pattern(1000, 6)


def test_terminate_flushes_delayed_ack_r_trm_17() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.peer.send_stream(b"x" * 10)
    rig.run(1)
    seen = len(rig.peer.frames_in)
    rig.link.a.add_observer(lambda d, frame, meta: rig.host.log.append(f"wire {d}"))
    rig.terminate()
    assert rig.host.log.index("wire tx") < rig.host.log.index("terminate_complete")  # ACK sent first
    rig.run(1)
    acks = [f.tcp for f in rig.peer.frames_in[seen:] if f.tcp is not None]
    assert acks and acks[-1].ack == (rig.peer_conn.snd_max & 0xFFFFFFFF)


def test_timestamps_continue_across_offload_and_terminate_r_ts_01_04() -> None:
    """R-TRM-24 too: the TsTime returned at terminate is exactly NicTime + NicDelta at that moment."""
    rig = Rig()
    rig.connect()
    rig.run(100)
    rig.offload()
    t0 = rig.target.tcps[next(iter(rig.target.tcps))]
    rig.send(pattern(5000, 1))
    rig.run(30)
    tsvals = [f.tcp.options.ts_val for f in rig.peer.frames_in if f.tcp is not None and f.tcp.options is not None]
    assert tsvals == sorted(tsvals)
    tree = rig.terminate()
    dlg = tree.dependent_block_list.dependent_block_list.state[0]  # type: ignore[union-attr]
    now_ticks = rig.sched.now // (1_000_000_000 // 1000)
    assert dlg.ts_time == (now_ticks + t0.conn._ts_offset) & 0xFFFFFFFF  # NicTime + NicDelta (R-TRM-24)
    assert dlg.ts_time >= tsvals[-1]


def test_window_reopens_at_once_when_refused_data_is_consumed_r_recv_10() -> None:
    """Refused data keeps the advertised window closed (it stays in target buffers); consuming it after a
    posted receive sends the window update immediately, not at the peer's next persist probe."""
    from chimney.ndis.buffers import nbl_from_bytes

    rig = Rig()
    rig.connect()
    tree = rig.offload_tree()
    tree.dependent_block_list.dependent_block_list.state[1].initial_rcv_wnd = 32768  # type: ignore[union-attr]
    rig.ndis.initiate_offload(rig.binding, tree)
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    down = pattern(600_000, 3)
    rig.peer.send_stream(down)
    rig.run(300)
    ctx = next(iter(rig.target.tcps.values()))
    # The window the host advertised (256 KiB) is honoured, never shrunk; then the peer is stalled.
    assert 0 < ctx.conn.readable <= 262_144 + 1448
    assert (rig.peer_conn.snd_una - rig.peer_conn.iss - 1) < 300_000
    rig.host.policy = lambda n: (NdisStatus.SUCCESS, n)
    rig.ndis.offload_tcp_receive(rig.tcp_handle, nbl_from_bytes(b"", rig.host.name))
    rig.run(50)  # far below the peer's persist back-off: the update went out at once
    assert len(rig.host.received) >= len(down) - 1448  # (a Nagle-held tail may wait for a delayed ACK)
    rig.run(until=lambda: len(rig.host.received) == len(down))
    assert bytes(rig.host.received) == down
