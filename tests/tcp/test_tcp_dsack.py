"""D-SACK (RFC 2883): the receiver reports duplicate segments in the first SACK block of the ACK they
trigger (section 4 examples, one test each), only with SACK negotiated and `TcpConfig.dsack`; the sender
treats a D-SACK as no new SACK information (no scoreboard change, no duplicate ACK, no recovery)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_harness import C1, MS, S1, Impairment, Net, Peer, established_server, make_pair, sha, w

from chimney.net.tcp import TcpSegment
from chimney.tcp import Connection, TcpConfig, linux_profile
from chimney.tcp.buffers import Reassembly

TPS = 1000


def at(n: int, base: int = 3000) -> int:
    """Wire seq of the RFC 2883 example's sequence number n (the example's first byte `base` is C1)."""
    return w(C1 + n - base)


def receiver(cfg: TcpConfig | None = None, opts: str = "mss 1460,sackOK") -> Peer:
    """A server receiving the client's data, ACKing every segment (as the RFC examples draw it)."""
    return established_server(cfg or TcpConfig(delayed_ack=False), opts=opts)


def sacks(s: TcpSegment) -> list[tuple[int, int]]:
    return list(s.options.sack_blocks) if s.options is not None else []


def data(p: Peer, lo: int, hi: int, base: int = 3000, opts: str = "") -> list[TcpSegment]:
    """Peer sends the example's bytes lo..hi-1; returns what we sent in answer."""
    o = f" <{opts}>" if opts else ""
    p.peer_sends(f". {at(lo, base)}:{at(hi, base)}({hi - lo}) ack {S1} win 65535{o}")
    return p.out()


def ack_of(segs: list[TcpSegment]) -> tuple[int, list[tuple[int, int]]]:
    assert len(segs) == 1, f"want one ACK, got {len(segs)}"
    (a,) = segs
    assert not a.payload
    return a.ack, sacks(a)


# -- receiver: RFC 2883 section 4 examples ------------------------------------------------------------------


def test_rfc2883_4_1_1_duplicate_below_the_cumulative_ack_is_reported() -> None:
    p = receiver()
    assert ack_of(data(p, 3000, 3500)) == (at(3500), [])  # (ACK dropped)
    assert ack_of(data(p, 3500, 4000)) == (at(4000), [])  # (ACK dropped)
    # The sender times out and retransmits 3000-3499: the receiver tells it the copy was a duplicate.
    assert ack_of(data(p, 3000, 3500)) == (at(4000), [(at(3000), at(3500))])
    assert p.conn.readable == 1000


def test_rfc2883_4_1_2_duplicate_below_the_ack_then_the_out_of_order_block() -> None:
    p = receiver()
    data(p, 3000, 3500)
    data(p, 3500, 4000)
    # 4000-4499 lost
    assert ack_of(data(p, 4500, 5000)) == (at(4000), [(at(4500), at(5000))])  # (ACK dropped)
    assert ack_of(data(p, 3000, 3500)) == (at(4000), [(at(3000), at(3500)), (at(4500), at(5000))])


def test_rfc2883_4_1_3_duplicate_of_out_of_order_data_then_its_containing_block() -> None:
    p = receiver()
    data(p, 3000, 3500)
    data(p, 3500, 4000)
    # 4000-4499 lost
    assert ack_of(data(p, 4500, 5000)) == (at(4000), [(at(4500), at(5000))])
    assert ack_of(data(p, 5000, 5500)) == (at(4000), [(at(4500), at(5500))])
    # The network duplicates 5000-5499: D-SACK first, the block containing it second.
    assert ack_of(data(p, 5000, 5500)) == (at(4000), [(at(5000), at(5500)), (at(4500), at(5500))])


def test_rfc2883_4_2_1_partial_duplicate_reports_only_the_duplicated_subsegment() -> None:
    p = receiver()
    assert ack_of(data(p, 500, 1000, base=500)) == (at(1000, 500), [])
    # 1000-1499 delayed, 1500-1999 lost
    assert ack_of(data(p, 2000, 2500, base=500)) == (at(1000, 500), [(at(2000, 500), at(2500, 500))])
    assert ack_of(data(p, 1000, 1500, base=500)) == (at(1500, 500), [(at(2000, 500), at(2500, 500))])
    # The retransmission 1000-1999 repeats 1000-1499 and fills the hole: the ACK covers everything and
    # its only block is the duplicate, below the new cumulative ACK.
    assert ack_of(data(p, 1000, 2000, base=500)) == (at(2500, 500), [(at(1000, 500), at(1500, 500))])
    assert p.conn.readable == 2000


def test_rfc2883_4_2_2_two_duplicates_covered_by_the_ack_report_the_first() -> None:
    p = receiver()
    data(p, 500, 1000, base=500)
    # 1000-1499 lost
    assert ack_of(data(p, 1500, 2000, base=500)) == (at(1000, 500), [(at(1500, 500), at(2000, 500))])
    # 2000-2499 lost
    assert ack_of(data(p, 2500, 3000, base=500)) == (
        at(1000, 500),
        [(at(2500, 500), at(3000, 500)), (at(1500, 500), at(2000, 500))],
    )
    # One retransmission 1000-2999 repeats 1500-1999 and 2500-2999: a D-SACK reports one contiguous
    # duplicate, the first.
    assert ack_of(data(p, 1000, 3000, base=500)) == (at(3000, 500), [(at(1500, 500), at(2000, 500))])
    assert p.conn.readable == 2500


def test_rfc2883_4_2_3_two_duplicates_above_the_ack_report_the_first_and_its_block() -> None:
    p = receiver()
    data(p, 500, 1000, base=500)
    # 1000-1499 lost, 1500-1999 delayed, 2000-2499 lost, 2500-2999 delayed, 3000-3499 lost
    assert ack_of(data(p, 3500, 4000, base=500)) == (at(1000, 500), [(at(3500, 500), at(4000, 500))])
    # The retransmission 1500-2999 arrives, then the delayed originals 1500-1999 and 2500-2999.
    assert ack_of(data(p, 1500, 3000, base=500)) == (
        at(1000, 500),
        [(at(1500, 500), at(3000, 500)), (at(3500, 500), at(4000, 500))],
    )
    assert ack_of(data(p, 1500, 2000, base=500)) == (
        at(1000, 500),
        [(at(1500, 500), at(2000, 500)), (at(1500, 500), at(3000, 500)), (at(3500, 500), at(4000, 500))],
    )
    assert ack_of(data(p, 2500, 3000, base=500)) == (
        at(1000, 500),
        [(at(2500, 500), at(3000, 500)), (at(1500, 500), at(3000, 500)), (at(3500, 500), at(4000, 500))],
    )


def test_rfc2883_4_2_3_out_of_order_segment_overlapping_two_held_pieces_reports_the_first() -> None:
    p = receiver()
    data(p, 500, 1000, base=500)
    data(p, 1500, 2000, base=500)
    data(p, 2500, 3000, base=500)
    # 1200-2999 (a re-segmented retransmission) repeats 1500-1999 and 2500-2999; 1000-1199 is still missing.
    assert ack_of(data(p, 1200, 3000, base=500)) == (
        at(1000, 500),
        [(at(1500, 500), at(2000, 500)), (at(1200, 500), at(3000, 500))],
    )


def test_rfc2883_4_3_duplicate_dropped_by_paws_is_still_reported() -> None:
    """RFC 2883 4.3: PAWS discards the old copy and ACKs; that ACK may carry the D-SACK (Linux does)."""
    p = receiver(opts="mss 1460,sackOK,TS val 100 ecr 0")
    assert ack_of(data(p, 3000, 3500, opts="TS val 200 ecr 0"))[1] == []
    assert ack_of(data(p, 3500, 4000, opts="TS val 300 ecr 0"))[1] == []
    # An old copy of 3000-3499 with its original, older timestamp.
    assert ack_of(data(p, 3000, 3500, opts="TS val 200 ecr 0")) == (at(4000), [(at(3000), at(3500))])
    assert p.conn.stats.drops["paws"] == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), max_size=12),
    st.integers(0, 70),
    st.integers(1, 30),
)
def test_reassembly_reports_the_first_contiguous_run_of_held_bytes(
    pieces: list[tuple[int, int]], seq: int, n: int
) -> None:
    """Reassembly.overlap against a byte-set model: the duplicate of [seq, seq+n) is the first maximal run
    of held bytes inside it (RFC 2883 4.2: one contiguous duplicate per D-SACK block)."""
    base = 2**32 - 20  # unwrapped sequence numbers past the wrap
    r = Reassembly(64)
    held: set[int] = set()
    for off, k in pieces:
        assert r.add(base + off, bytes(k))
        held.update(range(off, off + k))
    inside = [x for x in range(seq, seq + n) if x in held]
    if not inside:
        assert r.overlap(base + seq, base + seq + n) is None
        return
    lo = hi = inside[0]
    while hi + 1 in held and hi + 1 < seq + n:
        hi += 1
    assert r.overlap(base + seq, base + seq + n) == (base + lo, base + hi + 1)
    # The D-SACK list: the duplicate, then the block holding it, never more than asked for.
    blocks = r.dsack_blocks((base + lo, base + hi + 1), 4)
    assert blocks[0] == (base + lo, base + hi + 1) and len(blocks) <= 4
    assert blocks[1][0] <= base + lo and base + hi + 1 <= blocks[1][1] and blocks[1] in r.blocks()


# -- receiver: when, how often, how many ------------------------------------------------------------------


def test_duplicate_is_reported_once_then_acks_are_plain_again() -> None:
    p = receiver()
    data(p, 3000, 3500)
    data(p, 3500, 4000)
    assert ack_of(data(p, 3000, 3500))[1] == [(at(3000), at(3500))]
    assert ack_of(data(p, 4000, 4500)) == (at(4500), [])
    assert ack_of(data(p, 3500, 4000))[1] == [(at(3500), at(4000))]  # a new duplicate, a new report


def test_partial_duplicate_is_acked_at_once_despite_delayed_acks() -> None:
    p = receiver(TcpConfig())  # delayed ACKs on
    assert data(p, 3000, 3500) == []  # first segment: ACK delayed
    # A retransmission 3000-3999 repeats what we hold and brings 500 new bytes: the ACK it triggers is
    # immediate and carries the D-SACK.
    assert ack_of(data(p, 3000, 4000)) == (at(4000), [(at(3000), at(3500))])
    assert not p.conn.ack_pending


def test_dsack_with_no_room_next_to_full_sized_data_follows_in_a_pure_ack() -> None:
    """A partial duplicate whose ACK opens our window: the full-sized data segments we then send have no
    option room left for SACK blocks (RFC 9293 3.7.1), so the D-SACK goes out in a pure ACK after them,
    still in answer to the duplicate."""
    p = receiver(TcpConfig(nagle=False, delayed_ack=False), opts="mss 1000,sackOK,TS val 1 ecr 0")
    c = p.conn
    c.send(b"d" * 30_000, 0)
    first = p.out()
    ts = "TS val 2 ecr 0"
    data(p, 3000, 3500, opts=ts)
    # The peer resends 3000-3999 (500 bytes duplicate) acknowledging our first two segments.
    p.peer_sends(f". {at(3000)}:{at(4000)}(1000) ack {w(S1 + 2 * c.snd_mss)} win 65535 <{ts}>")
    segs = p.out()
    assert len(first) == 10 and len(segs) >= 3
    *sent, last = segs
    assert all(len(s.payload) == c.snd_mss and not sacks(s) for s in sent)  # no room for a block
    assert not last.payload and last.ack == at(4000) and sacks(last) == [(at(3000), at(3500))]


def test_duplicate_with_timestamps_fills_at_most_three_blocks() -> None:
    p = receiver(opts="mss 1460,sackOK,TS val 1 ecr 0")
    ts = "TS val 2 ecr 0"
    data(p, 3000, 3500, opts=ts)
    for lo in (4000, 5000, 6000, 7000):  # four holes, four out-of-order blocks
        data(p, lo, lo + 500, opts=ts)
    (a,) = data(p, 5000, 5500, opts=ts)
    assert sacks(a) == [(at(5000), at(5500)), (at(5000), at(5500)), (at(7000), at(7500))]


def test_duplicate_without_timestamps_fills_four_blocks() -> None:
    p = receiver()
    data(p, 3000, 3500)
    for lo in (4000, 5000, 6000, 7000):
        data(p, lo, lo + 500)
    _, blocks = ack_of(data(p, 3000, 3500))
    assert blocks == [(at(3000), at(3500)), (at(7000), at(7500)), (at(6000), at(6500)), (at(5000), at(5500))]


def test_dsack_off_by_config() -> None:
    assert TcpConfig().dsack and linux_profile().dsack  # Linux net.ipv4.tcp_dsack=1
    p = receiver(TcpConfig(delayed_ack=False, dsack=False))
    data(p, 3000, 3500)
    data(p, 3500, 4000)
    data(p, 4500, 5000)
    assert ack_of(data(p, 3000, 3500)) == (at(4000), [(at(4500), at(5000))])  # RFC 2018 blocks only
    assert ack_of(data(p, 4500, 5000)) == (at(4000), [(at(4500), at(5000))])
    data(p, 4000, 4500)
    assert ack_of(data(p, 4000, 4500)) == (at(5000), [])


def test_no_dsack_without_sack_permitted() -> None:
    p = receiver(opts="mss 1460")
    data(p, 3000, 3500)
    data(p, 3500, 4000)
    (a,) = data(p, 3000, 3500)
    assert a.ack == at(4000) and a.options is None  # the RFC 9293 ACK of an old duplicate, no option


def test_retransmitted_fin_in_close_wait_is_reported_like_linux() -> None:
    """Linux tcp_data_queue D-SACKs a retransmitted FIN (its sequence number came again)."""
    p = receiver()
    p.peer_sends(f"F. {at(3000)}:{at(3500)}(500) ack {S1} win 65535")
    assert ack_of(p.out()) == (at(3501), [])
    assert p.conn.state.name == "CloseWait"
    p.peer_sends(f"F. {at(3000)}:{at(3500)}(500) ack {S1} win 65535")
    assert ack_of(p.out()) == (at(3501), [(at(3000), at(3501))])


def test_time_wait_answers_a_retransmitted_fin_without_sack() -> None:
    """In TIME-WAIT Linux answers from the timewait socket, which keeps no SACK state."""
    p = receiver()
    p.conn.close(0)
    p.out()  # our FIN
    p.peer_sends(f"F. {at(3000)}:{at(3000)}(0) ack {w(S1 + 1)} win 65535")
    p.out()
    assert p.conn.state.name == "TimeWait"
    p.peer_sends(f"F. {at(3000)}:{at(3000)}(0) ack {w(S1 + 1)} win 65535")
    assert ack_of(p.out()) == (at(3001), [])


# -- sender: a D-SACK is no new SACK information (RFC 2883 5, RFC 6675 2) -----------------------------------

MSS = 1000


def sender() -> Peer:
    p = established_server(TcpConfig(initial_window=10, nagle=False), opts="mss 1000,sackOK")
    p.conn.send(b"d" * 20 * MSS, 0)
    assert len(p.out()) == 10
    return p


def peer_acks(p: Peer, ack: int, *blocks: tuple[int, int]) -> list[TcpSegment]:
    sack = ",".join(f"sack {w(a)}:{w(b)}" for a, b in blocks)
    p.peer_sends(f". {C1}:{C1}(0) ack {w(ack)} win 65535" + (f" <{sack}>" if sack else ""))
    return p.out()


def snapshot(c: Connection) -> tuple[object, ...]:
    return ([list(b) for b in c._sack_board], c._pipe(c._lost_edge()), c.cc.cwnd, c.cc.ssthresh, c.in_recovery)


def test_sender_dsack_below_snd_una_changes_nothing_and_is_no_dupack() -> None:
    """Linux D-SACKs each spurious copy it gets; three such ACKs are not three duplicate ACKs."""
    p = sender()
    c = p.conn
    peer_acks(p, S1 + 2 * MSS)
    before = snapshot(c)
    for _ in range(4):
        assert peer_acks(p, S1 + 2 * MSS, (S1, S1 + MSS)) == []  # nothing retransmitted
        assert c.dup_acks == 0
    assert snapshot(c) == before and not c.in_recovery
    assert not c._sack_board and c.stats.fast_retransmits == 0 and c.stats.dsacks_received == 4


def test_sender_dsack_inside_sacked_data_changes_nothing() -> None:
    p = sender()
    c = p.conn
    peer_acks(p, S1, (S1 + 2 * MSS, S1 + 4 * MSS))  # new SACK information: one duplicate ACK
    assert c.dup_acks == 1
    before = snapshot(c)
    for _ in range(3):
        peer_acks(p, S1, (S1 + 3 * MSS, S1 + 4 * MSS), (S1 + 2 * MSS, S1 + 4 * MSS))
    assert snapshot(c) == before and c.dup_acks == 1 and not c.in_recovery
    assert c.stats.fast_retransmits == 0 and c.stats.dsacks_received == 3


def test_sender_dsack_with_new_sack_information_still_counts() -> None:
    """RFC 6675 2: an ACK SACKing new data is a duplicate ACK, a D-SACK in front of it changes nothing."""
    p = sender()
    c = p.conn
    peer_acks(p, S1, (S1 + 2 * MSS, S1 + 3 * MSS))
    peer_acks(p, S1, (S1 + 2 * MSS, S1 + 3 * MSS), (S1 + 2 * MSS, S1 + 4 * MSS))  # D-SACK + one new segment
    assert [list(b) for b in c._sack_board] == [[S1 + 2 * MSS, S1 + 4 * MSS]]
    assert c.dup_acks == 2
    peer_acks(p, S1, (S1 + 5 * MSS, S1 + 6 * MSS), (S1 + 2 * MSS, S1 + 4 * MSS))
    assert c.in_recovery  # the third duplicate ACK


def test_sender_dsack_on_an_advancing_ack_is_an_ordinary_new_ack() -> None:
    p = sender()
    c = p.conn
    cwnd = c.cc.cwnd
    segs = peer_acks(p, S1 + 3 * MSS, (S1, S1 + MSS))
    assert c.snd_una % 2**32 == w(S1 + 3 * MSS) and c.cc.cwnd > cwnd and segs  # slow start sends more
    assert not c._sack_board and not c.in_recovery and c.stats.dsacks_received == 1


def test_spurious_retransmissions_to_a_dsack_receiver_do_not_start_recovery() -> None:
    """A 300 ms ACK blackout makes the sender time out and go back: the receiver D-SACKs the copies it
    already had, and the sender never enters fast recovery over them."""
    a, b = make_pair(TcpConfig(nagle=False), linux_profile(delayed_ack=False))
    net = Net(a, b, ab=Impairment(rate_bps=10_000_000), ba=Impairment(delay=5 * MS))
    a.connect(0)
    net.run(until=lambda n: a.state.name == b.state.name == "Established")
    dsack_acks: list[TcpSegment] = []

    def drop_acks_in_blackout(s: TcpSegment) -> bool:
        if s.options is not None and s.options.sack_blocks:
            dsack_acks.append(s)
        return 50 * MS <= net.now < 350 * MS

    net.imp[1].drop_if = drop_acks_in_blackout
    payload = bytes(range(256)) * 2000
    net.send_stream(0, payload)
    recoveries: list[bool] = []
    net.hooks.append(lambda n: recoveries.append(a.in_recovery))
    net.run()
    assert sha(net.received[1]) == sha(payload)
    assert a.stats.rto_expirations >= 1 and a.stats.retransmitted_segments >= 1
    assert dsack_acks and a.stats.dsacks_received >= 1  # b reported the spurious copies
    assert not any(recoveries) and a.stats.fast_retransmits == 0


def test_late_network_duplicates_draw_dsacks_that_are_not_duplicate_acks() -> None:
    """Every data segment arrives a second time 10 ms late (no loss) during a 20 Mbit/s transfer: each
    late copy draws an immediate ACK whose D-SACK reports it, mostly at the cumulative ACK the sender
    already has. Runs of them must not count as duplicate ACKs: no fast retransmit, no retransmission."""
    a, b = make_pair(TcpConfig(nagle=False), TcpConfig())
    net = Net(a, b, ab=Impairment(rate_bps=20_000_000))
    a.connect(0)
    net.run(until=lambda n: a.state.name == b.state.name == "Established")
    late: list[tuple[int, TcpSegment]] = []

    def copy_data(s: TcpSegment) -> bool:
        if s.payload:
            late.append((net.now + 10 * MS, s))
        return False

    def deliver_late(n: Net) -> None:
        while late and late[0][0] <= n.now:
            b.receive(late.pop(0)[1], n.now)

    net.imp[0].drop_if = copy_data
    net.hooks.append(deliver_late)
    recoveries: list[bool] = []
    net.hooks.append(lambda n: recoveries.append(a.in_recovery))
    payload = bytes(range(256)) * 1600
    net.send_stream(0, payload)
    while True:
        net.run()
        if not late:
            break
        net.now = max(net.now, late[0][0])  # the network is idle but for the late copies
        deliver_late(net)
    assert sha(net.received[1]) == sha(payload)
    assert a.stats.dsacks_received >= 250  # one per late copy (~280 data segments)
    assert not any(recoveries) and a.stats.fast_retransmits == 0 and a.stats.retransmitted_segments == 0


# -- offload export: a D-SACK is per-ACK and never carried ---------------------------------------------------


def test_export_right_after_a_duplicate_loses_no_dsack() -> None:
    """The D-SACK leaves with the ACK the duplicate triggers (before any export), so the exported state
    needs none and the imported connection's first ACK reports nothing stale (R-TMR-04 flush unchanged)."""
    p = receiver(TcpConfig(ack_at_batch_end=True))  # the host's batched receive: in-order ACKs wait
    data(p, 3000, 3500)
    p.peer_sends(f". {at(3500)}:{at(4000)}(500) ack {S1} win 65535")
    assert p.out() == [] and p.conn.ack_pending  # owed, waiting for the end of the batch
    p.peer_sends(f". {at(3000)}:{at(3500)}(500) ack {S1} win 65535")  # a duplicate in the same batch
    st = p.conn.export_state(1 * MS, TPS)
    assert ack_of(p.out()) == (at(4000), [(at(3000), at(3500))])  # one ACK: the owed one, with the D-SACK
    p.conn.detach()
    q = Peer(Connection.import_state(*st, 1 * MS, TPS, cfg=p.conn.cfg), 1 * MS)
    assert ack_of(data(q, 4500, 5000)) == (at(4000), [(at(4500), at(5000))])  # no stale D-SACK
    assert ack_of(data(q, 4500, 5000)) == (at(4000), [(at(4500), at(5000)), (at(4500), at(5000))])
    assert ack_of(data(q, 4000, 4500)) == (at(5000), [])
    assert q.conn.readable == 2000  # the 1000 bytes read by nobody yet moved with the connection


def test_export_flush_of_a_delayed_ack_after_a_duplicate_carries_no_dsack_twice() -> None:
    p = receiver(TcpConfig())  # delayed ACKs
    data(p, 3000, 3500)
    assert ack_of(data(p, 3000, 3500)) == (at(3500), [(at(3000), at(3500))])
    assert data(p, 3500, 4000) == []  # delayed
    p.conn.export_state(2 * MS, TPS)
    assert ack_of(p.out()) == (at(4000), [])  # R-TMR-04 flush: the owed ACK, no repeated D-SACK
