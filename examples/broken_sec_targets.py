"""Deliberately broken offload targets for the scenarios of conformance/scenarios_sec.py: each subclasses the
built-in `OffloadTarget` and breaks one blind-attack mitigation (R-SEC-*) or recommended data-path rule.

    chimney verify examples/broken_sec_targets.py:ChallengeEveryRst       # R-SEC-03
    chimney verify examples.broken_sec_targets:FinHeldForAcks              # R-DISC-07
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.offload_state import TIMER_NOT_RUNNING, KeepAliveState, TcpOffloadStateDelegated
from chimney.ndis.status import NdisStatus
from chimney.net.checksum import checksum
from chimney.net.drops import Drop
from chimney.net.frame import parse_frame, strip_ipv4_options
from chimney.net.tcp import ACK, FIN, TcpSegment
from chimney.target import OffloadTarget
from chimney.target.context import TcpCtx

MASK = 0xFFFFFFFF


# ---------------------------------------------------------------- blind in-window attacks (R-SEC-*)


class RstOutOfWindowAcked(OffloadTarget):
    """Answers an RST outside the receive window with an ACK instead of dropping it (breaks R-SEC-01)."""

    def _rst_out_of_order(self, ctx: TcpCtx, seg: Any) -> None:
        conn = ctx.conn
        if ((seg.seq - conn.rcv_nxt) & MASK) >= max(conn.rcv_adv_max - conn.rcv_nxt, 1):
            conn._emit_seg(conn._ack_seq(), ACK, b"", self.scheduler.now)
            self._pump(ctx)
            return
        super()._rst_out_of_order(ctx, seg)


class ChallengeEveryRst(OffloadTarget):
    """Sends a challenge ACK for every in-window out-of-order RST, not one per validation period (breaks
    R-SEC-03)."""

    def _rst_out_of_order(self, ctx: TcpCtx, seg: Any) -> None:
        mit = self._sec.get(ctx)
        if mit is not None:
            mit.rst_challenged = False
        super()._rst_out_of_order(ctx, seg)


class UnthrottledSynChallenge(OffloadTarget):
    """Sends a challenge ACK for every in-window out-of-order SYN, no 3 s throttle (breaks R-SEC-05)."""

    def _special_segment(self, ctx: TcpCtx, seg: Any, frame: bytes) -> bool:
        mit = self._sec.get(ctx)
        if mit is not None:
            mit.syn_at = None
        return super()._special_segment(ctx, seg, frame)


class NoMitigationKeepalive(OffloadTarget):
    """Sends challenge ACKs but never starts (or shortens) the keepalive timer (breaks R-SEC-06)."""

    def _challenge(self, ctx: Any, mit: Any, now: int) -> None:
        conn = ctx.conn
        conn._emit_seg(conn._ack_seq(), ACK, b"", now)
        self._pump(ctx)


class DelegatedProbeCountIgnored(OffloadTarget):
    """Starts the mitigation's probe count from zero, ignoring the delegated KeepAlive.ProbeCount (breaks
    R-SEC-07)."""

    def _challenge(self, ctx: Any, mit: Any, now: int) -> None:
        if not mit.active:
            ctx.conn._ka_probes = 0
        super()._challenge(ctx, mit, now)


class UploadForgetsMitigation(OffloadTarget):
    """Returns KeepAlive.ProbeCount 0 and an idle timer when uploaded during mitigation (breaks R-SEC-08)."""

    def _sec_export(self, ctx: TcpCtx, dlg: TcpOffloadStateDelegated) -> None:
        mit = self._sec.get(ctx)
        if mit is not None and mit.active:
            dlg.keep_alive = KeepAliveState(0, TIMER_NOT_RUNNING)


class AcceptableSegmentStopsKeepalive(OffloadTarget):
    """Stops the keepalive timer when an acceptable segment ends the mitigation even though the normal
    keepalive was running before (breaks R-SEC-09)."""

    def _end_mitigation(self, ctx: TcpCtx, now: int) -> None:
        mit = self._sec.get(ctx)
        was = mit is not None and mit.active
        super()._end_mitigation(ctx, now)
        if was:
            ctx.conn._ka_deadline = None


# ---------------------------------------------------------------- recommended data path


class IndicatesDespitePosts(OffloadTarget):
    """Indicates received data even when receive requests are posted (breaks R-RECV-03)."""

    def _deliver(self, ctx: TcpCtx) -> bool:
        moved = False
        if ctx.conn.readable and not ctx.refused and not ctx.rx_busy:
            ctx.rx_busy = True
            try:
                moved = self._indicate(ctx)
            finally:
                ctx.rx_busy = False
        return super()._deliver(ctx) or moved


class SpreadsOverRequests(OffloadTarget):
    """Puts at most half of each posted request's room into it and completes every request it touched in one
    completion: several partially filled requests in one chain (breaks R-RECV-15)."""

    def _fill(self, ctx: TcpCtx) -> bool:
        from chimney.target.miniport import _chain

        conn = ctx.conn
        now = self.scheduler.now
        done = []
        while ctx.posted and conn.readable:
            req = ctx.posted.popleft()
            nb = req.nbl.first_net_buffer
            assert nb is not None
            take = min(max((nb.data_length - req.filled) // 2, 1), conn.readable)
            got = 0
            while got < take:
                piece = conn.recv(min(take - got, len(conn.rxq.views()[0])), now)
                nb.write(req.filled + got, piece)
                got += len(piece)
            req.filled += take
            done.append(self._finish_recv(req, NdisStatus.SUCCESS))
        if done:
            self.h_receive_complete(self.adapter, _chain(done))
        return bool(done)


class IpOptionsHandledInline(OffloadTarget):
    """Supports IPv4 options itself: strips them and processes the segment instead of handing it to the
    host (breaks R-RFC-05)."""

    def _on_frame(self, frame: bytes) -> None:
        super()._on_frame(strip_ipv4_options(frame))


class CorruptIpDroppedUncounted(OffloadTarget):
    """Drops frames whose IP header is corrupted without indicating or counting them (breaks R-RX-10)."""

    def _on_frame(self, frame: bytes) -> None:
        if type(parse_frame(frame)) is Drop:
            f = parse_frame(frame, verify_checksums=False)
            if type(f) is not Drop and f.ip_version == 4:
                l2 = f.l2_len
                hl = (frame[l2] & 0x0F) * 4
                if checksum(bytes(frame[l2:l2 + hl])) != 0:
                    return
        super()._on_frame(frame)


class FinHeldForAcks(OffloadTarget):
    """On a graceful disconnect, holds the FIN back until every byte before it is acknowledged (breaks
    R-DISC-07)."""

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        conn = ctx.conn
        fin = conn.fin_seq
        if fin is not None and conn.snd_una < fin:
            segs = [s if not s.flags & FIN else TcpSegment(s.src_port, s.dst_port, s.seq, s.ack, s.flags & ~FIN,
                                                             s.window, s.payload, s.options, s.urg_ptr)
                    for s in segs]
        super()._transmit(ctx, segs)
