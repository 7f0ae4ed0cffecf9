"""Benchmark of the host side of the chimney: one bulk transfer (both directions, sha256-checked) with the
connection on the host path (host TCP over NDIS, frames through the target's normal path) versus offloaded
to the target for the whole transfer; plus offload / upload latency.

Run: `python bench/bench_offload.py [--quick]`; `run(quick) -> dict` returns the figures.
Reported: wall-clock goodput of each mode (MB/s of payload moved both ways per CPU second of the whole
simulation: host, NDIS, target and peer), the ratio offloaded/host (goal >= 0.9), simulated goodput of both
(bounded by the emulated wire), NDIS crossings per MB on host A's binding, and the CPU cost of one offload
and one upload of an idle established connection.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from chimney.host import apps
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.links.impair import Impairments
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn

PORT = 5001
WIRE = Impairments(rate_bps=10_000_000_000, delay_ns=50_000)


def _pair(policy: OffloadPolicy, seed: int) -> OffloadPair:
    # The verifier is off: the benchmark measures the data path, not the contract checks.
    return build_offload_pair(SimScheduler(seed), seed, WIRE, policy=policy, verifier=Verifier(Mode.OFF))


def _transfer(mode: str, nbytes: int) -> dict[str, float]:
    policy = OffloadPolicy.established(scan_interval_ns=NS_PER_MS // 10) if mode == "offload" else OffloadPolicy.never()
    p = _pair(policy, 1)
    sched = p.host_a.scheduler
    apps.bulk_server(p.host_b, PORT, nbytes, 7)
    t_sim0 = sched.now
    c0 = time.process_time()
    fut = spawn(sched, apps.bulk_client(p.host_a, "198.18.0.2", PORT, nbytes, 11))
    sched.run_until(sched.now + 600 * NS_PER_S, predicate=fut.done)
    cpu = time.process_time() - c0
    sim = (sched.now - t_sim0) / NS_PER_S
    r = fut.result()
    if r.received != nbytes or r.received_sha256 != apps.bulk_digest(nbytes, 7):
        raise SystemExit(f"{mode}: transfer corrupted")
    moved_mb = 2 * nbytes / 1e6
    b = p.binding.counters
    host_calls = b["tx_frames"] + b["tx_complete_calls"] + 2 * b["rx_indications"]  # + one return each
    return {
        "cpu_s": cpu,
        "wall_goodput_MBps": moved_mb / cpu,
        "sim_goodput_Mbps": moved_mb * 8 / sim,
        "ndis_calls_per_MB": (host_calls + p.manager.calls) / moved_mb,
        "offloaded_fraction": 1.0 if p.manager.stats["initiate_tcp_ok"] else 0.0,
    }


def _latency(rounds: int) -> dict[str, float]:
    p = _pair(OffloadPolicy.explicit(), 2)
    sched = p.host_a.scheduler
    lst = p.host_b.listen(PORT)
    lst.setblocking(False)
    s = p.host_a.socket()
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("198.18.0.2", PORT))
    sched.run_until(sched.now + 5 * NS_PER_MS)
    (tcb,) = list(p.host_a.tcp.connections())
    m = p.manager
    off = up = 0.0
    for _ in range(rounds):
        c0 = time.process_time()
        m.offload(tcb)
        sched.run_until(sched.now + NS_PER_MS, predicate=lambda: m.is_offloaded(tcb))
        c1 = time.process_time()
        m.upload(tcb)
        sched.run_until(sched.now + NS_PER_MS, predicate=lambda: tcb.path.kind == "host" and not m.busy())
        c2 = time.process_time()
        off += c1 - c0
        up += c2 - c1
        sched.run_until(sched.now + NS_PER_MS)
    if m.stats["initiate_tcp_ok"] != rounds:
        raise SystemExit(f"only {m.stats['initiate_tcp_ok']} of {rounds} offloads succeeded")
    return {"offload_us": off / rounds * 1e6, "upload_us": up / rounds * 1e6}


def run(quick: bool = False) -> dict[str, Any]:
    nbytes = 2_000_000 if quick else 8_000_000
    host = _transfer("host", nbytes)
    off = _transfer("offload", nbytes)
    lat = _latency(20 if quick else 100)
    return {
        "bytes_each_way": nbytes,
        "host": host,
        "offload": off,
        "goodput_ratio_offload_over_host": off["wall_goodput_MBps"] / host["wall_goodput_MBps"],
        "sim_goodput_ratio": off["sim_goodput_Mbps"] / host["sim_goodput_Mbps"],
        **lat,
    }


def main() -> None:
    res = run("--quick" in sys.argv)
    print(f"bulk transfer, {res['bytes_each_way'] / 1e6:.1f} MB each way")
    for mode in ("host", "offload"):
        r = res[mode]
        print(f"  {mode:8s} {r['wall_goodput_MBps']:7.2f} MB/s per CPU-s  sim {r['sim_goodput_Mbps']:8.1f} Mbit/s"
              f"  NDIS calls/MB {r['ndis_calls_per_MB']:7.1f}")
    ratio = res["goodput_ratio_offload_over_host"]
    print(f"  offloaded/host goodput ratio (CPU): {ratio:.2f} (goal >= 0.9)  sim ratio {res['sim_goodput_ratio']:.2f}")
    print(f"  offload {res['offload_us']:.0f} us, upload {res['upload_us']:.0f} us (CPU per operation)")


if __name__ == "__main__":
    main()
