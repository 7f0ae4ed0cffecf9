"""End-to-end property: under random loss, duplication, reordering, delay, rate limits and slow readers,
both byte streams arrive intact (sha256) and both sides close cleanly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_harness import MS, US, Impairment, Net, S, make_pair, sha

from chimney.tcp import Closed, Reset, TcpConfig, TimedOut


def impairment() -> st.SearchStrategy[Impairment]:
    return st.builds(
        Impairment,
        loss=st.sampled_from([0.0, 0.01, 0.05, 0.15]),
        dup=st.sampled_from([0.0, 0.02, 0.1]),
        reorder=st.sampled_from([0.0, 0.05, 0.2]),
        delay=st.integers(50 * US, 40 * MS),
        jitter=st.sampled_from([0, 1 * MS]),
        rate_bps=st.sampled_from([0, 20_000_000, 200_000_000]),
    )


def payload(seed: int, n: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def closed_cleanly(events: list[object]) -> bool:
    """Reached CLOSED without a reset of a data state or a timeout. (An RST answering a late FIN
    retransmission in LAST-ACK/CLOSING/TIME-WAIT is normal once the peer's 2*MSL has passed.)"""
    return not any(isinstance(e, (Reset, TimedOut)) for e in events) and any(isinstance(e, Closed) for e in events)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    ab=impairment(),
    ba=impairment(),
    sack=st.booleans(),
    ts=st.booleans(),
    ws=st.booleans(),
    cc=st.sampled_from(["newreno", "cubic"]),
    nagle=st.booleans(),
    n_a=st.integers(0, 120_000),
    n_b=st.integers(0, 40_000),
    rcv_buf=st.sampled_from([1000, 4096, 65536, 262144]),
    slow_reader=st.booleans(),
    mss=st.sampled_from([536, 1460, 8960]),
)
def test_streams_arrive_intact_and_close_cleanly(
    seed: int,
    ab: Impairment,
    ba: Impairment,
    sack: bool,
    ts: bool,
    ws: bool,
    cc: str,
    nagle: bool,
    n_a: int,
    n_b: int,
    rcv_buf: int,
    slow_reader: bool,
    mss: int,
) -> None:
    cfg = TcpConfig(
        sack=sack,
        timestamps=ts,
        window_scaling=ws,
        congestion_control=cc,
        nagle=nagle,
        rcv_buf=rcv_buf,
        snd_buf=max(rcv_buf, 16384),
        mss=mss,
        path_mtu=mss + 40,
        msl_ns=1 * S,
        max_rt_ns=-1,
    )
    a, b = make_pair(cfg, cfg)
    net = Net(a, b, seed=seed, ab=ab, ba=ba)
    da, db = payload(seed, n_a), payload(seed + 1, n_b)
    net.send_stream(0, da)
    net.send_stream(1, db)
    if slow_reader:

        steps = [0]

        def reader(n: Net) -> None:
            # Side b reads during one step in three (by step count, so it cannot phase-lock with timers).
            steps[0] += 1
            n.read_block[1] = steps[0] % 3 != 0

        net.hooks.append(reader)
    a.connect(0)
    net.run(until=lambda n: a.state.name == b.state.name == "Closed", max_time=3000 * S)
    net.read_block[1] = False
    net.settle()
    assert sha(net.received[1]) == sha(da), f"a->b: {len(net.received[1])} of {len(da)}"
    assert sha(net.received[0]) == sha(db), f"b->a: {len(net.received[0])} of {len(db)}"
    assert closed_cleanly(net.events[0]) and closed_cleanly(net.events[1])
