"""The host stack's transport layer: TCP demultiplexing, listeners, per-connection TCBs, timers, output.

`TcpTransport` runs connections with the `chimney.tcp` engine behind each TCB's I/O path object
(`HostPath` today; the chimney's path once a connection is offloaded). A `Tcb` keeps everything an
offload needs: the engine `Connection`, the shared `route.Path` and the `Neighbor` it resolves to.

Swapping a connection's I/O (the "logical switch" of contract §1.2):

    tcb = transport.find(local_ip, local_port, remote_ip, remote_port)
    tcb.conn, tcb.ip_path, tcb.neighbor          # TCP, path and neighbor state for the offload tree
    tcb.set_path(chimney_path)                   # old path detached (timer stopped, no more output)
    ...                                          # on upload: tcb.conn = imported; tcb.set_path(HostPath(transport, tcb))

Any `TcbPath` implementation reports the engine's events with `tcb.deliver(events)`; segments the
host's demux still receives for the TCB arrive at `path.input(seg, frame)` (the non-offload path).
TIME-WAIT stays with the host (R-TMR-03): a TCB is in the demux table until its engine says Closed.

Offloads (interfaces with `rx_batched` / `tso_max`, e.g. a TAP): segments of one receive drain are
held per connection, in-order runs merged as Linux GRO would (`gro_merged`), and the engine's output
is sent at the drain end (`drain_end`, or every `rx_batch` segments / `rx_batch_bytes`) with
superseded pure ACKs left out (`acks_coalesced`); with `tso` the engine queues up to `tso_max` bytes
per segment and `_send_tso` hands them to the link with a NEEDS_CSUM + GSO virtio_net_hdr.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any, Protocol

from chimney.host.ip import HostIp, IcmpError
from chimney.host.neighbor import Neighbor, NeighborState
from chimney.host.route import Path
from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VnetHdr,
)
from chimney.ndis.offload_state import TcpConnectionState
from chimney.net.frame import Frame, TcpFrameBuilder
from chimney.net.icmp import ICMP_DEST_UNREACH
from chimney.net.icmpv6 import ICMP6_DEST_UNREACH
from chimney.net.tcp import ACK, PSH, RST, SYN, TcpOptions, TcpSegment
from chimney.sim.scheduler import NS_PER_S, Timer
from chimney.tcp import (
    Closed,
    Connected,
    Connection,
    Listener,
    PeerClosed,
    Reset,
    TcpConfig,
    TimedOut,
    isn_rfc6528,
    linux_profile,
    rst_for,
    seq_le,
)
from chimney.tcp.events import Event

IPPROTO_TCP = 6
EPHEMERAL_LOW = 32768  # Linux net.ipv4.ip_local_port_range
EPHEMERAL_HIGH = 60999
HDR_SCRATCH = 256  # >= TcpFrameBuilder.header_room for any family/VLAN (14 + 4 + 40 + 60)
BUILDER_CACHE_MAX = 4096  # distinct (MACs, addresses, VLAN) header templates kept for sharing
#: Largest segment software GRO holds for merging: a GSO super-frame or jumbo frame is already large, and
#: joining several would copy them; such segments go to the engine at once.
GRO_HOLD_MAX = 16384
MASK = 0xFFFFFFFF
_REACHABLE = NeighborState.REACHABLE

Key = tuple[bytes, int, bytes, int]  # (local ip, local port, remote ip, remote port)


class TcbOwner(Protocol):
    """Who hears a TCB's events (a `Socket`)."""

    def on_tcb_events(self, tcb: Tcb, events: list[Event]) -> None: ...


class ListenerOwner(Protocol):
    def on_listener_ready(self, listener: HostListener) -> None: ...


class TransportCounters:
    """Transport-wide counters (per-segment ones are plain ints: this is the hot path)."""

    __slots__ = (
        "acks_coalesced",
        "active_opens",
        "closed",
        "established",
        "gro_merged",
        "icmp_errors",
        "passive_opens",
        "pmtu_updates",
        "queued_for_resolution",
        "rst_sent",
        "sack_trimmed_for_mtu",
        "segs_in",
        "segs_out",
        "timer_arms",
        "timer_fires",
        "tso_frames_out",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class TcbPath:
    """How one TCB's I/O is carried out. `HostPath` runs the host engine; a chimney path (later)
    sends/receives through the offload target. Both report events with `tcb.deliver(events)`."""

    __slots__ = ("tcb",)

    kind = "abstract"

    def __init__(self, tcb: Tcb) -> None:
        self.tcb = tcb

    # user side (the socket layer calls these)
    def send(self, data: memoryview | bytes) -> int:
        raise NotImplementedError

    def recv(self, max_bytes: int) -> memoryview | bytes:
        raise NotImplementedError

    def recv_view(self, max_bytes: int) -> memoryview | bytes:
        """Like recv, but may return less than is buffered so that nothing is copied (a short read)."""
        return self.recv(max_bytes)

    @property
    def readable(self) -> int:
        raise NotImplementedError

    @property
    def send_space(self) -> int:
        raise NotImplementedError

    @property
    def send_queued(self) -> int:
        """Bytes in the send buffer (unacknowledged plus unsent)."""
        raise NotImplementedError

    @property
    def state(self) -> TcpConnectionState:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def configure(self, **changes: Any) -> None:
        """Apply `TcpConfig` field changes (socket options) to the running connection."""
        raise NotImplementedError

    def want_send_space(self) -> None:
        """The user is waiting for send space: report it with a `SendSpace` event."""
        raise NotImplementedError

    # network side (the transport calls these)
    def input(self, seg: TcpSegment, frame: Frame | None) -> None:
        raise NotImplementedError

    def icmp_error(self, err: IcmpError) -> None:
        raise NotImplementedError

    def on_timer(self) -> None:
        """The TCB's scheduler timer fired (paths that do not use it ignore it)."""

    def detach(self) -> None:
        """This path no longer carries the TCB's I/O (it was swapped out)."""


class Tcb:
    """One connection as the host stack sees it: 4-tuple, I/O path, engine connection, path and neighbor
    state objects, frame builder, the single scheduler timer and the user-visible error state."""

    __slots__ = (
        "builder",
        "close_reason",
        "conn",
        "error",
        "established",
        "family",
        "hdr",
        "hdr_mv",
        "iface",
        "ip_path",
        "key",
        "l2_len",
        "listener",
        "local",
        "local_port",
        "neighbor",
        "owner",
        "path",
        "peer_closed",
        "remote",
        "remote_port",
        "soft_error",
        "timer",
        "timer_when",
        "transport",
    )

    def __init__(self, transport: TcpTransport, conn: Connection, ip_path: Path, local_port: int, remote_port: int):
        self.transport = transport
        self.conn = conn
        self.ip_path = ip_path
        self.local = ip_path.source
        self.remote = ip_path.destination
        self.local_port = local_port
        self.remote_port = remote_port
        self.key: Key = (self.local, local_port, self.remote, remote_port)
        self.family = ip_path.family
        self.iface = transport.ip.interfaces[ip_path.interface]
        # Looked up, never created: NeighborCache.resolve() must create the entry so that it solicits.
        self.neighbor: Neighbor | None = transport.ip.neighbors[ip_path.interface].get(ip_path.next_hop)
        self.builder: TcpFrameBuilder | None = None
        self.l2_len = 14
        # The transport's one header scratch buffer: every frame is copied out of it before it is sent.
        self.hdr = transport.hdr
        self.hdr_mv = transport.hdr_mv
        self.timer: Timer | None = None
        self.timer_when: int | None = None
        self.owner: TcbOwner | None = None
        self.listener: HostListener | None = None
        self.error = 0  # errno of a fatal error (reset, refused, timeout), 0 if none
        self.soft_error = 0  # last ICMP soft error; reported instead of ETIMEDOUT (as Linux does)
        self.established = False
        self.peer_closed = False
        self.close_reason: str | None = None
        self.path: TcbPath = HostPath(transport, self)
        if self.iface.tso_max and transport.tso:
            conn.tso_max = self.iface.tso_max

    def __repr__(self) -> str:
        import ipaddress

        loc = ipaddress.ip_address(self.local)
        rem = ipaddress.ip_address(self.remote)
        return f"<Tcb {loc}:{self.local_port} -> {rem}:{self.remote_port} {self.path.kind} {self.path.state.name}>"

    @property
    def state(self) -> TcpConnectionState:
        return self.path.state

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def refresh_path(self) -> None:
        """Re-read the route's path and next-hop neighbor (after a route change); headers are rebuilt
        for the next segment. The 4-tuple (so the source address) never changes."""
        tr = self.transport
        p = tr.ip.path(self.local, self.remote)
        if p is None:
            return
        self.ip_path = p
        self.iface = tr.ip.interfaces[p.interface]
        self.neighbor = tr.ip.neighbors[p.interface].get(p.next_hop)
        self.builder = None
        self.conn.tso_max = self.iface.tso_max if tr.tso else 0
        if isinstance(self.path, HostPath) and p.mtu < self.conn.cfg.path_mtu:
            self.conn.set_path_mtu(p.mtu)

    def set_path(self, path: TcbPath) -> TcbPath:
        """Route this connection's I/O through `path` from now on; returns the old path (detached)."""
        old = self.path
        old.detach()
        self.path = path
        return old

    def deliver(self, events: list[Event]) -> None:
        """Engine events for this connection (from whichever path carries it)."""
        for ev in events:
            t = type(ev)
            if t is Reset:
                self.error = errno.ECONNREFUSED if ev.reason == "refused" else errno.ECONNRESET  # type: ignore[union-attr]
            elif t is TimedOut:
                self.error = self.soft_error or errno.ETIMEDOUT
            elif t is PeerClosed:
                self.peer_closed = True
            elif t is Connected:
                self.established = True
                self.transport.counters.established += 1
                if self.listener is not None:
                    self.listener._child_established(self)
            elif t is Closed:
                self.close_reason = ev.reason  # type: ignore[union-attr]
                self.transport._tcb_closed(self)
        owner = self.owner
        if owner is not None:
            owner.on_tcb_events(self, events)


class HostPath(TcbPath):
    """The host's own engine carries the connection: segments in via the demux, out via `emit`."""

    __slots__ = ("conn", "detached", "transport")

    kind = "host"

    def __init__(self, transport: TcpTransport, tcb: Tcb) -> None:
        super().__init__(tcb)
        self.transport = transport
        self.conn = tcb.conn
        self.detached = False

    @property
    def readable(self) -> int:
        return self.conn.rxq.size

    @property
    def send_space(self) -> int:
        return self.conn.send_space

    @property
    def send_queued(self) -> int:
        return len(self.conn.sndbuf)

    @property
    def state(self) -> TcpConnectionState:
        return self.conn.state

    def send(self, data: memoryview | bytes) -> int:
        n = self.conn.send(data, self.transport.scheduler.now)
        self.flush()
        return n

    def recv(self, max_bytes: int) -> memoryview | bytes:
        data = self.conn.recv(max_bytes, self.transport.scheduler.now)
        self.flush()
        return data

    def recv_view(self, max_bytes: int) -> memoryview | bytes:
        # At most the queue's first entry (one received segment, or one GRO/GSO run of 64 KB): the
        # reader gets a view of the frame itself instead of a join of many, which cost ~0.7 ms per MB.
        q = self.conn.rxq
        if q.size:
            head = q.head_len
            if head < q.size and (max_bytes < 0 or head < max_bytes):
                max_bytes = head
        return self.recv(max_bytes)

    def shutdown(self) -> None:
        self.conn.shutdown(self.transport.scheduler.now)
        self.flush()

    def close(self) -> None:
        self.conn.close(self.transport.scheduler.now)
        self.flush()

    def abort(self) -> None:
        self.conn.abort(self.transport.scheduler.now)
        self.flush()

    def configure(self, **changes: Any) -> None:
        conn = self.conn
        conn.cfg = conn.cfg.replace(**changes)
        if conn.cfg.keepalive and ("keepalive" in changes or "keepalive_idle_ns" in changes) and conn.state in (
            TcpConnectionState.Established, TcpConnectionState.CloseWait, TcpConnectionState.FinWait2
        ):
            # The engine only (re)arms keepalive on ACK arrival; arm it for an idle connection now.
            conn._ka_deadline = self.transport.scheduler.now + conn.cfg.keepalive_idle_ns
            conn._ka_probes = 0
        elif "keepalive" in changes and not changes["keepalive"]:
            conn._ka_deadline = None
        self.flush()

    def want_send_space(self) -> None:
        # The engine flags this itself only after a short send(); a caller that saw zero space
        # never called send(), so set the same flag (needs a public Connection hook).
        self.conn._send_blocked = True

    def input(self, seg: TcpSegment, frame: Frame | None) -> None:
        conn = self.conn
        tr = self.transport
        now = tr.scheduler.now
        una = conn.snd_una
        conn.receive(seg, now)
        if conn.snd_una != una:
            tr._confirm_reachability(self.tcb, now)
        self.flush()

    def icmp_error(self, err: IcmpError) -> None:
        conn = self.conn
        tcb = self.tcb
        tr = self.transport
        now = tr.scheduler.now
        # RFC 5927 4.1: only believe errors quoting a sequence number we have in flight.
        una = conn.snd_una & MASK
        top = conn.snd_max & MASK
        if not (seq_le(una, err.seq) and seq_le(err.seq, top)):
            tr.drops["icmp_seq_not_in_flight"] = tr.drops.get("icmp_seq_not_in_flight", 0) + 1
            return
        tr.counters.icmp_errors += 1
        if err.is_pmtu:
            mtu = tcb.ip_path.mtu  # HostIp already applied (and floored) the report to the shared path
            if mtu < conn.cfg.path_mtu:
                tr.counters.pmtu_updates += 1
                conn.icmp_frag_needed(mtu, now)
            self.flush()
            return
        code = _icmp_errno(err)
        if code in (errno.ECONNREFUSED, errno.ENOPROTOOPT) and conn.state is TcpConnectionState.SynSent:
            # A hard error while connecting ends the attempt (RFC 1122 4.2.3.9; Linux tcp_v4_err).
            tcb.error = code
            conn.abort(now)
        else:
            tcb.soft_error = code
            conn.icmp_soft_error(errno.errorcode.get(code, "icmp"))
        self.flush()

    def on_timer(self) -> None:
        if self.detached:
            return
        conn = self.conn
        now = self.transport.scheduler.now
        d = conn.next_deadline()
        if d is not None and d <= now:
            self.transport.counters.timer_fires += 1
            conn.on_timer(now)
        self.flush()

    def flush(self, coalesce: bool = False) -> None:
        """Transmit what the engine queued, hand its events to the TCB, keep the timer armed.
        `coalesce` (end of a receive batch): a pure ACK followed by one acknowledging more is not sent."""
        if self.detached:
            return
        conn = self.conn
        tcb = self.tcb
        tr = self.transport
        if conn._ack_now and conn.cfg.ack_at_batch_end:
            # An ACK the engine left for the end of a receive batch: whoever flushes ends the batch
            # (a drain end, or input that came outside any drain, e.g. segments replayed at upload).
            conn.flush_ack(tr.scheduler.now)
        if conn._out:
            emit = tr.emit
            segs = conn.pop_segments()
            if coalesce and len(segs) > 1:
                segs = tr._coalesce_acks(segs)
            for seg in segs:
                emit(tcb, seg)
        if conn._events:
            tcb.deliver(conn.pop_events())
        d = conn.next_deadline()
        if d is not None:
            w = tcb.timer_when
            # Re-armed only when the deadline moves earlier; a later one is found lazily on expiry.
            if w is None or d < w:
                tr._arm(tcb, d)

    def kick(self) -> None:
        """Start driving a connection this path just took over (e.g. one imported at upload)."""
        self.detached = False
        self.flush()

    def detach(self) -> None:
        self.detached = True
        t = self.tcb.timer
        if t is not None:
            t.cancel()
        self.tcb.timer = None
        self.tcb.timer_when = None


def _gro_options_ok(o: TcpOptions | None) -> bool:
    """Options a held (mergeable) segment may carry: none, or timestamps only."""
    return o is None or (not o.sack_blocks and o.mss is None and o.wscale is None and not o.unknown)


def _gro_follows(prev: TcpSegment, seg: TcpSegment) -> bool:
    """`seg` continues `prev` exactly as Linux GRO requires: next in sequence, same ACK, window and
    (timestamp) options, no flag but ACK on `prev` (a PSH or FIN ends a run), PSH at most on `seg`."""
    if seg.flags & ~PSH != ACK or prev.flags != ACK or not seg.payload or seg.urg_ptr:
        return False
    if seg.seq != (prev.seq + len(prev.payload)) & MASK or seg.ack != prev.ack or seg.window != prev.window:
        return False
    a = prev.options
    b = seg.options
    if a is None or b is None:
        return a is b
    return not b.sack_blocks and a.ts_val == b.ts_val and a.ts_ecr == b.ts_ecr and _gro_options_ok(b)


def _icmp_errno(err: IcmpError) -> int:
    """Linux icmp_err_convert / icmpv6_err_convert, reduced to the codes a TCP user sees."""
    if err.family == 4:
        if err.type == ICMP_DEST_UNREACH:
            return {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED}.get(
                err.code, errno.EHOSTUNREACH
            )
        return errno.EHOSTUNREACH
    if err.type == ICMP6_DEST_UNREACH:
        return {0: errno.ENETUNREACH, 1: errno.EACCES, 4: errno.ECONNREFUSED}.get(err.code, errno.EHOSTUNREACH)
    return errno.EHOSTUNREACH


class HostListener:
    """A listening port: the engine `Listener` plus the TCBs of its children until accepted."""

    __slots__ = ("cfg", "children", "closed", "engine", "local", "maxseg", "owner", "port", "ready", "transport")

    def __init__(self, transport: TcpTransport, local: bytes | None, port: int, cfg: TcpConfig, backlog: int,
                 maxseg: int | None = None) -> None:
        self.transport = transport
        self.local = local
        self.port = port
        self.cfg = cfg
        self.maxseg = maxseg
        backlog = max(1, backlog)
        self.engine = Listener(port, cfg, isn_secret=transport.isn_secret, syn_backlog=max(backlog, 128),
                               accept_backlog=backlog)
        self.children: dict[Connection, Tcb] = {}
        self.ready = 0  # established children waiting in the engine's accept queue
        self.owner: ListenerOwner | None = None
        self.closed = False

    @property
    def backlog(self) -> int:
        return self.engine.accept_backlog

    @backlog.setter
    def backlog(self, n: int) -> None:
        self.engine.accept_backlog = max(1, n)

    def _child_established(self, tcb: Tcb) -> None:
        self.ready += 1
        if self.owner is not None:
            self.owner.on_listener_ready(self)

    def accept(self) -> Tcb | None:
        """The next established child (its `owner` is still None: the caller adopts it)."""
        conn = self.engine.accept()
        if conn is None:
            return None
        self.ready -= 1
        tcb = self.children.pop(conn)
        tcb.listener = None
        return tcb

    def close(self) -> None:
        """Stop listening; children not yet accepted are reset (as closing a Linux listener does)."""
        if self.closed:
            return
        self.closed = True
        self.transport._remove_listener(self)
        for tcb in list(self.children.values()):
            tcb.path.abort()
        self.children.clear()


class TcpTransport:
    """TCP for one host: registers with `HostIp` for protocol 6 input, ICMP errors and neighbor changes."""

    def __init__(self, ip: HostIp, config: TcpConfig | None = None) -> None:
        self.ip = ip
        self.scheduler = ip.scheduler
        self.config = config if config is not None else linux_profile()
        self.conns: dict[Key, Tcb] = {}
        self.listeners: dict[tuple[bytes | None, int], HostListener] = {}
        self.counters = TransportCounters()
        self.drops: dict[str, int] = {}
        rng = self.scheduler.rng(f"tcp/{ip.name}")
        self.isn_secret = rng.randbytes(16)
        self._next_port = rng.randrange(EPHEMERAL_LOW, EPHEMERAL_HIGH + 1)
        self._ports: dict[tuple[bytes, int], int] = {}  # (local ip, port) -> connections using it
        self.confirm_interval = NS_PER_S  # at most one reachability confirmation per neighbor per second
        # Memory per idle connection: one header scratch buffer (Ethernet+802.1Q+IPv6+60-byte TCP fit)
        # and one immutable frame builder per (MACs, addresses, VLAN), shared by all TCBs.
        self.hdr = bytearray(HDR_SCRATCH)
        self.hdr_mv = memoryview(self.hdr)
        self._builders: dict[tuple[bytes, bytes, bytes, bytes, int, int], TcpFrameBuilder] = {}
        # (gso type, header length, MSS, csum start, csum offset) -> the TSO VnetHdr: a bulk transfer
        # repeats one or two, and the port packs a header object it has seen before only once.
        self._tso_hdrs: dict[tuple[int, int, int, int, int], VnetHdr] = {}
        # Offload use: TSO on interfaces that offer it; on links that report receive drains, output
        # waits for the drain end (at most `rx_batch` segments), ACKs coalesced.
        self.tso = True
        self.rx_batch = 32
        self.rx_batch_bytes = 1 << 20  # big frames (GSO, jumbo): an ACK at least every MB within one drain
        self._pending: dict[HostPath, int] = {}  # connection -> payload bytes it took in this batch
        self._pending_segs = 0
        self._pending_bytes = 0
        self._gro: dict[HostPath, list[TcpSegment]] = {}
        self._gro_tail: list[TcpSegment] | None = None  # the run the last segment in joined (gro_extend)
        # Header-predicted continuations of `_gro_tail`: only their payloads (headers equal the run's
        # last segment's but for seq), so no segment object per frame; `_gro_next` is the seq the next
        # one must carry (-1: the run's last segment ends it, e.g. PSH).
        self._gro_ext: list[memoryview] = []
        self._gro_next = -1
        ip.tcp_gro = self.gro_extend
        ip.tcp_predicted = self.input_predicted
        ip.protocols[IPPROTO_TCP] = self.input
        ip.error_listeners.append(self.icmp_error)
        ip.drain_listeners.append(self.drain_end)

    # -- lookups (the chimney's entry points) -------------------------------------------------------

    def find(self, local: bytes, local_port: int, remote: bytes, remote_port: int) -> Tcb | None:
        return self.conns.get((local, local_port, remote, remote_port))

    def connections(self) -> Iterator[Tcb]:
        return iter(list(self.conns.values()))

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- configuration helpers ----------------------------------------------------------------------

    def cfg_for_path(self, cfg: TcpConfig, path: Path, maxseg: int | None = None) -> TcpConfig:
        """`cfg` with the path MTU applied: the MSS we advertise follows the path (RFC 9293 3.7.1)."""
        hdr = 20 if path.family == 4 else 40
        mss = path.mtu - hdr - 20
        if maxseg is not None and maxseg < mss:
            mss = maxseg
        iface = self.ip.interfaces.get(path.interface)
        # Links that report their receive drains get one ACK per drain (`drain_end` flushes it).
        batched = iface is not None and iface.rx_batched
        if cfg.path_mtu == path.mtu and cfg.mss == mss and cfg.ip_header_size == hdr and cfg.ack_at_batch_end == batched:
            return cfg
        return cfg.replace(path_mtu=path.mtu, mss=mss, ip_header_size=hdr, ack_at_batch_end=batched)

    # -- active open --------------------------------------------------------------------------------

    def connect(
        self,
        remote: bytes,
        remote_port: int,
        *,
        local: bytes | None = None,
        local_port: int = 0,
        cfg: TcpConfig | None = None,
        maxseg: int | None = None,
        owner: TcbOwner | None = None,
    ) -> Tcb:
        """Active open: allocate a port, build the TCB on the route's path and send the SYN."""
        if not 0 < remote_port < 65536:
            raise OSError(errno.EINVAL, f"bad remote port {remote_port}")
        path = self.ip.path(local, remote)
        if path is None:
            raise OSError(errno.ENETUNREACH, "no route to host")
        src = path.source
        if local_port == 0:
            local_port = self._ephemeral(src, remote, remote_port)
        elif (src, local_port, remote, remote_port) in self.conns:
            raise OSError(errno.EADDRINUSE, "4-tuple in use")
        c = self.cfg_for_path(cfg if cfg is not None else self.config, path, maxseg)
        now = self.scheduler.now
        iss = isn_rfc6528(self.isn_secret, src, local_port, remote, remote_port, now)
        conn = Connection(c, local_port, remote_port, iss)
        tcb = Tcb(self, conn, path, local_port, remote_port)
        tcb.owner = owner
        self._register(tcb)
        self.counters.active_opens += 1
        conn.connect(now)
        tcb.path.flush()  # type: ignore[attr-defined]
        return tcb

    def _ephemeral(self, local: bytes, remote: bytes, remote_port: int) -> int:
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        for _ in range(span):
            p = self._next_port
            self._next_port = EPHEMERAL_LOW + (p + 1 - EPHEMERAL_LOW) % span
            if (local, p, remote, remote_port) in self.conns:
                continue
            if (local, p) in self.listeners or (None, p) in self.listeners:
                continue
            return p
        raise OSError(errno.EADDRNOTAVAIL, "no ephemeral port left")

    def _register(self, tcb: Tcb) -> None:
        self.conns[tcb.key] = tcb
        k = (tcb.local, tcb.local_port)
        self._ports[k] = self._ports.get(k, 0) + 1

    # -- passive open -------------------------------------------------------------------------------

    def listen(
        self,
        port: int,
        backlog: int = 128,
        *,
        local: bytes | None = None,
        cfg: TcpConfig | None = None,
        maxseg: int | None = None,
        owner: ListenerOwner | None = None,
    ) -> HostListener:
        if port == 0:
            port = self._ephemeral(local or b"", b"", 0)
        if not 0 < port < 65536:
            raise OSError(errno.EINVAL, f"bad port {port}")
        if (local, port) in self.listeners:
            raise OSError(errno.EADDRINUSE, f"port {port} already listening")
        lst = HostListener(self, local, port, cfg if cfg is not None else self.config, backlog, maxseg)
        lst.owner = owner
        self.listeners[(local, port)] = lst
        return lst

    def _remove_listener(self, lst: HostListener) -> None:
        if self.listeners.get((lst.local, lst.port)) is lst:
            del self.listeners[(lst.local, lst.port)]

    def _listen_input(self, lst: HostListener, seg: TcpSegment, frame: Frame) -> None:
        local = frame.ip_dst
        remote = frame.ip_src
        assert local is not None and remote is not None
        eng = lst.engine
        path: Path | None = None
        if seg.flags & (SYN | ACK | RST) == SYN:
            path = self.ip.path(local, remote)
            if path is None:
                self._drop("syn_no_route")
                return
            # The child copies the listener's config when it is created: give it this path's MTU/MSS.
            eng.cfg = self.cfg_for_path(lst.cfg, path, lst.maxseg)
        now = self.scheduler.now
        child = eng.receive(seg, remote, local, now)
        for r in eng.pop_segments():
            self.send_control(local, remote, r)
        if child is None:
            return
        assert path is not None
        tcb = Tcb(self, child, path, lst.port, seg.src_port)
        tcb.listener = lst
        lst.children[child] = tcb
        self._register(tcb)
        self.counters.passive_opens += 1
        tcb.path.flush()  # type: ignore[attr-defined]

    # -- input --------------------------------------------------------------------------------------

    def input(self, frame: Frame, iface: Any) -> None:
        """HostIp protocol handler for IPPROTO_TCP."""
        seg = frame.tcp
        if seg is None:
            self._drop("no_tcp_header")
            return
        self.counters.segs_in += 1
        tail = self._gro_tail
        self._gro_tail = None
        tcb = self.conns.get((frame.ip_dst, seg.dst_port, frame.ip_src, seg.src_port))  # type: ignore[arg-type]
        if self._gro_ext and (tcb is None or self._gro.get(tcb.path) is not tail or not iface.rx_batched):
            # The payload-only continuations belong to another run than this segment's: make them
            # segments so the run's list is complete whoever touches it next.
            self._gro_materialize(tail)  # type: ignore[arg-type]
        if tcb is not None:
            path = tcb.path
            if type(path) is HostPath and iface.rx_batched:
                self._batched_input(path, seg)
            else:
                path.input(seg, frame)
            return
        port = seg.dst_port
        lst = self.listeners.get((frame.ip_dst, port)) or self.listeners.get((None, port))
        if lst is not None:
            self._listen_input(lst, seg, frame)
            return
        # RFC 9293 3.10.7.1: a segment for a CLOSED port gets a RST (never one for a RST).
        self._drop("no_socket")
        r = rst_for(seg)
        if r is not None:
            self.send_control(frame.ip_dst, frame.ip_src, r)  # type: ignore[arg-type]

    def input_predicted(self, key: tuple[bytes, int, bytes, int], seg: TcpSegment, iface: Any) -> bool:
        """IP's header prediction found a segment of a known flow (`HostIp._vnet_predicted`): deliver it
        without a parsed frame. False, with nothing done, when it is not for a host connection on a
        batched link (the caller then parses the frame and takes `input`)."""
        tcb = self.conns.get(key)
        if tcb is None or type(tcb.path) is not HostPath or not iface.rx_batched:
            return False
        self.counters.segs_in += 1
        tail = self._gro_tail
        self._gro_tail = None
        if self._gro_ext and self._gro.get(tcb.path) is not tail:
            self._gro_materialize(tail)  # type: ignore[arg-type]
        self._batched_input(tcb.path, seg)  # type: ignore[arg-type]
        return True

    def _batched_input(self, path: HostPath, seg: TcpSegment) -> None:
        """A segment of a host connection on a link that reports its receive drains."""
        # Receive offload in software (GRO): in-order data of one burst is held and handed to the
        # engine as at most two segments at the drain end; anything else goes straight in.
        self._pending_segs += 1
        self._pending_bytes += len(seg.payload)
        gro = self._gro
        held = gro.get(path)
        plen = len(seg.payload)
        if held is not None:
            ext = self._gro_ext  # non-empty only when `held` is the tail run (see above)
            if ext:
                self._gro_ext = []
                last = self._gro_ext_last(held, ext)
            else:
                last = held[-1]
            if plen <= GRO_HOLD_MAX and _gro_follows(last, seg):
                if ext:
                    self._gro_ext = ext
                    self._gro_materialize(held)
                held.append(seg)
                self._gro_tail = held
                self._gro_next = (seg.seq + len(seg.payload)) & MASK if seg.flags == ACK else -1
                if self._pending_segs >= self.rx_batch or self._pending_bytes >= self.rx_batch_bytes:
                    self.drain_end()
                return
            self._gro_release(path, gro.pop(path), ext, last)
        if seg.flags == ACK and 0 < plen <= GRO_HOLD_MAX and _gro_options_ok(seg.options):
            gro[path] = self._gro_tail = [seg]
            self._gro_next = (seg.seq + len(seg.payload)) & MASK
        else:
            self._gro_tail = None
            # HostPath.input without its flush (that waits for the drain end).
            conn = path.conn
            una = conn.snd_una
            conn.receive(seg, self.scheduler.now)
            if conn.snd_una != una:
                self._confirm_reachability(path.tcb, self.scheduler.now)
            pend = self._pending
            pend[path] = pend.get(path, 0) + plen
        if self._pending_segs >= self.rx_batch or self._pending_bytes >= self.rx_batch_bytes:
            self.drain_end()

    def gro_extend(self, seq: int, payload: memoryview) -> bool:
        """The IP layer's header-prediction path: a frame whose headers equal, byte for byte, those of
        the last segment held for GRO except the sequence number (and IP ID / checksums, verified by
        the caller) continues that run when `seq` follows it. False: take the ordinary path.
        Only the payload is kept (`_gro_ext`); the segment objects are built once per run."""
        if seq != self._gro_next or self._gro_tail is None:
            return False
        n = len(payload)
        self._gro_ext.append(payload)
        self._gro_next = (seq + n) & MASK
        self.counters.segs_in += 1
        self._pending_segs += 1
        self._pending_bytes += n
        if self._pending_segs >= self.rx_batch or self._pending_bytes >= self.rx_batch_bytes:
            self.drain_end()
        return True

    def _gro_materialize(self, held: list[TcpSegment]) -> None:
        """Make the payload-only continuations of the tail run `held` ordinary list entries (the run is
        about to be touched by the ordinary path). Release joins all but the last segment anyway, so
        they are joined now: `held` becomes [merged, last], counted in `gro_merged` as release would."""
        ext = self._gro_ext
        self._gro_ext = []
        last = self._gro_ext_last(held, ext)
        count = len(held) + len(ext)
        if count > 2:
            first = held[0]
            parts = [h.payload for h in held]
            parts += ext[:-1]
            held[:] = [TcpSegment(first.src_port, first.dst_port, first.seq, first.ack, ACK, first.window,
                                  b"".join(parts), first.options)]
            self.counters.gro_merged += count - 2
        held.append(last)

    @staticmethod
    def _gro_ext_last(held: list[TcpSegment], ext: list[memoryview]) -> TcpSegment:
        """The segment the last of `ext` stands for (headers of `held[-1]`, its own seq)."""
        p = held[-1]
        end = p.seq + len(p.payload)
        for pl in ext:
            end += len(pl)
        lp = ext[-1]
        return TcpSegment(p.src_port, p.dst_port, (end - len(lp)) & MASK, p.ack, ACK, p.window, lp, p.options)

    def drain_end(self) -> None:
        """The link finished a burst of received frames: send what the batched connections queued."""
        tail = self._gro_tail
        self._gro_tail = None
        self._gro_next = -1
        gro = self._gro
        if gro:
            self._gro = {}
            for path, held in gro.items():
                if held is tail and self._gro_ext:
                    ext = self._gro_ext
                    self._gro_ext = []
                    self._gro_release(path, held, ext)
                else:
                    self._gro_release(path, held)
        elif self._gro_ext:
            self._gro_ext = []
        pend = self._pending
        if not pend:
            return
        self._pending = {}
        self._pending_segs = 0
        self._pending_bytes = 0
        now = self.scheduler.now
        for path, nbytes in pend.items():
            conn = path.conn
            if (nbytes > conn.snd_mss or conn._ack_now) and conn.ack_pending and not path.detached:
                # More than a full segment since the last ACK (a GSO frame, an odd tail): acknowledge
                # now, as Linux does after GRO (__tcp_ack_snd_check), instead of a delayed-ACK wait.
                conn.flush_ack(now)
            path.flush(True)

    def _gro_release(self, path: HostPath, held: list[TcpSegment], ext: list[memoryview] | None = None,
                     last: TcpSegment | None = None) -> None:
        """Hand held in-order segments to the engine: all but the last merged into one segment, then the
        last, so the engine counts two segments and acknowledges at once (as Linux does after GRO).
        `ext`: payloads that continue `held` with its last segment's headers (`gro_extend`)."""
        conn = path.conn
        now = self.scheduler.now
        una = conn.snd_una
        first = held[0]
        if ext:
            if last is None:
                last = self._gro_ext_last(held, ext)
            end = (last.seq + len(last.payload)) & MASK
            count = len(held) + len(ext)
            if count > 2:
                parts = [h.payload for h in held]
                parts += ext[:-1]
                conn.receive(TcpSegment(first.src_port, first.dst_port, first.seq, first.ack, ACK, first.window,
                                        b"".join(parts), first.options), now)
                self.counters.gro_merged += count - 2
            else:
                conn.receive(first, now)
            conn.receive(last, now)
        else:
            last = held[-1]
            end = (last.seq + len(last.payload)) & MASK
            if len(held) > 2:
                body = b"".join([h.payload for h in held[:-1]])
                conn.receive(TcpSegment(first.src_port, first.dst_port, first.seq, first.ack, ACK, first.window,
                                        body, first.options), now)
                self.counters.gro_merged += len(held) - 2
                conn.receive(last, now)
            else:
                for h in held:
                    conn.receive(h, now)
        if conn.snd_una != una:
            self._confirm_reachability(path.tcb, now)
        pend = self._pending
        # A run is contiguous in sequence space, so its byte count is the distance it spans.
        pend[path] = pend.get(path, 0) + ((end - first.seq) & MASK)

    def _coalesce_acks(self, segs: list[TcpSegment]) -> list[TcpSegment]:
        """Drop each pure ACK that a later segment of the same burst acknowledges past (what a GRO
        receiver sends). Duplicate ACKs (same ack number: loss signals) and SACK-carrying ones stay."""
        out: list[TcpSegment] = []
        prev: TcpSegment | None = None
        for seg in segs:
            if prev is not None and seg.flags & ACK and seg.ack != prev.ack:
                out.pop()
                self.counters.acks_coalesced += 1
            out.append(seg)
            o = seg.options
            prev = seg if seg.flags == ACK and not seg.payload and (o is None or not o.sack_blocks) else None
        return out

    def icmp_error(self, err: IcmpError) -> None:
        if err.proto != IPPROTO_TCP:
            return
        tcb = self.conns.get((err.local, err.local_port, err.remote, err.remote_port))
        if tcb is None:
            self._drop("icmp_no_connection")
            return
        tcb.path.icmp_error(err)

    # -- output -------------------------------------------------------------------------------------

    def emit(self, tcb: Tcb, seg: TcpSegment) -> None:
        """Put one engine segment on the wire (through neighbor resolution when the MAC is not fresh)."""
        self.counters.segs_out += 1
        n = tcb.neighbor
        b = tcb.builder
        if n is not None and n.state is _REACHABLE and b is not None and b.eth_dst == n.mac:
            payload = seg.payload
            if tcb.iface.tso_max and len(payload) > tcb.conn.snd_mss:
                self._send_tso(tcb, b, seg)
                return
            hdr = tcb.hdr_mv
            ip_id = self.ip.next_ip_id() if tcb.family == 4 else 0
            hlen = b.build(hdr, seg, ip_id=ip_id)
            if hlen + len(payload) - tcb.l2_len > tcb.ip_path.mtu:
                hlen = self._fit_mtu(tcb, b, seg, ip_id, hlen)
            tcb.iface.send(b"".join((hdr[:hlen], payload)) if len(payload) else bytes(hdr[:hlen]), None)
            return
        p = tcb.ip_path
        cache = self.ip.neighbors[p.interface]
        if n is None or n.mac is None:
            self.counters.queued_for_resolution += 1
        cache.resolve(p.next_hop, lambda mac: self._send_resolved(tcb, seg, mac))
        if n is None:
            tcb.neighbor = cache.get(p.next_hop)

    def _send_resolved(self, tcb: Tcb, seg: TcpSegment, mac: bytes) -> None:
        b = tcb.builder
        iface = tcb.iface
        if b is None or b.eth_dst != mac or b.eth_src != iface.mac:
            b = tcb.builder = self._builder_for(iface, mac, tcb.local, tcb.remote)
            tcb.l2_len = b.csum_start - (20 if tcb.family == 4 else 40)
            if len(tcb.hdr) < b.header_room:
                tcb.hdr = bytearray(b.header_room)
                tcb.hdr_mv = memoryview(tcb.hdr)
        if tcb.neighbor is None:
            tcb.neighbor = self.ip.neighbors[tcb.ip_path.interface].get(tcb.ip_path.next_hop)
        if iface.tso_max and len(seg.payload) > tcb.conn.snd_mss:
            self._send_tso(tcb, b, seg)
            return
        hdr = tcb.hdr_mv
        ip_id = self.ip.next_ip_id() if tcb.family == 4 else 0
        hlen = b.build(hdr, seg, ip_id=ip_id)
        payload = seg.payload
        if hlen + len(payload) - tcb.l2_len > tcb.ip_path.mtu:
            hlen = self._fit_mtu(tcb, b, seg, ip_id, hlen)
        iface.send(b"".join((hdr[:hlen], payload)) if len(payload) else bytes(hdr[:hlen]), None)

    def _builder_for(self, iface: Any, mac: bytes, local: bytes, remote: bytes) -> TcpFrameBuilder:
        """The shared frame builder for these headers (builders are immutable once built)."""
        key = (iface.mac, mac, local, remote, iface.vlan_id, iface.vlan_prio)
        b = self._builders.get(key)
        if b is None:
            if len(self._builders) >= BUILDER_CACHE_MAX:
                self._builders.clear()  # TCBs keep theirs; only future lookups rebuild
            b = self._builders[key] = TcpFrameBuilder(
                iface.mac, mac, local, remote, vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio
            )
        return b

    def _send_tso(self, tcb: Tcb, b: TcpFrameBuilder, seg: TcpSegment) -> None:
        """One TSO super-segment: headers with the pseudo-header checksum only, a NEEDS_CSUM + GSO
        header telling the link to cut it into snd_mss-byte frames and finish every checksum."""
        iface = tcb.iface
        mss = tcb.conn.snd_mss
        payload = seg.payload
        if tcb.family == 4:
            # The link numbers the frames ip_id, ip_id+1, ...: reserve the whole run (R-SEND-12 half).
            ip_id = self.ip.next_ip_ids(-(-len(payload) // mss))
            gso = VIRTIO_NET_HDR_GSO_TCPV4
        else:
            ip_id = 0
            gso = VIRTIO_NET_HDR_GSO_TCPV6
        hdr = tcb.hdr_mv
        hlen = b.build(hdr, seg, ip_id=ip_id, offload_csum=True)
        key = (gso, hlen, mss, b.csum_start, b.csum_offset)
        vh = self._tso_hdrs.get(key)
        if vh is None:
            if len(self._tso_hdrs) >= BUILDER_CACHE_MAX:
                self._tso_hdrs.clear()
            vh = self._tso_hdrs[key] = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, hlen, mss, b.csum_start,
                                               b.csum_offset)
        self.counters.tso_frames_out += 1
        tx = iface.transmit_vnet
        if tx is None or not iface.up:
            return
        # Header and payload views go to the link as parts: one writev gathers them, no 64 KB join copy.
        tx((hdr[:hlen], payload), vh)

    def _fit_mtu(self, tcb: Tcb, b: TcpFrameBuilder, seg: TcpSegment, ip_id: int, hlen: int) -> int:
        """A full-sized segment whose SACK blocks push it past the path MTU: drop SACK blocks (they are
        advisory, RFC 2018 §3) until it fits. The engine sizes segments for timestamps only."""
        opts = seg.options
        mtu = tcb.ip_path.mtu
        while opts is not None and opts.sack_blocks and hlen + len(seg.payload) - tcb.l2_len > mtu:
            opts.sack_blocks = tuple(opts.sack_blocks)[:-1]
            hlen = b.build(tcb.hdr_mv, seg, ip_id=ip_id)
            self.counters.sack_trimmed_for_mtu += 1
        if hlen + len(seg.payload) - tcb.l2_len > mtu:
            self._drop("segment_exceeds_path_mtu")  # sent anyway: the link or a router decides
        return hlen

    def send_control(self, local: bytes, remote: bytes, seg: TcpSegment) -> None:
        """A segment that belongs to no TCB (RST replies): resolved and built on the spot."""
        path = self.ip.path(local, remote)
        if path is None:
            self._drop("control_no_route")
            return
        if seg.flags & RST:
            self.counters.rst_sent += 1
        self.counters.segs_out += 1
        iface = self.ip.interfaces[path.interface]
        ip_id = self.ip.next_ip_id() if len(local) == 4 else 0

        def build(mac: bytes) -> bytes:
            b = TcpFrameBuilder(iface.mac, mac, local, remote, vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
            return b.build_frame(seg, ip_id=ip_id)

        self.ip.resolve_and_send(path, build, "TCP RST" if seg.flags & RST else None)

    # -- timers and bookkeeping ---------------------------------------------------------------------

    def _arm(self, tcb: Tcb, when: int) -> None:
        t = tcb.timer
        if t is not None:
            t.cancel()
        now = self.scheduler.now
        if when < now:
            when = now
        tcb.timer_when = when
        self.counters.timer_arms += 1
        tcb.timer = self.scheduler.call_at(when, self._on_timer, tcb, label="tcp-timer")

    def _on_timer(self, tcb: Tcb) -> None:
        tcb.timer = None
        tcb.timer_when = None
        tcb.path.on_timer()

    def _confirm_reachability(self, tcb: Tcb, now: int) -> None:
        """Forward progress (an ACK of new data) confirms the next hop (RFC 4861 7.3.1; the host side of
        what R-NBR-03 asks of an offload target), at most once per `confirm_interval` per neighbor."""
        n = tcb.neighbor
        if n is None or n.mac is None:
            return
        if n.state is not _REACHABLE or now - n.confirmed_at >= self.confirm_interval:
            self.ip.neighbors[tcb.ip_path.interface].confirm(n.ip)

    def _tcb_closed(self, tcb: Tcb) -> None:
        self.counters.closed += 1
        if self.conns.get(tcb.key) is tcb:
            del self.conns[tcb.key]
            k = (tcb.local, tcb.local_port)
            left = self._ports.get(k, 1) - 1
            if left:
                self._ports[k] = left
            else:
                self._ports.pop(k, None)
        t = tcb.timer
        if t is not None:
            t.cancel()
            tcb.timer = None
            tcb.timer_when = None
        lst = tcb.listener
        if lst is not None and not tcb.established:
            lst.children.pop(tcb.conn, None)


__all__ = [
    "EPHEMERAL_HIGH",
    "EPHEMERAL_LOW",
    "HostListener",
    "HostPath",
    "Key",
    "Tcb",
    "TcbPath",
    "TcpTransport",
    "TransportCounters",
]
