"""Impairment statistics: each configured probability shows up in the delivered traffic, for fixed seeds."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from chimney.links import DropCause, GilbertElliott, Impairments, Link, PortObserver, corrupt_frame
from chimney.sim import NS_PER_US, SimScheduler

N = 20_000


def numbered(seq: int, size: int = 100) -> bytes:
    return bytes(12) + b"\x88\xb5" + struct.pack("!I", seq) + bytes(size - 18)


def seq_of(frame: bytes) -> int:
    return struct.unpack_from("!I", frame, 14)[0]


def run_link(
    imp: Impairments, seed: int, n: int = N, gap_ns: int = 10 * NS_PER_US, observer: PortObserver | None = None
) -> tuple[Link, list[tuple[int, bytes]]]:
    """Send `n` numbered frames a->b, one every `gap_ns` (all at once for 0); return the link and the
    (time, frame) pairs delivered."""
    sched = SimScheduler(seed=seed)
    link = Link(sched, "imp", imp)
    got: list[tuple[int, bytes]] = []
    link.b.set_receiver(lambda f: got.append((sched.now, f)))
    if observer is not None:
        link.b.add_observer(observer)
    frames = [numbered(i) for i in range(n)]
    if gap_ns == 0:
        for f in frames:
            link.a.send(f)
        sched.run()
        return link, got
    state = {"i": 0}

    def tick() -> None:
        link.a.send(frames[state["i"]])
        state["i"] += 1
        if state["i"] < n:
            sched.call_later(gap_ns, tick)

    sched.call_soon(tick)
    sched.run()
    return link, got


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bernoulli_loss_rate_within_tolerance(seed: int) -> None:
    link, got = run_link(Impairments(loss=0.01), seed, gap_ns=0)
    rate = link.a.counters.dropped[DropCause.LOSS] / N
    assert abs(rate - 0.01) <= 0.003
    assert len(got) == N - link.a.counters.dropped[DropCause.LOSS]


@pytest.mark.parametrize(
    "ge",
    [GilbertElliott(0.01, 0.2), GilbertElliott(0.02, 0.25, loss_good=0.005, loss_bad=0.6)],
    ids=["simple-gilbert", "gilbert-elliott"],
)
def test_gilbert_elliott_loss_matches_stationary_value_and_is_bursty(ge: GilbertElliott) -> None:
    n = 200_000  # bursts make the loss count vary far more than Bernoulli loss: a long run is needed
    link, got = run_link(Impairments(burst_loss=ge), seed=7, n=n, gap_ns=0)
    lost = link.a.counters.dropped[DropCause.BURST_LOSS]
    assert lost / n == pytest.approx(ge.stationary_loss, rel=0.1)
    # Losses come in runs: the mean run of consecutive losses is well above that of independent losses.
    received = {seq_of(f) for _, f in got}
    runs, current = [], 0
    for i in range(n):
        if i in received:
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    mean_run = sum(runs) / len(runs)
    independent_mean_run = 1 / (1 - ge.stationary_loss)
    assert mean_run > 1.5 * independent_mean_run


def test_simple_gilbert_mean_burst_length_is_one_over_p_bad_to_good() -> None:
    ge = GilbertElliott(0.01, 0.25)  # loss_bad = 1: every bad-state frame is lost
    _link, got = run_link(Impairments(burst_loss=ge), seed=9, n=50_000, gap_ns=0)
    received = [seq_of(f) for _, f in got]
    gaps = [b - a - 1 for a, b in itertools.pairwise(received) if b - a > 1]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 0.25, rel=0.1)


def test_stationary_loss_formula() -> None:
    ge = GilbertElliott(0.1, 0.3, loss_good=0.01, loss_bad=0.5)
    assert ge.stationary_bad == pytest.approx(0.25)
    assert ge.stationary_loss == pytest.approx(0.25 * 0.5 + 0.75 * 0.01)
    with pytest.raises(ValueError):
        GilbertElliott(0.0, 0.0)
    with pytest.raises(ValueError):
        GilbertElliott(1.5, 0.1)


@pytest.mark.parametrize("seed", [4, 5])
def test_duplication_rate(seed: int) -> None:
    link, got = run_link(Impairments(duplicate=0.02), seed, gap_ns=0)
    seqs = [seq_of(f) for _, f in got]
    extra = len(seqs) - len(set(seqs))
    assert extra == link.a.counters.duplicated
    assert abs(extra / N - 0.02) <= 0.004
    # a duplicate follows its original immediately and carries the same bytes
    for i in range(1, len(got)):
        if seqs[i] == seqs[i - 1]:
            assert got[i] == got[i - 1]


@pytest.mark.parametrize("seed", [4, 5])
def test_reordering_rate_and_only_held_back_frames_are_overtaken(seed: int) -> None:
    marked: set[int] = set()

    def observe(direction: str, frame: bytes, meta: str | None) -> None:
        if direction == "rx" and meta and "reordered" in meta:
            marked.add(seq_of(frame))

    imp = Impairments(reorder=0.03, reorder_delay_ns=25 * NS_PER_US, delay_ns=100)
    link, got = run_link(imp, seed, observer=observe)
    held = link.a.counters.reordered
    assert abs(held / N - 0.03) <= 0.005
    assert len(marked) == held
    seqs = [seq_of(f) for _, f in got]
    assert sorted(seqs) == list(range(N))  # nothing lost, nothing duplicated
    late, highest = set(), -1
    for s in seqs:
        if s < highest:
            late.add(s)
        highest = max(highest, s)
    assert late <= marked  # only held-back frames are ever overtaken...
    assert len(late) >= 0.9 * held  # ...and nearly all of them are (unless the next ones were held too)
    times = [t for t, _ in got]
    assert times == sorted(times)


def test_without_reordering_jitter_never_reorders() -> None:
    # jitter (up to 50 us) far larger than the 10 us gap: the floor keeps delivery monotonic and in order
    _link, got = run_link(Impairments(delay_ns=100 * NS_PER_US, jitter_ns=50 * NS_PER_US), seed=8, n=5000)
    assert [seq_of(f) for _, f in got] == list(range(5000))
    times = [t for t, _ in got]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert len(set(times)) > 1000  # the jitter did vary the delay


def test_jitter_delay_distribution_when_it_cannot_reorder() -> None:
    gap = 100 * NS_PER_US
    _link, got = run_link(Impairments(delay_ns=1000 * NS_PER_US, jitter_ns=40 * NS_PER_US), seed=8, n=5000, gap_ns=gap)
    delays = [t - seq_of(f) * gap for t, f in got]
    assert min(delays) >= 1000 * NS_PER_US and max(delays) <= 1040 * NS_PER_US
    assert sum(delays) / len(delays) == pytest.approx(1020 * NS_PER_US, rel=0.002)


def tcp_frame(i: int) -> bytes:
    """A valid Ethernet/IPv4/TCP frame with 100 payload bytes (checksums filled in by scapy)."""
    pkt = (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="198.18.0.1", dst="198.18.0.2")
        / TCP(sport=40000, dport=80, seq=1000 + i * 100, flags="PA")
        / (bytes([i % 251]) * 100)
    )
    return bytes(pkt)


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksums_ok(frame: bytes, ip_len: int) -> bool:
    """IPv4 header and TCP checksums over the original lengths (a flip must not get past both)."""
    ip = frame[14 : 14 + 20]
    seg = frame[34 : 14 + ip_len]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    return ones_complement_sum(ip) == 0xFFFF and ones_complement_sum(pseudo + seg) == 0xFFFF


@pytest.mark.parametrize("seed", [1, 2])
def test_corruption_rate_and_every_corrupted_frame_fails_a_checksum(seed: int) -> None:
    n = 5000
    sched = SimScheduler(seed=seed)
    link = Link(sched, "noisy", Impairments(corrupt=0.05))
    got: list[bytes] = []
    link.b.set_receiver(got.append)
    templates = [tcp_frame(i) for i in range(40)]
    originals = [templates[i % 40] for i in range(n)]
    ip_len = len(originals[0]) - 14
    assert all(checksums_ok(f, ip_len) for f in originals[:10])
    for f in originals:
        link.a.send(f)
    sched.run()
    assert len(got) == n
    damaged = [(o, d) for o, d in zip(originals, got) if o is not d]
    assert all(o == d for o, d in zip(originals, got) if o is d)
    assert len(damaged) == link.a.counters.corrupted
    assert abs(len(damaged) / n - 0.05) <= 0.01
    for orig, dmg in damaged:
        diff_bits = sum(bin(a ^ b).count("1") for a, b in zip(orig, dmg))
        assert diff_bits == 1
        assert dmg[:14] == orig[:14]  # the Ethernet header is past the FCS check: left intact
        assert not checksums_ok(dmg, ip_len)


def test_corrupt_frame_flips_exactly_the_requested_distinct_bits() -> None:
    import random

    rng = random.Random(3)
    frame = bytes(64)
    for nbits in (1, 3, 8):
        out = corrupt_frame(frame, rng, nbits, skip=14)
        assert sum(bin(b).count("1") for b in out) == nbits
        assert out[:14] == frame[:14]
    assert corrupt_frame(bytes(14), rng, 1, skip=14) == bytes(14)  # nothing past the header to damage


def test_invalid_impairments_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="probability"):
        Impairments(loss=1.2)
    with pytest.raises(ValueError, match="reorder_delay_ns"):
        Impairments(reorder=0.1)
    with pytest.raises(ValueError, match="rate_bps"):
        Impairments(rate_bps=0)
    with pytest.raises(ValueError, match="delay_ns"):
        Impairments(delay_ns=-1)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    rate=st.sampled_from([None, 10_000_000, 1_000_000_000]),
    qlim=st.integers(0, 20),
    jitter=st.integers(0, 50_000),
    loss=st.floats(0, 0.3),
    dup=st.floats(0, 0.3),
    reorder=st.floats(0, 0.3),
    corrupt=st.floats(0, 0.3),
    gaps=st.lists(st.integers(0, 20_000), min_size=1, max_size=150),
)
def test_any_configuration_accounts_for_every_frame_and_keeps_order_unless_reordering(
    seed: int, rate: int | None, qlim: int, jitter: int, loss: float, dup: float, reorder: float, corrupt: float,
    gaps: list[int],
) -> None:
    imp = Impairments(
        rate_bps=rate,
        queue_limit_frames=qlim if rate else None,
        delay_ns=1000,
        jitter_ns=jitter,
        loss=loss,
        burst_loss=GilbertElliott(0.05, 0.5),
        duplicate=dup,
        reorder=reorder,
        reorder_delay_ns=30_000,
        corrupt=corrupt,
        corrupt_skip=18,  # keep the sequence number readable
    )
    sched = SimScheduler(seed=seed)
    link = Link(sched, "prop", imp)
    got: list[tuple[int, bytes]] = []
    marked: set[int] = set()
    link.b.set_receiver(lambda f: got.append((sched.now, f)))
    link.b.add_observer(lambda d, f, m: marked.add(seq_of(f)) if m and "reordered" in m else None)
    t = 0
    for i, gap in enumerate(gaps):
        t += gap
        sched.call_at(t, link.a.send, numbered(i, 64 + (i * 37) % 1400))
    sched.run()
    c = link.a.counters
    assert c.sent == len(gaps)
    assert c.sent + c.duplicated == c.delivered + c.dropped_total == len(got) + c.dropped_total
    times = [t for t, _ in got]
    assert times == sorted(times)
    in_order = [seq_of(f) for _, f in got if seq_of(f) not in marked]
    assert in_order == sorted(in_order)  # frames not held back keep their order (duplicates adjacent)
