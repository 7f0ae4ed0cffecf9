"""Conformance scenarios for the data path (RECV, DISC, FWD, RX, SEC, VLAN, RFC rules and the wire-visible OFF /
SEND / TRM ones) and `DataProbe`, the hooks through which they watch a target and feed it frames.

Covered situations: posted receives (push / non-push / pre-filled / zero-byte, push timer), the delivery
algorithm under re-entry, disconnects with sends outstanding, forwarding, the non-standard receive cases of
§4.15-4.16 (SYN, RST, URG, ARP/ICMP, IP options, VLAN, corrupted headers, SACK), buffered and retransmit
data at offload, Nagle, invalidation and pending ACKs at terminate.

Each scenario watches the target through a `DataProbe`: the host binding's chimney handlers (completions,
indications, events), the normal receive path, host A's wire in both directions, and a hook on the frames
from host B to the target (rewrite, hold, release). Verdicts go through `bench.verifier.check(ok, rule, ...)`
so `chimney verify` reports each rule as pass / FAIL / not exercised.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chimney.conformance.scenarios import Bench, Scenario, ScenarioAbort, drain, pattern
from chimney.filters.passthrough import OffloadEntry
from chimney.host.socket import IPPROTO_TCP, TCP_NODELAY, Socket
from chimney.host.tcp import Tcb
from chimney.links.impair import Impairments
from chimney.ndis.blocklist import iter_tree
from chimney.ndis.buffers import Mdl, NblInfo, NetBuffer, NetBufferList, split_nbl_chain
from chimney.ndis.offload_state import (
    TcpCachedFlags,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import NdisOidRequest
from chimney.ndis.status import NdisStatus
from chimney.ndis.status import name as _sname
from chimney.net.checksum import checksum
from chimney.net.frame import encode_arp_frame, encode_ipv4_frame, encode_tcp_frame, parse_frame
from chimney.net.icmp import build_icmp_echo, build_icmp_frag_needed
from chimney.net.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S
from chimney.sim.tasks import spawn
from chimney.target.miniport import NDIS_MAC_OPTION_8021P_PRIORITY, OID_GEN_MAC_OPTIONS

MASK = 0xFFFFFFFF
PORT = 5301
_BYTES = NblInfo.TcpOffloadBytesTransferred
_RECV_OK = frozenset({NdisStatus.SUCCESS, NdisStatus.REQUEST_ABORTED, NdisStatus.UPLOAD_IN_PROGRESS,
                      NdisStatus.INVALID_STATE})
_FWD_OK = frozenset({NdisStatus.SUCCESS, NdisStatus.UPLOAD_IN_PROGRESS, NdisStatus.REQUEST_ABORTED})
_ABORT = int(TcpOffloadEventType.TcpIndicateAbort)
_RETRIEVE = int(TcpOffloadEventType.TcpIndicateRetrieve)
ARP_REQUEST = 1
ICMP_PROTO = 1
# 1 ms each way: a delayed ACK (200 ms) or a push timer (500 ms) is far from an immediate reaction.
DATA_WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)


def _seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) > 0x7FFFFFFF


def _seq_le(a: int, b: int) -> bool:
    return a == b or _seq_lt(a, b)


@dataclass(slots=True)
class WireSeg:
    """One TCP segment on host A's wire; `out` True for what A (host or target) sent."""

    t: int
    out: bool
    seq: int
    ack: int
    n: int
    flags: int
    vlan_id: int | None
    vlan_prio: int | None
    sport: int
    dport: int
    host: bool = False  # sent by the host stack through MiniportSendNetBufferLists, not by the target


@dataclass
class Post:
    """A receive request the probe posted (NdisOffloadTcpReceive) and what became of it."""

    nbl: NetBufferList
    buf: bytearray
    size: int
    push: bool
    prefilled: int
    posted_at: int
    completions: int = 0
    done_at: int | None = None
    status: int | None = None
    transferred: int | None = None
    advanced: int | None = None
    data: bytes = b""


@dataclass
class IoRec:
    """A host I/O request (send / disconnect / forward) seen going down, and its completion."""

    kind: str
    nbl: NetBufferList
    at: int
    length: int
    done_at: int | None = None
    status: int | None = None
    transferred: int | None = None
    advanced: int | None = None
    seq: int = 0  # order of completion
    offset0: int = 0  # DataOffset summed over the NBs when it went down


@dataclass
class Terminated:
    t: int
    status: int
    dlg: TcpOffloadStateDelegated | None


@dataclass
class Initiated:
    t: int
    buffered: bytes
    dlg: TcpOffloadStateDelegated | None
    send_head: bytes
    cached: TcpOffloadStateCached | None


class DataProbe:
    """Observation and injection hooks on one Bench (installed once, by `DataProbe.of`)."""

    @classmethod
    def of(cls, b: Bench) -> DataProbe:
        p = getattr(b, "data_probe", None)
        if p is None:
            p = cls(b)
            b.data_probe = p  # type: ignore[attr-defined]
        return p

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.v = b.verifier
        self.posts: list[Post] = []
        self._mine: dict[int, Post] = {}
        self.own: set[int] = set()  # ids of other NBLs the probe sent down itself (their completions stop here)
        self.stream = bytearray()  # bytes delivered through the chimney (accepted indications + our requests)
        self.deliveries: list[tuple[int, str, int]] = []  # (time, "ind"/"post", bytes)
        self.io: list[IoRec] = []
        self._io_by_id: dict[int, IoRec] = {}
        self._done_seq = 0
        self.events: list[tuple[int, int, int]] = []  # (time, type, info)
        self.normal: list[tuple[int, bytes]] = []  # frames indicated on the non-offload path
        self.wire: list[WireSeg] = []
        self.terminated: list[Terminated] = []
        self.initiated: list[Initiated] = []
        self.in_complete = 0  # inside NdisTcpOffloadReceiveComplete of the host binding
        self.in_indicate = 0  # inside NdisTcpOffloadReceiveHandler of the host binding
        self.reentered = 0  # ReceiveComplete entered while one was active (R-RECV-14)
        self.overlapped = 0  # ReceiveComplete and the receive handler active at once (R-RECV-13)
        self.refuse_next = False  # answer the next indication OFFLOAD_DATA_NOT_ACCEPTED (host not called)
        self.refused: list[tuple[int, int]] = []  # (time, bytes) of indications the probe refused
        self.sends_in_disc: list[NetBufferList] = []  # send NBLs that came back in a disconnect completion
        self.on_complete: Callable[[Post], None] | None = None
        self.on_indicate: Callable[[], None] | None = None
        self.on_disconnect: Callable[[int], None] | None = None
        self.rx_filter: Callable[[bytes], bytes | None] | None = None  # B -> target rewrite (None: drop)
        self.last_b: TcpSegment | None = None  # last TCP segment from B (its timestamps are reused)
        self.cached_patch: dict[str, Any] = {}  # values the probe writes into offered TCP cached state
        self.drop_to_b: Callable[[bytes], bool] | None = None  # A -> B frames to lose
        p = b.p
        ndis = p.ndis
        self.ndis = ndis
        ct = p.binding.binding.dh.client_tcp
        self._wrap(ct, "tcp_offload_receive_complete_handler", self._receive_complete)
        self._wrap(ct, "tcp_offload_receive_indicate_handler", self._indicate)
        self._wrap(ct, "tcp_offload_send_complete_handler", self._io_complete)
        self._wrap(ct, "tcp_offload_disconnect_complete_handler", self._disconnect_complete)
        self._wrap(ct, "tcp_offload_forward_complete_handler", self._io_complete)
        self._wrap(ct, "tcp_offload_event_handler", self._event)
        for name, kind in (("offload_tcp_send", "send"), ("offload_tcp_forward", "forward")):
            self._wrap_request(name, kind)
        orig_disc = ndis.offload_tcp_disconnect

        def disconnect(handle: Any, nbl: NetBufferList, flags: int) -> int:
            if _im_handle(handle):
                return orig_disc(handle, nbl, flags)  # type: ignore[no-any-return]
            self._record("disconnect", nbl)
            st = orig_disc(handle, nbl, flags)
            if self.on_disconnect is not None:
                hook, self.on_disconnect = self.on_disconnect, None
                hook(flags)
            return st  # type: ignore[no-any-return]

        ndis.offload_tcp_disconnect = disconnect
        orig_norm = ndis.m_indicate_receive_net_buffer_lists

        target_adapter = ndis.adapters[0]
        host_binding = p.binding.binding

        def normal(adapter: Any, nbl: NetBufferList, *rest: Any) -> Any:
            if adapter is not target_adapter:  # an IM relaying the target's indication: seen already
                return orig_norm(adapter, nbl, *rest)
            for n in _chain(nbl):
                for nb in n.net_buffers():
                    self.normal.append((b.sched.now, nb.copy_data()))
            return orig_norm(adapter, nbl, *rest)

        ndis.m_indicate_receive_net_buffer_lists = normal
        self._host_tx: dict[bytes, int] = {}
        orig_send = ndis.send_net_buffer_lists

        def host_send(binding: Any, nbl: NetBufferList, *rest: Any) -> Any:
            if binding is not host_binding:  # an IM passing host A's send down
                return orig_send(binding, nbl, *rest)
            for n in _chain(nbl):
                for nb in n.net_buffers():
                    fr = nb.copy_data()
                    self._host_tx[fr] = self._host_tx.get(fr, 0) + 1
            return orig_send(binding, nbl, *rest)

        ndis.send_net_buffer_lists = host_send
        gen = ndis.adapters[0].dh.provider_generic
        orig_init = gen.initiate_offload_handler

        def initiate(ctx: Any, mbl: Any) -> None:
            for node in iter_tree(mbl):
                dlg = next((s for s in node.state if type(s) is TcpOffloadStateDelegated), None)
                cached = next((s for s in node.state if type(s) is TcpOffloadStateCached), None)
                if cached is not None:
                    for k, val in self.cached_patch.items():
                        setattr(cached, k, val)
                if dlg is not None:
                    bd = bytearray()
                    n = dlg.buffered_data
                    while n is not None:
                        for nb in n.net_buffers():
                            bd += nb.copy_data()
                        n = n.next
                    head = bytearray()
                    n = dlg.send_data_head
                    while n is not None:
                        for nb in n.net_buffers():
                            head += nb.copy_data()
                        n = n.next
                    self.initiated.append(Initiated(b.sched.now, bytes(bd), _copy_dlg(dlg), bytes(head),
                                                    _copy_cached(cached)))
            orig_init(ctx, mbl)

        gen.initiate_offload_handler = initiate
        orig_trm = ndis.m_terminate_offload_complete

        def terminated(adapter: Any, mbl: Any) -> None:
            if adapter is not target_adapter:  # an IM completing upward what the target completed
                orig_trm(adapter, mbl)
                return
            for node in iter_tree(mbl):
                dlg = next((s for s in node.state if type(s) is TcpOffloadStateDelegated), None)
                if dlg is not None or _is_tcp(node):
                    self.terminated.append(Terminated(b.sched.now, int(node.status), _copy_dlg(dlg)))
            orig_trm(adapter, mbl)

        ndis.m_terminate_offload_complete = terminated
        p.link.a.add_observer(self._observe)
        port = p.link.a
        self._to_target = port.receiver

        def to_target(frame: bytes) -> None:
            f = self.rx_filter
            if f is not None:
                out = f(frame)
                if out is None:
                    return
                frame = out
            self.deliver(frame)

        port.set_receiver(to_target)
        port_b = p.link.b
        recv_b = port_b.receiver

        def to_b(frame: bytes) -> None:
            if self.drop_to_b is not None and self.drop_to_b(frame):
                return
            if recv_b is not None:
                recv_b(frame)

        port_b.set_receiver(to_b)

    # ------------------------------------------------------------------ hooks

    def _wrap(self, table: Any, name: str, hook: Callable[..., Any]) -> None:
        orig = getattr(table, name)
        setattr(table, name, lambda *a: hook(orig, *a))

    def _wrap_request(self, name: str, kind: str) -> None:
        orig = getattr(self.ndis, name)

        def call(handle: Any, nbl: NetBufferList) -> int:
            if not _im_handle(handle):  # host A's request, not an IM's re-issue of it (the same NBLs)
                for n in _chain(nbl):
                    self._record(kind, n)
            return orig(handle, nbl)  # type: ignore[no-any-return]

        setattr(self.ndis, name, call)

    def _record(self, kind: str, nbl: NetBufferList) -> None:
        nbs = list(nbl.net_buffers())
        rec = IoRec(kind, nbl, self.b.sched.now, sum(nb.data_length for nb in nbs), seq=-1,
                    offset0=sum(nb.data_offset for nb in nbs))
        self.io.append(rec)
        self._io_by_id[id(nbl)] = rec

    def _io_complete(self, orig: Callable[..., Any], ctx: Any, chain: NetBufferList) -> None:
        now = self.b.sched.now
        for n in _chain(chain):
            rec = self._io_by_id.get(id(n))
            if rec is None or rec.done_at is not None:
                continue
            rec.done_at = now
            rec.status = int(n.status)
            rec.transferred = int(n.info.get(_BYTES, 0) or 0)
            rec.advanced = sum(nb.data_offset for nb in n.net_buffers()) - rec.offset0
            self._done_seq += 1
            rec.seq = self._done_seq
        if any(id(n) in self.own for n in _chain(chain)):
            theirs = [n for n in split_nbl_chain(chain) if id(n) not in self.own]  # ours stop here
            if theirs:
                orig(ctx, _relink_list(theirs))
            return
        orig(ctx, chain)

    def _disconnect_complete(self, orig: Callable[..., Any], ctx: Any, chain: NetBufferList) -> None:
        # R-DISC-11: what the target hands to NdisTcpOffloadDisconnectComplete, before anything else sees it.
        for n in _chain(chain):
            rec = self._io_by_id.get(id(n))
            if rec is not None and rec.kind == "send":
                self.sends_in_disc.append(n)
        self._io_complete(orig, ctx, chain)

    def _receive_complete(self, orig: Callable[..., Any], ctx: Any, chain: NetBufferList) -> None:
        if self.in_complete:
            self.reentered += 1
        if self.in_indicate:
            self.overlapped += 1
        self.in_complete += 1
        try:
            theirs: list[NetBufferList] = []
            mine: list[Post] = []
            for n in split_nbl_chain(chain):  # ours are kept, the host's go on re-linked
                post = self._mine.get(id(n))
                if post is None:
                    theirs.append(n)
                else:
                    mine.append(post)
                    self._finish_post(post, n)
            if theirs:
                orig(ctx, _relink_list(theirs))
            for post in mine:
                if self.on_complete is not None:
                    self.on_complete(post)
        finally:
            self.in_complete -= 1

    def _finish_post(self, post: Post, n: NetBufferList) -> None:
        post.completions += 1
        if post.completions > 1:
            return
        now = self.b.sched.now
        post.done_at = now
        post.status = int(n.status)
        post.transferred = int(n.info.get(_BYTES, 0) or 0)
        nb = n.first_net_buffer
        post.advanced = nb.data_offset if nb is not None else 0
        placed = max(0, min(post.advanced, post.size) - post.prefilled)
        post.data = bytes(post.buf[post.prefilled:post.prefilled + placed])
        if post.data:
            self.stream += post.data
            self.deliveries.append((now, "post", len(post.data)))

    def _indicate(self, orig: Callable[..., Any], handle: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        if self.in_complete:
            self.overlapped += 1
        self.in_indicate += 1
        try:
            nb = nbl.first_net_buffer
            data = nb.copy_data() if nb is not None else b""
            if self.refuse_next:
                self.refuse_next = False
                self.refused.append((self.b.sched.now, len(data)))
                return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
            if self.on_indicate is not None:
                hook, self.on_indicate = self.on_indicate, None
                hook()
            ret, consumed = orig(handle, nbl, status)
            took = len(data) if ret == NdisStatus.SUCCESS else (consumed if ret ==
                                                                NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED else 0)
            if took:
                self.stream += data[:took]
                self.deliveries.append((self.b.sched.now, "ind", took))
            return ret, consumed
        finally:
            self.in_indicate -= 1

    def _event(self, orig: Callable[..., Any], handle: Any, etype: int, info: int) -> None:
        self.events.append((self.b.sched.now, int(etype), int(info)))
        orig(handle, etype, info)

    def _observe(self, direction: str, frame: bytes, meta: str | None) -> None:
        f = parse_frame(frame, verify_checksums=False)
        seg = getattr(f, "tcp", None)
        if seg is None:
            return
        out = direction == "tx"
        host = False
        if not out:
            self.last_b = seg
        else:
            k = self._host_tx.get(bytes(frame), 0)
            if k:
                host = True
                if k == 1:
                    del self._host_tx[bytes(frame)]
                else:
                    self._host_tx[bytes(frame)] = k - 1
        self.wire.append(WireSeg(self.b.sched.now, out, seg.seq, seg.ack, len(seg.payload), seg.flags,
                                 f.vlan_id, f.vlan_prio, seg.src_port, seg.dst_port, host))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ actions

    def deliver(self, frame: bytes) -> None:
        """Hand a frame to the target's port as if it came off the wire."""
        if self._to_target is not None:
            self._to_target(frame)

    def post(self, tcb: Tcb, size: int, *, push: bool = True, prefilled: int = 0) -> Post:
        """NdisOffloadTcpReceive of one request of `size` bytes (the first `prefilled` already placed)."""
        cp = self.b.p.manager.paths.get(tcb)
        if cp is None:
            raise ScenarioAbort("the connection is not offloaded")
        buf = bytearray(b"\xee" * size)
        nbl = NetBufferList(NetBuffer(Mdl(buf), 0, size) if size else NetBuffer(None, 0, 0),
                            self.b.p.binding.name)
        if not push:
            nbl.info[NblInfo.TcpReceiveNoPush] = True
        if prefilled:
            nbl.info[NblInfo.TcpReceiveBytesTransferred] = prefilled
        post = Post(nbl, buf, size, push, prefilled, self.b.sched.now)
        self.posts.append(post)
        self._mine[id(nbl)] = post
        self.ndis.offload_tcp_receive(cp.handle, nbl)
        return post

    def sent(self, since: int = 0) -> list[WireSeg]:
        return [s for s in self.wire if s.out and s.t >= since]

    def acked_upto(self, since: int = 0) -> int | None:
        """The highest ACK number A sent since `since` (None: no segment)."""
        best: int | None = None
        for s in self.wire:
            if s.out and s.t >= since and s.flags & ACK and (best is None or _seq_lt(best, s.ack)):
                best = s.ack
        return best

    def events_of(self, etype: int, since: int = 0) -> list[tuple[int, int, int]]:
        return [e for e in self.events if e[1] == etype and e[0] >= since]

    def normal_frames(self, since: int, pred: Callable[[Any], bool]) -> int:
        n = 0
        for t, data in self.normal:
            if t >= since:
                f = parse_frame(data, verify_checksums=False)
                if type(f) is not type(None) and pred(f):
                    n += 1
        return n


def _im_handle(handle: Any) -> bool:
    """The NDIS_OFFLOAD_HANDLE of a stacked IM's offload entry: a request on it is the IM re-issuing one
    of host A's (the probe observes host A's edge, so it records the host's call only)."""
    return isinstance(getattr(handle, "owner", None), OffloadEntry)


def _is_tcp(node: Any) -> bool:
    return any(type(s) is TcpOffloadStateDelegated for s in node.state)


def _copy_dlg(d: TcpOffloadStateDelegated | None) -> TcpOffloadStateDelegated | None:
    if d is None:
        return None
    c = copy.copy(d)
    c.send_data_head = c.send_data_tail = c.buffered_data = None
    return c


def _copy_cached(c: TcpOffloadStateCached | None) -> TcpOffloadStateCached | None:
    if c is None:
        return None
    return copy.copy(c)


def _chain(nbl: NetBufferList | None) -> list[NetBufferList]:
    """The NBLs of a chain, links left in place."""
    out = []
    while nbl is not None:
        out.append(nbl)
        nbl = nbl.next
    return out


def _relink_list(nbls: list[NetBufferList]) -> NetBufferList:
    for a, z in itertools.pairwise(nbls):
        a.next = z
    nbls[-1].next = None
    return nbls[0]


# ============================================================================ frame surgery


def _rebuild(frame: bytes, *, flags: int | None = None, options: TcpOptions | None = None,
             vlan_id: int | None = None, seq: int | None = None, payload: bytes | None = None) -> bytes:
    """The same TCP frame with some fields replaced (checksums recomputed)."""
    f = parse_frame(frame, verify_checksums=False)
    seg = f.tcp  # type: ignore[union-attr]
    assert seg is not None
    new = TcpSegment(seg.src_port, seg.dst_port, seg.seq if seq is None else seq, seg.ack,
                     seg.flags if flags is None else flags, seg.window,
                     bytes(seg.payload) if payload is None else payload,
                     seg.options if options is None else options, seg.urg_ptr)
    return encode_tcp_frame(new, eth_src=f.eth_src, eth_dst=f.eth_dst, ip_src=f.ip_src, ip_dst=f.ip_dst,  # type: ignore
                            vlan_id=(f.vlan_id or 0) if vlan_id is None else vlan_id, vlan_prio=f.vlan_prio or 0,
                            ttl=f.ttl or 64)  # type: ignore[union-attr]


def _with_ip_options(frame: bytes) -> bytes:
    """An IPv4 frame with 4 bytes of IP options (NOP NOP NOP EOL) inserted, IP checksum recomputed."""
    f = parse_frame(frame, verify_checksums=False)
    l2 = f.l2_len  # type: ignore[union-attr]
    ip = bytearray(frame[l2:])
    hl = (ip[0] & 0x0F) * 4
    ip[hl:hl] = b"\x01\x01\x01\x00"
    ip[0] = (ip[0] & 0xF0) | ((hl + 4) // 4)
    total = int.from_bytes(ip[2:4], "big") + 4
    ip[2:4] = total.to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = checksum(bytes(ip[:hl + 4])).to_bytes(2, "big")
    return bytes(frame[:l2]) + bytes(ip)


def _corrupt_tcp(frame: bytes) -> bytes:
    """Flip the TCP checksum: IP header valid, TCP header corrupted."""
    f = parse_frame(frame, verify_checksums=False)
    off = f.l2_len + (f.ip_header_len or 20) + 16  # type: ignore[union-attr, operator]
    out = bytearray(frame)
    out[off] ^= 0x5A
    return bytes(out)


def _is_data(frame: bytes) -> bool:
    f = parse_frame(frame, verify_checksums=False)
    seg = getattr(f, "tcp", None)
    return seg is not None and len(seg.payload) > 0


class OneShot:
    """An rx_filter that applies `fn` to the next `count` data frames from B (others pass untouched)."""

    def __init__(self, fn: Callable[[bytes], bytes | None], count: int = 1) -> None:
        self.fn = fn
        self.left = count
        self.seen: list[bytes] = []

    def __call__(self, frame: bytes) -> bytes | None:
        if self.left and _is_data(frame):
            self.left -= 1
            self.seen.append(frame)
            return self.fn(frame)
        return frame


class Holder:
    """An rx_filter holding B's data frames (all, or only after the first `skip`) until released."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.held: list[bytes] = []
        self.on = True

    def __call__(self, frame: bytes) -> bytes | None:
        if self.on and _is_data(frame):
            if self.skip:
                self.skip -= 1
                return frame
            self.held.append(frame)
            return None
        return frame

    def release(self, probe: DataProbe) -> None:
        self.on = False
        held, self.held = self.held, []
        for fr in held:
            probe.deliver(fr)


# ============================================================================ shared helpers


def _pair(b: Bench, port: int = PORT) -> tuple[Socket, Socket, Tcb]:
    """An offloaded pair; B sends without Nagle so each of its sends is on the wire at once."""
    sa, sb, tcb = b.socket_pair(port)
    sb.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    if not b.offload_one(tcb):
        raise ScenarioAbort("no offload")
    b.run(2)
    return sa, sb, tcb


def _offload(b: Bench, tcb: Tcb) -> bool:
    """Offload one connection and wait for the initiate only (the host may still hold indicated data)."""
    m = b.p.manager
    if m.offload(tcb) != 1:
        return False
    b.until(lambda: m.is_offloaded(tcb) or tcb not in m.paths, 5, "the initiate offload to complete")
    return m.is_offloaded(tcb)


def _b_send(b: Bench, sb: Socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sb.send(view):]
        except BlockingIOError:
            b.run(1)


def _push_ns(b: Bench) -> int:
    params = b.p.binding.params
    return int(params.tcp_push_ticks * NS_PER_S // b.p.manager.tps)


def _b_tcb(b: Bench, port: int) -> Any:
    for t in b.p.host_b.tcp.connections():
        if port in (t.local_port, t.remote_port):
            return t
    raise ScenarioAbort("no connection on host B")


def _inject(b: Bench, p: DataProbe, tcb: Tcb, *, seq: int, flags: int, payload: bytes = b"", ack: int | None = None,
            options: TcpOptions | None = None, urg_ptr: int = 0) -> None:
    """A segment 'from B' (B's addresses and timestamps) handed straight to the target's port."""
    tb = _b_tcb(b, tcb.local_port)
    last = p.last_b
    opts = options
    if opts is None and last is not None and last.options is not None and last.options.ts_val is not None:
        opts = TcpOptions(ts_val=last.options.ts_val, ts_ecr=last.options.ts_ecr)
    a_if = next(iter(b.p.host_a.ip.interfaces.values()), None)
    seg = TcpSegment(tcb.remote_port, tcb.local_port, seq & MASK, (tb.conn.rcv_nxt if ack is None else ack) & MASK,
                     flags, 0xFFFF, payload, opts, urg_ptr)
    frame = encode_tcp_frame(seg, eth_src=b.p.link.b.mac, eth_dst=b.p.link.a.mac, ip_src=tcb.remote, ip_dst=tcb.local,
                             vlan_id=getattr(a_if, "vlan_id", 0) or 0)
    p.deliver(frame)


def _settle(b: Bench, tcb: Tcb, limit_s: float = 3) -> None:
    """Let B's unacknowledged data (a segment a phase dropped, then retransmitted) reach the target, so the
    next phase starts with the stream in step instead of inheriting the previous phase's gap."""
    tb = _b_tcb(b, tcb.local_port)
    b.sched.run_until(b.sched.now + int(limit_s * NS_PER_S), predicate=lambda: tb.conn.snd_una == tb.conn.snd_nxt)


def _rcv_nxt(b: Bench, tcb: Tcb) -> int:
    """What the target's RcvNxt must be: B's SndNxt once B has nothing unacknowledged."""
    return int(_b_tcb(b, tcb.local_port).conn.snd_nxt) & MASK


def _close(b: Bench, sa: Socket, sb: Socket) -> None:
    for s in (sa, sb):
        with contextlib.suppress(OSError):
            s.close()


def _check_posts(b: Bench, p: DataProbe) -> None:
    """R-RECV-09 / R-RECV-12 over every request the probe posted (run after the connection is terminated)."""
    v = b.verifier
    for post in p.posts:
        v.check(post.completions >= 1, "R-RECV-12",
                f"a {post.size}-byte {'push' if post.push else 'non-push'} receive request was never completed",
                post.nbl)
        if not post.completions:
            continue
        v.check(post.completions == 1, "R-RECV-09", f"a receive request was completed {post.completions} times",
                post.nbl)
        ok_status = post.status in _RECV_OK
        placed = max(0, (post.advanced or 0) - post.prefilled)
        consistent = post.transferred == post.advanced and post.transferred in (placed, placed + post.prefilled)
        v.check(ok_status and consistent, "R-RECV-09",
                f"receive completion Status {_sname(post.status or 0)}, TcpOffloadBytesTransferred "
                f"{post.transferred}, NB advanced by {post.advanced} (request of {post.size}, prefilled {post.prefilled})",
                post.nbl)


@dataclass
class _Ctx:
    b: Bench
    p: DataProbe
    sa: Socket
    sb: Socket
    tcb: Tcb
    sent: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> None:
        self.sent += data
        _b_send(self.b, self.sb, data)


def _resync(c: _Ctx, post: Post) -> None:
    """The phases of a scenario share one byte stream: a request that never completed (its rule already
    judged) would shift every later phase's bytes, so the scenario stops there instead of charging the
    target's one fault to the rules the later phases check."""
    if post.completions or _wait_post(c.b, post, 100):
        return
    c.b.fail(f"a {post.size}-byte receive request never completed: the later phases of the scenario were skipped")
    c.b.upload(c.tcb)
    _check_posts(c.b, c.p)
    _close(c.b, c.sa, c.sb)
    raise ScenarioAbort("receive request stuck")


def _psh(mode: str) -> Callable[[bytes], bytes | None]:
    """rx_filter: every data frame from B with PSH forced on ("set") or off ("clear")."""

    def f(frame: bytes) -> bytes | None:
        if not _is_data(frame):
            return frame
        seg = parse_frame(frame, verify_checksums=False).tcp  # type: ignore[union-attr]
        want = seg.flags | PSH if mode == "set" else seg.flags & ~PSH
        return frame if want == seg.flags else _rebuild(frame, flags=want)

    return f


def _wait_post(b: Bench, post: Post, limit_ms: float) -> bool:
    b.sched.run_until(b.sched.now + int(limit_ms * NS_PER_MS), predicate=lambda: post.completions > 0)
    return post.completions > 0


def _query(b: Bench, tcb: Tcb) -> TcpOffloadStateDelegated | None:
    fut = b.p.manager.query(tcb)
    b.until(fut.done, 5, "NdisQueryOffloadState to complete")
    return fut.result() if fut.done() else None


# ============================================================================ scenarios


def recv_push_modes(b: Bench, quick: bool) -> None:
    """Posted receive requests of both kinds (R-RECV-04): a non-push request ignores PSH and the push timer
    and completes when full (R-RECV-05/07); a push request completes on PSH, on its push timer (started at
    the first byte, at once when pre-filled, restarted by new data: R-RECV-06/08); zero-byte requests are
    completed (R-RECV-12); SUCCESS advanced RcvNxt and RcvWnd (R-RECV-10); the completions carry the bytes
    placed (R-RECV-09); the byte stream arrives in order (R-RECV-19)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    c = _Ctx(b, p, sa, sb, tcb)
    push_ns = _push_ns(b)
    push_ms = push_ns / NS_PER_MS
    # --- non-push: PSH on every segment, twice the push timer: still pending until full.
    p.rx_filter = _psh("set")
    q0 = _query(b, tcb)
    np = p.post(tcb, 1000, push=False)
    c.send(pattern(512, 3)[:300])
    b.run(2 * push_ms + 20)
    # A non-push request refused outright (failure status, nothing placed) is R-RECV-04's matter.
    rejected = np.completions > 0 and np.status != NdisStatus.SUCCESS and not np.data
    v.check(np.completions == 0 or rejected, "R-RECV-05",
            f"a non-push request holding 300 of 1000 bytes completed (Status {_sname(np.status or 0)}, "
            f"{len(np.data)} bytes) on PSH or a push timer", np.nbl)
    t_fill = b.sched.now
    c.send(pattern(1024, 5)[:700])
    _wait_post(b, np, 50)
    b.run(5)  # bytes left over by a request completed early are delivered before the next phase
    _resync(c, np)
    v.check(rejected or (np.completions == 1 and len(np.data) == 1000), "R-RECV-05",
            f"a non-push request was not completed once full (completions {np.completions}, "
            f"{len(np.data)} bytes)", np.nbl)
    if np.done_at is not None and not rejected:
        v.check(np.done_at - t_fill <= 5 * NS_PER_MS, "R-RECV-07",
                f"a filled request completed {(np.done_at - t_fill) / NS_PER_MS:.1f} ms after its last byte "
                "was sent (5 ms at most)", np.nbl)
    # --- push request completed by PSH, within a couple of ms.
    pp = p.post(tcb, 1000)
    t0 = b.sched.now
    c.send(pattern(512, 7)[:300])
    _wait_post(b, pp, 20)
    v.check(pp.completions == 1 and len(pp.data) == 300, "R-RECV-06",
            f"a push request with 300 bytes and PSH was not completed within 20 ms (completions "
            f"{pp.completions}, {len(pp.data)} bytes)", pp.nbl)
    v.check(pp.done_at is None or pp.done_at - t0 < push_ns // 2, "R-RECV-06",
            "a push request with a PSH segment waited for the push timer", pp.nbl)
    _resync(c, pp)
    # --- push request without PSH: the push timer completes it.
    p.rx_filter = _psh("clear")
    pt = p.post(tcb, 1000)
    c.send(pattern(512, 9)[:200])
    t_first = b.sched.now
    b.run(push_ms / 2)
    v.check(pt.completions == 0, "R-RECV-06",
            f"a push request without PSH completed after {(b.sched.now - t_first) / NS_PER_MS:.0f} ms, before its "
            f"push timer ({push_ms:.0f} ms)", pt.nbl)
    _wait_post(b, pt, push_ms + 50)
    v.check(pt.completions == 1 and len(pt.data) == 200, "R-RECV-06",
            f"the push timer never completed a partly filled push request (completions {pt.completions})", pt.nbl)
    _resync(c, pt)
    # --- push timer restart: data every 0.6 push timer; completion only one timer after the last.
    pr = p.post(tcb, 1000)
    for k in range(3):
        c.send(pattern(512, 11 + k)[:100])
        t_last = b.sched.now
        if k < 2:
            b.run(push_ms * 0.6)
    _wait_post(b, pr, push_ms + 50)
    if pr.done_at is not None:
        waited = pr.done_at - t_last
        v.check(len(pr.data) == 300 and waited >= push_ns * 0.9, "R-RECV-08",
                f"a push request completed {waited / NS_PER_MS:.0f} ms after its last data with "
                f"{len(pr.data)} bytes: data arriving while the push timer runs must restart it", pr.nbl)
    else:
        v.check(False, "R-RECV-06", "a push request with data never completed by its push timer", pr.nbl)
    _resync(c, pr)
    # --- a full request completes at once; the rest is indicated.
    pf = p.post(tcb, 200)
    t0 = b.sched.now
    c.send(pattern(512, 13)[:500])
    _wait_post(b, pf, 20)
    v.check(pf.completions == 1 and len(pf.data) == 200 and (pf.done_at or 0) - t0 <= 5 * NS_PER_MS,
            "R-RECV-07", f"a 200-byte request filled by 500 bytes was not completed at once "
            f"(completions {pf.completions})", pf.nbl)
    _resync(c, pf)
    # --- pre-filled push request, no data: the push timer runs from the post.
    pp2 = p.post(tcb, 1000, prefilled=100)
    _wait_post(b, pp2, push_ms * 2 + 50)
    v.check(pp2.completions == 1, "R-RECV-06",
            f"a push request posted with TcpReceiveBytesTransferred 100 was not completed within two push timers "
            f"({2 * push_ms:.0f} ms): its push timer must start at once", pp2.nbl)
    # --- zero-byte request.
    z = p.post(tcb, 0)
    _wait_post(b, z, 20)
    v.check(z.completions == 1, "R-RECV-12", "a zero-byte receive request was not completed within 20 ms", z.nbl)
    # --- a large non-push request: RcvNxt moved by every byte delivered, the window given back (R-RECV-10).
    big = p.post(tcb, 16_000, push=False)
    c.send(pattern(16_384, 15)[:16_000])
    _wait_post(b, big, 50)
    b.run(5)
    q1 = _query(b, tcb)
    if q0 is not None and q1 is not None and big.status == NdisStatus.SUCCESS:
        moved = (q1.rcv_nxt - q0.rcv_nxt) & MASK
        v.check(moved == len(p.stream) and q1.rcv_wnd + 2 * 1460 >= q0.rcv_wnd, "R-RECV-10",
                f"after {len(p.stream)} bytes completed with SUCCESS, RcvNxt moved by {moved} and RcvWnd went "
                f"{q0.rcv_wnd} -> {q1.rcv_wnd}: the delivered bytes must leave the receive window", q1)
    # --- both kinds served (R-RECV-04), the stream in order (R-RECV-19), then the end.
    b.run(5)
    v.check(np.status == NdisStatus.SUCCESS and pp.status == NdisStatus.SUCCESS, "R-RECV-04",
            f"push ({_sname(pp.status or 0)}) and non-push ({_sname(np.status or 0)}) requests "
            "must both be filled and completed", np.nbl, pp.nbl)
    p.rx_filter = None
    got = bytearray()
    drain([(sa, got)])
    v.check(bytes(p.stream) == bytes(c.sent), "R-RECV-19",
            f"{len(p.stream)} bytes delivered through the chimney differ from the {len(c.sent)} bytes sent, or are "
            "out of order", tcb)
    b.upload(tcb)
    _check_posts(b, p)
    _close(b, sa, sb)


def recv_reentrant(b: Bench, quick: bool) -> None:
    """The delivery algorithm under re-entry (R-RECV-18): a receive posted from inside a receive
    completion is queued and filled with the next data; a segment arriving during an indication is
    queued and delivered right after it, in order (R-RECV-19). ReceiveComplete is never re-entered
    (R-RECV-14) nor active together with the receive handler (R-RECV-13). Each pass of §3.6 runs to its
    end (R-RECV-17): after a refused indication the data stays buffered, and a request posted later is
    filled from it at once (B.2), with no new data to start a pass."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    c = _Ctx(b, p, sa, sb, tcb)
    inner: list[Post] = []

    def post_inside(post: Post) -> None:
        if not inner:
            inner.append(p.post(tcb, 400))  # MiniportTcpOffloadReceive from inside NdisTcpOffloadReceiveComplete

    p.on_complete = post_inside
    first = p.post(tcb, 300)
    c.send(pattern(1024, 17)[:700])
    b.run(5)
    p.on_complete = None
    v.check(bool(inner) and inner[0].completions == 1 and len(inner[0].data) == 400, "R-RECV-18",
            "a receive request posted from inside a receive completion was not filled with the next 400 bytes "
            f"(completions {inner[0].completions if inner else None})", first.nbl)
    # Two data segments held back; the second is handed to the target from inside the indication of the first.
    hold = Holder()
    p.rx_filter = hold
    c.send(pattern(4096, 19)[:2900])  # three segments at MSS 1448
    b.run(1)
    p.rx_filter = None
    hold.on = False
    frames, hold.held = hold.held, []
    released: list[int] = []

    def release_inside() -> None:
        released.append(len(p.stream))
        for fr in frames[1:]:
            p.deliver(fr)

    if frames:
        p.on_indicate = release_inside
        p.deliver(frames[0])
    b.run(2)
    p.on_indicate = None
    v.check(bool(released), "R-RECV-18", "no indication happened to deliver a segment into", tcb)
    v.check(len(p.stream) == len(c.sent), "R-RECV-18",
            f"a segment that arrived during an indication was not delivered right after it: {len(p.stream)} of "
            f"{len(c.sent)} bytes delivered 2 ms later", tcb)
    b.run(5)
    v.check(len(p.stream) != len(c.sent) or bytes(p.stream) == bytes(c.sent), "R-RECV-19",
            "the bytes delivered through the chimney are the ones sent, but not in the order they arrived", tcb)
    # --- a refused indication (OFFLOAD_DATA_NOT_ACCEPTED): the data stays buffered, no new data follows; a
    # request posted afterwards must be filled from the buffered bytes by the pass the post starts (§3.6 B.2).
    p.refuse_next = True
    chunk = pattern(1024, 21)[:600]
    c.send(chunk)
    b.run(2)
    p.refuse_next = False
    if p.refused:
        n = p.refused[0][1]
        rq = p.post(tcb, n)
        _wait_post(b, rq, 3)
        v.check(rq.completions == 1 and rq.data == chunk[:n], "R-RECV-17",
                f"after a refused indication of {n} bytes, a {n}-byte request posted with no new data arriving was "
                f"not filled from the buffered data within 3 ms (completions {rq.completions}, "
                f"{len(rq.data)} bytes)", rq.nbl)
    v.check(p.reentered == 0, "R-RECV-14",
            f"NdisTcpOffloadReceiveComplete was entered {p.reentered} times while a previous call had not returned",
            tcb)
    v.check(p.overlapped == 0, "R-RECV-13",
            f"NdisTcpOffloadReceiveComplete and the receive indication handler were active at once {p.overlapped} "
            "times", tcb)
    b.upload(tcb)
    _check_posts(b, p)
    _close(b, sa, sb)


def _send_nbls(p: DataProbe, since: int) -> list[IoRec]:
    return [r for r in p.io if r.kind == "send" and r.at >= since]


def disconnect_graceful(b: Bench, quick: bool) -> None:
    """NdisOffloadTcpDisconnect(GRACEFUL) with sends outstanding: they complete in order before the
    disconnect (R-DISC-08), which succeeds (R-DISC-12) with its own NBL (R-DISC-11) and byte count
    (R-DISC-10); the target keeps receiving after its FIN (R-DISC-13) and keeps the connection until the
    host terminates it (R-DISC-14)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    t0 = b.sched.now
    data = pattern(60_000, 21)
    got = bytearray()
    with contextlib.suppress(BlockingIOError):
        sa.send(data)
    b.run(0.05)
    sa.shutdown(1)
    b.until(lambda: any(r.kind == "disconnect" for r in p.io), 5, "the host's disconnect request")
    disc = next((r for r in p.io if r.kind == "disconnect"), None)
    if disc is None:
        raise ScenarioAbort("no disconnect")
    b.until(lambda: disc.done_at is not None, 10, "the graceful disconnect to complete")
    drain([(sb, got)])
    sends = _send_nbls(p, t0)
    # Only sends still outstanding when the disconnect went down say anything about R-DISC-08.
    early = [r for r in sends if r.at <= disc.at and (r.done_at is None or r.done_at >= disc.at)]
    if early:
        late = [r for r in early if r.done_at is None or (disc.done_at is not None and r.seq > disc.seq)]
        v.check(not late, "R-DISC-08", f"{len(late)} of {len(early)} sends outstanding at the graceful disconnect "
                "completed after it (or never)", disc.nbl)
        order = [r.seq for r in early if r.seq > 0]
        v.check(order == sorted(order), "R-DISC-08", "sends outstanding at a graceful disconnect completed out of "
                "delivery order", disc.nbl)
    v.check(disc.status == NdisStatus.SUCCESS, "R-DISC-12",
            f"a graceful disconnect of a healthy connection completed with {_sname(disc.status or 0)}", disc.nbl)
    v.check(disc.status != NdisStatus.SUCCESS or (disc.transferred == disc.length and disc.advanced == disc.length),
            "R-DISC-10", f"graceful disconnect with {disc.length} user bytes completed SUCCESS with "
            f"TcpOffloadBytesTransferred {disc.transferred}, NB advanced by {disc.advanced}", disc.nbl)
    v.check(not p.sends_in_disc, "R-DISC-11", f"NdisTcpOffloadDisconnectComplete carried {len(p.sends_in_disc)} "
            "NBL(s) that came down through MiniportTcpOffloadSend", disc.nbl, *p.sends_in_disc[:3])
    # The peer keeps sending after our FIN (half-close): the target must go on receiving and delivering.
    before = len(p.stream)
    more = pattern(8192, 23)[:6000]
    _b_send(b, sb, more)
    b.run(5)
    fin_at = next((s.t for s in p.sent(t0) if s.flags & FIN), None)
    v.check(fin_at is not None, "R-DISC-13", "no FIN on the wire after a graceful "
            "disconnect completed", disc.nbl)
    v.check(bytes(p.stream[before:]) == more, "R-DISC-13",
            f"after sending FIN the target delivered {len(p.stream) - before} of the peer's {len(more)} bytes", tcb)
    b.until(lambda: drain([(sb, got)]), 10, "B to read to EOF")
    v.check(bytes(got) == data, "R-DISC-08", f"B read {len(got)} of {len(data)} bytes before our FIN", tcb)
    sb.shutdown(1)
    b.run(5)
    if not b.until(lambda: tcb.path.kind == "host", 10, "the closed connection to come back to the host"):
        b.upload(tcb)  # the host takes it back itself: R-DISC-14 is judged on that terminate
    mine = [t for t in p.terminated if t.t >= t0]
    # CLOSED with no RST either way means the target dropped the connection itself after its FIN (an orderly
    # close ends in TIME_WAIT; a half-open one is still in FIN_WAIT_2).
    reset = any(s.flags & RST for s in p.wire if s.t >= t0)
    dropped = [t for t in mine if t.dlg is not None and t.dlg.state == TcpConnectionState.Closed and not reset]
    v.check(bool(mine) and not dropped and all(t.status == NdisStatus.SUCCESS and t.dlg is not None for t in mine),
            "R-DISC-14", "the terminate after FIN did not return the connection's live state with SUCCESS "
            f"({[(_sname(t.status), t.dlg.state.name if t.dlg else None) for t in mine]}): its resources were let go "
            "before the host terminated it", tcb)
    _close(b, sa, sb)


def disconnect_abortive(b: Bench, quick: bool) -> None:
    """NdisOffloadTcpDisconnect(ABORTIVE) with sends outstanding: they complete (REQUEST_ABORTED) before the
    disconnect (R-DISC-04), which is not failed (R-DISC-12) and whose SUCCESS means an RST went out
    (R-DISC-06); data arriving afterwards is neither acknowledged nor delivered (R-DISC-05)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    t0 = b.sched.now
    with contextlib.suppress(BlockingIOError):
        sa.send(pattern(200_000, 25))
    b.run(0.3)
    hold = Holder()
    p.rx_filter = hold
    _b_send(b, sb, pattern(4096, 27)[:3000])
    b.run(1)
    acked_before = p.acked_upto(t0)
    delivered_before = len(p.stream)
    state: dict[str, int] = {}

    def after_abort(flags: int) -> None:
        state["at"] = b.sched.now + NS_PER_MS
        # The peer's data reaches the target 1 ms after the abortive disconnect.
        b.sched.call_later(NS_PER_MS, hold.release, p, label="held frames")

    p.on_disconnect = after_abort
    sa.abort()
    b.until(lambda: any(r.kind == "disconnect" and r.done_at is not None for r in p.io), 5,
            "the abortive disconnect to complete")
    b.run(5)
    p.rx_filter = None
    disc = next((r for r in p.io if r.kind == "disconnect"), None)
    if disc is None or disc.done_at is None:
        raise ScenarioAbort("no abortive disconnect completion")
    # Sends completed before the disconnect went down are done; the rest were outstanding at it.
    sends = [r for r in _send_nbls(p, t0) if r.at <= disc.at and (r.done_at is None or r.done_at >= disc.at)]
    if sends:
        late = [r for r in sends if r.done_at is None or r.seq > disc.seq]
        v.check(not late, "R-DISC-04", f"{len(late)} of {len(sends)} sends outstanding at an abortive disconnect "
                "completed after it (or never)", disc.nbl)
        bad = [r for r in sends if r.status != NdisStatus.REQUEST_ABORTED]
        v.check(not bad, "R-DISC-04", f"{len(bad)} sends outstanding at an abortive disconnect completed with "
                f"{sorted({_sname(r.status or 0) for r in bad})}, want REQUEST_ABORTED", disc.nbl)
    v.check(disc.status == NdisStatus.SUCCESS, "R-DISC-12",
            f"an abortive disconnect completed with {_sname(disc.status or 0)}", disc.nbl)
    rst = [s for s in p.sent(t0) if s.flags & RST and not s.host]  # the host answers stray segments with RSTs
    v.check(disc.status != NdisStatus.SUCCESS or bool(rst), "R-DISC-06",
            "the abortive disconnect completed SUCCESS but no RST went on the wire", disc.nbl)
    acked_after = p.acked_upto(state.get("at", b.sched.now))
    moved = acked_after is not None and acked_before is not None and _seq_lt(acked_before, acked_after) \
        and not any(s.flags & RST for s in p.sent(state.get("at", 0)) if s.ack == acked_after)
    v.check(not moved, "R-DISC-05", f"after an abortive disconnect the target acknowledged new data "
            f"(ACK {acked_before} -> {acked_after})", disc.nbl)
    v.check(len(p.stream) == delivered_before, "R-DISC-05", f"{len(p.stream) - delivered_before} bytes were "
            "delivered to the host after its abortive disconnect", disc.nbl)
    b.until(lambda: tcb.path.kind == "host", 10, "the aborted connection to come back to the host")
    mine = [t for t in p.terminated if t.t >= t0]
    v.check(bool(mine) and all(t.status == NdisStatus.SUCCESS for t in mine), "R-DISC-14",
            "the terminate after an abortive disconnect did not complete with SUCCESS: the connection's resources "
            "were let go before the host terminated it", tcb)
    _close(b, sa, sb)


def rx_special(b: Bench, quick: bool) -> None:
    """Non-standard receive handling on an offloaded connection: ARP and ICMP (echo, PMTU) go to the host
    (R-RX-04/08); a corrupted TCP header is indicated or counted, never processed (R-RX-11); a SACK
    option does not stop a segment (R-RFC-02); a VLAN tag is no reason to drop with neighbor VlanId 0
    (R-RX-09); out-of-order data is queued and an immediate ACK sent (R-RFC-01); SYNs out of order or
    outside the window get an ACK, not a reset or upload (R-RX-03, R-SEC-04); an RST at RcvNxt is
    indicated as TcpIndicateAbort (R-SEC-02)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    c = _Ctx(b, p, sa, sb, tcb)
    c.send(pattern(512, 31)[:400])
    b.run(5)
    a_mac, b_mac = b.p.link.a.mac, b.p.link.b.mac
    # --- ARP and ICMP echo: the non-offload path (R-RX-04).
    t = b.sched.now
    p.deliver(encode_arp_frame(ARP_REQUEST, b_mac, tcb.remote, tcb.local))
    p.deliver(encode_ipv4_frame(b_mac, a_mac, tcb.remote, tcb.local, ICMP_PROTO, build_icmp_echo(7, 1, b"chimney")))
    b.run(2)
    arp = p.normal_frames(t, lambda f: f.arp is not None)
    echo = p.normal_frames(t, lambda f: f.icmp is not None)
    v.check(arp >= 1 and echo >= 1, "R-RX-04", f"an ARP request ({arp}) or ICMP echo ({echo}) reached the host "
            "through NdisMIndicateReceiveNetBufferLists 0 times", tcb)
    # --- ICMP fragmentation-needed about the connection (R-RX-08).
    t = b.sched.now
    last_out = next((s for s in reversed(p.wire) if s.out), None)
    quoted = encode_tcp_frame(TcpSegment(tcb.local_port, tcb.remote_port, last_out.seq if last_out else 0, 0, ACK,
                                         1000), eth_src=a_mac, eth_dst=b_mac, ip_src=tcb.local, ip_dst=tcb.remote)
    p.deliver(encode_ipv4_frame(b_mac, a_mac, tcb.remote, tcb.local, ICMP_PROTO,
                                build_icmp_frag_needed(1400, quoted[14:])))
    b.run(2)
    v.check(p.normal_frames(t, lambda f: f.icmp is not None) >= 1, "R-RX-08",
            "an ICMP fragmentation-needed message for an offloaded connection never reached the host", tcb)
    # --- out-of-order data: queued, an immediate (duplicate) ACK, delivered in order once the gap fills.
    t = b.sched.now
    before = len(p.stream)
    first: list[bytes] = []

    def swap(frame: bytes) -> bytes | None:
        if not _is_data(frame):
            return frame
        if not first:
            first.append(frame)
            return None
        return frame

    p.rx_filter = swap
    chunk = pattern(4096, 39)[:2900]  # two segments; the first is held back
    c.send(chunk)
    b.run(1)
    dup = [s for s in p.sent(t) if s.flags & ACK and not s.n]
    p.rx_filter = None
    if first:
        p.deliver(first[0])
        b.run(0.5)
        v.check(bytes(p.stream[before:]) == chunk, "R-RFC-01", "out-of-order data was not queued: "
                f"{len(p.stream) - before} of {len(chunk)} bytes delivered right after the gap was filled", tcb)
        v.check(bool(dup), "R-RFC-01", "no immediate ACK for an out-of-order segment (RFC 1122 4.2.2.21)", tcb)
    b.run(5)
    _settle(b, tcb)
    # --- a corrupted TCP header (valid IP header): indicated or dropped and counted, never processed.
    t = b.sched.now
    ack0 = p.acked_upto(0)
    errs0 = _in_errors(b)
    bad = OneShot(_corrupt_tcp)
    p.rx_filter = bad
    c.send(pattern(512, 33)[:300])
    b.run(3)
    p.rx_filter = None
    seen = parse_frame(bad.seen[0], verify_checksums=False).tcp if bad.seen else None  # type: ignore[union-attr]

    def is_bad(f: Any) -> bool:
        s = getattr(f, "tcp", None)
        return (seen is not None and s is not None and s.src_port == seen.src_port and s.dst_port == seen.dst_port
                and s.seq == seen.seq)

    indicated = p.normal_frames(t, is_bad)
    counted = _in_errors(b) - errs0
    v.check(bool(bad.seen) and (indicated >= 1 or counted >= 1), "R-RX-11",
            f"a segment with a corrupted TCP header was neither indicated to the host ({indicated}) nor counted in "
            f"InErrors ({counted})", tcb)
    v.check(p.acked_upto(t) in (None, ack0), "R-RX-11", "the target acknowledged a segment with a corrupted TCP "
            "header", tcb)
    b.run(1500)  # B retransmits the segment intact
    # --- a SACK option on an ordinary data segment (R-RFC-02).
    t = b.sched.now
    before = len(p.stream)

    def with_sack(frame: bytes) -> bytes:
        seg = parse_frame(frame, verify_checksums=False).tcp  # type: ignore[union-attr]
        o = seg.options or TcpOptions()
        blk = ((seg.seq - 2000) & MASK, (seg.seq - 1000) & MASK)
        return _rebuild(frame, options=TcpOptions(ts_val=o.ts_val, ts_ecr=o.ts_ecr, sack_blocks=(blk,)))

    p.rx_filter = OneShot(with_sack)
    chunk = pattern(512, 35)[:500]
    c.send(chunk)
    b.run(3)
    p.rx_filter = None
    v.check(bytes(p.stream[before:]) == chunk, "R-RFC-02", f"a data segment carrying a SACK option was not "
            f"processed: {len(p.stream) - before} of {len(chunk)} bytes delivered within 3 ms", tcb)
    # --- a VLAN-tagged frame while the neighbor's VlanId is 0 (R-RX-09).
    _settle(b, tcb)
    before = len(p.stream)
    p.rx_filter = OneShot(lambda fr: _rebuild(fr, vlan_id=7))
    chunk = pattern(512, 37)[:450]
    c.send(chunk)
    b.run(3)
    p.rx_filter = None
    v.check(bytes(p.stream[before:]) == chunk, "R-RX-09", "a frame tagged VLAN 7 was dropped although the "
            f"neighbor's VlanId is 0 ({len(p.stream) - before} of {len(chunk)} bytes delivered within 3 ms)", tcb)
    # --- SYN outside the window: an ACK, nothing else (R-SEC-04).
    _settle(b, tcb)
    rcv = _rcv_nxt(b, tcb)
    t = b.sched.now
    _inject(b, p, tcb, seq=rcv + (1 << 30), flags=SYN)
    b.run(3)
    acks = [s for s in p.sent(t) if s.flags & ACK and not s.flags & (RST | SYN)]
    v.check(bool(acks) and acks[0].ack == rcv, "R-SEC-04",
            f"a SYN outside the receive window got {len(acks)} ACKs (want one acknowledging RcvNxt {rcv})", tcb)
    bad_ev = p.events_of(_ABORT, t) + p.events_of(_RETRIEVE, t)
    v.check(not bad_ev and tcb.path.kind != "host", "R-SEC-04", "a SYN outside the window aborted or uploaded "
            "the connection", tcb)
    b.run(3100)  # past the 3 s challenge-ACK throttle of R-SEC-05
    # --- out-of-order SYN inside the window: blind-reset mitigation, not an in-order SYN (R-RX-03).
    t = b.sched.now
    rcv = _rcv_nxt(b, tcb)
    _inject(b, p, tcb, seq=rcv + 1000, flags=SYN)
    b.run(3)
    acks = [s for s in p.sent(t) if s.flags & ACK and not s.flags & (RST | SYN)]
    bad_ev = p.events_of(_ABORT, t) + p.events_of(_RETRIEVE, t)
    v.check(bool(acks) and not bad_ev and tcb.path.kind != "host", "R-RX-03",
            f"an out-of-order SYN in the window got {len(acks)} ACKs and events {bad_ev}: want a challenge ACK "
            "and the connection left alone", tcb)
    before = len(p.stream)
    chunk = pattern(512, 41)[:200]
    c.send(chunk)
    b.run(3)
    v.check(bytes(p.stream[before:]) == chunk, "R-RX-03", "the connection stopped delivering after an "
            "out-of-order SYN", tcb)
    # --- RST at RcvNxt (R-SEC-02).
    t = b.sched.now
    _inject(b, p, tcb, seq=_rcv_nxt(b, tcb), flags=RST, ack=0)
    b.run(3)
    v.check(bool(p.events_of(_ABORT, t)), "R-SEC-02", "an RST with seq == RcvNxt was not indicated as "
            "TcpIndicateAbort within 3 ms", tcb)
    b.until(lambda: tcb.path.kind == "host", 5, "the reset connection to come back")
    _close(b, sa, sb)


def _in_errors(b: Bench) -> int:
    try:
        tcp, _ip = b.p.manager.offload_stats(4)
    except (OSError, TypeError):
        return 0
    return int(getattr(tcp, "in_errors", 0) or 0)


def forward_ip_options(b: Bench, quick: bool) -> None:
    """An IPv4 data segment with IP options goes to the host (R-RX-05), which forwards it; a segment the
    host forwards itself (NdisOffloadTcpForward) completes with an allowed Status (R-FWD-04) and its
    data comes up through the chimney like wire data (R-FWD-05)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    c = _Ctx(b, p, sa, sb, tcb)
    c.send(pattern(512, 43)[:300])
    b.run(3)
    # --- IP options.
    t = b.sched.now
    before = len(p.stream)
    p.rx_filter = OneShot(_with_ip_options)
    chunk = pattern(1024, 45)[:800]
    c.send(chunk)
    b.run(5)
    p.rx_filter = None
    opt = p.normal_frames(t, lambda f: f.tcp is not None and f.has_ip_options)
    v.check(opt >= 1, "R-RX-05", "a TCP segment with IPv4 options for an offloaded connection was not indicated "
            "through the non-offload path", tcb)
    if opt:
        v.check(bytes(p.stream[before:]) == chunk, "R-FWD-05", f"the host forwarded a segment with IP options; "
                f"{len(p.stream) - before} of its {len(chunk)} bytes came up through the chimney", tcb)
    # --- a segment forwarded by the host directly.
    cp = b.p.manager.paths.get(tcb)
    if cp is None:
        raise ScenarioAbort("connection not offloaded")
    before = len(p.stream)
    grab: list[bytes] = []

    def take(frame: bytes) -> bytes | None:
        if _is_data(frame) and not grab:
            grab.append(frame)
            return None
        return frame

    p.rx_filter = take
    chunk = pattern(1024, 47)[:900]
    c.send(chunk)
    b.run(0.5)
    p.rx_filter = None
    if grab:
        f = parse_frame(grab[0], verify_checksums=False)
        l4 = bytes(f.l4)  # type: ignore[union-attr, arg-type]
        nbl = NetBufferList(NetBuffer(Mdl(bytearray(l4)), 0, len(l4)), b.p.binding.name)
        p.own.add(id(nbl))
        p.ndis.offload_tcp_forward(cp.handle, nbl)
        b.run(3)
        rec = next((r for r in p.io if r.nbl is nbl), None)
        v.check(rec is not None and rec.done_at is not None and rec.status in _FWD_OK, "R-FWD-04",
                f"a forwarded segment completed with "
                f"{_sname(rec.status) if rec is not None and rec.status is not None else 'nothing'}", nbl)
        v.check(bytes(p.stream[before:]) == chunk, "R-FWD-05", f"a forwarded segment's data was not delivered "
                f"through the chimney ({len(p.stream) - before} of {len(chunk)} bytes within 3 ms)", nbl)
    fwd = [r for r in p.io if r.kind == "forward" and r.done_at is not None]
    v.check(all(r.status in _FWD_OK for r in fwd), "R-FWD-04", "forwarded segments completed with "
            f"{sorted({_sname(r.status or 0) for r in fwd if r.status not in _FWD_OK})}", tcb)
    b.upload(tcb)
    _close(b, sa, sb)


def vlan_tagged(b: Bench, quick: bool) -> None:
    """Both hosts on VLAN 7 with UserPriority 5 offered: the offload succeeds and the data flows tagged
    (R-VLAN-01); every frame carries priority 5 if the target reports 802.1p (OID_GEN_MAC_OPTIONS), else 0
    (R-VLAN-06); a frame
    tagged with another VLAN is not accepted (R-RX-09)."""
    for host in (b.p.host_a, b.p.host_b):
        for iface in host.ip.interfaces.values():
            iface.vlan_id = 7
    p = DataProbe.of(b)
    p.cached_patch = {"user_priority": 5}
    v = b.verifier
    sa, sb, tcb = b.socket_pair(PORT)
    sb.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    ok = b.offload(tcb) == 1 and b.p.manager.is_offloaded(tcb)
    v.check(ok, "R-VLAN-01", f"a connection over a VLAN 7 neighbor was not offloaded: "
            f"{b.p.manager.initiate_results}", tcb)
    if not ok:
        _close(b, sa, sb)
        return
    c = _Ctx(b, p, sa, sb, tcb)
    t = b.sched.now
    got = bytearray()
    data = pattern(4096, 49)[:3000]
    b.push(sa, data, [(sb, got)])
    c.send(pattern(1024, 51)[:600])
    b.run(5)
    drain([(sb, got)])
    out = p.sent(t)
    v.check(bytes(got) == data and bool(out) and all(s.vlan_id == 7 for s in out), "R-VLAN-01",
            f"over VLAN 7: B got {len(got)} of {len(data)} bytes, A's frames tagged "
            f"{sorted({s.vlan_id for s in out}, key=str)}", tcb)
    prios = {s.vlan_prio for s in out if not s.host}
    p8021 = _supports_8021p(b)
    want = 5 if p8021 else 0
    v.check(prios == {want}, "R-VLAN-06", f"with UserPriority 5 the target sent frames with 802.1p priorities "
            f"{sorted(prios, key=str)}; it {'reports' if p8021 else 'does not report'} 802.1p support "
            f"(OID_GEN_MAC_OPTIONS), so every frame must carry {want}", tcb)
    # --- a data frame re-tagged VLAN 9: not for this connection.
    t = b.sched.now
    ack0 = p.acked_upto(0)
    before = len(p.stream)
    p.rx_filter = OneShot(lambda fr: _rebuild(fr, vlan_id=9))
    c.send(pattern(1024, 53)[:500])
    b.run(3)
    p.rx_filter = None
    took = p.acked_upto(t)
    v.check(len(p.stream) == before and took in (None, ack0), "R-RX-09",
            f"a frame tagged VLAN 9 was accepted on a connection whose neighbor is on VLAN 7 "
            f"({len(p.stream) - before} bytes delivered, ACK {ack0} -> {took})", tcb)
    b.run(1500)
    b.upload(tcb)
    _close(b, sa, sb)


def _supports_8021p(b: Bench) -> bool:
    """What the host knows of the target's 802.1p support: NDIS_MAC_OPTION_8021P_PRIORITY in the answer to an
    OID_GEN_MAC_OPTIONS query (no answer: not supported)."""
    req = NdisOidRequest.query(OID_GEN_MAC_OPTIONS)
    st = b.p.ndis.oid_request(b.p.manager.binding_handle, req)
    return st == NdisStatus.SUCCESS and isinstance(req.buffer, int) and bool(req.buffer & NDIS_MAC_OPTION_8021P_PRIORITY)


def offload_data(b: Bench, quick: bool) -> None:
    """Data in flight at offload: received bytes the application has not read come as BufferedData and
    are delivered before anything received later (R-OFF-15); sent bytes between SndNxt and SndMax (after
    a retransmission timeout in the host) go out before any other data (R-OFF-18), then the rest of
    SendDataHead, then data of later MiniportTcpOffloadSend calls (R-OFF-19)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = b.socket_pair(PORT)
    sb.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    early = pattern(4096, 55)[:3000]
    _b_send(b, sb, early)
    b.run(5)  # A's application does not read: the bytes wait in the host
    # Host A's data lost on the wire until its retransmission timer rewinds SndNxt below SndMax.
    p.drop_to_b = _is_data
    first = pattern(32_768, 57)[:20_000]
    with contextlib.suppress(BlockingIOError):
        sa.send(first)
    b.until(lambda: _rewound(tcb), 5, "host A's retransmission timeout")
    t_off = b.sched.now
    p.drop_to_b = None
    if not _offload(b, tcb):
        raise ScenarioAbort("no offload")
    ini = p.initiated[-1] if p.initiated else None
    late = pattern(16_384, 59)[:8000]
    got = bytearray()
    b.push(sa, late, [(sb, got)])
    b.push(sb, pattern(4096, 61)[:2000], [])
    b.run(20)
    # R-OFF-15: the stream through the chimney starts with the buffered bytes.
    if ini is not None and ini.buffered:
        v.check(bytes(p.stream[:len(ini.buffered)]) == ini.buffered, "R-OFF-15",
                f"the {len(ini.buffered)} bytes of BufferedData were not the first delivered after the offload "
                f"({len(p.stream)} delivered)", tcb)
    # R-OFF-18: [SndNxt, SndMax) before anything else.
    dlg = ini.dlg if ini is not None else None
    if dlg is not None and dlg.snd_nxt != dlg.snd_max:
        nxt, mx = dlg.snd_nxt & MASK, dlg.snd_max & MASK
        covered = nxt
        ok = True
        for s in p.sent(t_off):
            if not s.n:
                continue
            end = (s.seq + s.n) & MASK
            if _seq_le(s.seq, covered) and _seq_lt(covered, end):
                covered = end if _seq_lt(end, mx) or end == mx else mx
            elif _seq_le(mx, s.seq) and _seq_lt(covered, mx):
                ok = False
                break
            if covered == mx:
                break
        v.check(ok, "R-OFF-18", f"data at or beyond SndMax {mx} went out before the bytes {nxt}..{mx} to "
                "retransmit", tcb)
    b.until(lambda: (drain([(sb, got)]), len(got) >= len(first) + len(late))[1], 10, "B to read everything")
    v.check(bytes(got) == first + late, "R-OFF-19", f"B received {len(got)} bytes out of order: the bytes "
            "beyond SndMax must follow SndNxt..SndMax and precede later sends' data", tcb)
    b.upload(tcb)
    _close(b, sa, sb)


def _rewound(tcb: Tcb) -> bool:
    conn = getattr(tcb, "conn", None)
    return conn is not None and conn.snd_nxt != conn.snd_max and conn.snd_nxt != conn.snd_una


def send_path(b: Bench, quick: bool) -> None:
    """Send-side behaviour: with TCP_FLAG_NAGLING_ENABLED at most one small segment is unacknowledged
    (R-SEND-16); pending ACKs are sent before a terminate completes (R-TRM-17); nothing is sent on a
    connection whose path was invalidated (R-SEND-15)."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    ini = p.initiated[-1] if p.initiated else None
    nagle = ini is not None and ini.cached is not None and bool(ini.cached.flags & TcpCachedFlags.NAGLING_ENABLED)
    # --- Nagle: small NdisOffloadTcpSend requests in quick succession (the host's socket layer would coalesce
    # small writes itself, so the probe posts them).
    cp = b.p.manager.paths.get(tcb)
    t = b.sched.now
    for _ in range(12 if cp is not None else 0):
        nbl = NetBufferList(NetBuffer(Mdl(bytearray(b"n" * 100)), 0, 100), b.p.binding.name)
        p.own.add(id(nbl))
        p.ndis.offload_tcp_send(cp.handle, nbl)  # type: ignore[union-attr]
        b.run(0.02)
    b.run(300)
    if nagle:
        outstanding: list[int] = []
        b_ack: int | None = None
        violations = 0
        for s in p.wire:
            if s.t < t:
                continue
            if not s.out:
                if s.flags & ACK:
                    b_ack = s.ack if b_ack is None or _seq_lt(b_ack, s.ack) else b_ack
                continue
            if b_ack is not None:
                outstanding = [e for e in outstanding if _seq_lt(b_ack, e)]
            if 0 < s.n < 536:
                if outstanding:
                    violations += 1
                outstanding.append((s.seq + s.n) & MASK)
        v.check(violations == 0, "R-SEND-16", f"{violations} small segments were sent while another small segment "
                "was unacknowledged, with TCP_FLAG_NAGLING_ENABLED", tcb)
    got = bytearray()
    drain([(sb, got)])
    # --- a pending delayed ACK at terminate.
    b.run(300)
    t = b.sched.now
    _b_send(b, sb, b"x" * 100)
    b.run(0.5)
    n_trm = len(p.terminated)
    t_trm = b.sched.now
    last_ack = None
    for s in p.wire:
        if s.out and not s.host and s.flags & ACK and s.t <= t_trm and (last_ack is None or _seq_lt(last_ack, s.ack)):
            last_ack = s.ack
    # An ACK is pending when B's data reached the target beyond the last ACK it sent; if none is, the terminate
    # says nothing about R-TRM-17 (not exercised).
    pending = any(not s.out and s.n and t <= s.t <= t_trm and (last_ack is None or _seq_lt(last_ack, (s.seq + s.n)
                                                                                         & MASK)) for s in p.wire)
    b.upload(tcb)
    mine = p.terminated[n_trm:]
    if pending and mine and mine[0].dlg is not None:
        rcv = mine[0].dlg.rcv_nxt & MASK
        acked = [s for s in p.sent(t) if s.flags & ACK and s.t <= mine[0].t]
        best = max((s.ack for s in acked), key=lambda a: (a - rcv) & MASK, default=None)
        v.check(any(s.ack == rcv for s in acked), "R-TRM-17", f"the terminate completed with RcvNxt {rcv} but "
                f"the target's last ACK was {best}: the pending ACK was not sent first", tcb)
    # --- invalidation: back offloaded, invalidate the path, keep sending.
    b.run(5)
    if not _offload(b, tcb):
        raise ScenarioAbort("no second offload")
    cp = b.p.manager.paths.get(tcb)
    pobj = cp.path_obj if cp is not None else None
    if pobj is not None:
        m = b.p.manager
        held: list[Any] = []
        real_upload = m.upload
        m.upload = lambda tcbs, **kw: held.append(tcbs) or 0  # type: ignore[method-assign]
        try:
            w = spawn(b.sched, sa.asendall(pattern(65_536, 63) * 8))
            b.run(2)
            m.invalidate([pobj])
            b.run(1)
            t_inv = b.sched.now
            for _ in range(20):  # B keeps reading: only the invalidation may stop the data
                b.run(1)
                drain([(sb, got)])
            sent = [s for s in p.sent(t_inv) if s.n]
            v.check(not sent, "R-SEND-15", f"{len(sent)} data segments were sent on a connection whose path was "
                    "invalidated", tcb)
        finally:
            m.upload = real_upload  # type: ignore[method-assign]
        b.upload(tcb)
        b.until(lambda: (drain([(sb, got)]), w.done())[1], 10, "the sends to finish in the host")
    _close(b, sa, sb)


def rx_urgent(b: Bench, quick: bool) -> None:
    """An URG segment with a valid sequence and ACK: TcpIndicateRetrieve(ReceivedUrgentData), the urgent
    data not acknowledged nor delivered through the chimney, and after the terminate the held segment is
    indicated through the non-offload path (R-RX-07); an URG segment outside the window is dropped and the
    connection carries on."""
    p = DataProbe.of(b)
    v = b.verifier
    sa, sb, tcb = _pair(b)
    c = _Ctx(b, p, sa, sb, tcb)
    c.send(pattern(512, 65)[:300])
    b.run(5)
    # --- invalid: far outside the window; dropped, no retrieve.
    t = b.sched.now
    rcv = _rcv_nxt(b, tcb)
    _inject(b, p, tcb, seq=rcv + (1 << 30), flags=ACK | URG | PSH, payload=b"u" * 10, urg_ptr=10)
    b.run(3)
    v.check(not p.events_of(_RETRIEVE, t) and tcb.path.kind != "host", "R-RX-07",
            "an URG segment outside the receive window was not dropped: the connection was handed back", tcb)
    before = len(p.stream)
    chunk = pattern(512, 67)[:200]
    c.send(chunk)
    b.run(3)
    v.check(bytes(p.stream[before:]) == chunk, "R-RX-07", "the connection stopped after an invalid URG segment", tcb)
    # --- valid URG at RcvNxt.
    t = b.sched.now
    rcv = _rcv_nxt(b, tcb)
    before = len(p.stream)
    _inject(b, p, tcb, seq=rcv, flags=ACK | URG | PSH, payload=b"U" * 10, urg_ptr=10)
    b.run(3)
    ev = [e for e in p.events_of(_RETRIEVE, t) if e[2] == int(TcpUploadReason.ReceivedUrgentData)]
    acked = [s for s in p.sent(t) if s.flags & ACK and not s.host and _seq_lt(rcv, s.ack)]
    v.check(bool(ev), "R-RX-07", "a valid URG segment did not bring TcpIndicateRetrieve(ReceivedUrgentData)", tcb)
    v.check(not acked and len(p.stream) == before, "R-RX-07", f"the target acknowledged ({len(acked)} ACKs past "
            f"RcvNxt) or delivered ({len(p.stream) - before} bytes) urgent data", tcb)
    b.until(lambda: tcb.path.kind == "host", 5, "the host to take the connection back")
    urg = p.normal_frames(t, lambda f: f.tcp is not None and bool(f.tcp.flags & URG))
    v.check(urg >= 1, "R-RX-07", "the held URG segment was not indicated through the non-offload path after the "
            "terminate", tcb)
    _close(b, sa, sb)


DATA_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("recv-push-modes", recv_push_modes, DATA_WIRE),
    Scenario("recv-reentrant", recv_reentrant, DATA_WIRE),
    Scenario("disconnect-graceful-sends", disconnect_graceful, DATA_WIRE),
    Scenario("disconnect-abortive-sends", disconnect_abortive, DATA_WIRE),
    Scenario("forward-ip-options", forward_ip_options, DATA_WIRE),
    Scenario("rx-special", rx_special, DATA_WIRE),
    Scenario("vlan-tagged", vlan_tagged, DATA_WIRE),
    Scenario("offload-data-in-flight", offload_data, DATA_WIRE),
    Scenario("send-path", send_path, DATA_WIRE),
    Scenario("rx-urgent", rx_urgent, DATA_WIRE),
)
