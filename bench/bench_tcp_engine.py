"""Benchmark: two chimney.tcp Connections in one process, no loss, bulk transfer one way.

Reports goodput (Gbit/s of payload per CPU second) and µs per data segment (both ends' work) for MTU
1500 and 64 KB segments, plus the ratio to a reference loop measured in the same run (a bare
memoryview-slicing loop over the same bytes, i.e. the floor of any Python per-segment work).
Run: python bench/bench_tcp_engine.py [megabytes]
"""

from __future__ import annotations

import sys
import time

from chimney.tcp import Connection, TcpConfig


def transfer(total: int, mss: int, mtu: int) -> tuple[float, int]:
    cfg = TcpConfig(
        mss=mss,
        path_mtu=mtu,
        rcv_buf=4 * 1024 * 1024,
        snd_buf=4 * 1024 * 1024,
        initial_window=64,
        timestamps=True,
        sack=True,
    )
    a = Connection(cfg, 40000, 80, 0xFFFF0000)
    b = Connection(cfg, 80, 40000, 12345)
    b.listen()
    now = 0
    a.connect(now)
    for _ in range(4):
        for s in a.pop_segments():
            b.receive(s, now)
        for s in b.pop_segments():
            a.receive(s, now)
    assert a.state.name == "Established" == b.state.name
    data = memoryview(bytes(total))
    sent = 0
    got = 0
    segs = 0
    t0 = time.perf_counter()
    chunk = 1 << 20
    while got < total:
        now += 10_000
        if sent < total:
            sent += a.send(data[sent : sent + chunk], now)
        out = a.pop_segments()
        segs += len(out)
        for s in out:
            b.receive(s, now)
        while b.readable:
            got += len(b.recv(-1))
        back = b.pop_segments()
        for s in back:
            a.receive(s, now)
        if not out and not back:
            # Idle: jump the clock to the next timer (delayed ACK releasing the Nagle-held tail).
            ds = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
            now = max(now, min(ds))
            a.on_timer(now)
            b.on_timer(now)
        a.pop_events()
        b.pop_events()
    dt = time.perf_counter() - t0
    return dt, segs


def reference(total: int, mss: int) -> float:
    data = memoryview(bytes(total))
    t0 = time.perf_counter()
    n = 0
    for off in range(0, total, mss):
        n += len(data[off : off + mss])
    assert n == total
    return time.perf_counter() - t0


def run(quick: bool = False, mb: int | None = None) -> dict[str, float]:
    """Goodput and per-segment cost at MTU 1500 and with 64 KB segments, with the bare slicing loop ratio."""
    total = (mb if mb is not None else (8 if quick else 64)) * 1024 * 1024
    out: dict[str, float] = {}
    for key, label, mss, mtu in (("mtu1500", "MTU 1500", 1460, 1500), ("seg64k", "64 KB segments", 65495, 65535)):
        dt, segs = transfer(total, mss, mtu)
        ref = reference(total, mss)
        gbps = total * 8 / dt / 1e9
        out[f"{key}_gbps"] = gbps
        out[f"{key}_us_per_segment"] = dt / segs * 1e6
        out[f"{key}_vs_bare_slicing"] = dt / ref
        print(
            f"{label:15s}: {gbps:6.2f} Gbit/s goodput, {dt / segs * 1e6:6.2f} us/segment "
            f"({segs} segments), {dt / ref:6.1f}x the bare slicing loop"
        )
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--quick"]
    run("--quick" in sys.argv, int(args[0]) if args else None)


if __name__ == "__main__":
    main()
