"""Benchmark: the offload target. (1) Bulk transfer through the target (host NBL sends -> target engine ->
emulated link -> peer engine, and back with chimney indications) against the same transfer between two
plain engine connections on the same emulated link: goodput per CPU second and the ratio. (2) N
connections (default 10,000) offloaded in one initiate tree: CPU time and memory per connection.

Run: python bench/bench_target.py [megabytes] [connections]   (verifier OFF; STRICT figures in a 3rd line)
"""

from __future__ import annotations

import copy
import gc
import sys
import time
import tracemalloc
from typing import Any

from chimney.links.p2p import Link
from chimney.ndis.blocklist import NdisOffloadHandle, ProtocolOffloadBlockList
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.core import Ndis
from chimney.ndis.driver import ProtocolDriver
from chimney.ndis.offload_state import (
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.net.frame import TcpFrameBuilder, parse_frame
from chimney.sim.scheduler import SimScheduler
from chimney.target import EmulatedNic, OffloadTarget, TargetLimits
from chimney.tcp import Connection, TcpConfig

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = bytes([198, 18, 0, 1])
IP_B = bytes([198, 18, 0, 2])
CFG = TcpConfig(rcv_buf=4 << 20, snd_buf=4 << 20, initial_window=64)


class Endpoint:
    """A plain engine connection on a port: sends `total` bytes, counts what it receives."""

    def __init__(self, sched: SimScheduler, port: Any, conn: Connection, mac: bytes, peer_mac: bytes, ip: bytes,
                 peer_ip: bytes) -> None:
        self.sched, self.port, self.conn = sched, port, conn
        self.builder = TcpFrameBuilder(mac, peer_mac, ip, peer_ip)
        self.hdr = bytearray(self.builder.header_room)
        self.got = 0
        self.to_send = 0
        self.chunk = memoryview(bytes(1 << 20))
        self.timer: Any = None
        port.set_receiver(self.on_frame)

    def on_frame(self, frame: bytes) -> None:
        f = parse_frame(frame, verify_checksums=False)
        if f.tcp is not None:
            self.conn.receive(f.tcp, self.sched.now)
            self.pump()

    def pump(self) -> None:
        c = self.conn
        now = self.sched.now
        while self.to_send and c.send_space:
            n = c.send(self.chunk[: min(self.to_send, len(self.chunk), c.send_space)], now)
            self.to_send -= n
            if not n:
                break
        while c.readable:
            self.got += len(c.recv(-1, now))
        for s in c.pop_segments():
            h = self.builder.build(self.hdr, s)
            self.port.send(b"".join((memoryview(self.hdr)[:h], s.payload)))
        c.pop_events()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        d = c.next_deadline()
        if d is not None:
            self.timer = self.sched.call_at(max(d, now), self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.conn.on_timer(self.sched.now)
        self.pump()


def shuttle_pair(lport: int, cfg: TcpConfig = CFG) -> tuple[Connection, Connection]:
    a = Connection(cfg, lport, 80, 1000)
    b = Connection(cfg, 80, lport, 5000)
    b.listen()
    a.connect(0)
    for _ in range(4):
        for s in a.pop_segments():
            b.receive(s, 0)
        for s in b.pop_segments():
            a.receive(s, 0)
    return a, b


def plain_transfer(total: int) -> float:
    sched = SimScheduler(1)
    link = Link(sched, "w", mac_a=MAC_A, mac_b=MAC_B)
    a, b = shuttle_pair(40000)
    ea = Endpoint(sched, link.a, a, MAC_A, MAC_B, IP_A, IP_B)
    eb = Endpoint(sched, link.b, b, MAC_B, MAC_A, IP_B, IP_A)
    ea.to_send = eb.to_send = total
    t0 = time.process_time()
    ea.pump()
    eb.pump()
    why = sched.run_until(predicate=lambda: ea.got >= total and eb.got >= total)
    assert why == "predicate", why
    return time.process_time() - t0


class BenchHost(ProtocolDriver):
    """Keeps `window` bytes of NBL sends outstanding; accepts every indication and returns it soon."""

    def __init__(self, sched: SimScheduler) -> None:
        super().__init__("host")
        self.sched = sched
        self.binding: Any = None
        self.handle: Any = None
        self.got = 0
        self.to_send = 0
        self.outstanding = 0
        self.held: list[NetBufferList] = []
        self.done: list[Any] = []
        self.block = bytes(64 * 1024)

    def set_options(self, dh: Any) -> NdisStatus:
        return self.register_client_handlers(dh)

    def bind_adapter_ex(self, binding: Any, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return NdisStatus.SUCCESS

    def initiate_offload_complete(self, ctx: Any, pbl: Any) -> None:
        self.done.append(pbl)

    def fill(self) -> None:
        while self.to_send and self.outstanding < 4 << 20:
            n = min(len(self.block), self.to_send)
            self.to_send -= n
            self.outstanding += n
            assert self.ndis is not None
            self.ndis.offload_tcp_send(self.handle, nbl_from_bytes(memoryview(self.block)[:n], self.name))

    def tcp_offload_send_complete(self, ctx: Any, nbl: NetBufferList) -> None:
        while nbl is not None:
            self.outstanding -= nbl.info[NblInfo.TcpOffloadBytesTransferred]
            nbl = nbl.next  # type: ignore[assignment]
        self.fill()

    def tcp_offload_receive_indicate(self, ctx: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        n = nbl.first_net_buffer.data_length  # type: ignore[union-attr]
        self.got += n
        if not self.held:
            self.sched.call_soon(self.give_back)
        self.held.append(nbl)
        return NdisStatus.SUCCESS, n

    def give_back(self) -> None:
        held, self.held = self.held, []
        assert self.ndis is not None
        for n in held:
            self.ndis.offload_tcp_receive_return(self.binding, n)

    def tcp_offload_event(self, ctx: Any, ev: int, info: int) -> None:
        pass


def node(t: int, handle: Any, state: list[Any]) -> ProtocolOffloadBlockList:
    return ProtocolOffloadBlockList(t, handle, state)


def rig(mode: Mode, limits: TargetLimits | None = None) -> tuple[SimScheduler, Ndis, OffloadTarget, BenchHost, Link]:
    sched = SimScheduler(1)
    ndis = Ndis(sched, Verifier(mode))
    link = Link(sched, "w", mac_a=MAC_A, mac_b=MAC_B)
    target = OffloadTarget("tgt", EmulatedNic(link.a), sched, limits)
    ndis.register_miniport_driver(target)
    adapter = ndis.add_adapter(target, "nic0")
    host = BenchHost(sched)
    ndis.register_protocol_driver(host)
    ndis.bind(host, adapter)
    return sched, ndis, target, host, link


def base_tree() -> tuple[ProtocolOffloadBlockList, ProtocolOffloadBlockList]:
    n = node(
        OffloadStateType.NeighborOffloadState,
        NdisOffloadHandle(),
        [NeighborOffloadStateConst(), NeighborOffloadStateCached(dl_destination_address=MAC_B + bytes(26)), NeighborOffloadStateDelegated()],
    )
    p = node(OffloadStateType.Ip4OffloadState, NdisOffloadHandle(), [PathOffloadStateConst(source_address=IP_A, destination_address=IP_B), PathOffloadStateCached()])
    n.dependent_block_list = p
    return n, p


def offload_transfer(total: int, mode: Mode) -> float:
    sched, ndis, _target, host, link = rig(mode)
    a, b = shuttle_pair(40000)
    const, cached, dlg, _s, _r = a.export_state(0, 1000)
    n, p = base_tree()
    host.handle = NdisOffloadHandle()
    p.dependent_block_list = node(OffloadStateType.TcpOffloadState, host.handle, [const, cached, dlg])
    ndis.initiate_offload(host.binding, n)
    sched.run_until(predicate=lambda: bool(host.done))
    assert p.dependent_block_list.status == NdisStatus.SUCCESS
    eb = Endpoint(sched, link.b, b, MAC_B, MAC_A, IP_B, IP_A)
    eb.to_send = total
    host.to_send = total
    t0 = time.process_time()
    host.fill()
    eb.pump()
    why = sched.run_until(predicate=lambda: eb.got >= total and host.got >= total)
    assert why == "predicate", why
    return time.process_time() - t0


def many(n_conns: int, measure_memory: bool) -> float:
    """CPU seconds (or, with measure_memory, traced bytes) per connection of one N-connection initiate."""
    sched, ndis, target, host, _link = rig(Mode.OFF, TargetLimits(max_tcp=n_conns, max_contexts=n_conns + 2))
    a, _b = shuttle_pair(1024, TcpConfig())  # 256 KiB windows: InitialRcvWnd within the buffer budget
    const, cached, dlg, _s, _r = a.export_state(0, 1000)
    root, path = base_tree()
    prev = None
    for i in range(n_conns):
        c = copy.copy(const)
        c.local_port = 1024 + i
        t = node(OffloadStateType.TcpOffloadState, NdisOffloadHandle(), [c, cached, copy.copy(dlg)])
        if prev is None:
            path.dependent_block_list = t
        else:
            prev.next_block = t
        prev = t
    # NDIS's PBL -> MBL conversion recurses along NextBlock: a 10,000-node row needs the headroom.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n_conns + 1000))
    gc.collect()
    if measure_memory:
        tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0] if measure_memory else 0
    t0 = time.process_time()
    ndis.initiate_offload(host.binding, root)
    sched.run_until(predicate=lambda: bool(host.done))
    cpu = time.process_time() - t0
    result = cpu / n_conns
    if measure_memory:
        gc.collect()
        result = (tracemalloc.get_traced_memory()[0] - m0) / n_conns
        tracemalloc.stop()
    assert root.status == NdisStatus.SUCCESS and len(target.tcps) == n_conns
    return result


def run(quick: bool = False, mb: int | None = None, n_conns: int | None = None) -> dict[str, float]:
    """Bulk through the target (verifier OFF / STRICT) vs the plain engine pair; cost and memory per
    connection in one large initiate tree."""
    mb = mb if mb is not None else (2 if quick else 8)
    n_conns = n_conns if n_conns is not None else (1000 if quick else 10_000)
    total = mb << 20
    plain = plain_transfer(total)
    off = offload_transfer(total, Mode.OFF)
    strict = offload_transfer(total, Mode.STRICT)
    gbps = lambda t: 2 * total * 8 / t / 1e9  # noqa: E731  (both directions)
    print(f"bulk {mb} MB each way: plain engine pair {gbps(plain):.3f} Gbit/s per CPU-s")
    print(f"  through the offload target, verifier OFF:    {gbps(off):.3f} Gbit/s per CPU-s, {plain / off:.2f} x the plain pair's goodput")
    print(f"  through the offload target, verifier STRICT: {gbps(strict):.3f} Gbit/s per CPU-s, {plain / strict:.2f} x the plain pair's goodput")
    cpu = many(n_conns, False)
    mem = many(n_conns, True)
    print(f"{n_conns} connections in one initiate tree: {cpu * 1e6:.1f} us CPU and {mem / 1024:.1f} KiB per connection")
    return {"plain_gbps": gbps(plain), "target_off_gbps": gbps(off), "target_strict_gbps": gbps(strict),
            "off_ratio": plain / off, "strict_ratio": plain / strict, "us_per_conn_initiate": cpu * 1e6,
            "kib_per_conn": mem / 1024}


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--quick"]
    run("--quick" in sys.argv, int(args[0]) if args else None, int(args[1]) if len(args) > 1 else None)


if __name__ == "__main__":
    main()
