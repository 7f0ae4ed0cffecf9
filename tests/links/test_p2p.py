"""Point-to-point link: exact delivery timing, queueing, MTU enforcement, link state, determinism."""

from __future__ import annotations

import struct

import pytest

from chimney.links import DropCause, GilbertElliott, Impairments, Link
from chimney.sim import NS_PER_MS, NS_PER_US, SimScheduler

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def eth(payload_len: int, seq: int = 0, ethertype: int = 0x0800, vlan: int | None = None) -> bytes:
    """An Ethernet frame whose payload starts with a 4-byte sequence number."""
    hdr = MAC_B + MAC_A
    if vlan is not None:
        hdr += struct.pack("!HH", 0x8100, vlan)
    body = struct.pack("!I", seq) + bytes(max(0, payload_len - 4))
    return hdr + struct.pack("!H", ethertype) + body[:payload_len]


def collect(sched: SimScheduler, port) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    port.set_receiver(lambda f: got.append((sched.now, f)))
    return got


def seq_of(frame: bytes) -> int:
    return struct.unpack_from("!I", frame, 14)[0]


def test_delivery_time_is_serialization_plus_propagation_exactly() -> None:
    sched = SimScheduler(seed=1)
    # 100 Mbit/s: 80 ns per byte; 1514-byte frame -> 121_120 ns on the wire, then 5 ms of propagation.
    link = Link(sched, "wan", Impairments(rate_bps=100_000_000, delay_ns=5 * NS_PER_MS))
    got = collect(sched, link.b)
    f1, f2 = eth(1500, 1), eth(1500, 2)
    link.a.send(f1)
    link.a.send(f2)  # waits behind f1 for the transmitter
    sched.call_at(1 * NS_PER_MS, link.a.send, eth(46, 3))  # transmitter idle again by then
    sched.run()
    assert [t for t, _ in got] == [
        121_120 + 5_000_000,
        2 * 121_120 + 5_000_000,
        1_000_000 + 60 * 80 + 5_000_000,
    ]
    assert got[0][1] is f1 and got[1][1] is f2  # delivered without a copy


def test_framing_overhead_adds_wire_time_only() -> None:
    sched = SimScheduler()
    link = Link(sched, "eth", Impairments(rate_bps=1_000_000_000, framing_overhead=24))
    got = collect(sched, link.b)
    link.a.send(eth(46))  # 60 bytes + 24 overhead = 672 bits = 672 ns at 1 Gbit/s
    sched.run()
    assert got[0][0] == 672
    assert link.a.counters.bytes_delivered == 60


def test_perfect_link_delivers_in_order_at_send_time_in_one_event() -> None:
    sched = SimScheduler()
    link = Link(sched, "lan")
    got = collect(sched, link.b)
    frames = [eth(64, i) for i in range(50)]
    for f in frames:
        link.a.send(f)
    assert got == []  # never delivered re-entrantly inside send()
    sched.run()
    assert [f for _, f in got] == frames
    assert all(t == 0 for t, _ in got)
    assert sched.events_run == 1  # all frames due at the same instant share one event


def test_directions_are_independent() -> None:
    sched = SimScheduler()
    link = Link(sched, "asym", Impairments(delay_ns=1000), Impairments(delay_ns=7000))
    at_b, at_a = collect(sched, link.b), collect(sched, link.a)
    link.a.send(eth(64, 1))
    link.b.send(eth(64, 2))
    sched.run()
    assert [(t, seq_of(f)) for t, f in at_b] == [(1000, 1)]
    assert [(t, seq_of(f)) for t, f in at_a] == [(7000, 2)]
    assert link.a.counters is link.a_to_b.counters and link.b.counters is link.b_to_a.counters


def test_bytearray_and_memoryview_frames_are_converted_once() -> None:
    sched = SimScheduler()
    link = Link(sched, "conv")
    got = collect(sched, link.b)
    raw = bytearray(eth(64, 9))
    link.a.send(raw)
    link.a.send(memoryview(raw))
    raw[14] = 0xFF  # the sender reuses its buffer: what was sent must not change
    sched.run()
    assert [type(f) for _, f in got] == [bytes, bytes]
    assert [seq_of(f) for _, f in got] == [9, 9]
    with pytest.raises(TypeError):
        link.a.send("not a frame")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "expected_delivered"),
    [({"queue_limit_frames": 3}, 4), ({"queue_limit_frames": 0}, 1), ({"queue_limit_bytes": 2 * 1514}, 3)],
)
def test_drop_tail_queue_limit(limit: dict[str, int], expected_delivered: int) -> None:
    sched = SimScheduler()
    link = Link(sched, "q", Impairments(rate_bps=10_000_000, **limit))
    got = collect(sched, link.b)
    for i in range(10):  # a burst: one frame on the wire, the others wait or are dropped
        link.a.send(eth(1500, i))
    sched.run()
    assert [seq_of(f) for _, f in got] == list(range(expected_delivered))
    c = link.a.counters
    assert c.dropped[DropCause.QUEUE_FULL] == 10 - expected_delivered
    assert c.delivered == expected_delivered and c.sent == 10


def test_queue_drains_and_accepts_again() -> None:
    sched = SimScheduler()
    link = Link(sched, "q", Impairments(rate_bps=10_000_000, queue_limit_frames=1))
    got = collect(sched, link.b)
    ser = Impairments(rate_bps=10_000_000).serialization_ns(1514)
    for i in range(3):
        link.a.send(eth(1500, i))  # 0 on the wire, 1 waits, 2 dropped
    sched.call_at(ser, link.a.send, eth(1500, 3))  # frame 1 just started: the queue has room again
    sched.run()
    assert [seq_of(f) for _, f in got] == [0, 1, 3]
    assert link.a.channel.queued() == (0, 0)


def test_queue_limit_without_rate_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs rate_bps"):
        Impairments(queue_limit_frames=10)


@pytest.mark.parametrize(
    ("frame_len_payload", "vlan", "delivered"),
    [(1500, None, True), (1501, None, False), (1500, 5, True), (1501, 5, False)],
)
def test_mtu_enforced_with_and_without_vlan_tag(frame_len_payload: int, vlan: int | None, delivered: bool) -> None:
    sched = SimScheduler()
    link = Link(sched, "mtu", Impairments(mtu=1500))
    got = collect(sched, link.b)
    link.a.send(eth(frame_len_payload, vlan=vlan))
    sched.run()
    assert bool(got) is delivered
    assert link.a.counters.dropped[DropCause.MTU] == (0 if delivered else 1)


def test_small_mtu_and_runt_frames_are_counted_drops() -> None:
    sched = SimScheduler()
    link = Link(sched, "tiny", Impairments(mtu=576))
    got = collect(sched, link.b)
    assert link.a.mtu == 576 and link.b.mtu == 1500
    link.a.send(eth(577))
    link.a.send(b"\x01" * 13)
    link.a.send(eth(576))
    sched.run()
    assert len(got) == 1
    assert link.a.counters.dropped[DropCause.MTU] == 1
    assert link.a.counters.dropped[DropCause.RUNT] == 1


def test_link_down_drops_in_flight_and_new_frames_and_tells_both_ends() -> None:
    sched = SimScheduler()
    link = Link(sched, "cable", Impairments(delay_ns=10 * NS_PER_US))
    got = collect(sched, link.b)
    events: list[tuple[str, bool]] = []
    link.a.set_link_listener(lambda up: events.append(("a", up)))
    link.b.set_link_listener(lambda up: events.append(("b", up)))
    link.a.send(eth(64, 1))
    sched.call_at(5 * NS_PER_US, link.set_up, False)  # unplugged while frame 1 is on the wire
    sched.call_at(6 * NS_PER_US, link.a.send, eth(64, 2))
    sched.call_at(7 * NS_PER_US, link.set_up, True)
    sched.call_at(8 * NS_PER_US, link.a.send, eth(64, 3))
    sched.run()
    assert [seq_of(f) for _, f in got] == [3]
    assert got[0][0] == 18 * NS_PER_US
    assert link.a.counters.dropped[DropCause.LINK_DOWN] == 2
    assert events == [("a", False), ("b", False), ("a", True), ("b", True)]
    assert link.a.link_up and link.b.link_up


def test_frames_without_receiver_are_counted() -> None:
    sched = SimScheduler()
    link = Link(sched, "deaf")
    link.a.send(eth(64))
    sched.run()
    assert link.a.counters.dropped[DropCause.NO_RECEIVER] == 1
    assert link.a.counters.delivered == 0


def test_counters_account_for_every_frame_and_summary_is_readable() -> None:
    sched = SimScheduler(seed=3)
    imp = Impairments(
        rate_bps=50_000_000,
        queue_limit_frames=20,
        delay_ns=NS_PER_MS,
        loss=0.05,
        duplicate=0.05,
        reorder=0.05,
        reorder_delay_ns=NS_PER_MS,
        corrupt=0.05,
    )
    link = Link(sched, "acct", imp)
    collect(sched, link.b)
    for i in range(500):  # bursts of 25 frames every 5 ms: the 20-frame queue overflows in each burst
        sched.call_at((i // 25) * 5 * NS_PER_MS, link.a.send, eth(1000, i))
    sched.run()
    c = link.a.counters
    assert c.sent + c.duplicated == c.delivered + c.dropped_total
    assert c.dropped[DropCause.QUEUE_FULL] > 0 and c.dropped[DropCause.LOSS] > 0
    text = c.summary()
    assert f"sent {c.sent}" in text and "loss=" in text and "queue_full=" in text and "duplicated" in text
    assert "a_to_b" in link.summary()


def delivered_trace(seed: int) -> list[tuple[int, bytes]]:
    sched = SimScheduler(seed=seed)
    imp = Impairments(
        rate_bps=100_000_000,
        queue_limit_frames=8,
        delay_ns=2 * NS_PER_MS,
        jitter_ns=300 * NS_PER_US,
        loss=0.02,
        burst_loss=GilbertElliott(0.01, 0.3),
        duplicate=0.02,
        reorder=0.03,
        reorder_delay_ns=NS_PER_MS,
        corrupt=0.02,
    )
    link = Link(sched, "det", imp, imp)
    got = collect(sched, link.b)
    for i in range(2000):
        sched.call_at(i * 200 * NS_PER_US, link.a.send, eth(400 + i % 1000, i))
    sched.run()
    return got


def test_same_seed_gives_identical_frames_and_times_different_seed_does_not() -> None:
    first, again, other = delivered_trace(11), delivered_trace(11), delivered_trace(12)
    assert first == again
    assert first != other
    assert len(first) > 1500


def test_rng_stream_named_after_link_and_direction() -> None:
    sched = SimScheduler(seed=5)
    link = Link(sched, "named", Impairments(loss=0.5), Impairments(loss=0.5))
    assert link.a_to_b.rng_name == "link/named/a_to_b"
    assert link.b_to_a.rng_name == "link/named/b_to_a"
    # Adding traffic in the other direction must not perturb this direction's draws.
    def run(reverse_traffic: bool) -> list[int]:
        s = SimScheduler(seed=5)
        lk = Link(s, "named", Impairments(loss=0.5), Impairments(loss=0.5))
        got = collect(s, lk.b)
        collect(s, lk.a)
        for i in range(200):
            lk.a.send(eth(64, i))
            if reverse_traffic:
                lk.b.send(eth(64, i))
        s.run()
        return [seq_of(f) for _, f in got]

    assert run(False) == run(True)


def test_meta_does_not_change_delivered_frame() -> None:
    sched = SimScheduler()
    link = Link(sched, "meta")
    got = collect(sched, link.b)
    f = eth(64, 1)
    link.a.send(f, meta="conn 3, offloaded, sent by the target")
    sched.run()
    assert got == [(0, f)]


def test_reconfigure_mid_run_changes_mtu_and_delay_for_later_frames_only() -> None:
    sched = SimScheduler()
    link = Link(sched, "path", Impairments(delay_ns=1000))
    got = collect(sched, link.b)
    link.a.send(eth(1500, 1))
    link.reconfigure(a_to_b=Impairments(delay_ns=5000, mtu=1280))  # the path MTU drops under the flow
    link.a.send(eth(1500, 2))
    link.a.send(eth(1280, 3))
    sched.run()
    assert [(t, seq_of(f)) for t, f in got] == [(1000, 1), (5000, 3)]
    assert link.a.mtu == 1280 and link.b.mtu == 1500
    assert link.a.counters.dropped[DropCause.MTU] == 1
