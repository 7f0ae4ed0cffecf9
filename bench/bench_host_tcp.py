"""Host stack bulk goodput over an emulated link at MTU 1500 / 9000 / 65535, one process.

Prints wall-clock Mbit/s and µs per data segment for the full host stack (sockets + transport + HostIp +
frame codec + emulated link), and the ratio against the bare TCP engine measured in the same run (two
`Connection`s handing `TcpSegment`s to each other: no framing, no checksums, no link, no scheduler).

    python bench/bench_host_tcp.py [--quick] [megabytes]
"""

from __future__ import annotations

import sys
import time

from chimney.host.stack import connected_pair
from chimney.links.impair import Impairments
from chimney.sim import SimScheduler
from chimney.sim.tasks import spawn
from chimney.tcp import Connection, Listener, linux_profile

BUF = 4 << 20


def host_stack(mtu: int, nbytes: int) -> tuple[float, int]:
    s = SimScheduler(seed=1)
    imp = Impairments(mtu=mtu)
    cfg = linux_profile(snd_buf=BUF, rcv_buf=BUF)
    a, b, _ = connected_pair(s, imp, imp, tcp_config=cfg)
    srv = b.listen(5000)
    c = a.socket()
    c.connect(("198.18.0.2", 5000))
    conn, _ = srv.accept()
    data = bytes(nbytes)

    async def send() -> None:
        await c.asendall(data)

    async def receive() -> int:
        n = 0
        while n < nbytes:
            n += len(await conn.arecv_view(1 << 22))
        return n

    segs0 = a.tcp.counters.segs_out
    t0 = time.perf_counter()
    spawn(s, send())
    rx = spawn(s, receive())
    s.run_until(predicate=rx.done)
    dt = time.perf_counter() - t0
    assert rx.result() == nbytes
    return dt, a.tcp.counters.segs_out - segs0


def bare_engine(mtu: int, nbytes: int) -> tuple[float, int]:
    cfg = linux_profile(snd_buf=BUF, rcv_buf=BUF, path_mtu=mtu, mss=mtu - 40)
    lst = Listener(80, cfg)
    cli = Connection(cfg, 40000, 80, 1000)
    now = 0
    cli.connect(now)
    srv: Connection | None = None
    for seg in cli.pop_segments():
        srv = lst.receive(seg, b"\x01" * 4, b"\x02" * 4, now)
    assert srv is not None
    for seg in srv.pop_segments():
        cli.receive(seg, now)
    for seg in cli.pop_segments():
        srv.receive(seg, now)
    data = memoryview(bytes(nbytes))
    sent = got = segs = 0
    t0 = time.perf_counter()
    while got < nbytes:
        now += 1000
        if sent < nbytes:
            sent += cli.send(data[sent:], now)
        out = cli.pop_segments()
        segs += len(out)
        for seg in out:
            srv.receive(seg, now)
        got += len(srv.recv(-1, now))
        back = srv.pop_segments()
        for seg in back:
            cli.receive(seg, now)
        if not out and not back:
            # nothing in flight: jump to the next timer (delayed ACK) as the scheduler would
            ds = [d for d in (cli.next_deadline(), srv.next_deadline()) if d is not None]
            if ds and min(ds) > now:
                now = min(ds)
        for c in (cli, srv):
            d = c.next_deadline()
            if d is not None and d <= now:
                c.on_timer(now)
    dt = time.perf_counter() - t0
    return dt, segs


def run(quick: bool = False, mb: float | None = None) -> dict[str, float]:
    """Host-stack and bare-engine goodput per MTU, and their ratio (same run)."""
    nbytes = int((mb if mb is not None else (2.0 if quick else 8.0)) * 1_000_000)
    print(f"bulk transfer of {nbytes / 1e6:.1f} MB, one direction, wall clock")
    print(f"{'MTU':>6} {'host Mbit/s':>12} {'host µs/seg':>12} {'engine Mbit/s':>14} {'engine µs/seg':>14} {'host/engine':>12}")
    out: dict[str, float] = {}
    for mtu in (1500, 9000, 65535):
        dt_h, segs_h = host_stack(mtu, nbytes)
        dt_e, segs_e = bare_engine(mtu, nbytes)
        out[f"mtu{mtu}_host_mbps"] = nbytes * 8 / dt_h / 1e6
        out[f"mtu{mtu}_engine_mbps"] = nbytes * 8 / dt_e / 1e6
        out[f"mtu{mtu}_host_over_engine"] = dt_h / dt_e
        print(f"{mtu:>6} {nbytes * 8 / dt_h / 1e6:>12.1f} {dt_h / segs_h * 1e6:>12.1f} "
              f"{nbytes * 8 / dt_e / 1e6:>14.1f} {dt_e / segs_e * 1e6:>14.1f} {dt_h / dt_e:>11.2f}x")
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--quick"]
    run("--quick" in sys.argv, float(args[0]) if args else None)


if __name__ == "__main__":
    main()
