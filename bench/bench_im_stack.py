"""Chimney send round trip through pass-through IM stacks: a 16-NBL chain sent with NdisOffloadTcpSend from
the host through 0, 1 and 3 PassThroughChimneyIm drivers to a target, completed with NdisTcpOffloadSendComplete
back up, with the verifier OFF and STRICT (+ ImChecks); ns per NBL and the 3-IM / no-IM ratio per mode.

Run: python bench/bench_im_stack.py [--quick]   (the whole offloaded bulk transfer through IMs:
bench/bench_im_offload.py)
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

from chimney.filters.checks import ImChecks
from chimney.filters.passthrough import PassThroughChimneyIm
from chimney.ndis.blocklist import MiniportOffloadBlockList, NdisOffloadHandle, ProtocolOffloadBlockList
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.core import Adapter, Ndis
from chimney.ndis.driver import MiniportDriver, ProtocolDriver
from chimney.ndis.offload_state import NDIS_TCP_CHIMNEY_OFFLOAD, OffloadStateType
from chimney.ndis.oid import NdisTcpConnectionOffload
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

CHAIN = 16
DEPTHS = (0, 1, 3)
SUCCESS = NdisStatus.SUCCESS
_BYTES = NblInfo.TcpOffloadBytesTransferred


class BenchTarget(MiniportDriver):
    """Offloads on the scheduler (R-OFF-01); holds a sent chain until `complete` acknowledges it in full
    (data start advanced by the bytes transferred, R-SEND-04) and completes it."""

    def __init__(self) -> None:
        super().__init__("nic")
        self.adapter: Any = None
        self.handlers: Any = None
        self.held: Any = None

    def set_options(self, driver_handle: Any) -> Any:
        return self.register_provider_handlers(driver_handle)

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> Any:
        self.adapter = miniport_handle
        ndis = self.ndis
        assert ndis is not None
        ndis.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=NdisTcpConnectionOffload())
        _, self.handlers = ndis.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        return SUCCESS

    def initiate_offload(self, ctx: Any, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        self.ndis.scheduler.call_soon(self._initiated, mbl)

    def _initiated(self, mbl: MiniportOffloadBlockList) -> None:
        assert mbl.miniport_offload_context is not None and self.ndis is not None
        mbl.miniport_offload_context.value = "tcb"
        mbl.status = SUCCESS
        self.ndis.m_initiate_offload_complete(self.adapter, mbl)

    def tcp_offload_send(self, ctx: Any, offload_context: Any, nbl: NetBufferList) -> Any:
        self.held = nbl
        return NdisStatus.PENDING

    def complete(self) -> None:
        head = self.held
        self.held = None
        nbl = head
        while nbl is not None:
            nb = nbl.first_net_buffer
            k = nb.data_length
            nb.advance(k)
            nbl.info[_BYTES] = k
            nbl.status = SUCCESS
            nbl = nbl.next
        self.handlers.ndis_tcp_offload_send_complete(self.adapter, head)


class BenchHost(ProtocolDriver):
    def __init__(self) -> None:
        super().__init__("host")
        self.done: Any = None

    def set_options(self, driver_handle: Any) -> Any:
        return self.register_client_handlers(driver_handle)

    def initiate_offload_complete(self, ctx: Any, pbl: ProtocolOffloadBlockList) -> None:
        assert pbl.status == SUCCESS

    def tcp_offload_send_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        self.done = nbl
        n: NetBufferList | None = nbl
        while n is not None:  # the next round sends the same bytes again
            nb = n.first_net_buffer
            nb.retreat(nb.data_offset)
            n = n.next


def setup(depth: int, mode: Mode) -> tuple[Ndis, NdisOffloadHandle, BenchTarget, NetBufferList]:
    ndis = Ndis(SimScheduler(0), Verifier(mode), checks=ImChecks)
    target = BenchTarget()
    top = ndis.add_adapter(target, "nic0")
    for i in range(depth):
        top = ndis.add_im(PassThroughChimneyIm(f"im{i}"), top, f"im{i}-vm")
    binding = ndis.bind(BenchHost(), top)
    handle = NdisOffloadHandle("tcb")
    ndis.initiate_offload(binding, ProtocolOffloadBlockList(OffloadStateType.TcpOffloadState, handle, ["c", "c", "d"]))
    ndis.scheduler.run_until()
    nbls = [nbl_from_bytes(bytes(64), "host") for _ in range(CHAIN)]
    for a, b in itertools.pairwise(nbls):
        a.next = b
    return ndis, handle, target, nbls[0]


def rounds(ndis: Ndis, handle: NdisOffloadHandle, target: BenchTarget, head: NetBufferList, iters: int) -> None:
    send = ndis.offload_tcp_send
    complete = target.complete
    for _ in range(iters):
        send(handle, head)
        complete()


def run(quick: bool = False) -> dict[str, float]:
    """ns/NBL per (mode, depth), best of interleaved rounds, and the 3-IM / 0-IM ratio per mode."""
    iters = 50 if quick else 300
    n_rounds = 3 if quick else 15
    cases = {f"{mode.value}_{d}": setup(d, mode) for mode in (Mode.OFF, Mode.STRICT) for d in DEPTHS}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(n_rounds):
        for name, case in cases.items():
            t0 = time.process_time_ns()
            rounds(*case, iters)
            best[name] = min(best[name], (time.process_time_ns() - t0) / (iters * CHAIN))
    for ndis, *_ in cases.values():
        assert ndis.verifier.violations == []
    out: dict[str, float] = {"chain": CHAIN}
    for name, ns in best.items():
        out[f"{name}_ns_per_nbl"] = ns
    for mode in ("off", "strict"):
        out[f"{mode}_ratio_3_vs_0"] = best[f"{mode}_3"] / best[f"{mode}_0"]
        out[f"{mode}_ns_per_nbl_per_im"] = (best[f"{mode}_3"] - best[f"{mode}_0"]) / 3
    return out


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    r = run(quick=quick)
    print(f"chimney send + completion, {CHAIN}-NBL chain, host -> N pass-through IMs -> target ({'quick' if quick else 'full'})")
    for mode in ("off", "strict"):
        cells = "  ".join(f"{d} IM: {r[f'{mode}_{d}_ns_per_nbl']:7.1f}" for d in DEPTHS)
        print(
            f"  verifier {mode:<6} ns/NBL  {cells}   3 IMs / none = {r[f'{mode}_ratio_3_vs_0']:.2f}x "
            f"(+{r[f'{mode}_ns_per_nbl_per_im']:.1f} ns/NBL per IM)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
