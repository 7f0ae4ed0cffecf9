"""Receive-return recycling: NBL allocations per MB when the target recycles indication NBLs returned by
MiniportTcpOffloadReceiveReturn (what the seed page recommends) versus freeing them to the pool and
allocating a fresh one for the next indication; same offloaded bulk transfer, same run.

Run: `python bench/bench_recycling.py [--quick]`; `run(quick) -> dict`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from chimney.conformance.harness import build_pair
from chimney.host import apps
from chimney.host.policy import OffloadPolicy
from chimney.links.impair import Impairments
from chimney.ndis.buffers import NetBufferList
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn
from chimney.target import OffloadTarget

PORT = 5002
WIRE = Impairments(rate_bps=10_000_000_000, delay_ns=50_000)


class FreeingTarget(OffloadTarget):
    """The same target, but returned indication NBLs go back to the pool instead of the free list."""

    def _recycle(self, nbl: NetBufferList) -> None:
        super()._recycle(nbl)
        self._ind_free.remove(nbl)
        assert self.ind_pool is not None
        self.ind_pool.free(nbl)


def _transfer(cls: type[OffloadTarget], nbytes: int) -> dict[str, float]:
    sched = SimScheduler(1)
    policy = OffloadPolicy.established(scan_interval_ns=NS_PER_MS // 10)
    p = build_pair(sched, cls, seed=1, impairments=WIRE, policy=policy, verifier=Verifier(Mode.OFF))
    # Host B sends to host A: everything A receives arrives through the target's indications.
    apps.bulk_server(p.host_a, PORT, nbytes, 7)
    c0 = time.process_time()
    fut = spawn(sched, apps.bulk_client(p.host_b, "198.18.0.1", PORT, nbytes, 11))
    sched.run_until(sched.now + 600 * NS_PER_S, predicate=fut.done)
    cpu = time.process_time() - c0
    r = fut.result()
    if r.received != nbytes or r.received_sha256 != apps.bulk_digest(nbytes, 7):
        raise SystemExit(f"{cls.__name__}: transfer corrupted")
    c = p.target.counters
    mb = 2 * nbytes / 1e6
    return {
        "cpu_s": cpu,
        "nbl_allocations_per_MB": c["ind_nbl_allocated"] / mb,
        "nbl_recycled_per_MB": c["ind_nbl_recycled"] / mb,
    }


def run(quick: bool = False) -> dict[str, Any]:
    nbytes = (1 if quick else 4) << 20
    rec = _transfer(OffloadTarget, nbytes)
    free = _transfer(FreeingTarget, nbytes)
    return {
        "bytes_each_way": nbytes,
        "recycling": rec,
        "freeing": free,
        "allocations_ratio_freeing_over_recycling": free["nbl_allocations_per_MB"]
        / max(rec["nbl_allocations_per_MB"], 1e-9),
        "cpu_ratio_freeing_over_recycling": free["cpu_s"] / rec["cpu_s"],
    }


def main() -> None:
    r = run("--quick" in sys.argv[1:])
    print(f"offloaded bulk transfer, {r['bytes_each_way'] >> 20} MiB each way, indications to host A")
    for name in ("recycling", "freeing"):
        d = r[name]
        print(f"  {name:9s}: {d['nbl_allocations_per_MB']:8.1f} NBL allocations/MB, "
              f"{d['nbl_recycled_per_MB']:8.1f} recycled/MB, {d['cpu_s']:.2f} s CPU")
    print(f"  allocations freeing/recycling: {r['allocations_ratio_freeing_over_recycling']:.0f}x; "
          f"CPU freeing/recycling: {r['cpu_ratio_freeing_over_recycling']:.2f}x")


if __name__ == "__main__":
    main()
