"""Deliberately broken offload targets for the data-path scenarios of `chimney verify`: each subclasses the
built-in `OffloadTarget` and breaks one receive / disconnect / forward / special-receive / send rule.

    chimney verify examples/broken_data_targets.py:PshCompletesNonPush     # R-RECV-05
    chimney verify examples.broken_data_targets:SilentOutOfWindowSyn        # R-SEC-04
"""

from __future__ import annotations

import copy
from typing import Any

from chimney.ndis.buffers import NblInfo, NetBufferList
from chimney.ndis.offload_state import TCP_DISCONNECT_ABORTIVE_CLOSE, TcpOffloadStateCached
from chimney.ndis.status import NdisStatus
from chimney.net.drops import Drop
from chimney.net.frame import parse_frame, strip_ipv4_options
from chimney.net.tcp import RST, SYN
from chimney.target import OffloadTarget
from chimney.target.context import PathCtx, TcpCtx
from chimney.target.miniport import NDIS_MAC_OPTION_8021P_PRIORITY, OID_GEN_MAC_OPTIONS
from chimney.tcp.buffers import SendBuffer

MASK = 0xFFFFFFFF
_BYTES = NblInfo.TcpOffloadBytesTransferred


def _ctx_of(target: OffloadTarget, frame: bytes) -> tuple[Any, TcpCtx | None]:
    f = parse_frame(frame, verify_checksums=False)
    seg = getattr(f, "tcp", None)
    if seg is None:
        return f, None
    return f, target.tcps.get((f.ip_dst, f.ip_src, seg.dst_port, seg.src_port))  # type: ignore[union-attr]


# ---------------------------------------------------------------- posted receives (R-RECV-*)


class PshCompletesNonPush(OffloadTarget):
    """Completes a partly filled non-push request when a PSH segment arrives (breaks R-RECV-05)."""

    def _push_check(self, ctx: TcpCtx) -> None:
        if ctx.posted and ctx.last_push and ctx.posted[0].filled:
            req = ctx.posted.popleft()
            ctx.last_push = False
            self._stop_push_timer(ctx)
            self.h_receive_complete(self.adapter, self._finish_recv(req, NdisStatus.SUCCESS))
            return
        super()._push_check(ctx)


class NoPushTimer(OffloadTarget):
    """A partly filled push request waits for more data or a PSH forever: no push timer (breaks R-RECV-06)."""

    def _on_push_timer(self, ctx: TcpCtx) -> None:
        ctx.push_timer = None


class PushTimerNotRestarted(OffloadTarget):
    """Keeps the push timer's first deadline when more data arrives (breaks R-RECV-08)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: dict[int, int] = {}

    def _fill(self, ctx: TcpCtx) -> bool:
        had = ctx.push_timer is not None
        head = ctx.posted[0] if ctx.posted else None
        done = super()._fill(ctx)
        key = id(ctx)
        if ctx.push_timer is None:
            self._deadline.pop(key, None)
        elif had and ctx.posted and ctx.posted[0] is head and key in self._deadline:
            ctx.push_timer.cancel()
            when = max(self._deadline[key], self.scheduler.now)
            ctx.push_timer = self.scheduler.call_at(when, self._on_push_timer, ctx, label="push timer (not restarted)")
        else:
            self._deadline[key] = self.scheduler.now + self.params.tcp_push_ticks * self.tick_ns
        return done


class LateFullCompletion(OffloadTarget):
    """Holds the completion of every filled (non-empty) receive request for 30 ms (breaks R-RECV-07)."""

    def initialize_ex(self, miniport_handle: Any, params: dict[str, Any]) -> NdisStatus:
        st = super().initialize_ex(miniport_handle, params)
        complete = self.h_receive_complete

        def later(adapter: Any, nbl: NetBufferList) -> None:
            nb = nbl.first_net_buffer
            full = nbl.next is None and nb is not None and nb.data_offset > 0 and nb.data_length == 0
            if not full:
                complete(adapter, nbl)
                return
            self.scheduler.call_later(30_000_000, complete, adapter, nbl, label="late receive completion")

        self.h_receive_complete = later
        return st


class OffByOneBytesTransferred(OffloadTarget):
    """Reports one byte more in TcpOffloadBytesTransferred than it placed (breaks R-RECV-09)."""

    @staticmethod
    def _finish_recv(req: Any, status: int) -> NetBufferList:
        nbl = OffloadTarget._finish_recv(req, status)
        nbl.info[_BYTES] = int(nbl.info.get(_BYTES, 0) or 0) + 1
        return nbl


class ZeroByteRequestsDropped(OffloadTarget):
    """Forgets zero-byte receive requests instead of completing them (breaks R-RECV-12)."""

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        nb = nbl.first_net_buffer
        if nbl.next is None and nb is not None and nb.data_length == 0 and isinstance(offload_context, TcpCtx):
            offload_context.refused = False  # it still re-enables indications, but is never completed
            self._pump(offload_context)
            return NdisStatus.PENDING
        return super().tcp_offload_receive(adapter_context, offload_context, nbl)


class LazyPostAfterRefusal(OffloadTarget):
    """After a refused indication, queues newly posted requests without starting a delivery pass: the buffered
    bytes wait for the next segment to arrive (breaks R-RECV-17, §3.6 B.2)."""

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        ctx = offload_context
        if not isinstance(ctx, TcpCtx) or not ctx.refused or ctx.rx_busy:
            return super().tcp_offload_receive(adapter_context, offload_context, nbl)
        ctx.rx_busy = True  # the built-in then only queues the requests
        try:
            return super().tcp_offload_receive(adapter_context, offload_context, nbl)
        finally:
            ctx.rx_busy = False


class ReversedIndicationMdls(OffloadTarget):
    """Builds each indication's MDL chain newest segment first, so an indication covering several received
    segments hands the host their bytes out of arrival order (breaks R-RECV-19)."""

    def _indication_nbl(self, conn: Any, n: int) -> NetBufferList | None:
        nbl = super()._indication_nbl(conn, n)
        nb = nbl.first_net_buffer if nbl is not None else None
        if nb is None or nb.mdl_chain is None or nb.mdl_chain.next is None:
            return nbl
        mdls = []
        m = nb.mdl_chain
        while m is not None:
            mdls.append(m)
            m = m.next
        mdls.reverse()
        for a, z in zip(mdls, [*mdls[1:], None], strict=True):
            a.next = z
        nb.mdl_chain = nb.current_mdl = mdls[0]
        return nbl


class DropsSegmentsWhileBusy(OffloadTarget):
    """Drops segments that arrive while a completion or indication is in progress (breaks R-RECV-18)."""

    def _on_frame(self, frame: bytes) -> None:
        _f, ctx = _ctx_of(self, frame)
        if ctx is not None and ctx.rx_busy:
            return
        super()._on_frame(frame)


# ---------------------------------------------------------------- disconnects (R-DISC-*)


class GracefulCompletesEarly(OffloadTarget):
    """Completes a graceful disconnect as soon as the FIN is queued, before the sends (breaks R-DISC-08)."""

    def tcp_offload_disconnect(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList,
                               flags: int) -> NdisStatus:
        st = super().tcp_offload_disconnect(adapter_context, offload_context, nbl, flags)
        ctx = offload_context
        if isinstance(ctx, TcpCtx) and ctx.disconnect is not None and ctx.disconnect[0] is nbl:
            ctx.disconnect = None
            nbl.status = NdisStatus.SUCCESS
            nbl.info[_BYTES] = 0
            self.scheduler.call_soon(self.h_disconnect_complete, self.adapter, nbl, label="early disconnect")
        return st


class GracefulDisconnectFailed(OffloadTarget):
    """Sends the FIN but fails the graceful disconnect request (breaks R-DISC-12)."""

    def _check_disconnect(self, ctx: TcpCtx) -> None:
        d = ctx.disconnect
        if d is None or ctx.conn.snd_una < d[2]:
            return
        ctx.disconnect = None
        d[0].status = NdisStatus.REQUEST_ABORTED
        d[0].info[_BYTES] = 0
        self.h_disconnect_complete(self.adapter, d[0])


class StopsReceivingAfterFin(OffloadTarget):
    """Drops the peer's data once its own FIN is out (breaks R-DISC-13)."""

    def _on_frame(self, frame: bytes) -> None:
        f, ctx = _ctx_of(self, frame)
        if ctx is not None and ctx.conn.fin_seq is not None and len(f.tcp.payload):
            return
        super()._on_frame(frame)


class SendsCompletedWithDisconnect(OffloadTarget):
    """While a graceful disconnect is pending, holds the send completions back and hands those NBLs to
    NdisTcpOffloadDisconnectComplete, chained before the disconnect's own NBL (breaks R-DISC-11)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[NetBufferList] = []

    def _complete_acked(self, ctx: TcpCtx) -> None:
        if ctx.disconnect is None:
            super()._complete_acked(ctx)
            return
        orig = self.h_send_complete

        def hold(adapter: Any, chain: NetBufferList) -> None:
            n: NetBufferList | None = chain
            while n is not None:
                nxt, n.next = n.next, None
                self._held.append(n)
                n = nxt

        self.h_send_complete = hold
        try:
            super()._complete_acked(ctx)
        finally:
            self.h_send_complete = orig

    def _check_disconnect(self, ctx: TcpCtx) -> None:
        orig = self.h_disconnect_complete

        def with_sends(adapter: Any, nbl: NetBufferList) -> None:
            held, self._held = self._held, []
            for a, z in zip(held, [*held[1:], nbl], strict=True):
                a.next = z
            orig(adapter, held[0] if held else nbl)

        self.h_disconnect_complete = with_sends
        try:
            super()._check_disconnect(ctx)
        finally:
            self.h_disconnect_complete = orig


class AbortSendsCompletedSuccess(OffloadTarget):
    """Completes the sends outstanding at an abortive disconnect with SUCCESS instead of REQUEST_ABORTED
    (breaks R-DISC-04)."""

    def _fail_sends(self, ctx: TcpCtx, status: int) -> None:
        super()._fail_sends(ctx, NdisStatus.SUCCESS if ctx.abortive else status)


class AbortCompletesBeforeSends(OffloadTarget):
    """Completes an abortive disconnect first and aborts the outstanding sends 1 ms later (breaks R-DISC-04)."""

    def tcp_offload_disconnect(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList,
                               flags: int) -> NdisStatus:
        ctx = offload_context
        if not flags & TCP_DISCONNECT_ABORTIVE_CLOSE or not isinstance(ctx, TcpCtx) or self._refusal(ctx) is not None:
            return super().tcp_offload_disconnect(adapter_context, offload_context, nbl, flags)
        ctx.abortive = ctx.aborted = True
        ctx.conn.abort(self.scheduler.now)
        self._pump(ctx)
        nbl.status = NdisStatus.SUCCESS
        nbl.info[_BYTES] = 0
        self.scheduler.call_soon(self.h_disconnect_complete, self.adapter, nbl, label="abortive disconnect")
        self.scheduler.call_later(1_000_000, self._fail_sends, ctx, NdisStatus.REQUEST_ABORTED, label="late abort")
        return NdisStatus.PENDING


class AbortKeepsReceiving(OffloadTarget):
    """Carries out an abortive disconnect 10 ms late, receiving and acknowledging meanwhile (breaks R-DISC-05)."""

    def tcp_offload_disconnect(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList,
                               flags: int) -> NdisStatus:
        if not flags & TCP_DISCONNECT_ABORTIVE_CLOSE:
            return super().tcp_offload_disconnect(adapter_context, offload_context, nbl, flags)
        do = super().tcp_offload_disconnect
        self.scheduler.call_later(10_000_000, do, adapter_context, offload_context, nbl, flags, label="late abort")
        return NdisStatus.PENDING


class ForwardStatusFailure(OffloadTarget):
    """Completes forwarded segments with NDIS_STATUS_FAILURE (breaks R-FWD-04)."""

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        st = super().tcp_offload_forward(adapter_context, offload_context, nbl)
        n: NetBufferList | None = nbl
        while n is not None:
            n.status = NdisStatus.FAILURE
            n = n.next
        return st


class ForwardIgnored(OffloadTarget):
    """Completes forwarded segments with SUCCESS without processing them (breaks R-FWD-05)."""

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        n: NetBufferList | None = nbl
        while n is not None:
            n.status = NdisStatus.SUCCESS
            n = n.next
        self.scheduler.call_soon(self.h_forward_complete, self.adapter, nbl, label="forward ignored")
        return NdisStatus.PENDING


class IpOptionsProcessed(OffloadTarget):
    """Strips IPv4 options and processes the segment itself instead of indicating it (breaks R-RX-05)."""

    def _on_frame(self, frame: bytes) -> None:
        super()._on_frame(strip_ipv4_options(frame))


class SwallowsIcmp(OffloadTarget):
    """Drops every ICMP message instead of indicating it (breaks R-RX-04 and R-RX-08)."""

    def _on_frame(self, frame: bytes) -> None:
        f = parse_frame(frame, verify_checksums=False)
        if type(f) is not Drop and f.icmp is not None:
            return
        super()._on_frame(frame)


class CorruptHeaderDroppedUncounted(OffloadTarget):
    """Drops segments with a bad TCP checksum without indicating or counting them (breaks R-RX-11)."""

    def _on_frame(self, frame: bytes) -> None:
        if type(parse_frame(frame)) is Drop:
            f = parse_frame(frame, verify_checksums=False)
            if type(f) is not Drop and f.tcp is not None:
                return
        super()._on_frame(frame)


class TaggedFramesDropped(OffloadTarget):
    """Drops every VLAN-tagged frame when it tracks no VLAN, although VlanId 0 means no filtering (breaks
    R-RX-09)."""

    def _on_frame(self, frame: bytes) -> None:
        f = parse_frame(frame, verify_checksums=False)
        if type(f) is not Drop and f.vlan_id and not self._vlans:
            return
        super()._on_frame(frame)


class NoVlanSupport(OffloadTarget):
    """Has no room for any non-zero VLAN: neighbors on VLANs fail with OFFLOAD_VLAN_ENTRIES (breaks R-VLAN-01)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits.max_vlans = 0


class PriorityDroppedThoughAdvertised(OffloadTarget):
    """Reports NDIS_MAC_OPTION_8021P_PRIORITY in OID_GEN_MAC_OPTIONS but never inserts the UserPriority
    (breaks R-VLAN-06)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits.support_8021p = False

    def oid_request(self, adapter_context: Any, request: Any) -> NdisStatus:
        st = super().oid_request(adapter_context, request)
        if request.oid == OID_GEN_MAC_OPTIONS and st == NdisStatus.SUCCESS:
            request.buffer |= NDIS_MAC_OPTION_8021P_PRIORITY
        return st


class WrongUserPriority(OffloadTarget):
    """Tags frames with UserPriority + 1 (breaks R-VLAN-06)."""

    def _builder(self, path: PathCtx, cached: TcpOffloadStateCached) -> Any:
        c = copy.copy(cached)
        c.user_priority = (cached.user_priority + 1) & 7
        return super()._builder(path, c)


class SackSegmentsDropped(OffloadTarget):
    """Drops data segments that carry a SACK option (breaks R-RFC-02)."""

    def _on_frame(self, frame: bytes) -> None:
        f, ctx = _ctx_of(self, frame)
        o = f.tcp.options if ctx is not None else None
        if o is not None and o.sack_blocks:
            return
        super()._on_frame(frame)


class NoOutOfOrderQueue(OffloadTarget):
    """Drops segments beyond RcvNxt instead of queuing them (breaks R-RFC-01)."""

    def _on_frame(self, frame: bytes) -> None:
        f, ctx = _ctx_of(self, frame)
        if ctx is not None and len(f.tcp.payload) and 0 < ((f.tcp.seq - ctx.conn.rcv_nxt) & MASK) < 0x40000000:
            return
        super()._on_frame(frame)


# ---------------------------------------------------------------- blind-reset mitigation (R-SEC-*, R-RX-03)


class RstAtRcvNxtIgnored(OffloadTarget):
    """Ignores every RST, even one at RcvNxt (breaks R-SEC-02)."""

    def _on_frame(self, frame: bytes) -> None:
        f, ctx = _ctx_of(self, frame)
        if ctx is not None and f.tcp.flags & RST:
            return
        super()._on_frame(frame)


class SilentOutOfWindowSyn(OffloadTarget):
    """Drops a SYN outside the receive window without the ACK (breaks R-SEC-04)."""

    def _on_frame(self, frame: bytes) -> None:
        f, ctx = _ctx_of(self, frame)
        if ctx is not None and f.tcp.flags & SYN:
            c = ctx.conn
            if ((f.tcp.seq - c.rcv_nxt) & MASK) >= max(c.rcv_adv_max - c.rcv_nxt, 1):
                return
        super()._on_frame(frame)


class OutOfOrderSynUploads(OffloadTarget):
    """Treats any SYN as in-order: the connection is closed and uploaded (breaks R-RX-03)."""

    def _special_segment(self, ctx: TcpCtx, seg: Any, frame: bytes) -> bool:
        if seg.flags & SYN:
            seg = copy.copy(seg)
            seg.seq = ctx.conn.rcv_nxt & MASK
        return super()._special_segment(ctx, seg, frame)


# ---------------------------------------------------------------- data in flight at offload, send path


class DropsBufferedData(OffloadTarget):
    """Ignores the BufferedData handed over at offload (breaks R-OFF-15)."""

    def _create_tcp(self, node: Any, parent: Any) -> tuple[TcpCtx | None, int]:
        from chimney.ndis.offload_state import TcpOffloadStateDelegated

        for s in node.state:
            if isinstance(s, TcpOffloadStateDelegated) and s.buffered_data is not None:
                saved = s.buffered_data
                s.buffered_data = None
                try:
                    return super()._create_tcp(node, parent)
                finally:
                    s.buffered_data = saved
        return super()._create_tcp(node, parent)


class HeadTailAfterLaterSends(OffloadTarget):
    """Sets aside the part of SendDataHead beyond SndMax at offload and sends it only after the data of the
    next MiniportTcpOffloadSend (breaks R-OFF-19)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parked: dict[int, memoryview] = {}

    def _create_tcp(self, node: Any, parent: Any) -> tuple[TcpCtx | None, int]:
        ctx, st = super()._create_tcp(node, parent)
        if ctx is None:
            return ctx, st
        conn = ctx.conn
        buf = conn.sndbuf
        if buf.end > conn.snd_max > buf.start:
            new = SendBuffer(buf.start)
            new.append(memoryview(bytes(buf.slice(buf.start, conn.snd_max - buf.start))))
            self._parked[id(ctx)] = memoryview(bytes(buf.slice(conn.snd_max, buf.end - conn.snd_max)))
            conn.sndbuf = new
        return ctx, st

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        parked = self._parked.pop(id(offload_context), None)
        if parked is None:
            return super().tcp_offload_send(adapter_context, offload_context, nbl)
        ctx = offload_context
        saved = self._pump
        self._pump = lambda c: None  # type: ignore[method-assign]
        try:
            st = super().tcp_offload_send(adapter_context, offload_context, nbl)
        finally:
            self._pump = saved  # type: ignore[method-assign]
        ctx.conn.sndbuf.append(parked)
        self._pump(ctx)
        return st


class TerminateDropsPendingAck(OffloadTarget):
    """Discards the delayed ACK it owes when a terminate arrives (breaks R-TRM-17)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._terminating: set[int] = set()

    def _terminate_tcp(self, node: Any, ctx: TcpCtx) -> int:
        self._terminating.add(id(ctx))
        try:
            return super()._terminate_tcp(node, ctx)
        finally:
            self._terminating.discard(id(ctx))

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        if id(ctx) in self._terminating:
            segs = [s for s in segs if len(s.payload) or s.flags & ~0x10]
        super()._transmit(ctx, segs)


class SendsOnInvalidPath(OffloadTarget):
    """Keeps transmitting on a connection whose path or neighbor was invalidated (breaks R-SEND-15)."""

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        path = ctx.path
        saved = (ctx.valid, path.valid, path.neighbor.valid)
        ctx.valid = path.valid = path.neighbor.valid = True
        try:
            super()._transmit(ctx, segs)
        finally:
            ctx.valid, path.valid, path.neighbor.valid = saved


class AbortWithoutRst(OffloadTarget):
    """Completes an abortive disconnect with SUCCESS but never sends the RST (breaks R-DISC-06)."""

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        if ctx.abortive:
            segs = [s for s in segs if not s.flags & RST]
        super()._transmit(ctx, segs)


class NagleIgnored(OffloadTarget):
    """Runs every connection without Nagle whatever TCP_FLAG_NAGLING_ENABLED says (breaks R-SEND-16)."""

    def _create_tcp(self, node: Any, parent: Any) -> tuple[TcpCtx | None, int]:
        ctx, st = super()._create_tcp(node, parent)
        if ctx is not None:
            ctx.conn.cfg = ctx.conn.cfg.replace(nagle=False)
        return ctx, st


class NewDataBeforeRetransmission(OffloadTarget):
    """Resumes sending at SndMax with a fresh congestion window after an offload, leaving SndNxt..SndMax to
    its retransmission timer (breaks R-OFF-18)."""

    def _create_tcp(self, node: Any, parent: Any) -> tuple[TcpCtx | None, int]:
        ctx, st = super()._create_tcp(node, parent)
        if ctx is not None:
            conn = ctx.conn
            conn.snd_nxt = conn.snd_max
            conn.cc.cwnd = max(conn.cc.cwnd, conn.snd_max - conn.snd_una + 10 * conn.snd_mss)
        return ctx, st


class NonPushRequestsRejected(OffloadTarget):
    """Supports push requests only: a non-push request completes at once with INVALID_STATE (breaks
    R-RECV-04)."""

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        if nbl.info.get(NblInfo.TcpReceiveNoPush, False):
            self._fail_chain_later(nbl, NdisStatus.INVALID_STATE, self.h_receive_complete)
            return NdisStatus.PENDING
        return super().tcp_offload_receive(adapter_context, offload_context, nbl)


class WindowKeptAfterCompletion(OffloadTarget):
    """Completes requests with SUCCESS but keeps their bytes counted against the receive window, which never
    reopens (breaks R-RECV-10)."""

    def _fill(self, ctx: TcpCtx) -> bool:
        before = ctx.conn.readable
        done = super()._fill(ctx)
        moved = before - ctx.conn.readable
        if moved > 0:
            cfg = ctx.conn.cfg
            ctx.conn.cfg = cfg.replace(rcv_buf=max(cfg.rcv_buf - moved, 1))
        return done


class DisconnectBytesMisreported(OffloadTarget):
    """Reports one more user byte in a graceful disconnect's TcpOffloadBytesTransferred than it sent (breaks
    R-DISC-10)."""

    def _check_disconnect(self, ctx: TcpCtx) -> None:
        d = ctx.disconnect
        if d is None or ctx.conn.snd_una < d[2]:
            return
        orig = self.h_disconnect_complete

        def complete(adapter: Any, n: NetBufferList) -> None:
            n.info[_BYTES] = int(n.info.get(_BYTES, 0) or 0) + 1
            orig(adapter, n)

        self.h_disconnect_complete = complete
        try:
            super()._check_disconnect(ctx)
        finally:
            self.h_disconnect_complete = orig


class FreesAfterFin(OffloadTarget):
    """Lets go of a connection as soon as its FIN is acknowledged, before the host terminates it (breaks
    R-DISC-14)."""

    def _check_disconnect(self, ctx: TcpCtx) -> None:
        pending = ctx.disconnect is not None
        super()._check_disconnect(ctx)
        if pending and ctx.disconnect is None:
            self.scheduler.call_soon(self._forget, ctx, label="free after FIN")

    def _forget(self, ctx: TcpCtx) -> None:
        ctx.conn.abort(self.scheduler.now)
        ctx.conn.pop_segments()
        ctx.conn.pop_events()
        ctx.aborted = True


class UrgentDataInline(OffloadTarget):
    """Processes URG segments as ordinary data: no ReceivedUrgentData retrieve, the urgent bytes acknowledged
    and delivered through the chimney (breaks R-RX-07)."""

    def _special_segment(self, ctx: TcpCtx, seg: Any, frame: bytes) -> bool:
        if not seg.flags & SYN:
            return False
        return super()._special_segment(ctx, seg, frame)

    def _on_events(self, ctx: TcpCtx, evs: list[Any]) -> None:
        from chimney.tcp import UrgentData

        super()._on_events(ctx, [e for e in evs if type(e) is not UrgentData])
