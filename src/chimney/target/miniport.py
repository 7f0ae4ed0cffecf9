"""The offload target: `OffloadTarget`, an NDIS 6 chimney-capable miniport whose emulated NIC
(`EmulatedNic`, on a `Port`) runs offloaded TCP connections with the project's TCP engine.

NDIS name -> Python name (methods of OffloadTarget unless noted):
  MiniportSetOptions -> set_options;  MiniportInitializeEx -> initialize_ex;  MiniportHaltEx -> halt_ex
  MiniportOidRequest -> oid_request;  MiniportSendNetBufferLists -> send_net_buffer_lists
  MiniportReturnNetBufferLists -> return_net_buffer_lists
  MiniportInitiateOffload / TerminateOffload / UpdateOffload / InvalidateOffload / QueryOffload ->
    initiate_offload / terminate_offload / update_offload / invalidate_offload / query_offload
  MiniportTcpOffloadSend / Receive / Disconnect / Forward / ReceiveReturn -> tcp_offload_send /
    tcp_offload_receive / tcp_offload_disconnect / tcp_offload_forward / tcp_offload_receive_return
  NdisTcpOffloadEventHandler & co. (from NdisMGetOffloadHandlers) -> self.h_event, h_receive, h_send_complete,
    h_receive_complete, h_disconnect_complete, h_forward_complete
  NIC hardware reset -> hardware_reset();  corrupt hardware -> hardware_failure();
  capability change: NDIS_STATUS_OFFLOAD_PAUSE / _RESUME -> pause_offload() / resume_offload();  target-requested upload (TcpIndicateRetrieve) -> request_upload()
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from typing import Any

from chimney.ndis.blocklist import MiniportOffloadBlockList, NodeRole, iter_tree, node_role
from chimney.ndis.buffers import Mdl, NblInfo, NetBufferList
from chimney.ndis.driver import MiniportDriver
from chimney.ndis.offload_state import (
    NDIS_TCP_CHIMNEY_OFFLOAD,
    OFFLOADABLE_STATES,
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TIMER_NOT_RUNNING,
    IndicateOffloadEvent,
    KeepAliveState,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    TcpCachedFlags,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    TcpUploadReason,
    scale_rttvar,
    scale_srtt,
)
from chimney.ndis.oid import (
    CONFIGURATION_SETS,
    OID_IP4_OFFLOAD_STATS,
    OID_IP6_OFFLOAD_STATS,
    OID_PNP_SET_POWER,
    OID_TCP4_OFFLOAD_STATS,
    OID_TCP6_OFFLOAD_STATS,
    IpOffloadStats,
    NdisDevicePowerState,
    NdisOidRequest,
    NdisRequestType,
    NdisTcpConnectionOffload,
    NdisTcpConnectionOffloadParameters,
    TcpOffloadStats,
)
from chimney.ndis.pool import NblPool
from chimney.ndis.status import NdisStatus
from chimney.net.drops import Drop
from chimney.net.frame import TcpFrameBuilder, parse_frame
from chimney.net.tcp import ACK, FIN, RST, SYN, URG, parse_tcp
from chimney.target.context import NeighborCtx, PathCtx, Phase, SendEntry, TcpCtx
from chimney.tcp import (
    Closed,
    Connection,
    DataReadable,
    EnteredTimeWait,
    FinWait2Timeout,
    PeerClosed,
    Reset,
    TcpConfig,
    TcpStateError,
    TimedOut,
    UrgentData,
)
from chimney.tcp.offload import EXPORTABLE_STATES

NS = 1_000_000_000
MASK = 0xFFFFFFFF
SUCCESS = NdisStatus.SUCCESS
PENDING = NdisStatus.PENDING
PARTIAL = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
_OK_NODE = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)
_BYTES = NblInfo.TcpOffloadBytesTransferred
_NO_PUSH = NblInfo.TcpReceiveNoPush
_PREFILLED = NblInfo.TcpReceiveBytesTransferred
# OID_GEN_MAC_OPTIONS: how the host learns whether the NIC inserts 802.1p priorities (R-VLAN-06).
OID_GEN_MAC_OPTIONS = 0x00010113
NDIS_MAC_OPTION_8021P_PRIORITY = 0x00000040
_CLOSED = TcpConnectionState.Closed
_TIME_WAIT = TcpConnectionState.TimeWait
_FIN_WAIT_1 = TcpConnectionState.FinWait1
_FIN_WAIT_2 = TcpConnectionState.FinWait2
# R-STAT-09: ResetEstablished counts direct moves from these states to CLOSED.
_EST_OR_CLOSE_WAIT = frozenset({TcpConnectionState.Established, TcpConnectionState.CloseWait})
_UNION_FIELDS = frozenset(
    {"header", "send_data_head", "send_data_tail", "buffered_data", "send_backlog_size", "receive_backlog_size"}
)
_DELEGATED_FIELDS = tuple(f.name for f in fields(TcpOffloadStateDelegated) if f.name not in _UNION_FIELDS)


# States in which our FIN may already occupy a sequence number below SndMax.
_FIN_SENT_STATES = frozenset({TcpConnectionState.FinWait1, TcpConnectionState.Closing, TcpConnectionState.LastAck})


@dataclass(slots=True)
class TargetLimits:
    """Capacity knobs of the emulated NIC; exceeding one fails the initiate node with its specific code
    (R-OFF-06/07, R-VLAN-02..04)."""

    max_tcp: int = 1024  # TcpConnectionOffloadCapacity (R-INIT-07) -> OFFLOAD_TCP_ENTRIES
    max_paths: int = 1024  # -> OFFLOAD_PATH_ENTRIES
    max_neighbors: int = 256  # -> OFFLOAD_NEIGHBOR_ENTRIES
    max_contexts: int = 1 << 20  # context areas in host memory -> RESOURCES
    max_source_ips: int = 64  # tracked local IP addresses -> OFFLOAD_IP_ADDRESS_ENTRIES
    configurable_source_macs: int = 0  # non-zero DlSourceAddress slots; 0 = unsupported (R-OFF-07)
    max_vlans: int = 8  # distinct non-zero neighbor VLAN ids -> OFFLOAD_VLAN_ENTRIES (R-VLAN-02)
    interface_vlans: frozenset[int] = field(default_factory=frozenset)  # empty = interface VLAN ID 0
    max_rcv_window: int = 1 << 24  # InitialRcvWnd above this -> OFFLOAD_TCP_RCV_WINDOW
    rcv_buffer_budget: int = 1 << 34  # sum of InitialRcvWnd -> OFFLOAD_TCP_RCV_BUFFER
    max_path_mtu: int | None = None  # None: the port MTU; above -> OFFLOAD_PATH_MTU
    support_ipv6: bool = True
    support_8021p: bool = True  # R-VLAN-06
    indication_nbls: int | None = None  # chimney indication pool capacity (None: unbounded)


class EmulatedNic:
    """The NIC under the target: a `Port`, the interface MAC, IPv4 IDs from the target's half
    (R-SEND-12) and the one header buffer every offloaded segment is built in."""

    __slots__ = ("_hdr", "_hdr_mv", "_ip_id", "mac", "port", "tx_bytes", "tx_frames")

    def __init__(self, port: Any, mac: bytes | None = None) -> None:
        self.port = port
        mac = mac if mac is not None else port.mac
        if mac is None or len(mac) != 6:
            raise ValueError("EmulatedNic needs a 6-byte interface MAC (from the port or `mac`)")
        self.mac: bytes = mac
        self._ip_id = 0x8000
        self._hdr = bytearray(256)
        self._hdr_mv = memoryview(self._hdr)
        self.tx_frames = 0
        self.tx_bytes = 0

    @property
    def mtu(self) -> int:
        return int(self.port.mtu)

    def next_ip_id(self) -> int:
        """R-SEND-12: the target owns IPv4 IDs 0x8000-0xFFFF; the host keeps the lower half."""
        i = self._ip_id
        self._ip_id = i + 1 if i < 0xFFFF else 0x8000
        return i

    def send_segment(self, builder: TcpFrameBuilder, seg: Any, v6: bool, meta: str | None) -> int:
        """Frame and send one segment; returns the IP datagram's length (for OutOctets, R-STAT-06)."""
        hlen = builder.build(self._hdr, seg, ip_id=0 if v6 else self.next_ip_id())
        frame = b"".join((self._hdr_mv[:hlen], seg.payload))
        self.tx_frames += 1
        self.tx_bytes += len(frame)
        self.port.send(frame, meta)
        return len(frame) - builder.l2_len

    def send_frame(self, frame: bytes) -> None:
        self.tx_frames += 1
        self.tx_bytes += len(frame)
        self.port.send(frame)


class _RecvRequest:
    """One posted receive request (MiniportTcpOffloadReceive), queued FIFO (R-RECV-02)."""

    __slots__ = ("filled", "nbl", "push")

    def __init__(self, nbl: NetBufferList, filled: int, push: bool) -> None:
        self.nbl = nbl
        self.filled = filled
        self.push = push


# Blind in-window attack mitigation (§4.16, RFC 5961 3-5 as the chimney pages restate them).
SEC_KEEPALIVE_NS = 300 * NS  # R-SEC-06: keepalive started or shortened to fire 5 minutes after a challenge ACK
SEC_SYN_THROTTLE_NS = 3 * NS  # R-SEC-05: one challenge ACK per 3 s for in-window out-of-order SYNs
SEC_DEFAULT_PROBES = 10  # R-SEC-07: KaProbeCount 0
SEC_DEFAULT_INTERVAL_NS = NS  # R-SEC-07: KaInterval 0


class _Mitigation:
    """Blind-reset mitigation state of one connection: whether the RST-validation period's one challenge
    ACK went out (R-SEC-03), the last SYN challenge ACK (R-SEC-05), whether the keepalive timer runs
    because of the mitigation (R-SEC-09). The timer itself is the engine's keepalive deadline and probe
    count, so an upload returns them as KeepAlive.TimeoutDelta / ProbeCount (R-SEC-08)."""

    __slots__ = ("active", "own", "rst_challenged", "syn_at")

    def __init__(self) -> None:
        self.active = False
        self.own = False
        self.rst_challenged = False
        self.syn_at: int | None = None


def _state_of(node: MiniportOffloadBlockList, cls: type) -> Any:
    """The trailing struct of type `cls` (R-TREE-16: order CONST, CACHED, DELEGATED)."""
    for s in node.state:
        if type(s) is cls:
            return s
    return None


_SLOTS: dict[type, tuple[str, ...]] = {}


def _clone(obj: Any) -> Any:
    """A shallow copy of a slotted state struct, ~10x cheaper than copy.copy (per offloaded object)."""
    cls = type(obj)
    names = _SLOTS.get(cls)
    if names is None:
        names = _SLOTS[cls] = tuple(f.name for f in fields(cls))
    new = object.__new__(cls)
    for n in names:
        object.__setattr__(new, n, getattr(obj, n))
    return new


def _chain(nbls: list[NetBufferList]) -> NetBufferList:
    for a, b in itertools.pairwise(nbls):
        a.next = b
    nbls[-1].next = None
    return nbls[0]


class OffloadTarget(MiniportDriver):
    """A chimney offload target for one adapter. Bind a host to it with::

        ndis.register_miniport_driver(target); adapter = ndis.add_adapter(target, "nic0")
        ndis.bind(host_protocol, adapter)

    `counters` (dict) counts steering, indications (allocated vs recycled NBLs), completions and drops.
    `engine_defaults`: the target's own TCP behaviour where no chimney field reaches it (Nagle variant,
    zero-window probe style, RST forms, rate limits, FIN_WAIT_2 timeout; default `TcpConfig()`, whose
    FIN_WAIT_2 timer is R-TMR-05's 120 s), e.g. a firmware set up to behave as the host stack does.
    """

    def __init__(self, name: str, nic: EmulatedNic, scheduler: Any, limits: TargetLimits | None = None,
                 engine_defaults: TcpConfig | None = None) -> None:
        super().__init__(name)
        self.engine_defaults = engine_defaults if engine_defaults is not None else TcpConfig()
        self.nic = nic
        self.scheduler = scheduler
        self.limits = limits if limits is not None else TargetLimits()
        self.params = NdisTcpConnectionOffloadParameters()
        self.adapter: Any = None
        self.handlers: Any = None
        self.h_event: Any = None
        self.h_receive: Any = None
        self.h_send_complete: Any = None
        self.h_receive_complete: Any = None
        self.h_disconnect_complete: Any = None
        self.h_forward_complete: Any = None
        self.ind_pool: NblPool | None = None
        self.rx_pool: NblPool | None = None
        self._ind_free: list[NetBufferList] = []
        self._starved: set[TcpCtx] = set()
        self.tcps: dict[tuple[bytes, bytes, int, int], TcpCtx] = {}
        self.paths: set[PathCtx] = set()
        self.neighbors: set[NeighborCtx] = set()
        self._source_ips: dict[bytes, int] = {}
        self._vlans: dict[int, int] = {}
        self._src_macs: dict[bytes, int] = {}
        self._rcv_budget = 0
        self.upload_all_pending = False
        self.offload_paused = False  # between NDIS_STATUS_OFFLOAD_PAUSE and _RESUME (R-INIT-10)
        self.hw_failed = False  # corrupt/hung hardware: R-QRY-09 / R-INV-06 / R-TRM-27 sequences
        self._hw_notified: set[TcpCtx] = set()
        self._paused_initiates: list[MiniportOffloadBlockList] = []  # R-OFF-29
        self._initiating = 0  # initiate trees recorded and not yet completed (R-OFF-12)
        self._deferred: set[TcpCtx] = set()
        self._sec: dict[TcpCtx, _Mitigation] = {}  # connections under blind-reset mitigation (§4.16)
        self._power_request: NdisOidRequest | None = None
        # R-STAT-01/02: per IP version, offloaded connections only ([0] IPv4, [1] IPv6).
        self.tcp_stats = (TcpOffloadStats(), TcpOffloadStats())
        self.ip_stats = (IpOffloadStats(), IpOffloadStats())
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rx_frames",
                "rx_steered",
                "rx_normal",
                "rx_vlan_drop",
                "rx_urgent_held",
                "tx_normal",
                "ind_calls",
                "ind_refused",
                "ind_nbl_allocated",
                "ind_nbl_recycled",
                "ind_pool_empty",
                "send_completed",
                "send_failed",
                "rst_suppressed",
                "retrieves",
                "hw_resets",
            ),
            0,
        )

    # ============================================================ registration and initialization

    @property
    def tick_ns(self) -> int:
        return NS // self.params.ticks_per_second

    def capabilities(self) -> NdisTcpConnectionOffload:
        """NDIS_TCP_CONNECTION_OFFLOAD this NIC advertises (R-INIT-07/08/09)."""
        return NdisTcpConnectionOffload(
            support_ipv4=True,
            support_ipv6=self.limits.support_ipv6,
            support_sack=True,
            tcp_connection_offload_capacity=self.limits.max_tcp,
        )

    def set_options(self, driver_handle: Any) -> NdisStatus:
        # R-INIT-01..03: both provider tables, from MiniportSetOptions.
        return self.register_provider_handlers(driver_handle)

    def initialize_ex(self, miniport_handle: Any, params: dict[str, Any]) -> NdisStatus:
        ndis = self.ndis
        assert ndis is not None
        if self.adapter is not None:
            return NdisStatus.FAILURE  # one adapter per OffloadTarget instance
        ndis.m_set_miniport_attributes(miniport_handle, adapter_context=self, tcp_connection_offload=self.capabilities())
        # R-INIT-04..06: once, for the only chimney type; use the table only if it is what we asked for.
        status, table = ndis.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        if status != SUCCESS or table is None:
            return NdisStatus.FAILURE  # R-INIT-05: the pointer is not valid
        if table.header.type != NDIS_TCP_CHIMNEY_OFFLOAD or table.header.revision < 1:
            return NdisStatus.FAILURE
        self.handlers = table
        self.h_event = table.ndis_tcp_offload_event_handler
        self.h_receive = table.ndis_tcp_offload_receive_handler
        self.h_send_complete = table.ndis_tcp_offload_send_complete
        self.h_receive_complete = table.ndis_tcp_offload_receive_complete
        self.h_disconnect_complete = table.ndis_tcp_offload_disconnect_complete
        self.h_forward_complete = table.ndis_tcp_offload_forward_complete
        # R-INIT-15/16: two pools, one NB per NBL.
        self.ind_pool = NblPool(
            f"{self.name}/chimney-indications",
            self.name,
            with_net_buffer=True,
            capacity=self.limits.indication_nbls,
            tracker=ndis.tracker,
        )
        self.rx_pool = NblPool(f"{self.name}/receive", self.name, with_net_buffer=True, tracker=ndis.tracker)
        self.adapter = miniport_handle
        self.nic.port.set_receiver(self._on_frame)
        self.nic.port.set_link_listener(self._on_link)
        return SUCCESS

    def _on_link(self, up: bool) -> None:
        """Media connect/disconnect is only reported; the host decides about uploads (R-EVT-12)."""
        assert self.ndis is not None
        status = NdisStatus.MEDIA_CONNECT if up else NdisStatus.MEDIA_DISCONNECT
        self.ndis.m_indicate_status_ex(self.adapter, status)

    def halt_ex(self, adapter_context: Any, halt_action: int) -> None:
        self.nic.port.set_receiver(None)
        for ctx in list(self.tcps.values()):
            self._cancel_timer(ctx)
        # R-IND-14: NDIS refuses to halt while indicated NBLs are out; the pools only close when empty.
        for pool in (self.ind_pool, self.rx_pool):
            if pool is not None:
                for nbl in self._ind_free if pool is self.ind_pool else ():
                    pool.free(nbl)
                if not pool.outstanding:
                    pool.close()
        self._ind_free.clear()

    def oid_request(self, adapter_context: Any, request: NdisOidRequest) -> NdisStatus:
        if request.type is NdisRequestType.SET and request.oid in CONFIGURATION_SETS:
            p = request.buffer
            # R-INIT-11/12/14: TicksPerSecond (10/100/1000...) and the timer parameters drive every
            # connection offloaded from now on.
            if not isinstance(p, NdisTcpConnectionOffloadParameters):
                return NdisStatus.NOT_SUPPORTED
            self.params = p
            return SUCCESS
        stats = self._stats_for(request.oid)
        if stats is not None:
            if request.type is NdisRequestType.SET:
                stats.reset()  # R-STAT-04: the supplied values are ignored
            else:
                if request.oid in (OID_TCP4_OFFLOAD_STATS, OID_TCP6_OFFLOAD_STATS):
                    v6 = request.oid == OID_TCP6_OFFLOAD_STATS
                    stats.currently_established = sum(  # type: ignore[union-attr]
                        1
                        for c in self.tcps.values()
                        if c.path.v6 == v6
                        and c.conn.state in (TcpConnectionState.Established, TcpConnectionState.CloseWait)
                    )
                request.buffer = _clone(stats)  # R-STAT-03
                request.bytes_written = 1
            return SUCCESS
        if request.type is NdisRequestType.QUERY and request.oid == OID_GEN_MAC_OPTIONS:
            request.buffer = NDIS_MAC_OPTION_8021P_PRIORITY if self.limits.support_8021p else 0  # R-VLAN-06
            request.bytes_written = 4
            return SUCCESS
        if request.type is NdisRequestType.SET and request.oid == OID_PNP_SET_POWER:
            low = request.buffer is not None and request.buffer != NdisDevicePowerState.D0
            if low and self._object_count():
                self._power_request = request  # R-PM-02: complete only after every terminate
                return PENDING
            return SUCCESS
        return NdisStatus.NOT_SUPPORTED

    def _stats_for(self, oid: int) -> TcpOffloadStats | IpOffloadStats | None:
        if oid == OID_TCP4_OFFLOAD_STATS:
            return self.tcp_stats[0]
        if oid == OID_TCP6_OFFLOAD_STATS:
            return self.tcp_stats[1]
        if oid == OID_IP4_OFFLOAD_STATS:
            return self.ip_stats[0]
        if oid == OID_IP6_OFFLOAD_STATS:
            return self.ip_stats[1]
        return None

    def _object_count(self) -> int:
        return len(self.tcps) + len(self.paths) + len(self.neighbors)

    # ============================================================ normal (non-offload) path

    def send_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, port: int, flags: int) -> None:
        """MiniportSendNetBufferLists: the host's own frames go on the wire unchanged."""
        n: NetBufferList | None = nbl
        while n is not None:
            for nb in n.net_buffers():
                self.nic.send_frame(nb.copy_data())
                self.counters["tx_normal"] += 1
            n.status = SUCCESS
            n = n.next
        self.scheduler.call_soon(self._complete_normal_sends, nbl, label="target send complete")

    def _complete_normal_sends(self, nbl: NetBufferList) -> None:
        assert self.ndis is not None
        self.ndis.m_send_net_buffer_lists_complete(self.adapter, nbl, 0)

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        assert self.rx_pool is not None
        self.rx_pool.free_chain(nbl)

    def _indicate_normal(self, frame: bytes) -> None:
        """NdisMIndicateReceiveNetBufferLists from the non-offload pool (R-INIT-15), no copy of the frame."""
        pool = self.rx_pool
        assert pool is not None and self.ndis is not None
        nbl = pool.allocate(Mdl(frame))
        if nbl is None:
            self.counters["rx_normal_no_nbl"] = self.counters.get("rx_normal_no_nbl", 0) + 1
            return
        self.counters["rx_normal"] += 1
        self.ndis.m_indicate_receive_net_buffer_lists(self.adapter, nbl, 0, 1, 0)

    # ============================================================ receive steering

    def _on_frame(self, frame: bytes) -> None:
        self.counters["rx_frames"] += 1
        if self.hw_failed:
            self._indicate_normal(frame)  # the offload engine is gone: everything takes the host path
            return
        f = parse_frame(frame)
        if type(f) is Drop:
            self._indicate_normal(frame)  # R-RX-10/11: indicate, do not count
            return
        seg = f.tcp  # None for ARP/ICMP/UDP and IP fragments (R-RX-04/06/12)
        if seg is None or f.has_ip_options:  # R-RX-05
            self._indicate_normal(frame)
            return
        ctx = self.tcps.get((f.ip_dst, f.ip_src, seg.dst_port, seg.src_port))  # type: ignore[arg-type]
        if ctx is None:
            self._indicate_normal(frame)
            return
        vid = ctx.path.neighbor.const.vlan_id
        if vid and f.vlan_id != vid:  # R-RX-09
            self.counters["rx_vlan_drop"] += 1
            return
        conn = ctx.conn
        if ctx.phase is not Phase.OFFLOADED or conn.state is _CLOSED or ctx.closed_by_syn or conn.gave_up:
            self._indicate_normal(frame)  # R-TRM-19, R-EVT-05; R-EVT-07 after a timeout retrieve
            return
        flags = seg.flags
        if ctx.urgent_frames:
            ctx.urgent_frames.append(frame)  # R-RX-07: everything after the urgent segment waits too
            self.counters["rx_urgent_held"] += 1
            return
        if flags & RST and seg.seq != conn.rcv_nxt & MASK:
            self._rst_out_of_order(ctx, seg)  # R-SEC-01/03; an RST at RcvNxt goes on (R-SEC-02)
            return
        # RFC 9293 3.10.7.4 checks RST (second) before SYN (fourth) and URG (sixth): a SYN|RST or an
        # all-flags segment at RCV.NXT is an acceptable RST (R-EVT-02), not an in-order SYN (R-RX-02).
        if flags & (SYN | URG) and not flags & RST and self._special_segment(ctx, seg, frame):
            return
        mit = self._sec.get(ctx) if self._sec else None
        ends_mitigation = mit is not None and bool(flags & ACK) and self._acceptable(conn, seg)
        self.counters["rx_steered"] += 1
        v6 = ctx.path.v6
        ip = self.ip_stats[v6]
        ip.add("in_receives")
        ip.add("in_octets", f.ip_total_len or 0)  # R-STAT-06
        ip.add("in_delivers")
        self.tcp_stats[v6].add("in_segments")
        before = conn.state
        una, rcv_nxt = conn.snd_una, conn.rcv_nxt
        now = self.scheduler.now
        conn.receive(seg, now)
        if ends_mitigation:
            self._end_mitigation(ctx, now)  # R-SEC-09
        if conn.state is _CLOSED and before in _EST_OR_CLOSE_WAIT:
            self.tcp_stats[v6].add("reset_established")  # R-STAT-09: an RST in ESTABLISHED / CLOSE_WAIT
        if conn.snd_una != una or conn.rcv_nxt != rcv_nxt:
            ctx.path.neighbor.nrt = now  # R-NBR-03: forward progress confirmed (NRD becomes 0)
        if before is _FIN_WAIT_1 and conn.state is _FIN_WAIT_2:
            conn.start_fin_wait2_timer(now)  # R-TMR-05: the target starts it (120 s default, §4 R-TMR-05)
        self._pump(ctx)

    def _special_segment(self, ctx: TcpCtx, seg: Any, frame: bytes) -> bool:
        """SYN and URG handling of §4.15; True when the segment must not reach the engine."""
        conn = ctx.conn
        rcv_nxt = conn.rcv_nxt & MASK
        if seg.flags & SYN:
            if conn.state is _TIME_WAIT:
                self._indicate_normal(frame)  # R-RX-01
                return True
            if seg.seq == rcv_nxt:
                # R-RX-02: in-order SYN -> the connection is uploaded in CLOSED state.
                ctx.closed_by_syn = True
                self._abort_io(ctx, NdisStatus.REQUEST_ABORTED)
                self._retrieve(ctx, TcpUploadReason.UploadRequested)
                return True
            wnd = max(conn.rcv_adv_max - conn.rcv_nxt, 1)
            if ((seg.seq - rcv_nxt) & MASK) >= wnd:
                return False  # R-SEC-04: outside the window -> the engine's ACK, unthrottled
            # R-RX-03 / R-SEC-05: in-window out-of-order SYN -> one challenge ACK per 3 s at most.
            mit = self._sec.setdefault(ctx, _Mitigation())
            now = self.scheduler.now
            if mit.syn_at is None or now - mit.syn_at >= SEC_SYN_THROTTLE_NS:
                mit.syn_at = now
                self._challenge(ctx, mit, now)
            else:
                self.counters["sec_syn_throttled"] = self.counters.get("sec_syn_throttled", 0) + 1
            return True
        wnd = max(conn.rcv_adv_max - conn.rcv_nxt, 1)
        una = conn.snd_una & MASK
        seq_ok = ((seg.seq - rcv_nxt) & MASK) < wnd
        ack_ok = not seg.flags & ACK or ((seg.ack - una) & MASK) <= ((conn.snd_max - conn.snd_una) & MASK)
        if not (seq_ok and ack_ok):
            self.counters["rx_urgent_invalid"] = self.counters.get("rx_urgent_invalid", 0) + 1
            return True  # R-RX-07: invalid -> drop and continue
        # R-RX-07: ask for upload, do not acknowledge, hold this and later data for the normal path.
        ctx.urgent_frames.append(frame)
        self.counters["rx_urgent_held"] += 1
        self._retrieve(ctx, TcpUploadReason.ReceivedUrgentData)
        return True

    # ============================================================ blind in-window attacks (§4.16)

    def _rst_out_of_order(self, ctx: TcpCtx, seg: Any) -> None:
        """An RST whose sequence number is not RcvNxt: outside the window it is dropped silently (R-SEC-01);
        inside, the first one of an RST-validation period gets a challenge ACK, the rest nothing (R-SEC-03)."""
        conn = ctx.conn
        wnd = max(conn.rcv_adv_max - conn.rcv_nxt, 1)
        if ((seg.seq - conn.rcv_nxt) & MASK) >= wnd:
            self.counters["sec_rst_out_of_window"] = self.counters.get("sec_rst_out_of_window", 0) + 1
            return
        mit = self._sec.setdefault(ctx, _Mitigation())
        if mit.rst_challenged:
            self.counters["sec_rst_suppressed"] = self.counters.get("sec_rst_suppressed", 0) + 1
            return
        mit.rst_challenged = True
        self._challenge(ctx, mit, self.scheduler.now)

    def _challenge(self, ctx: TcpCtx, mit: _Mitigation, now: int) -> None:
        """Send a challenge ACK, then start the keepalive timer for 5 minutes, or shorten a running one
        that would fire later (R-SEC-06)."""
        conn = ctx.conn
        conn._emit_seg(conn._ack_seq(), ACK, b"", now)
        self.counters["sec_challenge_acks"] = self.counters.get("sec_challenge_acks", 0) + 1
        at = now + SEC_KEEPALIVE_NS
        d = conn._ka_deadline
        if not mit.active:
            mit.active = True
            mit.own = d is None
        if d is None or d > at:
            conn._ka_deadline = at
        self._pump(ctx)

    @staticmethod
    def _acceptable(conn: Connection, seg: Any) -> bool:
        """RFC 9293 3.10.7.4 acceptability of a non-RST, non-SYN segment (what ends an RST-validation period)."""
        rcv = conn.rcv_nxt & MASK
        wnd = conn.rcv_adv_max - conn.rcv_nxt
        n = len(seg.payload) + (1 if seg.flags & FIN else 0)
        off = (seg.seq - rcv) & MASK
        if n == 0:
            return off == 0 if wnd <= 0 else off <= wnd
        return wnd > 0 and (off < wnd or ((seg.seq + n - 1 - rcv) & MASK) < wnd)

    def _end_mitigation(self, ctx: TcpCtx, now: int) -> None:
        """R-SEC-09: an acceptable segment ends the mitigation (and its RST-validation period, R-SEC-03);
        the keepalive timer stops only if the mitigation started it, otherwise normal keepalive resumes."""
        mit = self._sec.get(ctx)
        if mit is None:
            return
        mit.rst_challenged = False
        if not mit.active:
            return  # only the SYN throttle (R-SEC-05) runs on, per 3 s whatever arrives
        mit.active = False
        conn = ctx.conn
        if mit.own:
            conn._ka_deadline = None
            conn._ka_probes = 0
        elif conn.cfg.keepalive:
            conn._ka_deadline = now + conn.cfg.keepalive_idle_ns
            conn._ka_probes = 0

    def _mitigation_timer(self, ctx: TcpCtx, now: int) -> None:
        """R-SEC-07: the mitigation's keepalive expired: a probe every KaInterval (1 s if 0), at most
        KaProbeCount (10 if 0) counting the delegated KeepAlive.ProbeCount; when all went unanswered the
        connection is uploaded in CLOSED state."""
        conn = ctx.conn
        cached = ctx.cached
        limit = cached.ka_probe_count or SEC_DEFAULT_PROBES
        if conn._ka_probes >= limit:
            conn._ka_deadline = None
            self._sec.pop(ctx, None)
            ctx.closed_by_syn = True  # exported as CLOSED; later frames take the host path
            self._abort_io(ctx, NdisStatus.REQUEST_ABORTED)
            self._retrieve(ctx, TcpUploadReason.TimeoutExpiration)
            return
        conn._send_window_probe(now)
        conn._ka_probes += 1
        conn._ka_deadline = now + (cached.ka_interval * self.tick_ns if cached.ka_interval else SEC_DEFAULT_INTERVAL_NS)

    def _sec_export(self, ctx: TcpCtx, dlg: TcpOffloadStateDelegated) -> None:
        """R-SEC-08 holds through the engine's keepalive fields. With keepalive disabled the host cannot
        continue the mitigation's timer (and R-TRM-25 wants -1 for a keepalive it has switched off), so the
        probes sent are returned with TimeoutDelta -1 (documented deviation, docs/verifier-coverage.md)."""
        mit = self._sec.get(ctx)
        if mit is not None and mit.active and not ctx.cached.flags & TcpCachedFlags.KEEP_ALIVE_ENABLED:
            dlg.keep_alive = KeepAliveState(dlg.keep_alive.probe_count, TIMER_NOT_RUNNING)

    # ============================================================ per-connection engine pump

    def _pump(self, ctx: TcpCtx) -> None:
        """Drain the engine after every input: frames out, events, send completions, delivery, timer."""
        if ctx.in_pump:
            ctx.pump_again = True
            return
        ctx.in_pump = True
        try:
            conn = ctx.conn
            live = ctx.phase is Phase.OFFLOADED
            if live and self._initiating:
                # R-OFF-12: no indications or events while an initiate is in progress; resumed after it.
                live = False
                self._deferred.add(ctx)
            while True:
                ctx.pump_again = False
                segs = conn.pop_segments()
                work = bool(segs)
                if segs:
                    self._transmit(ctx, segs)
                if live:
                    evs = conn.pop_events()
                    if evs:
                        work = True
                        self._on_events(ctx, evs)
                    q = ctx.send_q
                    if q:
                        if conn.snd_una >= q[0].end:
                            self._complete_acked(ctx)
                        self._backlog_check(ctx)
                    if ctx.disconnect is not None:
                        self._check_disconnect(ctx)
                    if (conn.readable or ctx.posted) and not ctx.rx_busy and not ctx.aborted:
                        # Delivery may emit window updates or PeerClosed: go round again if it moved.
                        work = self._deliver(ctx) or work
                if not work and not ctx.pump_again:
                    break
        finally:
            ctx.in_pump = False
        if ctx.phase is not Phase.TERMINATED:
            self._arm_timer(ctx)

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        nb = ctx.path.neighbor
        # R-INV-03: nothing with data goes out on an invalidated connection, path or neighbor; the host
        # takes the connection back (R-INV-04) and sends the data itself.
        invalid = not (ctx.valid and ctx.path.valid and nb.valid)
        if not self._initiating:  # R-OFF-12: no indications while an initiate is in progress
            self._reachability_check(nb)
        nic = self.nic
        builder = ctx.builder
        v6 = ctx.path.v6
        ip = self.ip_stats[v6]
        tcp = self.tcp_stats[v6]
        for seg in segs:
            flags = seg.flags
            if invalid and len(seg.payload):
                self.counters["tx_invalid_suppressed"] = self.counters.get("tx_invalid_suppressed", 0) + 1
                continue
            if flags & RST:
                if not ctx.abortive:
                    self.counters["rst_suppressed"] += 1  # R-DISC-03: only an abortive disconnect sends RST
                    continue
                tcp.add("out_resets")
            octets = nic.send_segment(builder, seg, v6, None)
            n = len(seg.payload)
            ip.add("out_requests")
            ip.add("out_octets", octets)  # R-STAT-06: IP header + TCP header with its options + data
            # R-STAT-08: a segment carrying any byte sent before counts as retransmitted; one carrying
            # only old bytes is not an OutSegment.
            end = (seg.seq + n) & MASK
            high = ctx.tx_high
            if n and high is not None and 0 < ((high - seg.seq) & MASK) < 0x80000000:
                tcp.add("retransmitted_segments")
                if not 0 < ((end - high) & MASK) < 0x80000000:
                    continue
            tcp.add("out_segments")
            if high is None or 0 < ((end - high) & MASK) < 0x80000000:
                ctx.tx_high = end

    def _reachability_check(self, nb: NeighborCtx) -> None:
        """R-NBR-04: before sending on a neighbor, if neither the target (NRT) nor the host (HRT) saw it
        reachable within NceStaleTicks, ask the host with NdisMOffloadEventIndicate(NeighborReachabilityQuery);
        the host writes its HRD back into the CACHED struct before returning (R-NBR-06). Runs whether or not
        the connection makes progress (R-NBR-09)."""
        now = self.scheduler.now
        tick = self.tick_ns
        stale = self.params.nce_stale_ticks * tick
        if now - nb.nrt <= stale or now - nb.hrt <= stale or nb.phase is not Phase.OFFLOADED:
            return
        assert self.ndis is not None
        cached = NeighborOffloadStateCached(
            dl_destination_address=nb.cached.dl_destination_address,
            host_reachability_delta=((now - nb.hrt) // tick) & MASK,
        )
        dlg = NeighborOffloadStateDelegated(nic_reachability_delta=((now - nb.nrt) // tick) & MASK)
        # R-NBR-05: one fully initialised block, no siblings or dependents, CONST + CACHED + DELEGATED.
        mbl = MiniportOffloadBlockList(OffloadStateType.NeighborOffloadState, None, nb.handle,
                                       [_clone(nb.const), cached, dlg])
        mbl.status = SUCCESS
        nb.queries += 1
        self.counters["nbr_queries"] = self.counters.get("nbr_queries", 0) + 1
        self.ndis.m_offload_event_indicate(self.adapter, mbl, IndicateOffloadEvent.NeighborReachabilityQuery)
        nb.hrt = now - cached.host_reachability_delta * tick  # R-NBR-06: the host's answer, at once

    def _on_events(self, ctx: TcpCtx, evs: list[Any]) -> None:
        for ev in evs:
            t = type(ev)
            if t is DataReadable:
                ctx.last_push = ev.push
            elif t is PeerClosed:
                # R-EVT-01: the engine reports it only once every byte before the FIN was consumed.
                if not ctx.disconnect_indicated and not ctx.aborted:
                    ctx.disconnect_indicated = True
                    self._fail_posted(ctx, NdisStatus.INVALID_STATE)
                    self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateDisconnect, 0)
            elif t is Reset or (t is Closed and ev.reason == "reset" and not ctx.aborted):
                # R-EVT-02/03: acceptable RST -> abort every outstanding I/O, then indicate. In CLOSING and
                # LAST-ACK the engine closes without a Reset event (RFC 9293 3.10.7.4 signals no user
                # there), but the host still owns a TCB that must go (R-EVT-04: freed on terminate).
                if ctx.aborted:
                    continue
                ctx.aborted = True
                self._abort_io(ctx, NdisStatus.REQUEST_ABORTED)
                self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateAbort, 0)
            elif t is EnteredTimeWait:
                self._retrieve(ctx, TcpUploadReason.UploadRequested)  # R-TMR-03, §6.31
            elif t is FinWait2Timeout or t is TimedOut:
                self._retrieve(ctx, TcpUploadReason.TimeoutExpiration)  # R-TMR-06/14/18
            elif t is UrgentData:
                self._retrieve(ctx, TcpUploadReason.ReceivedUrgentData)  # R-RX-07
            elif t is Closed and ev.reason == "timeout":
                self._retrieve(ctx, TcpUploadReason.TimeoutExpiration)
            elif t is Closed and ctx.disconnect is None and not ctx.aborted:
                # CLOSED after LAST-ACK/CLOSING with no disconnect request of the host pending: nothing
                # else would ever tell the host, so ask it to take the connection back (as for
                # TIME_WAIT, R-TMR-03 / §6.31: UploadRequested); resources stay until then (R-EVT-04).
                self._retrieve(ctx, TcpUploadReason.UploadRequested)

    @staticmethod
    def send_backlog(conn: Connection) -> int:
        """Optimum outstanding send bytes: two of the current send windows (what keeps the pipe full
        while completions travel), from the congestion and peer windows only (R-EVT-09)."""
        wnd = min(conn.cc.cwnd, max(conn.snd_wnd, conn.snd_mss))
        return max(2 * wnd, 2 * conn.snd_mss)

    def _backlog_check(self, ctx: TcpCtx) -> None:
        """TcpIndicateSendBacklogChange, throttled (R-EVT-10): a change of at least 25 % and at most one
        event per second per connection."""
        v = self.send_backlog(ctx.conn)
        now = self.scheduler.now
        last = ctx.backlog
        if last is None:
            ctx.backlog = v
            ctx.backlog_at = now
            return
        if abs(v - last) * 4 < last or now - ctx.backlog_at < NS:
            return
        ctx.backlog = v
        ctx.backlog_at = now
        self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateSendBacklogChange, v)

    def _retrieve(self, ctx: TcpCtx, reason: TcpUploadReason) -> None:
        """TcpIndicateRetrieve for one connection (R-TRM-01/03, R-EVT-06); only mandatory reasons are
        used, so half-closed states are never asked discretionarily (R-EVT-08)."""
        if ctx.upload_requested is not None or ctx.phase is not Phase.OFFLOADED:
            return
        ctx.upload_requested = int(reason)
        self.counters["retrieves"] += 1
        self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateRetrieve, int(reason))

    def request_upload(self, ctx: TcpCtx, reason: TcpUploadReason = TcpUploadReason.UploadRequested) -> None:
        """Target-requested termination (R-OFF-27): later I/O completes with UPLOAD_IN_PROGRESS (R-OFF-28)."""
        self._retrieve(ctx, reason)

    # ============================================================ timers (R-TMR-01, R-INIT-14)

    def _arm_timer(self, ctx: TcpCtx) -> None:
        if self.hw_failed:
            return  # a hung engine runs no timers
        d = ctx.conn.next_deadline()
        if d is None:
            self._cancel_timer(ctx)
            return
        tick = self.tick_ns
        at = -(-d // tick) * tick  # the NIC timer runs on TicksPerSecond ticks
        if ctx.timer is not None:
            if ctx.timer_at is not None and ctx.timer_at <= at:
                return  # an earlier wake-up re-arms on firing: no scheduler churn per ACK
            ctx.timer.cancel()
        now = self.scheduler.now
        ctx.timer_at = at
        ctx.timer = self.scheduler.call_at(at if at > now else now, self._on_timer, ctx, label="target tcp timer")

    def _cancel_timer(self, ctx: TcpCtx) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
            ctx.timer_at = None

    def _on_timer(self, ctx: TcpCtx) -> None:
        ctx.timer = None
        ctx.timer_at = None
        if ctx.phase is not Phase.OFFLOADED:
            return
        now = self.scheduler.now
        mit = self._sec.get(ctx)
        if mit is not None and mit.active:
            d = ctx.conn._ka_deadline
            if d is not None and d <= now:
                self._mitigation_timer(ctx, now)  # before the engine's own keepalive sees the deadline
        ctx.conn.on_timer(now)
        self._pump(ctx)

    # ============================================================ MiniportInitiateOffload

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        """R-OFF-01: record the tree and return; the walk runs later on the scheduler (R-OFF-10). While
        offload is paused the call is still accepted (R-OFF-26) and queued until the resume (R-OFF-29)."""
        if self.offload_paused:
            # Not counted as in progress yet: live connections keep indicating during the pause (R-OFF-12
            # is a SHOULD NOT and the walk of this tree has not started).
            self._paused_initiates.append(mbl)
            return
        self._initiating += 1
        self.scheduler.call_soon(self._process_initiate, mbl, label="target initiate")

    # ============================================================ capability change (R-INIT-10)

    def pause_offload(self) -> None:
        """NDIS_STATUS_OFFLOAD_PAUSE: the first half of a capability change (R-INIT-10). Offloaded
        connections keep running; initiates that still arrive are queued (R-OFF-26/29)."""
        assert self.ndis is not None
        if self.offload_paused:
            return
        self.offload_paused = True
        self.counters["offload_pauses"] = self.counters.get("offload_pauses", 0) + 1
        self.ndis.m_indicate_status_ex(self.adapter, NdisStatus.OFFLOAD_PAUSE)

    def resume_offload(self, limits: TargetLimits | None = None) -> None:
        """NDIS_STATUS_OFFLOAD_RESUME with the (possibly new) NDIS_TCP_CONNECTION_OFFLOAD (R-INIT-10), then
        the initiates queued while paused are processed in arrival order (R-OFF-29)."""
        assert self.ndis is not None
        if not self.offload_paused:
            raise RuntimeError("resume_offload without pause_offload: capabilities never change directly (R-INIT-10)")
        if limits is not None:
            self.limits = limits
        self.offload_paused = False
        self.ndis.m_indicate_status_ex(self.adapter, NdisStatus.OFFLOAD_RESUME, self.capabilities())
        queued, self._paused_initiates = self._paused_initiates, []
        for mbl in queued:
            self._initiating += 1
            self.scheduler.call_soon(self._process_initiate, mbl, label="target initiate (after resume)")

    def _process_initiate(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        new_tcps: list[TcpCtx] = []
        if self.upload_all_pending:
            for node in iter_tree(mbl):
                node.status = SUCCESS if node_role(node) is NodeRole.PLACEHOLDER else NdisStatus.FAILURE
        else:
            self._walk(mbl, None, mbl, new_tcps)
        self.ndis.m_initiate_offload_complete(self.adapter, mbl)  # R-TREE-02/03
        self._initiating -= 1
        # R-OFF-09: data (also BufferedData, R-OFF-15) is indicated only after the completion returned.
        for ctx in new_tcps:
            if ctx.phase is Phase.OFFLOADING:
                ctx.phase = Phase.OFFLOADED
                self._deferred.add(ctx)
        if not self._initiating and self._deferred:
            deferred = list(self._deferred)
            self._deferred.clear()
            for ctx in deferred:
                if ctx.phase is Phase.OFFLOADED:
                    self._pump(ctx)

    def _walk(
        self, first: MiniportOffloadBlockList, parent: Any, root: MiniportOffloadBlockList | None, new: list[TcpCtx]
    ) -> list[int]:
        """R-OFF-02: a node, its dependent subtree, then its NextBlock; returns this row's statuses."""
        out: list[int] = []
        node: MiniportOffloadBlockList | None = first
        while node is not None:
            st = self._offload_node(node, parent, new)
            out.append(st)
            if node is root and st not in _OK_NODE:
                # R-OFF-04 (§6.9): the root failed -> stop; every remaining node is FAILURE.
                rest = node.next_block
                while rest is not None:
                    rest.status = NdisStatus.FAILURE
                    self._fail_subtree(rest.dependent_block_list)
                    out.append(NdisStatus.FAILURE)
                    rest = rest.next_block
                break
            node = node.next_block
        return out

    def _fail_subtree(self, first: MiniportOffloadBlockList | None) -> None:
        """R-OFF-03: dependents of a node that failed are not attempted and get FAILURE."""
        if first is None:
            return
        for n in iter_tree(first):
            n.status = NdisStatus.FAILURE

    def _offload_node(self, node: MiniportOffloadBlockList, parent: Any, new: list[TcpCtx]) -> int:
        role = node_role(node)
        if role is NodeRole.PLACEHOLDER:
            if node.dependent_block_list is not None:
                self._walk(node.dependent_block_list, None, None, new)
            node.status = SUCCESS  # R-TREE-05
            return SUCCESS
        slot = node.miniport_offload_context
        assert slot is not None
        if role is NodeRole.LINKER:
            own = slot.value
            if not isinstance(own, NeighborCtx | PathCtx | TcpCtx) or own.phase not in (
                Phase.OFFLOADED,
                Phase.OFFLOADING,
            ):
                node.status = NdisStatus.FAILURE
                self._fail_subtree(node.dependent_block_list)
                return NdisStatus.FAILURE
        else:
            own, code = self._create(node, parent, new)
            if own is None:
                node.status = code  # R-OFF-06: the specific code; R-TREE-08: slot stays None
                self._fail_subtree(node.dependent_block_list)
                return code
            slot.value = own  # R-TREE-07
        deps = node.dependent_block_list
        if deps is None:
            node.status = SUCCESS
            return SUCCESS
        sts = self._walk(deps, own, None, new)
        ok = sum(1 for s in sts if s in _OK_NODE)
        if ok == len(sts):
            status = SUCCESS
        elif role is NodeRole.LINKER and ok == 0:
            status = NdisStatus.FAILURE  # R-TREE-06
        else:
            status = PARTIAL  # R-OFF-05 / R-TREE-06
        node.status = status
        return status

    def _create(self, node: MiniportOffloadBlockList, parent: Any, new: list[TcpCtx]) -> tuple[Any, int]:
        t = node.header.type
        if t == OffloadStateType.NeighborOffloadState:
            return self._create_neighbor(node)
        if t in (OffloadStateType.Ip4OffloadState, OffloadStateType.Ip6OffloadState):
            return self._create_path(node, parent)
        if t == OffloadStateType.TcpOffloadState:
            ctx, code = self._create_tcp(node, parent)
            if ctx is not None:
                new.append(ctx)
            return ctx, code
        return None, NdisStatus.FAILURE

    def _contexts_full(self) -> bool:
        return self._object_count() >= self.limits.max_contexts

    def _create_neighbor(self, node: MiniportOffloadBlockList) -> tuple[Any, int]:
        lim = self.limits
        const = _state_of(node, NeighborOffloadStateConst)
        cached = _state_of(node, NeighborOffloadStateCached)
        dlg = _state_of(node, NeighborOffloadStateDelegated)
        if const is None or cached is None:
            return None, NdisStatus.FAILURE
        if self._contexts_full():
            return None, NdisStatus.RESOURCES
        if len(self.neighbors) >= lim.max_neighbors:
            return None, NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES
        src = bytes(const.dl_source_address[:6])
        custom = any(const.dl_source_address)
        if custom and src not in self._src_macs and len(self._src_macs) >= lim.configurable_source_macs:
            return None, NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES  # R-OFF-07
        vid = const.vlan_id
        if vid:
            if lim.interface_vlans and vid not in lim.interface_vlans:
                return None, NdisStatus.OFFLOAD_VLAN_MISMATCH  # R-VLAN-04
            if vid not in self._vlans and len(self._vlans) >= lim.max_vlans:
                return None, NdisStatus.OFFLOAD_VLAN_ENTRIES  # R-VLAN-02 (R-VLAN-03: only resources)
        ctx = NeighborCtx(node.ndis_offload_handle, _clone(const), _clone(cached), src if custom else self.nic.mac)
        # R-NBR-01/02: HRT = NCT - HRD, NRT = NCT - NRD, the host-tick deltas scaled to our timer.
        now = self.scheduler.now
        tick = self.tick_ns
        ctx.nrt = now - (dlg.nic_reachability_delta if dlg is not None else 0) * tick
        ctx.hrt = now - cached.host_reachability_delta * tick
        if custom:
            self._src_macs[src] = self._src_macs.get(src, 0) + 1
        if vid:
            self._vlans[vid] = self._vlans.get(vid, 0) + 1
        self.neighbors.add(ctx)
        return ctx, SUCCESS

    def _create_path(self, node: MiniportOffloadBlockList, parent: Any) -> tuple[Any, int]:
        lim = self.limits
        if not isinstance(parent, NeighborCtx):
            return None, NdisStatus.FAILURE
        const = _state_of(node, PathOffloadStateConst)
        cached = _state_of(node, PathOffloadStateCached)
        if const is None or cached is None:
            return None, NdisStatus.FAILURE
        v6 = node.header.type == OffloadStateType.Ip6OffloadState
        alen = 16 if v6 else 4
        if len(const.source_address) != alen or len(const.destination_address) != alen:
            return None, NdisStatus.FAILURE
        if v6 and not lim.support_ipv6:
            return None, NdisStatus.FAILURE
        if cached.path_mtu < (1280 if v6 else 68):
            return None, NdisStatus.FAILURE
        if self._contexts_full():
            return None, NdisStatus.RESOURCES
        if len(self.paths) >= lim.max_paths:
            return None, NdisStatus.OFFLOAD_PATH_ENTRIES
        src = bytes(const.source_address)
        if src not in self._source_ips and len(self._source_ips) >= lim.max_source_ips:
            return None, NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES
        max_mtu = lim.max_path_mtu if lim.max_path_mtu is not None else self.nic.mtu
        if cached.path_mtu > max_mtu:
            return None, NdisStatus.OFFLOAD_PATH_MTU
        c = _clone(const)
        c.source_address = src
        c.destination_address = bytes(const.destination_address)
        ctx = PathCtx(node.ndis_offload_handle, c, _clone(cached), parent)
        self._source_ips[src] = self._source_ips.get(src, 0) + 1
        parent.children.add(ctx)
        self.paths.add(ctx)
        return ctx, SUCCESS

    def engine_config(self, cached: TcpOffloadStateCached, path: PathCtx) -> TcpConfig:
        """The engine configuration of an offloaded connection from the host's parameters (R-INIT-12)."""
        p = self.params
        tick = self.tick_ns
        return self.engine_defaults.replace(
            ts_hz=p.ticks_per_second,  # R-TS-05
            snd_buf=1 << 60,  # send data is never copied: the NBLs are the buffer (R-SEND-02)
            rcv_buf=max(cached.initial_rcv_wnd, 1),
            path_mtu=path.cached.path_mtu,
            ip_header_size=40 if path.v6 else 20,
            delayed_ack=p.tcp_delayed_ack_ticks > 0,
            delack_timeout_ns=max(p.tcp_delayed_ack_ticks, 1) * tick,
            ack_frequency=max(p.tcp_ack_frequency, 1),
            max_retransmissions=p.tcp_maximum_retransmissions,
            dupack_threshold=max(p.tcp_duplicate_ack_threshold, 1),
            clock_granularity_ns=tick,
            hand_back_on_give_up=True,  # R-DISC-03: no RST of ours; R-TMR-14/18: the host takes over
            snd_mss_clamp=False,  # no field: RemoteMss alone sizes our segments
            user_timeout_ns=0,  # MaxRT (cached) bounds retransmission instead
        )

    def _create_tcp(self, node: MiniportOffloadBlockList, parent: Any) -> tuple[TcpCtx | None, int]:
        lim = self.limits
        if not isinstance(parent, PathCtx):
            return None, NdisStatus.FAILURE
        const = _state_of(node, TcpOffloadStateConst)
        cached = _state_of(node, TcpOffloadStateCached)
        dlg = _state_of(node, TcpOffloadStateDelegated)
        if const is None or cached is None or dlg is None:
            return None, NdisStatus.FAILURE
        if TcpConnectionState(dlg.state) not in OFFLOADABLE_STATES:  # R-OFF-24 (host invariant)
            return None, NdisStatus.FAILURE
        key = (parent.const.source_address, parent.const.destination_address, const.local_port, const.remote_port)
        if key in self.tcps:
            return None, NdisStatus.FAILURE
        if self._contexts_full():
            return None, NdisStatus.RESOURCES
        if len(self.tcps) >= lim.max_tcp:
            return None, NdisStatus.OFFLOAD_TCP_ENTRIES
        if cached.initial_rcv_wnd > lim.max_rcv_window:
            return None, NdisStatus.OFFLOAD_TCP_RCV_WINDOW
        if self._rcv_budget + cached.initial_rcv_wnd > lim.rcv_buffer_budget:
            return None, NdisStatus.OFFLOAD_TCP_RCV_BUFFER
        # R-OFF-20/21: SndUna is the first byte of NetBufferListChain; SendDataTail ends the send data.
        head = node.net_buffer_list_chain
        nbls: list[NetBufferList] = []
        views: list[memoryview] = []
        sizes: list[int] = []
        n = head
        while n is not None:
            nbls.append(n)
            size = 0
            for nb in n.net_buffers():
                for v in nb.data_views():
                    views.append(v)
                    size += len(v)
            sizes.append(size)
            if n is dlg.send_data_tail:
                break
            n = n.next
        need = (dlg.snd_max - dlg.snd_una) & MASK
        if need and dlg.state in _FIN_SENT_STATES:
            need -= 1  # SndMax also counts the FIN's sequence number, which is not send data
        if sum(sizes) < need:
            return None, NdisStatus.FAILURE  # the host's data does not cover [SndUna, SndMax)
        # R-OFF-13: BufferedData is copied into target-owned memory before the initiate completes.
        buffered: list[bytes] = []
        b = dlg.buffered_data
        while b is not None:
            for nb in b.net_buffers():
                buffered.append(nb.copy_data())
            b = b.next
        now = self.scheduler.now
        try:
            conn = Connection.import_state(
                const,
                cached,
                dlg,
                views,
                buffered,
                now,
                self.params.ticks_per_second,
                cfg=self.engine_config(cached, parent),
                path_mtu=parent.cached.path_mtu,
            )
        except (TcpStateError, ValueError):
            return None, NdisStatus.FAILURE
        builder = self._builder(parent, cached)
        ctx = TcpCtx(node.ndis_offload_handle, _clone(const), _clone(cached), parent, conn, key, builder)
        ctx.dwnd = dlg.dwnd
        end = conn.snd_una
        for nbl, size in zip(nbls, sizes, strict=True):
            end += size
            entry = SendEntry(nbl, end, size)
            nbl.miniport_reserved[0] = entry  # R-SEND-02: queued through MiniportReserved
            ctx.send_q.append(entry)
        for nbl in nbls:
            nbl.next = None
        self.tcps[key] = ctx
        parent.children.add(ctx)
        self._rcv_budget += cached.initial_rcv_wnd
        self._pump(ctx)  # R-OFF-18: the retransmission region goes out first (frames only while OFFLOADING)
        return ctx, SUCCESS

    def _builder(self, path: PathCtx, cached: TcpOffloadStateCached) -> TcpFrameBuilder:
        """Headers from the tree: neighbor MACs/VLAN (R-OFF-08, R-VLAN-05), path addresses, TCP cached
        TTL/TOS/priority; IPv4 DF always set (R-SEND-17)."""
        nb = path.neighbor
        prio = cached.user_priority if self.limits.support_8021p else 0  # R-VLAN-06
        return TcpFrameBuilder(
            nb.src_mac,
            nb.dst_mac,
            path.const.source_address,
            path.const.destination_address,
            vlan_id=nb.const.vlan_id,
            vlan_prio=prio,
            ttl=cached.ttl_or_hop_limit,
            tos=cached.tos_or_traffic_class,
            df=True,
            flow_label=cached.flow_label if path.v6 else 0,
        )

    # ============================================================ I/O refusal and completion helpers

    def _refusal(self, ctx: Any) -> int | None:
        """Status for a request that cannot proceed, or None (R-OFF-28, R-TRM-21, R-SEND-08/14)."""
        if not isinstance(ctx, TcpCtx):
            return NdisStatus.REQUEST_ABORTED
        if ctx.aborted or ctx.closed_by_syn:
            return NdisStatus.REQUEST_ABORTED
        if ctx.phase is not Phase.OFFLOADED or ctx.upload_requested is not None or self.upload_all_pending:
            return NdisStatus.UPLOAD_IN_PROGRESS
        return None

    def _fail_chain_later(self, nbl: NetBufferList, status: int, complete: Any) -> None:
        n: NetBufferList | None = nbl
        while n is not None:
            n.status = status
            n.info[_BYTES] = 0
            n = n.next
        self.scheduler.call_soon(complete, self.adapter, nbl, label="target I/O refused")

    @staticmethod
    def _finish_send(nbl: NetBufferList, status: int, acked: int) -> None:
        """R-SEND-04: Status, TcpOffloadBytesTransferred and per-NB advance by the acked bytes."""
        nbl.status = status
        nbl.info[_BYTES] = acked
        left = acked
        for nb in nbl.net_buffers():
            if not left:
                break
            k = nb.data_length if nb.data_length < left else left
            nb.advance(k)
            left -= k
        nbl.miniport_reserved[0] = None

    def _complete_acked(self, ctx: TcpCtx) -> None:
        """R-SEND-05: SUCCESS only for NBLs whose every byte was sent and acknowledged, in order."""
        una = ctx.conn.snd_una
        q = ctx.send_q
        done: list[NetBufferList] = []
        while q and q[0].end <= una:
            e = q.popleft()
            self._finish_send(e.nbl, SUCCESS, e.nbytes)
            done.append(e.nbl)
        if done:
            self.counters["send_completed"] += len(done)
            self.h_send_complete(self.adapter, _chain(done))

    def _fail_sends(self, ctx: TcpCtx, status: int) -> None:
        """Complete every queued send with `status`; the first may carry acked bytes (R-SEND-06/07)."""
        q = ctx.send_q
        if not q:
            return
        una = ctx.conn.snd_una
        done: list[NetBufferList] = []
        while q:
            e = q.popleft()
            start = e.end - e.nbytes
            acked = min(max(una - start, 0), e.nbytes)
            self._finish_send(e.nbl, SUCCESS if acked == e.nbytes else status, acked)
            done.append(e.nbl)
        self.counters["send_failed"] += len(done)
        self.h_send_complete(self.adapter, _chain(done))

    def _abort_io(self, ctx: TcpCtx, status: int) -> None:
        """R-EVT-03 (§6.6): sends, posted receives and a disconnect all complete with `status`."""
        self._fail_sends(ctx, status)
        self._fail_posted(ctx, status)
        d = ctx.disconnect
        if d is not None:
            ctx.disconnect = None
            nbl = d[0]
            nbl.status = status
            nbl.info[_BYTES] = 0
            self.h_disconnect_complete(self.adapter, nbl)

    # ============================================================ MiniportTcpOffloadSend

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        """R-SEND-01..03: accept every request, queue it FIFO after earlier calls, return PENDING."""
        ctx = offload_context
        refuse = self._refusal(ctx)
        if refuse is not None:
            self._fail_chain_later(nbl, refuse, self.h_send_complete)
            return PENDING
        conn = ctx.conn
        now = self.scheduler.now
        q = ctx.send_q
        n: NetBufferList | None = nbl
        while n is not None:
            nxt = n.next
            size = 0
            try:
                for nb in n.net_buffers():
                    for v in nb.data_views():
                        size += conn.send(v, now)  # memoryviews of the NBL data: no copy
            except TcpStateError:
                # Sends after our FIN (host invariant broken): fail this NBL and the rest (R-SEND-06).
                self._fail_chain_later(n, NdisStatus.INVALID_STATE, self.h_send_complete)
                break
            n.next = None
            entry = SendEntry(n, conn.snd_una + len(conn.sndbuf), size)
            n.miniport_reserved[0] = entry
            q.append(entry)
            n = nxt
        self._pump(ctx)
        return PENDING

    # ============================================================ delivery (§3.6) and indications

    def _deliver(self, ctx: TcpCtx) -> bool:
        """One delivery pass: FILL posted requests, INDICATE the rest; runs to its end (R-RECV-17).
        True when it delivered or completed anything."""
        ctx.rx_busy = True
        conn = ctx.conn
        before = (conn.readable, len(ctx.posted), self.counters["ind_calls"])
        try:
            while True:
                if ctx.posted:
                    # FILL first (R-RECV-03, R-IND-09); a zero-byte request completes at once (R-IND-10).
                    if not self._fill(ctx):
                        break
                    continue
                if not conn.readable or ctx.refused:
                    break  # R-IND-08: after a refusal, wait for a posted receive
                if not self._indicate(ctx):
                    break
            self._push_check(ctx)
        finally:
            ctx.rx_busy = False
        return before != (conn.readable, len(ctx.posted), self.counters["ind_calls"])

    def _indicate(self, ctx: TcpCtx) -> bool:
        """INDICATE (§3.6 C): NdisTcpOffloadReceiveHandler with one NBL from the chimney pool (R-IND-02/15)."""
        conn = ctx.conn
        n = conn.readable
        size = ctx.cached.rcv_indication_size
        if size and n > size:
            n = size  # R-IND-11
        nbl = self._indication_nbl(conn, n)
        if nbl is None:
            self.counters["ind_pool_empty"] += 1
            self._starved.add(ctx)
            return False
        nbl.miniport_reserved[0] = ctx
        self.counters["ind_calls"] += 1
        ret, consumed = self.h_receive(ctx.handle, nbl, SUCCESS)  # R-IND-03, R-TREE-14
        now = self.scheduler.now
        if ret == SUCCESS:
            ctx.ind_out += 1  # R-IND-04: the host holds the NBL until MiniportTcpOffloadReceiveReturn
            self._consume(conn, n, now)
            return True
        # R-IND-05/06: the NBL is ours again; the unconsumed rest stays buffered (window stays closed).
        self.counters["ind_refused"] += 1
        self._recycle(nbl)
        if ret == NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED and 0 < consumed < n:
            self._consume(conn, consumed, now)
        ctx.refused = True  # R-IND-08
        return False

    def _indication_nbl(self, conn: Connection, n: int) -> NetBufferList | None:
        """A recycled (or newly allocated) indication NBL whose MDLs describe the first `n` received bytes."""
        if self._ind_free:
            nbl = self._ind_free.pop()
            self.counters["ind_nbl_recycled"] += 1
        else:
            assert self.ind_pool is not None
            got = self.ind_pool.allocate()
            if got is None:
                return None
            nbl = got
            self.counters["ind_nbl_allocated"] += 1
        head: Mdl | None = None
        prev: Mdl | None = None
        left = n
        for v in conn.rxq.views():
            k = len(v)
            m = Mdl(v if k <= left else v[:left])
            if prev is None:
                head = m
            else:
                prev.next = m
            prev = m
            left -= k
            if left <= 0:
                break
        nb = nbl.first_net_buffer
        assert nb is not None
        nb.mdl_chain = head
        nb.current_mdl = head
        nb.current_mdl_offset = 0
        nb.data_offset = 0
        nb.data_length = n
        nb.next = None
        nbl.next = None
        nbl.status = SUCCESS
        return nbl

    @staticmethod
    def _consume(conn: Connection, n: int, now: int) -> None:
        """Take `n` delivered bytes out of the engine (RcvNxt/RcvWnd advance, R-RECV-10) piece by piece,
        so no received segment is joined (copied) on the way. Only the last piece goes through the
        engine's recv(), so a re-opened window is announced once, for all `n` bytes."""
        while n > 0:
            views = conn.rxq.views()
            k = len(views[0])
            take = k if k < n else n
            if take < n:
                conn.rxq.read(take)
            else:
                conn.recv(take, now)
            n -= take

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        """R-IND-13: always SUCCESS, synchronously; the NBLs are kept for the next indication."""
        n: NetBufferList | None = nbl
        while n is not None:
            nxt = n.next
            n.next = None
            ctx = n.miniport_reserved[0]
            if isinstance(ctx, TcpCtx):
                ctx.ind_out -= 1
            self._recycle(n)
            n = nxt
        if self._starved:
            starved = [c for c in self._starved if c.phase is Phase.OFFLOADED]
            self._starved.clear()
            for c in starved:
                self._pump(c)
        return SUCCESS

    def _recycle(self, nbl: NetBufferList) -> None:
        """Keep an indication NBL for the next indication (seed page: reuse rather than free); its MDLs
        let go of the received data at once."""
        nbl.miniport_reserved[0] = None
        nb = nbl.first_net_buffer
        if nb is not None:
            nb.mdl_chain = nb.current_mdl = None
            nb.data_offset = nb.data_length = nb.current_mdl_offset = 0
        self._ind_free.append(nbl)

    def indicated_outstanding(self) -> int:
        """Indication NBLs the host still holds (the adapter must not halt while > 0, R-IND-14)."""
        assert self.ind_pool is not None
        return self.ind_pool.outstanding - len(self._ind_free)

    # ============================================================ posted receives (MiniportTcpOffloadReceive)

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        """R-RECV-01/02: queue FIFO, PENDING; a post re-enables indications (R-IND-08/10)."""
        ctx = offload_context
        refuse = self._refusal(ctx)
        if refuse is None and ctx.disconnect_indicated:
            refuse = NdisStatus.INVALID_STATE  # R-RECV-11
        if refuse is not None:
            self._fail_chain_later(nbl, refuse, self.h_receive_complete)
            return PENDING
        n: NetBufferList | None = nbl
        while n is not None:
            nxt = n.next
            n.next = None
            prefilled = int(n.info.get(_PREFILLED, 0) or 0)
            req = _RecvRequest(n, prefilled, not n.info.get(_NO_PUSH, False))
            n.miniport_reserved[0] = req
            ctx.posted.append(req)
            n = nxt
        ctx.refused = False
        if not ctx.rx_busy:  # R-RECV-18: a running pass picks the requests up itself
            self._pump_receive(ctx)
        return PENDING

    def _pump_receive(self, ctx: TcpCtx) -> None:
        if self._initiating:
            self._deferred.add(ctx)  # R-OFF-12: delivered once the initiate completed
            return
        if ctx.in_pump:
            ctx.pump_again = True
            return
        ctx.in_pump = True
        try:
            self._deliver(ctx)
        finally:
            ctx.in_pump = False
        self._pump(ctx)

    def _fill(self, ctx: TcpCtx) -> bool:
        """FILL (§3.6 A.3): place data into posted requests FIFO, complete every full one (R-RECV-07)."""
        conn = ctx.conn
        now = self.scheduler.now
        done: list[NetBufferList] = []
        while ctx.posted:
            req = ctx.posted[0]
            nb = req.nbl.first_net_buffer
            assert nb is not None
            room = nb.data_length - req.filled
            if room > 0 and conn.readable:
                take = room if room < conn.readable else conn.readable
                got = 0
                while got < take:
                    piece = conn.recv(min(take - got, len(conn.rxq.views()[0])), now)
                    nb.write(req.filled + got, piece)
                    got += len(piece)
                req.filled += take
                if req.push and req.filled < nb.data_length:
                    # R-RECV-06/08: the push timer starts at the first byte and restarts on new data.
                    self._stop_push_timer(ctx)
                    ctx.push_timer = self.scheduler.call_later(
                        self.params.tcp_push_ticks * self.tick_ns, self._on_push_timer, ctx, label="push timer"
                    )
            if req.filled < nb.data_length:
                break  # partially filled: §3.6 A.5
            ctx.posted.popleft()
            done.append(self._finish_recv(req, SUCCESS))
        if done:
            self._stop_push_timer(ctx)
            self.h_receive_complete(self.adapter, _chain(done))
        return bool(done)

    @staticmethod
    def _finish_recv(req: _RecvRequest, status: int) -> NetBufferList:
        """R-RECV-09: Status, TcpOffloadBytesTransferred = bytes placed, advance by them."""
        nbl = req.nbl
        nbl.status = status
        nbl.info[_BYTES] = req.filled
        nb = nbl.first_net_buffer
        if nb is not None and req.filled:
            nb.advance(min(req.filled, nb.data_length))
        nbl.miniport_reserved[0] = None
        return nbl

    def _push_check(self, ctx: TcpCtx) -> None:
        """§3.6 A.5: a partly filled push-mode request completes when PSH was seen."""
        if ctx.posted and ctx.last_push:
            req = ctx.posted[0]
            if req.push and req.filled:
                ctx.posted.popleft()
                ctx.last_push = False
                self._stop_push_timer(ctx)
                self.h_receive_complete(self.adapter, self._finish_recv(req, SUCCESS))
                return
        if ctx.posted and ctx.push_timer is None:
            req = ctx.posted[0]
            nb = req.nbl.first_net_buffer
            if req.push and req.filled and nb is not None and req.filled < nb.data_length:
                # R-RECV-06 (§6.15): a push request posted with TcpReceiveBytesTransferred > 0 starts its
                # push timer at once, not at the first byte we place.
                ctx.push_timer = self.scheduler.call_later(
                    self.params.tcp_push_ticks * self.tick_ns, self._on_push_timer, ctx, label="push timer"
                )

    def _on_push_timer(self, ctx: TcpCtx) -> None:
        """§3.6 D: complete a partly filled push-mode request, if any is left."""
        ctx.push_timer = None
        if ctx.phase is not Phase.OFFLOADED or ctx.rx_busy or not ctx.posted:
            return
        req = ctx.posted[0]
        if req.push and req.filled:
            ctx.posted.popleft()
            self.h_receive_complete(self.adapter, self._finish_recv(req, SUCCESS))

    def _stop_push_timer(self, ctx: TcpCtx) -> None:
        if ctx.push_timer is not None:
            ctx.push_timer.cancel()
            ctx.push_timer = None

    def _fail_posted(self, ctx: TcpCtx, status: int) -> None:
        if not ctx.posted:
            return
        done = [self._finish_recv(r, SUCCESS if r.filled else status) for r in ctx.posted]
        ctx.posted.clear()
        self._stop_push_timer(ctx)
        self.h_receive_complete(self.adapter, _chain(done))

    # ============================================================ disconnect and forward

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        """R-DISC-01..14: PENDING; abortive sends RST and aborts sends; graceful sends data then FIN."""
        ctx = offload_context
        refuse = self._refusal(ctx)
        if refuse is not None:
            self._fail_chain_later(nbl, refuse, self.h_disconnect_complete)
            return PENDING
        conn = ctx.conn
        now = self.scheduler.now
        if flags & TCP_DISCONNECT_ABORTIVE_CLOSE:
            ctx.abortive = True
            ctx.aborted = True  # R-DISC-05: receive processing stops at once
            self._fail_sends(ctx, NdisStatus.REQUEST_ABORTED)  # R-DISC-04
            self._fail_posted(ctx, NdisStatus.REQUEST_ABORTED)
            if conn.state in _EST_OR_CLOSE_WAIT:
                self.tcp_stats[ctx.path.v6].add("reset_established")  # R-STAT-09: straight to CLOSED
            conn.abort(now)
            self._pump(ctx)
            nbl.status = SUCCESS  # R-DISC-06: the RST went out
            nbl.info[_BYTES] = 0
            self.scheduler.call_soon(self.h_disconnect_complete, self.adapter, nbl, label="abortive disconnect")
            return PENDING
        nbytes = 0
        try:
            nb = nbl.first_net_buffer
            if nb is not None:
                for v in nb.data_views():
                    nbytes += conn.send(v, now)
            conn.shutdown(now)
        except TcpStateError:
            self._fail_chain_later(nbl, NdisStatus.REQUEST_ABORTED, self.h_disconnect_complete)
            return PENDING
        fin = conn.fin_seq if conn.fin_seq is not None else conn.snd_max
        ctx.disconnect = (nbl, nbytes, fin + 1)
        self._pump(ctx)
        return PENDING

    def _check_disconnect(self, ctx: TcpCtx) -> None:
        d = ctx.disconnect
        if d is None or ctx.conn.snd_una < d[2]:
            return
        ctx.disconnect = None
        nbl, nbytes, _ = d
        nbl.status = SUCCESS  # R-DISC-09/10: FIN and data acknowledged
        nbl.info[_BYTES] = nbytes
        nb = nbl.first_net_buffer
        if nb is not None and nbytes:
            nb.advance(nbytes)
        self.h_disconnect_complete(self.adapter, nbl)

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        """R-FWD-01/04/05: each NBL is one TCP segment; processed like a wire segment."""
        ctx = offload_context
        refuse = self._refusal(ctx)
        if refuse is not None:
            self._fail_chain_later(nbl, refuse, self.h_forward_complete)
            return PENDING
        path = ctx.path
        now = self.scheduler.now
        n: NetBufferList | None = nbl
        while n is not None:
            nb = n.first_net_buffer
            seg = parse_tcp(memoryview(nb.copy_data()), path.const.destination_address, path.const.source_address) if nb else None
            if seg is None or type(seg) is Drop:
                n.status = NdisStatus.REQUEST_ABORTED
            else:
                before = ctx.conn.state
                ctx.conn.receive(seg, now)
                if before is _FIN_WAIT_1 and ctx.conn.state is _FIN_WAIT_2:
                    ctx.conn.start_fin_wait2_timer(now)  # R-TMR-05
                n.status = SUCCESS
            n = n.next
        self._pump(ctx)
        self.scheduler.call_soon(self.h_forward_complete, self.adapter, nbl, label="forward complete")
        return PENDING

    # ============================================================ MiniportTerminateOffload

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        """R-TRM-06: record and return. From now on the connections' segments take the normal path
        (R-TRM-19) and new I/O completes with UPLOAD_IN_PROGRESS."""
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if isinstance(ctx, TcpCtx) and ctx.phase is Phase.OFFLOADED:
                ctx.phase = Phase.TERMINATING
                self._cancel_timer(ctx)
        self.scheduler.call_soon(self._process_terminate, mbl, label="target terminate")

    def _process_terminate(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        if self.hw_failed:
            self._terminate_after_failure(mbl)
            return
        freed: list[Any] = []
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if ctx is None:
                node.status = SUCCESS if slot is None else NdisStatus.FAILURE
            elif isinstance(ctx, TcpCtx) and ctx.phase is not Phase.TERMINATED:
                node.status = self._terminate_tcp(node, ctx)
                freed.append(ctx)
            elif isinstance(ctx, PathCtx) and ctx.phase is Phase.OFFLOADED:
                ctx.phase = Phase.TERMINATING
                node.status = SUCCESS
                freed.append(ctx)
            elif isinstance(ctx, NeighborCtx) and ctx.phase is Phase.OFFLOADED:
                dlg = _state_of(node, NeighborOffloadStateDelegated)
                if dlg is not None:
                    dlg.nic_reachability_delta = ((self.scheduler.now - ctx.nrt) // self.tick_ns) & MASK
                ctx.phase = Phase.TERMINATING
                node.status = SUCCESS
                freed.append(ctx)
            else:
                node.status = NdisStatus.FAILURE  # R-TRM-08: nothing to return
        self.ndis.m_terminate_offload_complete(self.adapter, mbl)
        held: list[bytes] = []
        for ctx in freed:  # R-TRM-23: free only after the completion
            if isinstance(ctx, TcpCtx):
                held.extend(ctx.urgent_frames)
            self._free(ctx)
        for frame in held:
            self._indicate_normal(frame)  # R-RX-07: held urgent data via the non-offload path
        self._maybe_done()

    def _terminate_tcp(self, node: MiniportOffloadBlockList, ctx: TcpCtx) -> int:
        conn = ctx.conn
        now = self.scheduler.now
        ctx.phase = Phase.TERMINATING
        self._cancel_timer(ctx)
        self._stop_push_timer(ctx)  # R-TRM-18 (no SWS timer exists)
        evs = conn.pop_events()
        # Complete what is already acknowledged, package the rest (R-TRM-09/11).
        if ctx.send_q and conn.snd_una >= ctx.send_q[0].end:
            self._complete_acked(ctx)
        self._fail_posted(ctx, NdisStatus.UPLOAD_IN_PROGRESS)
        if ctx.disconnect is not None:
            d = ctx.disconnect
            ctx.disconnect = None
            d[0].status = NdisStatus.UPLOAD_IN_PROGRESS
            d[0].info[_BYTES] = 0
            self.h_disconnect_complete(self.adapter, d[0])
        del evs
        dlg = _state_of(node, TcpOffloadStateDelegated)
        tps = self.params.ticks_per_second
        buffered: list[memoryview] = []
        if conn.state in EXPORTABLE_STATES and not ctx.closed_by_syn:
            # R-TRM-17: export flushes the delayed ACK; R-TRM-24/25, §6.12 scaling done by the engine.
            _c, _k, exported, _send, buffered = conn.export_state(now, tps)
            self._sec_export(ctx, exported)
        else:
            exported = self._closed_state(ctx, now)
            buffered = conn.rxq.views() if not ctx.closed_by_syn else []
        segs = conn.pop_segments()
        if segs:
            self._transmit(ctx, segs)
        conn.detach()
        if dlg is None:
            dlg = TcpOffloadStateDelegated()
        else:
            for name in _DELEGATED_FIELDS:
                setattr(dlg, name, getattr(exported, name))
            dlg.dwnd = ctx.dwnd  # §6.13
            dlg.send_backlog_size = None
            dlg.receive_backlog_size = None
        # R-TRM-11..14: unacked/unsent send NBLs back in their original order, data starting at SndUna.
        q = ctx.send_q
        if q:
            nbls: list[NetBufferList] = []
            una = conn.snd_una
            first = True
            for e in q:
                if first:
                    acked = min(max(una - (e.end - e.nbytes), 0), e.nbytes)
                    left = acked
                    for nb in e.nbl.net_buffers():
                        k = min(nb.data_length, left)
                        if k:
                            nb.advance(k)
                        left -= k
                    first = False
                e.nbl.miniport_reserved[0] = None
                nbls.append(e.nbl)
            q.clear()
            head = _chain(nbls)
            node.net_buffer_list_chain = head
            dlg.send_data_head = head
            dlg.send_data_tail = nbls[-1]
        else:
            node.net_buffer_list_chain = None
            dlg.send_data_head = dlg.send_data_tail = None
        # R-TRM-15/16: acked-but-undelivered data goes up as BufferedData (back via ReceiveReturn).
        dlg.buffered_data = self._buffered_nbls(ctx, buffered)
        return SUCCESS

    def _buffered_nbls(self, ctx: TcpCtx, views: list[memoryview]) -> NetBufferList | None:
        total = sum(len(v) for v in views)
        if not total:
            return None
        pool = self.ind_pool
        assert pool is not None and self.ndis is not None
        # A fresh NBL: NDIS's verifier remembers refused indication NBLs by serial (R-IND-07), so a
        # recycled one must not come back through ReceiveReturn as BufferedData.
        nbl = pool.allocate()
        if nbl is None:
            return None
        self.counters["ind_nbl_allocated"] += 1
        head: Mdl | None = None
        prev: Mdl | None = None
        for v in views:
            m = Mdl(v)
            if prev is None:
                head = m
            else:
                prev.next = m
            prev = m
        nb = nbl.first_net_buffer
        assert nb is not None
        nb.mdl_chain = nb.current_mdl = head
        nb.current_mdl_offset = nb.data_offset = 0
        nb.data_length = total
        nbl.next = None
        nbl.status = SUCCESS
        nbl.miniport_reserved[0] = None
        # NdisMTerminateOffloadComplete hands BufferedData to the host, which owns it until
        # MiniportTcpOffloadReceiveReturn (R-TRM-16; NDIS core: BoundaryChecks.buffered_data_up).
        return nbl

    def _closed_state(self, ctx: TcpCtx, now: int) -> TcpOffloadStateDelegated:
        """Delegated state of a connection the engine already closed (RST, timeout, in-order SYN)."""
        c = ctx.conn
        tps = self.params.ticks_per_second
        return TcpOffloadStateDelegated(
            state=TcpConnectionState.Closed,
            rcv_nxt=c.rcv_nxt & MASK,
            rcv_wnd=0,
            snd_una=c.snd_una & MASK,
            snd_nxt=c.snd_nxt & MASK,
            snd_max=c.snd_max & MASK,
            snd_wnd=c.snd_wnd,
            max_snd_wnd=c.max_snd_wnd,
            send_wl1=c.snd_wl1 & MASK,
            cwnd=min(c.cc.cwnd, MASK),
            ss_thresh=min(c.cc.ssthresh, MASK),
            srtt=scale_srtt(c.srtt * tps / NS),
            rtt_var=scale_rttvar(c.rttvar * tps / NS),
            ts_recent=c.ts_recent,
            ts_time=c.ts_now(now),  # R-TRM-24
            dwnd=ctx.dwnd,
        )

    def _free(self, ctx: Any) -> None:
        if isinstance(ctx, TcpCtx):
            self._cancel_timer(ctx)
            self._stop_push_timer(ctx)
            self.tcps.pop(ctx.key, None)
            ctx.path.children.discard(ctx)
            self._rcv_budget -= ctx.cached.initial_rcv_wnd
            self._starved.discard(ctx)
            self._sec.pop(ctx, None)
        elif isinstance(ctx, PathCtx):
            src = ctx.const.source_address
            n = self._source_ips.get(src, 0) - 1
            if n > 0:
                self._source_ips[src] = n
            else:
                self._source_ips.pop(src, None)
            ctx.neighbor.children.discard(ctx)
            self.paths.discard(ctx)
        elif isinstance(ctx, NeighborCtx):
            for table, key in ((self._vlans, ctx.const.vlan_id), (self._src_macs, ctx.src_mac)):
                if key in table:
                    table[key] -= 1
                    if table[key] <= 0:
                        del table[key]
            self.neighbors.discard(ctx)
        ctx.phase = Phase.TERMINATED

    def _maybe_done(self) -> None:
        if self._object_count():
            return
        self.upload_all_pending = False
        req = self._power_request
        if req is not None and self.ndis is not None:
            self._power_request = None
            self.ndis.m_oid_request_complete(self.adapter, req, SUCCESS)  # R-PM-02

    # ============================================================ hardware reset / upload-all

    def hardware_failure(self) -> None:
        """The offload hardware is corrupt or hung: its state cannot be returned. From now on queries,
        invalidates and terminates complete with FAILURE and the host is told per connection with
        TcpIndicateRetrieve(HardwareFailure) then TcpIndicateAbort (R-QRY-09, R-INV-06, R-TRM-27, §6.32)."""
        self.hw_failed = True
        self.counters["hw_failures"] = self.counters.get("hw_failures", 0) + 1
        for ctx in self.tcps.values():
            self._cancel_timer(ctx)
            self._stop_push_timer(ctx)

    def _hw_failure_events(self) -> None:
        """R-QRY-09 steps 2-3 for every connection still offloaded: Retrieve/HardwareFailure, then Abort.
        Outstanding I/O waits for the terminate (step 4)."""
        for ctx in list(self.tcps.values()):
            if ctx.phase is not Phase.OFFLOADED or ctx in self._hw_notified:
                continue
            self._hw_notified.add(ctx)
            self._retrieve(ctx, TcpUploadReason.HardwareFailure)
            ctx.aborted = True  # later I/O completes with REQUEST_ABORTED
            self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateAbort, 0)

    def _terminate_after_failure(self, mbl: MiniportOffloadBlockList) -> None:
        """R-TRM-27 / §6.32: Retrieve/HardwareFailure + Abort for the terminated connections not told yet,
        then abort their outstanding sends, receives and disconnects (REQUEST_ABORTED on an aborted
        connection, R-SEND-08), complete the terminate with FAILURE (no state to return, R-TRM-08), then
        Retrieve/HardwareFailure + Abort for every connection still offloaded."""
        assert self.ndis is not None
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if isinstance(ctx, TcpCtx) and ctx.phase is not Phase.TERMINATED and ctx not in self._hw_notified:
                self._hw_notified.add(ctx)
                if ctx.upload_requested is None:  # _retrieve skips a connection already terminating
                    ctx.upload_requested = int(TcpUploadReason.HardwareFailure)
                    self.counters["retrieves"] += 1
                    self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateRetrieve, ctx.upload_requested)
                ctx.aborted = True
                self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateAbort, 0)
        freed: list[Any] = []
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if ctx is None:
                node.status = SUCCESS if slot is None else NdisStatus.FAILURE
                continue
            if isinstance(ctx, TcpCtx) and ctx.phase is not Phase.TERMINATED:
                ctx.phase = Phase.TERMINATING
                self._abort_io(ctx, NdisStatus.REQUEST_ABORTED)
                ctx.conn.detach()
                freed.append(ctx)
            elif isinstance(ctx, PathCtx | NeighborCtx) and ctx.phase is Phase.OFFLOADED:
                ctx.phase = Phase.TERMINATING
                freed.append(ctx)
            node.status = NdisStatus.FAILURE
        self.ndis.m_terminate_offload_complete(self.adapter, mbl)
        for ctx in freed:
            self._hw_notified.discard(ctx)
            self._free(ctx)
        self._hw_failure_events()
        self._maybe_done()

    def hardware_reset(self) -> None:
        """The NIC needs a reset: ask the host to upload everything (NDIS_STATUS_UPLOAD_ALL). Connections
        keep running until their terminate, so no byte is lost; new sends complete UPLOAD_IN_PROGRESS
        (R-SEND-14) and new offloads fail until every object is back."""
        assert self.ndis is not None
        self.counters["hw_resets"] += 1
        self.upload_all_pending = True
        self.ndis.m_indicate_status_ex(self.adapter, NdisStatus.UPLOAD_ALL)

    # ============================================================ query / update / invalidate

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.scheduler.call_soon(self._process_query, mbl, label="target query")

    def _process_query(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        if self.hw_failed:
            for node in iter_tree(mbl):
                node.status = NdisStatus.FAILURE  # R-QRY-09 step 1
            self.ndis.m_query_offload_state_complete(self.adapter, mbl)
            self._hw_failure_events()
            return
        now = self.scheduler.now
        tps = self.params.ticks_per_second
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if ctx is None:
                node.status = SUCCESS if slot is None else NdisStatus.FAILURE
                continue
            if isinstance(ctx, TcpCtx) and ctx.phase is Phase.OFFLOADED:
                for i, s in enumerate(node.state):
                    if type(s) is TcpOffloadStateConst:
                        node.state[i] = _clone(ctx.const)
                    elif type(s) is TcpOffloadStateCached:
                        node.state[i] = _clone(ctx.cached)
                    elif type(s) is TcpOffloadStateDelegated:
                        conn = ctx.conn
                        if conn.state in EXPORTABLE_STATES and not ctx.closed_by_syn:
                            d = conn.export_state(now, tps, flush_delayed_ack=False)[2]
                            self._sec_export(ctx, d)
                        else:
                            d = self._closed_state(ctx, now)
                        for name in _DELEGATED_FIELDS:
                            setattr(s, name, getattr(d, name))
                        s.dwnd = ctx.dwnd
                        s.send_data_head = s.send_data_tail = s.buffered_data = None
                        s.send_backlog_size = self.send_backlog(conn)
                        s.receive_backlog_size = conn.readable
                self._pump(ctx)
                node.status = SUCCESS
            elif isinstance(ctx, NeighborCtx | PathCtx) and ctx.phase is Phase.OFFLOADED:
                for s in node.state:
                    if type(s) is NeighborOffloadStateDelegated and isinstance(ctx, NeighborCtx):
                        s.nic_reachability_delta = ((now - ctx.nrt) // self.tick_ns) & MASK
                node.status = SUCCESS
            else:
                node.status = NdisStatus.FAILURE
        self.ndis.m_query_offload_state_complete(self.adapter, mbl)

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.scheduler.call_soon(self._process_update, mbl, label="target update")

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        touched: set[TcpCtx] = set()
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if ctx is None:
                node.status = SUCCESS if slot is None else NdisStatus.FAILURE
                continue
            if getattr(ctx, "phase", None) is not Phase.OFFLOADED:
                node.status = NdisStatus.FAILURE
                continue
            if isinstance(ctx, NeighborCtx):
                c = _state_of(node, NeighborOffloadStateCached)
                if c is not None:
                    ctx.cached = _clone(c)
                    ctx.hrt = self.scheduler.now - c.host_reachability_delta * self.tick_ns  # R-NBR-01
                for p in iter_dependents_of(node):
                    pctx = p.miniport_offload_context.value if p.miniport_offload_context is not None else None
                    if isinstance(pctx, PathCtx) and pctx.neighbor is not ctx:  # relink
                        pctx.neighbor.children.discard(pctx)
                        pctx.neighbor = ctx
                        ctx.children.add(pctx)
                for p in ctx.children:
                    touched.update(p.children)
            elif isinstance(ctx, PathCtx):
                c = _state_of(node, PathOffloadStateCached)
                if c is not None:
                    ctx.cached = _clone(c)
                    for t in ctx.children:
                        t.conn.set_path_mtu(c.path_mtu)
                touched.update(ctx.children)
            elif isinstance(ctx, TcpCtx):
                c = _state_of(node, TcpOffloadStateCached)
                if c is not None:
                    old = ctx.cached
                    ctx.cached = _clone(c)
                    # Nagle/keepalive switches, KA timers, MaxRT and the flag-driven actions reach the engine.
                    ctx.conn.update_cached(ctx.cached, self.scheduler.now, self.params.ticks_per_second)
                    nagle = TcpCachedFlags.NAGLING_ENABLED
                    if old.flags & nagle and not c.flags & nagle and ctx.conn.cfg.nodelay_pushes:
                        ctx.conn.push(self.scheduler.now)  # what Nagle held goes out now (sent by _pump)
                    touched.add(ctx)
            node.status = SUCCESS
        for t in touched:
            t.builder = self._builder(t.path, t.cached)
        self.ndis.m_update_offload_complete(self.adapter, mbl)
        for t in touched:
            if t.phase is Phase.OFFLOADED:
                self._pump(t)  # UPDATE_RCV_WND may have queued a window update

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self.scheduler.call_soon(self._process_invalidate, mbl, label="target invalidate")

    def _process_invalidate(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        if self.hw_failed:
            for node in iter_tree(mbl):
                node.status = NdisStatus.FAILURE  # R-INV-06: FAILURE only for corrupt hardware
            self.ndis.m_invalidate_offload_complete(self.adapter, mbl)
            self._hw_failure_events()
            return
        affected: list[TcpCtx] = []
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if ctx is None:
                node.status = SUCCESS if slot is None else NdisStatus.FAILURE
                continue
            ctx.valid = False
            if isinstance(ctx, TcpCtx):
                affected.append(ctx)
            elif isinstance(ctx, PathCtx):
                affected.extend(ctx.children)
            elif isinstance(ctx, NeighborCtx):
                for p in ctx.children:
                    affected.extend(p.children)
            node.status = SUCCESS
        self.ndis.m_invalidate_offload_complete(self.adapter, mbl)
        for t in affected:  # §6.7: stop sending and ask for upload
            self._retrieve(t, TcpUploadReason.InvalidState)


def iter_dependents_of(node: MiniportOffloadBlockList) -> list[MiniportOffloadBlockList]:
    out = []
    d = node.dependent_block_list
    while d is not None:
        out.append(d)
        d = d.next_block
    return out


__all__ = ["EmulatedNic", "OffloadTarget", "TargetLimits"]
