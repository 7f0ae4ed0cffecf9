"""Test doubles for the offload-target tests (no tests here): a host protocol driver that runs one engine
Connection over the normal NDIS path, offloads it through `Ndis` and takes it back; and the far-side
peer, a plain engine Connection on the other end of an emulated Link."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

from chimney.links.impair import Impairments
from chimney.links.p2p import Link
from chimney.ndis.blocklist import NdisOffloadHandle, ProtocolOffloadBlockList
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.core import Binding, Ndis, NdisStatusIndication
from chimney.ndis.driver import ProtocolDriver
from chimney.ndis.offload_state import (
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpOffloadStateDelegated,
)
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    NdisOidRequest,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.net.frame import TcpFrameBuilder, parse_frame
from chimney.net.tcp import PSH
from chimney.sim.scheduler import SimScheduler
from chimney.target import EmulatedNic, OffloadTarget, TargetLimits
from chimney.tcp import Connection, TcpConfig

MS = 1_000_000
S = 1_000_000_000
TPS = 1000
MAC_NIC = bytes.fromhex("020000000001")
MAC_PEER = bytes.fromhex("020000000002")
IP_HOST = bytes([198, 18, 0, 1])
IP_PEER = bytes([198, 18, 0, 2])
IP6_HOST = bytes.fromhex("20010db8000000000000000000000001")
IP6_PEER = bytes.fromhex("20010db8000000000000000000000002")
HOST_PORT = 40000
PEER_PORT = 80


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking test bytes."""
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


def nbls_of(head: NetBufferList | None) -> list[NetBufferList]:
    out = []
    while head is not None:
        out.append(head)
        head = head.next
    return out


class WireEndpoint:
    """A plain engine Connection driving one end of the wire (the peer the offloaded connection talks to)."""

    def __init__(
        self,
        sched: SimScheduler,
        port: Any,
        conn: Connection,
        mac: bytes,
        peer_mac: bytes,
        ip: bytes,
        peer_ip: bytes,
        vlan_id: int = 0,
    ) -> None:
        self.sched = sched
        self.port = port
        self.conn = conn
        self.builder = TcpFrameBuilder(mac, peer_mac, ip, peer_ip, vlan_id=vlan_id)
        self.received = bytearray()
        self.events: list[Any] = []
        self.frames_in: list[Any] = []  # parsed frames from the target side
        self.to_send = memoryview(b"")
        self.shutdown_after = False
        self.read = True
        self.ip_id = 1
        self.strip_psh = False  # send data segments without PSH (push-timer tests)
        self.timer: Any = None
        port.set_receiver(self.on_frame)

    def on_frame(self, frame: bytes) -> None:
        f = parse_frame(frame)
        self.frames_in.append(f)
        if f.tcp is None or f.tcp.dst_port != self.conn.local_port:
            return
        self.conn.receive(f.tcp, self.sched.now)
        self.pump()

    def send_stream(self, data: bytes, shutdown: bool = False) -> None:
        self.to_send = memoryview(data)
        self.shutdown_after = shutdown
        self.pump()

    def raw_send(self, seg: Any) -> None:
        if self.strip_psh:
            seg.flags &= ~PSH
        self.port.send(self.builder.build_frame(seg, ip_id=self.ip_id))
        self.ip_id += 1

    def pump(self) -> None:
        conn = self.conn
        now = self.sched.now
        for _ in range(100):
            if self.to_send and conn.state.name in ("Established", "CloseWait"):
                n = conn.send(self.to_send, now)
                self.to_send = self.to_send[n:]
                if not self.to_send and self.shutdown_after:
                    conn.shutdown(now)
            if self.read and conn.readable:
                self.received += bytes(conn.recv(-1, now))
            segs = conn.pop_segments()
            self.events.extend(conn.pop_events())
            for s in segs:
                self.raw_send(s)
            if not segs:
                break
        d = conn.next_deadline()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if d is not None:
            self.timer = self.sched.call_at(max(d, now), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.conn.on_timer(self.sched.now)
        self.pump()


class HostDouble(ProtocolDriver):
    """A minimal host stack: one engine Connection over the normal NDIS path before offload and after
    upload, and the chimney client handlers that record every completion, event and indication."""

    def __init__(self, sched: SimScheduler, name: str = "host") -> None:
        super().__init__(name)
        self.sched = sched
        self.binding: Binding | None = None
        self.conn: Connection | None = None
        self.builder = TcpFrameBuilder(MAC_NIC, MAC_PEER, IP_HOST, IP_PEER)
        self.ip_id = 1  # the host's half of the IPv4 ID space (R-SEND-12)
        self.timer: Any = None
        self.offloaded = False
        self.received = bytearray()  # everything the host application got (normal path + chimney)
        self.normal_frames: list[Any] = []
        self.send_done: list[tuple[NetBufferList, int, int]] = []  # (nbl, status, bytes transferred)
        self.recv_done: list[tuple[NetBufferList, int, int]] = []
        self.disc_done: list[tuple[NetBufferList, int, int]] = []
        self.fwd_done: list[NetBufferList] = []
        self.events: list[tuple[int, int]] = []
        self.log: list[str] = []  # ordering of sends/events/indications
        self.status: list[NdisStatusIndication] = []
        self.completions: dict[str, list[ProtocolOffloadBlockList]] = {
            k: [] for k in ("initiate", "terminate", "query", "update", "invalidate")
        }
        self.policy: Callable[[int], tuple[int, int]] = lambda n: (NdisStatus.SUCCESS, n)
        self.held: list[NetBufferList] = []  # accepted indications not yet returned
        self.auto_return = True
        self.on_event: Callable[[int, int], None] | None = None
        self.indication_sizes: list[int] = []
        self.app_reads = True  # False: received data stays unread in the host connection
        self.nbr_queries: list[tuple[int, int, int]] = []  # (time, HRD, NRD) of NeighborReachabilityQuery
        self.hrd_answer: int | None = None  # HRD the host writes back (None: leave the target's value)

    # -- registration / binding
    def set_options(self, driver_handle: Any) -> NdisStatus:
        return self.register_client_handlers(driver_handle)

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return NdisStatus.SUCCESS

    @property
    def ndis_(self) -> Ndis:
        assert self.ndis is not None
        return self.ndis

    # -- normal path
    def receive_net_buffer_lists(self, binding_context: Any, nbl: NetBufferList, port: int, num: int, flags: int) -> None:
        frames = [n.first_net_buffer.copy_data() for n in nbls_of(nbl)]  # type: ignore[union-attr]
        self.ndis_.return_net_buffer_lists(self.binding, nbl, 0)  # type: ignore[arg-type]
        for frame in frames:
            f = parse_frame(frame)
            self.normal_frames.append(f)
            if self.conn is not None and not self.offloaded and getattr(f, "tcp", None) is not None:
                self.conn.receive(f.tcp, self.sched.now)
                self.pump()

    def send_net_buffer_lists_complete(self, binding_context: Any, nbl: NetBufferList, flags: int) -> None:
        pass

    def pump(self) -> None:
        conn = self.conn
        if conn is None or self.offloaded:
            return
        now = self.sched.now
        if conn.readable and self.app_reads:
            self.received += bytes(conn.recv(-1, now))
        for s in conn.pop_segments():
            frame = self.builder.build_frame(s, ip_id=self.ip_id)
            self.ip_id = (self.ip_id + 1) & 0x7FFF
            self.ndis_.send_net_buffer_lists(self.binding, nbl_from_bytes(frame, self.name))  # type: ignore[arg-type]
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        d = conn.next_deadline()
        if d is not None:
            self.timer = self.sched.call_at(max(d, now), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.conn is not None and not self.offloaded:
            self.conn.on_timer(self.sched.now)
            self.pump()

    def status_ex(self, binding_context: Any, indication: NdisStatusIndication) -> None:
        self.status.append(indication)

    # -- generic chimney client
    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.completions["initiate"].append(pbl)
        self.log.append("initiate_complete")

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.completions["terminate"].append(pbl)
        self.log.append("terminate_complete")

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.completions["update"].append(pbl)

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.completions["invalidate"].append(pbl)
        self.log.append("invalidate_complete")

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self.completions["query"].append(pbl)
        self.log.append("query_complete")

    def indicate_offload_event(self, binding_context: Any, pbl: Any, indication_code: int) -> None:
        self.log.append(f"offload_event {indication_code}")
        if pbl is not None:
            _const, cached, dlg = pbl.state
            self.nbr_queries.append((self.sched.now, cached.host_reachability_delta, dlg.nic_reachability_delta))
            if self.hrd_answer is not None:
                cached.host_reachability_delta = self.hrd_answer  # written back before returning (R-NBR-06)

    # -- TCP chimney client
    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        for n in nbls_of(nbl):
            self.send_done.append((n, n.status, n.info.get(NblInfo.TcpOffloadBytesTransferred, -1)))
            self.log.append(f"send_complete {n.status:#x}")

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        for n in nbls_of(nbl):
            k = n.info.get(NblInfo.TcpOffloadBytesTransferred, -1)
            self.recv_done.append((n, n.status, k))
            self.log.append(f"receive_complete {n.status:#x} {k}")

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.disc_done.append((nbl, nbl.status, nbl.info.get(NblInfo.TcpOffloadBytesTransferred, -1)))
        self.log.append(f"disconnect_complete {nbl.status:#x}")

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.fwd_done.extend(nbls_of(nbl))

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        self.events.append((event_type, event_specific_information))
        self.log.append(f"event {event_type} {event_specific_information}")
        if self.on_event is not None:
            self.on_event(event_type, event_specific_information)

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        nb = nbl.first_net_buffer
        assert nb is not None
        n = nb.data_length
        self.indication_sizes.append(n)
        ret, consumed = self.policy(n)
        if consumed:
            self.received += nb.copy_data(0, consumed)
        self.log.append(f"indicate {n} -> {consumed}")
        if ret == NdisStatus.SUCCESS:
            self.held.append(nbl)
            if self.auto_return:
                self.sched.call_soon(self.return_held)
        return ret, consumed

    def return_held(self) -> None:
        held, self.held = self.held, []
        for n in held:
            assert self.ndis_.offload_tcp_receive_return(self.binding, n) == NdisStatus.SUCCESS  # type: ignore[arg-type]


class Rig:
    """Ndis + OffloadTarget on link.a + HostDouble bound to it + a WireEndpoint peer on link.b."""

    def __init__(
        self,
        limits: TargetLimits | None = None,
        host_cfg: TcpConfig | None = None,
        peer_cfg: TcpConfig | None = None,
        vlan_id: int = 0,
        seed: int = 1,
        tps: int = TPS,
        to_peer: Impairments | None = None,
        to_target: Impairments | None = None,
        v6: bool = False,
    ) -> None:
        self.sched = SimScheduler(seed)
        self.verifier = Verifier(Mode.STRICT)
        self.ndis = Ndis(self.sched, self.verifier)  # the full chimney verifier (ChimneyChecks)
        self.link = Link(self.sched, "wire", to_peer, to_target, mac_a=MAC_NIC, mac_b=MAC_PEER)
        self.nic = EmulatedNic(self.link.a)
        self.target = OffloadTarget("tgt", self.nic, self.sched, limits)
        self.ndis.register_miniport_driver(self.target)
        self.adapter = self.ndis.add_adapter(self.target, "nic0")
        self.ip_host, self.ip_peer = (IP6_HOST, IP6_PEER) if v6 else (IP_HOST, IP_PEER)
        self.host = HostDouble(self.sched)
        self.host.builder = TcpFrameBuilder(MAC_NIC, MAC_PEER, self.ip_host, self.ip_peer)
        self.ndis.register_protocol_driver(self.host)
        self.binding = self.ndis.bind(self.host, self.adapter)
        self.tps = tps
        req = NdisOidRequest.set(
            OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, NdisTcpConnectionOffloadParameters(ticks_per_second=tps)
        )
        assert self.ndis.oid_request(self.binding, req) == NdisStatus.SUCCESS
        self.host_cfg = host_cfg or TcpConfig(ts_hz=tps)
        self.vlan_id = vlan_id
        self.peer_conn = Connection(peer_cfg or TcpConfig(ts_hz=tps), PEER_PORT, HOST_PORT, 0x7FFFFFF0)
        self.peer_conn.listen()
        self.peer = WireEndpoint(
            self.sched, self.link.b, self.peer_conn, MAC_PEER, MAC_NIC, self.ip_peer, self.ip_host, vlan_id
        )
        self.handles: tuple[NdisOffloadHandle, NdisOffloadHandle, NdisOffloadHandle] | None = None
        self.const: Any = None
        self.cached: Any = None
        self.path_mtu = 1500

    def run(self, ms: float = 0, until: Callable[[], bool] | None = None) -> None:
        if until is not None:
            self.sched.run_until(predicate=until, until=self.sched.now + int(30 * S))
        else:
            self.sched.run_until(until=self.sched.now + int(ms * MS))

    def connect(self) -> None:
        conn = Connection(self.host_cfg, HOST_PORT, PEER_PORT, 0xFFFFFF00)
        self.host.conn = conn
        conn.connect(self.sched.now)
        self.host.pump()
        self.run(until=lambda: conn.state.name == "Established" and self.peer_conn.state.name == "Established")
        self.run(5)

    # -- offload
    def offload_tree(self, *, vlan_id: int | None = None, user_priority: int = 0) -> ProtocolOffloadBlockList:
        """Export the host connection and build neighbor -> path -> TCP as the host would."""
        host = self.host
        conn = host.conn
        assert conn is not None
        now = self.sched.now
        const, cached, dlg, send_views, rx_views = conn.export_state(now, self.tps)
        host.pump()  # the flushed delayed ACK goes out on the normal path first
        cached.user_priority = user_priority
        self.const, self.cached = const, cached
        chain = [nbl_from_bytes(bytes(v), host.name) for v in send_views if len(v)]
        for a, b in itertools.pairwise(chain):
            a.next = b
        if chain:
            dlg.send_data_head, dlg.send_data_tail = chain[0], chain[-1]
        rx = b"".join(bytes(v) for v in rx_views)
        dlg.buffered_data = nbl_from_bytes(rx, host.name) if rx else None
        conn.detach()
        host.offloaded = True
        hn, hp, ht = NdisOffloadHandle("neighbor"), NdisOffloadHandle("path"), NdisOffloadHandle("tcp")
        self.handles = (hn, hp, ht)
        vid = self.vlan_id if vlan_id is None else vlan_id
        n = ProtocolOffloadBlockList(
            OffloadStateType.NeighborOffloadState,
            hn,
            [
                NeighborOffloadStateConst(vlan_id=vid),
                NeighborOffloadStateCached(dl_destination_address=MAC_PEER + bytes(26)),
                NeighborOffloadStateDelegated(),
            ],
        )
        p = ProtocolOffloadBlockList(
            OffloadStateType.Ip6OffloadState if len(self.ip_host) == 16 else OffloadStateType.Ip4OffloadState,
            hp,
            [
                PathOffloadStateConst(source_address=self.ip_host, destination_address=self.ip_peer),
                PathOffloadStateCached(path_mtu=self.path_mtu),
            ],
        )
        t = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadState, ht, [const, cached, dlg])
        t.net_buffer_list_chain = chain[0] if chain else None
        n.dependent_block_list = p
        p.dependent_block_list = t
        return n

    def offload(self, **kw: Any) -> ProtocolOffloadBlockList:
        tree = self.offload_tree(**kw)
        self.ndis.initiate_offload(self.binding, tree)
        self.run(until=lambda: bool(self.host.completions["initiate"]))
        return tree

    @property
    def tcp_handle(self) -> NdisOffloadHandle:
        assert self.handles is not None
        return self.handles[2]

    def send(self, data: bytes, pieces: int = 1) -> list[NetBufferList]:
        step = -(-len(data) // pieces)
        nbls = [nbl_from_bytes(data[i : i + step], self.host.name) for i in range(0, len(data), step)]
        for a, b in itertools.pairwise(nbls):
            a.next = b
        assert self.ndis.offload_tcp_send(self.tcp_handle, nbls[0]) == NdisStatus.PENDING
        return nbls

    # -- terminate and resume
    def terminate(self) -> ProtocolOffloadBlockList:
        assert self.handles is not None
        hn, hp, ht = self.handles
        n = ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadDelegatedState, hn, [NeighborOffloadStateDelegated()])
        pt = OffloadStateType.Ip6OffloadDelegatedState if len(self.ip_host) == 16 else OffloadStateType.Ip4OffloadDelegatedState
        p = ProtocolOffloadBlockList(pt, hp, [PathOffloadStateDelegated()])
        t = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, ht, [TcpOffloadStateDelegated()])
        n.dependent_block_list = p
        p.dependent_block_list = t
        before = len(self.host.completions["terminate"])
        self.ndis.terminate_offload(self.binding, n)
        self.run(until=lambda: len(self.host.completions["terminate"]) > before)
        return n

    def resume(self, tree: ProtocolOffloadBlockList) -> Connection:
        """The host takes the returned state into a fresh engine Connection and goes on (normal path)."""
        t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
        dlg = t.state[0]
        views = [v for n in nbls_of(t.net_buffer_list_chain) for nb in n.net_buffers() for v in nb.data_views()]
        buffered = []
        if dlg.buffered_data is not None:
            buffered = [nb.copy_data() for n in nbls_of(dlg.buffered_data) for nb in n.net_buffers()]
            ret = self.ndis.offload_tcp_receive_return(self.binding, dlg.buffered_data)
            assert ret == NdisStatus.SUCCESS
        conn = Connection.import_state(
            self.const, self.cached, dlg, views, buffered, self.sched.now, self.tps, cfg=self.host_cfg
        )
        self.host.conn = conn
        self.host.offloaded = False
        self.host.pump()
        return conn


# -- block-list builders for tree tests (states exported from live engine connections) ----------------


def established_state(lport: int, rport: int = PEER_PORT, cfg: TcpConfig | None = None) -> tuple[Any, Any, Any]:
    """(const, cached, delegated) of an ESTABLISHED engine connection (handshake shuttled in memory)."""
    a = Connection(cfg or TcpConfig(), lport, rport, 1000 + lport)
    b = Connection(TcpConfig(), rport, lport, 5000)
    b.listen()
    a.connect(0)
    for _ in range(10):
        for s in a.pop_segments():
            b.receive(s, 0)
        for s in b.pop_segments():
            a.receive(s, 0)
    assert a.state.name == "Established"
    const, cached, dlg, _send, _rx = a.export_state(0, TPS)
    return const, cached, dlg


def neighbor_node(handle: Any, *, vlan_id: int = 0, src_mac: bytes = bytes(6)) -> ProtocolOffloadBlockList:
    return ProtocolOffloadBlockList(
        OffloadStateType.NeighborOffloadState,
        handle,
        [
            NeighborOffloadStateConst(dl_source_address=src_mac + bytes(26), vlan_id=vlan_id),
            NeighborOffloadStateCached(dl_destination_address=MAC_PEER + bytes(26)),
            NeighborOffloadStateDelegated(),
        ],
    )


def path_node(
    handle: Any, *, src: bytes = IP_HOST, dst: bytes = IP_PEER, mtu: int = 1500
) -> ProtocolOffloadBlockList:
    t = OffloadStateType.Ip6OffloadState if len(src) == 16 else OffloadStateType.Ip4OffloadState
    return ProtocolOffloadBlockList(
        t, handle, [PathOffloadStateConst(source_address=src, destination_address=dst), PathOffloadStateCached(path_mtu=mtu)]
    )


def tcp_node(handle: Any, lport: int, *, rcv_wnd: int | None = None) -> ProtocolOffloadBlockList:
    const, cached, dlg = established_state(lport)
    if rcv_wnd is not None:
        cached.initial_rcv_wnd = rcv_wnd
    return ProtocolOffloadBlockList(OffloadStateType.TcpOffloadState, handle, [const, cached, dlg])


def link_rows(parent: ProtocolOffloadBlockList, *children: ProtocolOffloadBlockList) -> ProtocolOffloadBlockList:
    """parent.DependentBlockList = children[0] -> NextBlock ... ; returns parent."""
    for a, b in itertools.pairwise(children):
        a.next_block = b
    parent.dependent_block_list = children[0] if children else None
    return parent
