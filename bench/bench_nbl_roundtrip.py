"""NBL round trip through NDIS: a 16-NBL chain sent protocol -> IM -> miniport and completed back, with
the verifier OFF and STRICT, against a plain Python call chain of the same depth measured in the same run.

Goals: OFF <= 3x plain, STRICT <= 10x plain (ns per NBL). Run: python bench/bench_nbl_roundtrip.py [--quick]
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

from chimney.ndis.buffers import NetBufferList, nbl_from_bytes
from chimney.ndis.core import Adapter, Binding, Ndis
from chimney.ndis.driver import IntermediateDriver, MiniportDriver, ProtocolDriver
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

CHAIN = 16
GOAL_OFF = 3.0
GOAL_ON = 10.0


def make_chain(owner: str) -> NetBufferList:
    nbls = [nbl_from_bytes(bytes(64), owner) for _ in range(CHAIN)]
    for a, b in itertools.pairwise(nbls):
        a.next = b
    return nbls[0]


# ------------------------------------------------------------------------------------ plain reference


class PlainMp:
    def __init__(self) -> None:
        self.held: Any = None
        self.upper: Any = None

    def send(self, head: NetBufferList) -> None:
        self.held = head

    def complete(self) -> None:
        head = self.held
        self.held = None
        nbl = head
        while nbl is not None:  # the same per-NBL work the NDIS miniport does: write Status
            nbl.status = 0
            nbl = nbl.next
        self.upper.complete(head)


class PlainIm:
    def __init__(self, lower: PlainMp) -> None:
        self.lower = lower
        self.upper: Any = None

    def send(self, head: NetBufferList) -> None:
        self.lower.send(head)

    def complete(self, head: NetBufferList) -> None:
        self.upper.complete(head)


class PlainProto:
    def __init__(self, im: PlainIm) -> None:
        self.im = im
        self.done: Any = None

    def send(self, head: NetBufferList) -> None:
        self.im.send(head)

    def complete(self, head: NetBufferList) -> None:
        self.done = head


def plain_setup() -> tuple[Any, Any, NetBufferList]:
    mp = PlainMp()
    im = PlainIm(mp)
    proto = PlainProto(im)
    mp.upper = im
    im.upper = proto
    return proto, mp, make_chain("proto")


def plain_round(proto: PlainProto, mp: PlainMp, head: NetBufferList, iters: int) -> None:
    for _ in range(iters):
        proto.send(head)
        mp.complete()


# ------------------------------------------------------------------------------------ through Ndis


class BenchMiniport(MiniportDriver):
    def __init__(self) -> None:
        super().__init__("nic")
        self.held: Any = None
        self.adapter: Any = None

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> Any:
        self.adapter = miniport_handle
        return 0

    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        self.held = nbl

    def complete(self) -> None:
        head = self.held
        self.held = None
        nbl = head
        while nbl is not None:
            nbl.status = 0
            nbl = nbl.next
        self.ndis.m_send_net_buffer_lists_complete(self.adapter, head, 0)  # type: ignore[union-attr]


class BenchIm(IntermediateDriver):
    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        self.ndis.send_net_buffer_lists(adapter_context.lower_binding, nbl, port, flags)  # type: ignore[union-attr]

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.ndis.m_send_net_buffer_lists_complete(binding_context.upper_adapter, nbl, flags)  # type: ignore[union-attr]


class BenchProto(ProtocolDriver):
    def __init__(self) -> None:
        super().__init__("proto")
        self.done: Any = None

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.done = nbl


def ndis_setup(mode: Mode) -> tuple[Ndis, Binding, BenchMiniport, NetBufferList]:
    ndis = Ndis(SimScheduler(0), Verifier(mode))
    mp = BenchMiniport()
    nic = ndis.add_adapter(mp, "nic0")
    vm = ndis.add_im(BenchIm("im"), nic, "im-vm")
    binding = ndis.bind(BenchProto(), vm)
    return ndis, binding, mp, make_chain("proto")


def ndis_round(ndis: Ndis, binding: Binding, mp: BenchMiniport, head: NetBufferList, iters: int) -> None:
    send = ndis.send_net_buffer_lists
    complete = mp.complete
    for _ in range(iters):
        send(binding, head, 0, 0)
        complete()


def run(quick: bool = False) -> dict[str, float]:
    """Measure ns/NBL for plain, NDIS verifier OFF and STRICT, and the two ratios.

    The three are measured interleaved in short rounds and each takes its best round, so a busy
    machine slows all three alike instead of skewing one ratio."""
    iters = 100 if quick else 400
    rounds = 5 if quick else 25
    proto, pmp, phead = plain_setup()
    off = ndis_setup(Mode.OFF)
    on = ndis_setup(Mode.STRICT)
    tracker = on[0].tracker
    thead = make_chain("proto")

    def transfers(n: int) -> None:
        # The four ownership hand-offs a round trip through one IM makes, alone (OwnershipTracker cost).
        for _ in range(n):
            for frm, to in (("proto", "im"), ("im", "nic"), ("nic", "im"), ("im", "proto")):
                tracker.transfer(thead, frm=frm, to=to, rule_id="R-NBL-02", op="bench")

    cases = {
        "plain": lambda n: plain_round(proto, pmp, phead, n),
        "transfers": transfers,
        "off": lambda n: ndis_round(*off, n),
        "strict": lambda n: ndis_round(*on, n),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.process_time_ns()
            fn(iters)
            best[name] = min(best[name], (time.process_time_ns() - t0) / (iters * CHAIN))
    assert on[0].verifier.violations == []
    return {
        "chain": CHAIN,
        "plain_ns_per_nbl": best["plain"],
        "off_ns_per_nbl": best["off"],
        "strict_ns_per_nbl": best["strict"],
        "off_ratio": best["off"] / best["plain"],
        "strict_ratio": best["strict"] / best["plain"],
        "tracker_transfers_ns_per_nbl": best["transfers"],
        "goal_off_ratio": GOAL_OFF,
        "goal_strict_ratio": GOAL_ON,
    }


def main(argv: list[str]) -> int:
    r = run(quick="--quick" in argv)
    print(f"16-NBL chain, protocol -> IM -> miniport and back ({'quick' if '--quick' in argv else 'full'} run)")
    print(f"  plain Python call chain : {r['plain_ns_per_nbl']:8.1f} ns/NBL")
    print(f"  Ndis, verifier OFF      : {r['off_ns_per_nbl']:8.1f} ns/NBL   ratio {r['off_ratio']:.2f}x (goal <= {GOAL_OFF}x)")
    print(f"  Ndis, verifier STRICT   : {r['strict_ns_per_nbl']:8.1f} ns/NBL   ratio {r['strict_ratio']:.2f}x (goal <= {GOAL_ON}x)")
    print(
        f"  (of which 4 OwnershipTracker.transfer hops alone: {r['tracker_transfers_ns_per_nbl']:8.1f} ns/NBL, "
        f"{r['tracker_transfers_ns_per_nbl'] / r['plain_ns_per_nbl']:.1f}x plain)"
    )
    ok = r["off_ratio"] <= GOAL_OFF and r["strict_ratio"] <= GOAL_ON
    print("  goals met" if ok else "  goals NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
