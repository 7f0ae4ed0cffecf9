"""NDIS 6 non-offload receive scenarios: a NIC ring miniport indicating frames to 1-3 protocols.

Protocols keep NBLs for seeded times or return at once; with NDIS_RECEIVE_FLAGS_RESOURCES they copy.
Every NBL must come back to the miniport exactly once. Feeds `chimney demo` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chimney.ndis.buffers import NetBufferList
from chimney.ndis.core import Adapter, Binding, DriverHandle, Ndis
from chimney.ndis.driver import MiniportDriver, ProtocolDriver
from chimney.ndis.receive import NDIS_RECEIVE_FLAGS_RESOURCES, Ndis6ReceiveRing
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_US, SimScheduler


class RingMiniport(MiniportDriver):
    """A NIC miniport whose only job here is receiving into a recycling ring."""

    def __init__(self, name: str, ring_size: int, low_water: int) -> None:
        super().__init__(name)
        self.ring_size = ring_size
        self.low_water = low_water
        self.ring: Ndis6ReceiveRing | None = None
        self.returned = 0
        self.duplicates = 0  # returns of an NBL that was already home (on the ring's free list)

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        assert self.ndis is not None
        self.ring = Ndis6ReceiveRing(self.ndis, miniport_handle, size=self.ring_size, buffer_size=256,
                                     low_water=self.low_water)
        return NdisStatus.SUCCESS

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        assert self.ring is not None
        home = {id(f) for f in self.ring.free}
        n: NetBufferList | None = nbl
        while n is not None:
            self.returned += 1
            self.duplicates += id(n) in home
            n = n.next
        self.ring.recycle(nbl)


class HoldingProtocol(ProtocolDriver):
    """Copies every frame; keeps lent NBLs for a seeded time (0 = returns at once)."""

    def __init__(self, name: str, sched: SimScheduler, hold_ns: tuple[int, int]) -> None:
        super().__init__(name)
        self.sched = sched
        self.hold_ns = hold_ns
        self.binding: Binding | None = None
        self.frames: list[bytes] = []
        self.held = 0

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return NdisStatus.SUCCESS

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return NdisStatus.SUCCESS

    def receive_net_buffer_lists(
        self, binding_context: Any, nbl: NetBufferList, port: int, num: int, receive_flags: int
    ) -> None:
        n: NetBufferList | None = nbl
        while n is not None:
            assert n.first_net_buffer is not None
            self.frames.append(n.first_net_buffer.copy_data())
            n = n.next
        if receive_flags & NDIS_RECEIVE_FLAGS_RESOURCES:
            return  # the miniport keeps them: copying was all we were allowed to do
        lo, hi = self.hold_ns
        if hi == 0:
            assert self.ndis is not None
            self.ndis.return_net_buffer_lists(binding_context, nbl, 0)
            return
        self.held += 1
        delay = self.sched.rng(f"proto/{self.name}").randint(lo, hi)
        self.sched.call_later(delay, self._give_back, binding_context, nbl)

    def _give_back(self, binding_context: Any, nbl: NetBufferList) -> None:
        assert self.ndis is not None
        self.held -= 1
        self.ndis.return_net_buffer_lists(binding_context, nbl, 0)


@dataclass
class Ndis6Result:
    protocols: int
    mode: str
    nbls_indicated: int
    resources_frames: int
    returned: int
    recycled: int
    pool_allocations: int
    leaked: int
    duplicates: int
    lost_frames: int
    violations: int

    @property
    def ok(self) -> bool:
        return not (self.leaked or self.duplicates or self.lost_frames or self.violations)

    def as_row(self) -> dict[str, Any]:
        return {
            "protocols": self.protocols,
            "flags": self.mode,
            "nbls indicated": self.nbls_indicated,
            "indicated RESOURCES": self.resources_frames,
            "returned to miniport": self.returned,
            "recycled": self.recycled,
            "pool allocations": self.pool_allocations,
            "leaked": self.leaked,
            "duplicates": self.duplicates,
            "lost frames": self.lost_frames,
            "violations": self.violations,
        }


MODES = {
    "returned at once": (16, 0, (0, 0)),
    "protocols hold": (64, 0, (20 * NS_PER_US, 400 * NS_PER_US)),
    "RESOURCES when low": (8, 4, (300 * NS_PER_US, 2_000 * NS_PER_US)),
}


def run_ndis6_scenario(protocols: int, mode: str, seed: int, bursts: int = 24) -> Ndis6Result:
    ring_size, low_water, hold = MODES[mode]
    sched = SimScheduler(seed)
    verifier = Verifier(Mode.RECORD)
    ndis = Ndis(sched, verifier)
    mp = RingMiniport("nic", ring_size, low_water)
    adapter = ndis.add_adapter(mp, "nic0")
    protos = [HoldingProtocol(f"proto{i}", sched, hold) for i in range(protocols)]
    for p in protos:
        ndis.bind(p, adapter)
    ring = mp.ring
    assert ring is not None
    rng = sched.rng("traffic")
    sent: list[bytes] = []
    for b in range(bursts):
        frames = [bytes([b, i]) + rng.randbytes(rng.randint(40, 200)) for i in range(rng.randint(1, 4))]
        sched.call_at(b * 100 * NS_PER_US, lambda fr=frames: sent.extend(fr[: ring.receive(fr)]))
    sched.run_until()
    # frames the ring accepted must reach every protocol exactly once, in order
    lost = sum(1 for p in protos if p.frames != sent)
    leaked = ring.outstanding
    return Ndis6Result(
        protocols=protocols,
        mode=mode,
        nbls_indicated=ring.counters["indicated"],
        resources_frames=ring.counters["resources_frames"],
        returned=mp.returned,
        recycled=ring.counters["recycled"],
        pool_allocations=ring.pool.allocated,
        leaked=leaked,
        duplicates=mp.duplicates,
        lost_frames=lost,
        violations=len(verifier.violations),
    )


def run_ndis6_matrix(seed: int) -> list[Ndis6Result]:
    return [run_ndis6_scenario(n, mode, seed) for mode in MODES for n in (1, 2, 3)]
