"""The sans-I/O TCP connection (RFC 9293 state machine with RFC 6298/5681/6582/6675/7323/5961/3042/2883).

Owns one 4-tuple's TCB; both the host stack and the offload target run it. Inputs: receive(), user
calls, on_timer(now); outputs: pop_segments(), pop_events(). No clock, sockets or threads inside.

Internally every sequence number is an unwrapped int (the wire value plus a multiple of 2**32), so
comparisons are plain int comparisons; wire values are `x & 0xFFFFFFFF`, incoming numbers are unwrapped
against RCV.NXT / SND.UNA.
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.offload_state import TcpConnectionState
from chimney.net.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment
from chimney.tcp.buffers import EMPTY, NO_DROPS, Reassembly, ReceiveQueue, SendBuffer, shared_int
from chimney.tcp.cc import LOSS_FAST, LOSS_RTO, LOSS_SACK, CongestionControl, make_cc
from chimney.tcp.config import TcpConfig
from chimney.tcp.events import (
    Closed,
    Connected,
    DataReadable,
    EnteredTimeWait,
    Event,
    FinWait2Timeout,
    PeerClosed,
    Reset,
    SendSpace,
    SoftError,
    TimedOut,
    UrgentData,
)

MASK = 0xFFFFFFFF
HALF = 0x80000000
PAWS_IDLE_NS = 24 * 24 * 3600 * 1_000_000_000  # RFC 7323 5.5: TS.Recent invalid after 24 days idle

CLOSED = TcpConnectionState.Closed
LISTEN = TcpConnectionState.Listen
SYN_SENT = TcpConnectionState.SynSent
SYN_RCVD = TcpConnectionState.SynRcvd
ESTABLISHED = TcpConnectionState.Established
FIN_WAIT_1 = TcpConnectionState.FinWait1
FIN_WAIT_2 = TcpConnectionState.FinWait2
CLOSE_WAIT = TcpConnectionState.CloseWait
CLOSING = TcpConnectionState.Closing
LAST_ACK = TcpConnectionState.LastAck
TIME_WAIT = TcpConnectionState.TimeWait

_SEND_STATES = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
_RECV_DATA_STATES = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
_UT_STATES = _SEND_STATES

# What the retransmit timer slot is currently timing (contract: Retransmit.TimeoutDelta carries the
# retransmit, persist or FIN_WAIT_2 timer, §6 item 30).
RTX_RETRANSMIT = 0
RTX_PERSIST = 1
RTX_FIN_WAIT_2 = 2


class TcpStateError(Exception):
    """A user call that the current state does not allow (RFC 9293 3.10 'error: connection ...')."""


class TcpStats:
    """Per-connection counters; `drops` maps a reason to a count (bad input is counted, never silent)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "challenge_acks",
        "drops",
        "dsacks_received",
        "fast_retransmits",
        "retransmitted_segments",
        "rto_expirations",
        "segs_in",
        "segs_out",
    )

    def __init__(self) -> None:
        self.segs_in = 0
        self.segs_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.retransmitted_segments = 0
        self.fast_retransmits = 0
        self.rto_expirations = 0
        self.challenge_acks = 0
        # RFC 3708 2 accounting: D-SACKs the peer sent, each a duplicate it received (typically one of
        # our retransmissions that was spurious); congestion control does not act on them.
        self.dsacks_received = 0
        self.drops: dict[str, int] = NO_DROPS  # type: ignore[assignment]  # a dict from the first drop

    def drop(self, reason: str) -> None:
        d = self.drops
        if d is NO_DROPS:
            d = self.drops = {}
        d[reason] = d.get(reason, 0) + 1


def rst_for(seg: TcpSegment) -> TcpSegment | None:
    """The RST answering a segment that has no connection (RFC 9293 3.10.7.1); None for an RST."""
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
    return TcpSegment(seg.dst_port, seg.src_port, 0, (seg.seq + seg.seg_len) & MASK, RST | ACK, 0)


def _first_block_is_dsack(blocks: tuple[tuple[int, int], ...], ack: int) -> bool:
    """RFC 2883 5: the first SACK block reports a duplicate when it lies below the cumulative ACK or
    inside the second block (wire edges; `ack` unwrapped)."""
    l0, r0 = blocks[0]
    size = (r0 - l0) & MASK
    if size == 0 or size >= HALF:
        return False  # empty or malformed (right edge before left): no duplicate reported
    if ((ack - r0) & MASK) < HALF:
        return True  # right edge at or below the cumulative ACK
    if len(blocks) > 1:
        l1, r1 = blocks[1]
        return ((l0 - l1) & MASK) < HALF and ((r1 - r0) & MASK) < HALF
    return False


def _wscale_for(buf: int) -> int:
    s = 0
    while s < 14 and (buf >> s) > 0xFFFF:
        s += 1
    return s


class Connection:
    """One TCP connection. Sequence fields (`snd_una`, `rcv_nxt`...) are unwrapped ints; use `& 0xFFFFFFFF`
    for wire values. Send data is held as memoryviews of the caller's buffers: do not modify a buffer
    after passing it to send() until its bytes are acknowledged."""

    __slots__ = (
        "_ack_now",
        "_cack_count",
        "_cack_window",
        "_delack_deadline",
        "_detached",
        "_dsack",
        "_dup_acks",
        "_events",
        "_fin_after_est",
        "_gave_up",
        "_high_rxt",
        "_in_recovery",
        "_irs",
        "_ka_deadline",
        "_ka_probes",
        "_last_ack_sent",
        "_last_progress",
        "_now",
        "_oow_last",
        "_out",
        "_parent",
        "_parent_key",
        "_peer_closed_pending",
        "_peer_fin_seq",
        "_persist_round",
        "_recover",
        "_rtt_seq",
        "_rtt_time",
        "_rtx_backoff",
        "_rtx_count",
        "_rtx_deadline",
        "_rtx_first",
        "_rtx_mode",
        "_sack_board",
        "_send_blocked",
        "_snd_sml",
        "_syn_retransmitted",
        "_ts_div",
        "_ts_offset",
        "_tw_deadline",
        "_unacked_segs",
        "_user_closed",
        "cc",
        "cfg",
        "fin_seq",
        "have_rtt",
        "iss",
        "local_port",
        "max_snd_wnd",
        "ooo",
        "peer_mss",
        "rcv_adv",
        "rcv_adv_max",
        "rcv_nxt",
        "rcv_up",
        "rcv_wscale",
        "remote_port",
        "rto",
        "rttvar",
        "rxq",
        "sack_ok",
        "snd_max",
        "snd_mss",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "sndbuf",
        "srtt",
        "state",
        "stats",
        "ts_ok",
        "ts_recent",
        "ts_recent_time",
        "tso_max",
        "ws_ok",
    )

    def __init__(
        self,
        cfg: TcpConfig | None = None,
        local_port: int = 0,
        remote_port: int = 0,
        iss: int = 0,
        *,
        ts_offset: int = 0,
    ) -> None:
        cfg = cfg if cfg is not None else TcpConfig()
        cfg.validate()
        self.cfg = cfg
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = CLOSED
        if not 0 <= iss <= MASK:
            iss &= MASK  # (an in-range iss keeps its object: one int fewer per connection)
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.rcv_wscale = cfg.rcv_wscale if cfg.rcv_wscale is not None else _wscale_for(cfg.rcv_buf)
        if not cfg.window_scaling:
            self.rcv_wscale = 0
        self.ws_ok = False
        self.sack_ok = False
        self.ts_ok = False
        self.peer_mss = 536
        self.snd_mss = self._mss_for_mtu(cfg.path_mtu, 536)
        self._irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_adv_max = 0
        self.rcv_up = 0
        self.ts_recent = 0
        self.ts_recent_time = -1
        self._ts_div = shared_int(max(1, 1_000_000_000 // cfg.ts_hz))
        self._ts_offset = ts_offset
        self._last_ack_sent = 0
        self.sndbuf = SendBuffer(iss + 1)
        self.fin_seq: int | None = None
        self.rxq = ReceiveQueue()
        self.ooo: Reassembly | None = None  # created by the first out-of-order segment (memory)
        self.cc: CongestionControl = make_cc(cfg.congestion_control, self.snd_mss, cfg.initial_window, cfg.abc_limit)
        self.srtt = 0
        self.rttvar = 0
        self.have_rtt = False
        self.rto = cfg.rto_initial_ns
        self._rtt_seq = -1
        self._rtt_time = 0
        self._rtx_deadline: int | None = None
        self._rtx_mode = RTX_RETRANSMIT
        self._rtx_count = 0
        self._rtx_backoff = 0
        self._rtx_first = -1
        self._persist_round = 0
        self._now = 0
        self._syn_retransmitted = False
        self._delack_deadline: int | None = None
        self._detached = False
        self._ka_deadline: int | None = None
        self._ka_probes = 0
        self._tw_deadline: int | None = None
        self._last_progress = 0
        self._ack_now = False
        self._unacked_segs = 0
        self._dup_acks = 0
        self._in_recovery = False
        self._recover = iss
        self._high_rxt = iss
        self._sack_board: list[list[int]] = EMPTY  # type: ignore[assignment]  # a list from the first SACK
        # RFC 2883 D-SACK owed: the duplicate [left, right) the next ACK reports first (then None again).
        self._dsack: tuple[int, int] | None = None
        self._peer_fin_seq: int | None = None
        self._peer_closed_pending = False
        self._send_blocked = False
        self._snd_sml = iss  # end of the last sub-MSS segment sent (Linux snd_sml, Minshall's Nagle)
        self._user_closed = False
        self._fin_after_est = False
        self._gave_up = False
        self._cack_window = -(10**18)
        self._cack_count = 0
        self._parent: Any = None
        self._parent_key: Any = None
        # Outboxes are EMPTY (shared, see buffers.py) until something is queued: memory per idle TCB.
        # Queue through _queue(seg) / _emit(ev), never _out.append / _events.append.
        self._out: list[TcpSegment] = EMPTY  # type: ignore[assignment]
        self._oow_last = -(10**18)
        self._events: list[Event] = EMPTY  # type: ignore[assignment]
        self.stats = TcpStats()
        # TSO (set by the host transport when the link segments for us): largest payload per queued
        # segment, a multiple of snd_mss; 0 keeps one MSS per segment. Windows stay in bytes.
        self.tso_max = 0

    # ------------------------------------------------------------------ outputs / introspection

    def pop_segments(self) -> list[TcpSegment]:
        out = self._out
        if not out:
            return []
        self._out = EMPTY  # type: ignore[assignment]
        return out

    def pop_events(self) -> list[Event]:
        ev = self._events
        if not ev:
            return []
        self._events = EMPTY  # type: ignore[assignment]
        return ev

    def _queue(self, seg: TcpSegment) -> None:
        out = self._out
        if out is EMPTY:
            self._out = [seg]
        else:
            out.append(seg)

    @property
    def readable(self) -> int:
        return self.rxq.size

    @property
    def send_space(self) -> int:
        return max(0, self.cfg.snd_buf - len(self.sndbuf))

    @property
    def unsent(self) -> int:
        return self.sndbuf.end - self.snd_max if self.snd_max < self.sndbuf.end else 0

    @property
    def in_recovery(self) -> bool:
        return self._in_recovery

    @property
    def dup_acks(self) -> int:
        return self._dup_acks

    @property
    def retransmit_count(self) -> int:
        return self._rtx_count

    @property
    def persist_round(self) -> int:
        return self._persist_round

    @property
    def rtx_timer_mode(self) -> int | None:
        return None if self._rtx_deadline is None else self._rtx_mode

    @property
    def keepalive_probes(self) -> int:
        return self._ka_probes

    def push(self, now: int) -> None:
        """Send what the windows allow now (TCP_NODELAY just set: Linux tcp_push_pending_frames)."""
        self._output(now)

    @property
    def ack_pending(self) -> bool:
        """An ACK (delayed or due at once) is owed to the peer and not queued yet."""
        return self._delack_deadline is not None or self._ack_now

    def flush_ack(self, now: int) -> bool:
        """Queue an owed ACK now (R-TMR-04: before the connection changes hands); True if one was."""
        if not self.ack_pending:
            return False
        self._emit_seg(self._ack_seq(), ACK, b"", now)
        return True

    @property
    def gave_up(self) -> bool:
        """A timeout was reached with cfg.hand_back_on_give_up: the TCB waits to be exported."""
        return self._gave_up

    def next_deadline(self) -> int | None:
        if self._gave_up:
            return None
        best = self._rtx_deadline
        for d in (self._delack_deadline, self._ka_deadline, self._tw_deadline, self._user_deadline()):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def _user_deadline(self) -> int | None:
        """RFC 9293 3.10.8 / RFC 5482 USER TIMEOUT: data unacknowledged for user_timeout_ns aborts the
        connection at that instant, not at the next RTO expiry after it."""
        ut = self.cfg.user_timeout_ns
        if not ut or self.snd_max == self.snd_una or self.state not in _UT_STATES:
            return None
        return self._last_progress + ut

    def export_state(self, now: int, ticks_per_second: int, *, flush_delayed_ack: bool = True) -> tuple[Any, ...]:
        """(TcpOffloadStateConst, TcpOffloadStateCached, TcpOffloadStateDelegated, send_data, buffered_rx)
        per contract §2.4; see chimney.tcp.offload."""
        from chimney.tcp.offload import export_state

        return export_state(self, now, ticks_per_second, flush_delayed_ack=flush_delayed_ack)

    @classmethod
    def import_state(cls, *args: Any, **kwargs: Any) -> Connection:
        """Rebuild a connection from exported state; see chimney.tcp.offload.import_state."""
        from chimney.tcp.offload import import_state

        return import_state(*args, **kwargs)

    def update_cached(self, cached: Any, now: int, ticks_per_second: int) -> None:
        """Apply an updated TCP_OFFLOAD_STATE_CACHED; see chimney.tcp.offload.update_cached."""
        from chimney.tcp.offload import update_cached

        update_cached(self, cached, now, ticks_per_second)

    def detach(self) -> None:
        """Stop all timers and output after export (the connection now lives elsewhere)."""
        from chimney.tcp.offload import detach

        detach(self)

    def ts_now(self, now: int) -> int:
        """The TSval this connection would send at `now` (R-TS-02: clock + delta)."""
        return (now // self._ts_div + self._ts_offset) & MASK

    # ------------------------------------------------------------------ helpers

    def _mss_for_mtu(self, mtu: int, peer_mss: int) -> int:
        # RFC 9293 3.7.1: Eff.snd.MSS = min(SendMSS + 20, MMS_S) - TCPhdrsize - IPoptionsize; the
        # timestamp option takes 12 bytes of every segment (RFC 7323 / RFC 6691).
        cfg = self.cfg
        mms = mtu - cfg.ip_header_size - 20
        eff = min(peer_mss, mms)
        if cfg.snd_mss_clamp and cfg.mss < eff:
            eff = cfg.mss  # Linux mss_clamp: TCP_MAXSEG bounds what we send as well
        if self.ts_ok:
            eff -= 12
        return shared_int(max(eff, 64))

    def _drop(self, reason: str) -> None:
        self.stats.drop(reason)

    def _rcv_window(self) -> int:
        """Window field to advertise; applies receiver SWS avoidance (RFC 9293 3.8.6.2.2) and never
        shrinks the right edge."""
        cfg = self.cfg
        nxt = self.rcv_nxt
        free = cfg.rcv_buf - self.rxq.size
        right = nxt + (free if free > 0 else 0)
        adv = self.rcv_adv
        if right > adv:
            thresh = cfg.rcv_buf >> 1
            if self.cfg.mss < thresh:
                thresh = self.cfg.mss
            if right - adv >= thresh or (adv <= nxt and right - nxt >= thresh):
                adv = right
                self.rcv_adv = adv
        s = self.rcv_wscale
        win = (adv - nxt) >> s if adv > nxt else 0
        if win > 0xFFFF:
            win = 0xFFFF
        edge = nxt + (win << s)
        if edge > self.rcv_adv_max:
            self.rcv_adv_max = edge
        return win

    def _options(self, now: int, plen: int = 0) -> TcpOptions | None:
        blocks: tuple[tuple[int, int], ...] = ()
        dsack = self._dsack
        if self.sack_ok and (self.ooo or dsack is not None):
            n = 3 if self.ts_ok else 4
            if plen:
                # RFC 9293 3.7.1: options come out of the segment's size, so a full-sized data segment
                # has room for fewer (or no) SACK blocks (4 + 8n bytes) next to the timestamps.
                cfg = self.cfg
                room = min(self.peer_mss + 20, cfg.path_mtu - cfg.ip_header_size) - 20 - plen
                if self.ts_ok:
                    room -= 12
                fit = (room - 4) // 8
                if fit < n:
                    n = fit if fit > 0 else 0
            if n:
                ooo = self.ooo
                if dsack is None:
                    sb = ooo.sack_blocks(n)  # type: ignore[union-attr]
                else:
                    # RFC 2883 4: reported in this one ACK only.
                    self._dsack = None
                    sb = ooo.dsack_blocks(dsack, n) if ooo else [dsack]
                blocks = tuple((a & MASK, b & MASK) for a, b in sb)
        if self.ts_ok:
            return TcpOptions(None, None, False, blocks, (now // self._ts_div + self._ts_offset) & MASK, self.ts_recent)
        if blocks:
            return TcpOptions(sack_blocks=blocks)
        return None

    def _ack_seq(self) -> int:
        """Sequence number for a pure ACK: SND.MAX, or the right edge of the peer's window if we are past
        it (Linux tcp_acceptable_seq), so the ACK stays acceptable to the peer."""
        edge = self.snd_una + self.snd_wnd
        smax = self.snd_max
        return smax if smax <= edge else edge

    def _emit_seg(self, seq: int, flags: int, payload: memoryview | bytes, now: int) -> None:
        """Queue one segment carrying ACK state; every transmitted segment acknowledges (clears delayed ACK)."""
        rcv_nxt = self.rcv_nxt
        if flags & ACK:
            win = self._rcv_window()
            self._last_ack_sent = rcv_nxt
            self._ack_now = False
            self._delack_deadline = None
            self._unacked_segs = 0
            ack = rcv_nxt & MASK
        else:
            win = min(self.cfg.rcv_buf, 0xFFFF)
            ack = 0
        if self.sack_ok and (self.ooo or self._dsack):
            opts = self._options(now, len(payload))
            if self._dsack is not None:
                self._ack_now = True  # no room for the D-SACK next to this data: a pure ACK follows with it
        elif self.ts_ok:
            opts = TcpOptions(None, None, False, (), (now // self._ts_div + self._ts_offset) & MASK, self.ts_recent)
        else:
            opts = None
        self._queue(TcpSegment(self.local_port, self.remote_port, seq & MASK, ack, flags, win, payload, opts))
        self.stats.segs_out += 1

    def _send_rst(self, seq: int, now: int, ack: bool = False, window: int = 0) -> None:
        flags = RST | ACK if ack else RST
        # R-TS-07: with timestamps negotiated even the RST carries the option (RFC 7323 allows it).
        opts = TcpOptions(None, None, False, (), self.ts_now(now), self.ts_recent) if self.ts_ok else None
        seg = TcpSegment(
            self.local_port, self.remote_port, seq & MASK, (self.rcv_nxt & MASK) if ack else 0, flags, window, b"", opts
        )
        self._queue(seg)
        self.stats.segs_out += 1

    def _send_syn(self, now: int, with_ack: bool) -> None:
        cfg = self.cfg
        opts = TcpOptions(mss=min(cfg.mss, cfg.path_mtu - cfg.ip_header_size - 20))
        if cfg.window_scaling and (not with_ack or self.ws_ok):
            opts.wscale = self.rcv_wscale
        if cfg.sack and (not with_ack or self.sack_ok):
            opts.sack_permitted = True
        if cfg.timestamps and (not with_ack or self.ts_ok):
            opts.ts_val = self.ts_now(now)
            opts.ts_ecr = self.ts_recent if with_ack else 0
        win = min(cfg.rcv_buf, 0xFFFF)
        flags = SYN | ACK if with_ack else SYN
        ack = self.rcv_nxt & MASK if with_ack else 0
        if with_ack:
            self.rcv_adv = self.rcv_adv_max = self.rcv_nxt + win
            self._last_ack_sent = self.rcv_nxt
        self._queue(TcpSegment(self.local_port, self.remote_port, self.iss, ack, flags, win, b"", opts))
        self.stats.segs_out += 1
        nxt = self.sndbuf.start  # ISS + 1 until data is acknowledged: share its int object
        self.snd_nxt = nxt if nxt == self.iss + 1 else self.iss + 1
        if self.snd_max < self.snd_nxt:
            self.snd_max = self.snd_nxt

    def _emit(self, ev: Event) -> None:
        evs = self._events
        if evs is EMPTY:
            self._events = [ev]
        else:
            evs.append(ev)

    def _enter_closed(self, reason: str) -> None:
        prev = self.state
        self.state = CLOSED
        self._rtx_deadline = None
        self._delack_deadline = None
        self._ka_deadline = None
        self._tw_deadline = None
        self._ack_now = False
        if self._parent is not None and prev in (SYN_RCVD, LISTEN):
            self._parent._child_gone(self)
        self._emit(Closed(reason))

    def _enter_time_wait(self, now: int) -> None:
        self.state = TIME_WAIT
        self._rtx_deadline = None
        self._ka_deadline = None
        self._tw_deadline = now + self.cfg.time_wait_ns
        self._emit(EnteredTimeWait())

    def _arm_rtx(self, now: int) -> None:
        rto = self.rto << self._rtx_backoff
        if rto > self.cfg.rto_max_ns:
            rto = self.cfg.rto_max_ns
        self._rtx_deadline = now + rto
        self._rtx_mode = RTX_RETRANSMIT

    def _persist_timeout(self, shift: int) -> int:
        cfg = self.cfg
        t = self.rto << shift
        if t < cfg.persist_min_ns:
            t = cfg.persist_min_ns
        if t > cfg.persist_max_ns:
            t = cfg.persist_max_ns
        return t

    def _rtt_sample(self, r: int) -> None:
        """RFC 6298 2.2/2.3 (R-TMR-22)."""
        if r < 0:
            return
        if not self.have_rtt:
            self.srtt = r
            self.rttvar = r >> 1
            self.have_rtt = True
        else:
            d = self.srtt - r
            self.rttvar = (3 * self.rttvar + (d if d >= 0 else -d)) >> 2
            self.srtt = (7 * self.srtt + r) >> 3
        cfg = self.cfg
        var4 = self.rttvar << 2
        rto = self.srtt + (var4 if var4 > cfg.clock_granularity_ns else cfg.clock_granularity_ns)
        if rto < cfg.rto_min_ns:
            rto = cfg.rto_min_ns
        elif rto > cfg.rto_max_ns:
            rto = cfg.rto_max_ns
        self.rto = rto

    def _challenge_ack(self, now: int) -> None:
        """RFC 5961 3.2/4.2/5.2 challenge ACK, rate limited per second (RFC 5961 7)."""
        if now - self._cack_window >= 1_000_000_000:
            self._cack_window = now
            self._cack_count = 0
        if self._cack_count >= self.cfg.challenge_ack_limit:
            self._drop("challenge_ack_rate_limited")
            return
        self._cack_count += 1
        self.stats.challenge_acks += 1
        self._emit_seg(self._ack_seq(), ACK, b"", now)

    def _restart_keepalive(self, now: int) -> None:
        if self.cfg.keepalive:
            self._ka_deadline = now + self.cfg.keepalive_idle_ns
            self._ka_probes = 0

    # ------------------------------------------------------------------ user calls

    def connect(self, now: int) -> None:
        """Active OPEN (RFC 9293 3.10.1): send SYN, enter SYN-SENT."""
        if self.state is not CLOSED:
            raise TcpStateError(f"connect in {self.state.name}")
        self.state = SYN_SENT
        self._send_syn(now, with_ack=False)
        self._rtt_seq = self.iss + 1
        self._rtt_time = now
        self._arm_rtx(now)
        self._last_progress = now

    def listen(self) -> None:
        """Passive OPEN for a single connection (a `Listener` is the usual way)."""
        if self.state is not CLOSED:
            raise TcpStateError(f"listen in {self.state.name}")
        self.state = LISTEN

    def send(self, data: bytes | bytearray | memoryview, now: int) -> int:
        """Queue data (held as a memoryview, not copied); returns how many bytes were accepted."""
        st = self.state
        if st not in (ESTABLISHED, CLOSE_WAIT, SYN_SENT, SYN_RCVD) or self.fin_seq is not None:
            raise TcpStateError(f"send in {st.name}" + (" after shutdown" if self.fin_seq is not None else ""))
        self._now = now
        mv = data if isinstance(data, memoryview) else memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        space = self.cfg.snd_buf - (self.sndbuf.end - self.snd_una)
        n = len(mv)
        if n > space:
            n = space if space > 0 else 0
            self._send_blocked = True
        if n == 0:
            return 0
        self.sndbuf.append(mv[:n] if n < len(mv) else mv)
        if st in _SEND_STATES:
            self._output(now)
        return n

    def recv(self, max_bytes: int = -1, now: int | None = None) -> memoryview | bytes:
        """Read in-order data (a view when it lies in one received segment). Opening the window may
        queue a window update (RFC 9293 3.8.6.2.2); without `now` it is stamped with the last time seen."""
        if now is None:
            now = self._now
        data = self.rxq.read(max_bytes)
        if data and (self.state in _RECV_DATA_STATES or self.state is CLOSE_WAIT):
            before = self.rcv_adv_max
            cfg = self.cfg
            # Announce a re-opened window at once when the peer may be stalled on it.
            if before - self.rcv_nxt < min(cfg.rcv_buf >> 1, 2 * cfg.mss):
                self._rcv_window()
                if self.rcv_adv > before:
                    self._emit_seg(self._ack_seq(), ACK, b"", now)
        if self._peer_closed_pending and self.rxq.size == 0:
            self._peer_closed_pending = False
            self._emit(PeerClosed())
        return data

    def shutdown(self, now: int) -> None:
        """CLOSE for sending (half-close): FIN after all queued data (RFC 9293 3.10.4)."""
        st = self.state
        if self.fin_seq is not None:
            return
        if st is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif st is CLOSE_WAIT:
            self.state = LAST_ACK
        elif st is SYN_RCVD:
            self._fin_after_est = True
            return
        elif st in (SYN_SENT, LISTEN, CLOSED):
            self._enter_closed("normal")
            return
        else:
            raise TcpStateError(f"shutdown in {st.name}")
        self.fin_seq = self.sndbuf.end
        self._output(now)

    def close(self, now: int) -> None:
        """CLOSE: like shutdown, and the user will not read any more. Unread data means RST (RFC 2525 2.17);
        FIN_WAIT_2 is then bounded by the FIN_WAIT_2 timer (R-TMR-05)."""
        self._user_closed = True
        st = self.state
        if st in (CLOSED, LISTEN, SYN_SENT):
            if st is not CLOSED:
                self._enter_closed("normal")
            return
        if self.rxq.size and st in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2):
            self.abort(now)
            return
        if self.fin_seq is None:
            self.shutdown(now)
        else:
            self.start_fin_wait2_timer(now)

    def start_fin_wait2_timer(self, now: int, timeout_ns: int | None = None) -> bool:
        """Start the FIN_WAIT_2 timer (retransmit slot, R-TMR-05) now, without close(): for an owner
        that knows the connection may idle in FIN_WAIT_2 (an offload target after a graceful disconnect).
        `timeout_ns` defaults to cfg.fin_wait2_timeout_ns. Later acceptable segments restart it (R-TMR-23);
        expiry gives FinWait2Timeout then CLOSED (R-TMR-06/24). False when not in FIN_WAIT_2, already
        running, or the timeout is 0 (disabled)."""
        t = self.cfg.fin_wait2_timeout_ns if timeout_ns is None else timeout_ns
        if self.state is not FIN_WAIT_2 or self._rtx_deadline is not None or t <= 0:
            return False
        if t != self.cfg.fin_wait2_timeout_ns:
            self.cfg = self.cfg.replace(fin_wait2_timeout_ns=t)  # restarts (R-TMR-23) use the same value
        self._rtx_mode = RTX_FIN_WAIT_2
        self._rtx_deadline = now + t
        return True

    def abort(self, now: int) -> None:
        """ABORT: RST in synchronized states, then CLOSED (RFC 9293 3.10.5)."""
        st = self.state
        if st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, SYN_RCVD):
            if self.cfg.rst_ack_on_abort:  # Linux: RST|ACK carrying the current window
                self._send_rst(self.snd_max, now, ack=True, window=self._rcv_window())
            else:
                self._send_rst(self.snd_max, now)
        if st is not CLOSED:
            self._enter_closed("abort")

    def set_path_mtu(self, mtu: int) -> None:
        """New path MTU from the caller (RFC 1191 / 8201); recomputes the effective send MSS."""
        if mtu < 68:
            raise ValueError(f"path MTU {mtu} below the IPv4 minimum 68")
        self.cfg = self.cfg.replace(path_mtu=mtu)
        self.snd_mss = self._mss_for_mtu(mtu, self.peer_mss)
        self.cc.set_mss(self.snd_mss)

    def icmp_frag_needed(self, mtu: int, now: int) -> None:
        """ICMP 'fragmentation needed' / 'packet too big': lower the MSS and resend what no longer fits."""
        old = self.snd_mss
        self.set_path_mtu(mtu)
        self._emit(SoftError("frag_needed", mtu))
        if self.snd_mss < old and self.snd_max > self.snd_una and self.state in _SEND_STATES:
            # Like Linux tcp_simple_retransmit: resend the window in smaller segments, no cwnd cut.
            self.snd_nxt = self.snd_una
            self._rtt_seq = -1
            self._output(now)

    def icmp_soft_error(self, kind: str) -> None:
        """Other ICMP errors are soft (RFC 1122 4.2.3.9 / RFC 5927): report, keep the connection."""
        self._emit(SoftError(kind))

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: int) -> None:
        self._now = now
        if self._gave_up:
            return
        d = self._user_deadline()
        if d is not None and d <= now:
            self._give_up("user_timeout", now, send_rst=False)
            return
        d = self._delack_deadline
        if d is not None and d <= now:
            self._delack_deadline = None
            if self.state is not CLOSED:
                self._emit_seg(self._ack_seq(), ACK, b"", now)
        d = self._rtx_deadline
        if d is not None and d <= now:
            self._rtx_deadline = None
            mode = self._rtx_mode
            if mode == RTX_RETRANSMIT:
                self._on_rto(now)
            elif mode == RTX_PERSIST:
                self._on_persist(now)
            else:
                self._on_fin_wait2_timeout(now)
        d = self._ka_deadline
        if d is not None and d <= now:
            self._ka_deadline = None
            self._on_keepalive(now)
        d = self._tw_deadline
        if d is not None and d <= now:
            self._tw_deadline = None
            if self.state is TIME_WAIT:
                self._enter_closed("time_wait_done")

    def _give_up(self, what: str, now: int, send_rst: bool) -> None:
        if self.cfg.hand_back_on_give_up and what != "syn":
            # Keep the TCB; the expired timer exports as TimeoutDelta 0 ("expire immediately", R-TRM-25).
            self._gave_up = True
            if what == "keepalive":
                self._ka_deadline = now
            else:
                if what == "persist":
                    self._rtx_mode = RTX_PERSIST
                self._rtx_deadline = now
            self._emit(TimedOut(what))
            return
        if send_rst and self.state in _SEND_STATES | {FIN_WAIT_2}:
            self._send_rst(self.snd_max, now)
        self._emit(TimedOut(what))
        self._enter_closed("timeout")

    def _on_rto(self, now: int) -> None:
        st = self.state
        cfg = self.cfg
        if st is SYN_SENT or st is SYN_RCVD:
            limit = cfg.syn_retries if st is SYN_SENT else cfg.synack_retries
            if self._rtx_count >= limit:
                self._give_up("syn", now, send_rst=False)
                return
            self._rtx_count += 1
            self._rtx_backoff += 1
            self._syn_retransmitted = True
            self._rtt_seq = -1
            self._send_syn(now, with_ack=st is SYN_RCVD)
            self.stats.retransmitted_segments += 1
            self._arm_rtx(now)
            return
        if self.snd_max == self.snd_una:
            return
        if self._rtx_first < 0:
            self._rtx_first = now
        # R-TMR-17: MaxRT 0 -> count limit, > 0 -> total time, unlimited (-1) -> never.
        if cfg.max_rt_ns == 0:
            exceeded = self._rtx_count >= cfg.max_retransmissions
        elif cfg.max_rt_ns > 0:
            exceeded = now - self._rtx_first >= cfg.max_rt_ns
        else:
            exceeded = False
        if exceeded:
            self._give_up("retransmit", now, send_rst=False)
            return
        self.stats.rto_expirations += 1
        flight = self.snd_max - self.snd_una
        if self._rtx_count == 0:
            self.cc.on_loss(LOSS_RTO, flight, now)
        else:
            self.cc.cwnd = self.snd_mss  # RFC 5681: ssthresh kept on repeated timeouts
        self._rtx_count += 1
        self._rtx_backoff += 1
        self._in_recovery = False
        self._recover = self.snd_max
        self._dup_acks = 0
        self._sack_board = EMPTY  # type: ignore[assignment]
        self._high_rxt = self.snd_una
        self._rtt_seq = -1  # Karn
        self.snd_nxt = self.snd_una
        self._output(now, force_one=True)
        if self._rtx_deadline is None or self._rtx_mode != RTX_RETRANSMIT:
            self._arm_rtx(now)

    def _on_persist(self, now: int) -> None:
        """R-TMR-11: send a window probe, re-arm with RTO << Retransmit.Count, then count it."""
        if self.state not in _SEND_STATES:
            return
        if self._rtx_count > self.cfg.max_retransmissions:  # R-TMR-14
            self._give_up("persist", now, send_rst=True)
            return
        una = self.snd_una
        if self.cfg.zero_window_probe_octet and self.sndbuf.end > una:
            # RFC 9293 3.8.6.1: probe with one octet of new data; it stays accounted as sent so the
            # peer's ACK of it is an ordinary new ACK.
            if self.snd_max == una:
                self._last_progress = now  # user timeout: the octet is now unacknowledged data
                self.snd_max = una + 1
            if self.snd_nxt < una + 1:
                self.snd_nxt = una + 1
            self._emit_seg(una, ACK, self.sndbuf.slice(una, 1), now)
        else:
            self._send_window_probe(now)
        self._rtx_mode = RTX_PERSIST
        self._rtx_deadline = now + self._persist_timeout(self._rtx_count)
        self._rtx_count += 1

    def _send_window_probe(self, now: int) -> None:
        # Zero-length segment with an old sequence number forces the peer to ACK with its window
        # (the Linux tcp_xmit_probe_skb form of the RFC 9293 3.8.6.1 probe).
        self._emit_seg(self.snd_una - 1, ACK, b"", now)

    def _on_keepalive(self, now: int) -> None:
        """R-TMR-09: first probe after KaTimeout idle, then every KaInterval, at most KaProbeCount."""
        cfg = self.cfg
        if not cfg.keepalive or self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            return
        if self.snd_max != self.snd_una or self.sndbuf.end > self.snd_max:
            self._ka_deadline = now + cfg.keepalive_idle_ns
            return
        if self._ka_probes >= cfg.keepalive_count:
            self._give_up("keepalive", now, send_rst=True)
            return
        self._send_window_probe(now)
        self._ka_probes += 1
        self._ka_deadline = now + cfg.keepalive_interval_ns

    def _on_fin_wait2_timeout(self, now: int) -> None:
        if self.state is FIN_WAIT_2:
            self._emit(FinWait2Timeout())  # R-TMR-06
            self._enter_closed("fin_wait2_timeout")  # R-TMR-24

    # ------------------------------------------------------------------ output

    def _output(self, now: int, force_one: bool = False) -> None:
        """Send what the windows allow (RFC 9293 3.8.6.2.1 sender SWS, RFC 896 Nagle, RFC 3042)."""
        st = self.state
        if st in _SEND_STATES:
            if self._in_recovery and self.sack_ok:
                self._sack_output(now)
            else:
                self._send_loop(now, force_one)
        if self._ack_now:
            self._emit_seg(self._ack_seq(), ACK, b"", now)

    def _send_loop(self, now: int, force_one: bool) -> None:
        cfg = self.cfg
        mss = self.snd_mss
        tso = self.tso_max
        seg_max = tso - tso % mss if tso > mss and not force_one else mss
        buf = self.sndbuf
        data_end = buf.end
        fin_seq = self.fin_seq
        cwnd = self.cc.cwnd
        if force_one:
            cwnd = mss
        elif self._dup_acks and not self._in_recovery and cfg.limited_transmit:
            cwnd += min(self._dup_acks, 2) * mss  # RFC 3042 limited transmit
        sent = False
        while True:
            una = self.snd_una
            nxt = self.snd_nxt
            snd_max = self.snd_max
            wnd = self.snd_wnd
            if force_one:
                limit = una + (mss if wnd == 0 or wnd > mss else wnd)
            else:
                limit = una + (wnd if wnd < cwnd else cwnd)
            usable = limit - nxt
            avail = data_end - nxt
            if avail > 0:
                n = seg_max if seg_max < avail else avail
                if usable < n:
                    n = usable
                if n <= 0:
                    break
                if n > mss:
                    n -= n % mss  # TSO: whole MSS units; a short tail is judged below as its own segment
                if nxt >= snd_max and not force_one:
                    flight = nxt - una
                    if n < mss and flight:
                        if n < avail:
                            # Window-limited tail: only send if it is a good fraction of the window.
                            if n * cfg.sws_sender_fraction < self.max_snd_wnd:
                                break
                        elif cfg.nagle and fin_seq is None and (not cfg.nagle_minshall or self._snd_sml > una):
                            break  # Nagle: one small segment outstanding at most
                flags = ACK
                end = nxt + n
                if end == data_end:
                    flags |= PSH
                    if fin_seq == end:
                        flags |= FIN
                payload = buf.slice(nxt, n)
                self._transmit(nxt, flags, payload, n, now)
                if n < mss:
                    self._snd_sml = end
                sent = True
            elif fin_seq is not None and nxt == fin_seq:
                self._transmit(nxt, FIN | ACK, b"", 0, now)
                sent = True
            else:
                break
            if force_one:
                break
        if (
            not sent
            and self.snd_wnd == 0
            and self._rtx_deadline is None
            and data_end > self.snd_nxt
            and self.snd_max == self.snd_una
        ):
            # R-TMR-10: persist start: SndWndProbeCount = 0, Retransmit.Count = 0, RTO << 0.
            self._persist_round = 0
            self._rtx_count = 0
            self._rtx_mode = RTX_PERSIST
            self._rtx_deadline = now + self._persist_timeout(0)

    def _transmit(self, seq: int, flags: int, payload: memoryview | bytes, n: int, now: int) -> None:
        end = seq + n + (1 if flags & FIN else 0)
        snd_max = self.snd_max
        if snd_max == self.snd_una:
            self._last_progress = now  # the user timeout counts from the first unacknowledged send
        if seq < snd_max:
            self.stats.retransmitted_segments += 1
            if self._rtt_seq >= 0 and seq < self._rtt_seq:
                self._rtt_seq = -1  # Karn: no sample from retransmitted data
        else:
            if self._rtt_seq < 0:
                self._rtt_seq = end
                self._rtt_time = now
        self._emit_seg(seq, flags, payload, now)
        self.stats.bytes_out += n
        if end > self.snd_nxt:
            self.snd_nxt = end
        if end > snd_max:
            self.snd_max = end
        if self._rtx_deadline is None or self._rtx_mode != RTX_RETRANSMIT:
            self._arm_rtx(now)

    # ---- SACK loss recovery (RFC 6675)

    def _sack_update(self, opts: TcpOptions, ack: int) -> int:
        """Merge the ACK's SACK blocks into the scoreboard; returns newly SACKed bytes."""
        board = self._sack_board
        if board is EMPTY:
            board = self._sack_board = []
        una = ack
        top = self.snd_max
        new = 0
        for left_w, right_w in opts.sack_blocks:
            left = una + (((left_w - una + HALF) & MASK) - HALF)
            right = left + ((right_w - left_w) & MASK)
            if left < una:
                left = una
            if right > top:
                right = top
            if right <= left:
                continue
            # Merge [left, right) into the sorted disjoint list.
            covered = 0
            i = 0
            while i < len(board) and board[i][1] < left:
                i += 1
            j = i
            lo, hi = left, right
            while j < len(board) and board[j][0] <= right:
                b = board[j]
                covered += max(0, min(b[1], right) - max(b[0], left))
                lo = min(lo, b[0])
                hi = max(hi, b[1])
                j += 1
            board[i:j] = [[lo, hi]]
            new += (right - left) - covered
        if not board:
            self._sack_board = EMPTY  # type: ignore[assignment]  # only D-SACKs below SND.UNA: keep none
        return new

    def _sack_trim(self) -> None:
        board = self._sack_board
        una = self.snd_una
        while board and board[0][1] <= una:
            board.pop(0)
        if board and board[0][0] < una:
            board[0][0] = una
        elif not board:
            self._sack_board = EMPTY  # type: ignore[assignment]  # all acknowledged: release it

    def _lost_edge(self) -> int:
        """Bytes below the returned seq that are not SACKed are lost (RFC 6675 IsLost)."""
        thr = (self.cfg.dupack_threshold - 1) * self.snd_mss
        acc = 0
        for count, (left, right) in enumerate(reversed(self._sack_board), 1):
            acc += right - left
            if count >= self.cfg.dupack_threshold or acc > thr:
                return left
        return self.snd_una

    def _pipe(self, lost_edge: int) -> int:
        """RFC 6675 SetPipe over byte ranges: unSACKed, not-lost bytes plus retransmitted lost bytes."""
        una = self.snd_una
        outstanding = self.snd_max - una
        sacked = 0
        lost = 0
        rexmit = 0
        pos = una
        high_rxt = self._high_rxt
        for left, right in self._sack_board:
            sacked += right - left
            if pos < lost_edge:
                hole_end = min(left, lost_edge)
                if hole_end > pos:
                    lost += hole_end - pos
                    if high_rxt > pos:
                        rexmit += min(high_rxt, hole_end) - pos
            pos = right
        return outstanding - sacked - lost + rexmit

    def _next_hole(self, start: int, upto: int) -> tuple[int, int] | None:
        """First unSACKed range at or after `start` below `upto`."""
        pos = max(start, self.snd_una)
        for left, right in self._sack_board:
            if pos < left:
                if pos >= upto:
                    return None
                return pos, min(left, upto)
            if pos < right:
                pos = right
        return None

    def _sack_output(self, now: int) -> None:
        mss = self.snd_mss
        buf = self.sndbuf
        for _ in range(1000):
            lost_edge = self._lost_edge()
            pipe = self._pipe(lost_edge)
            if self.cc.cwnd - pipe < mss:
                return
            hole = self._next_hole(self._high_rxt, lost_edge)
            if hole is None and self.snd_nxt >= self.snd_max:
                # Rule 2: new data within the peer's window.
                nxt = self.snd_nxt
                avail = buf.end - nxt
                room = self.snd_una + self.snd_wnd - nxt
                n = min(mss, avail, room)
                if n > 0:
                    flags = ACK | (PSH if nxt + n == buf.end else 0)
                    if self.fin_seq == nxt + n:
                        flags |= FIN
                    self._transmit(nxt, flags, buf.slice(nxt, n), n, now)
                    continue
                if avail <= 0 and self.fin_seq == nxt:
                    self._transmit(nxt, FIN | ACK, b"", 0, now)
                    continue
                # Rule 3: retransmit an unSACKed range that is not yet deemed lost.
                top = self._sack_board[-1][0] if self._sack_board else self.snd_una
                hole = self._next_hole(self._high_rxt, top)
            if hole is None:
                return
            s, e = hole
            n = min(mss, e - s)
            data_n = min(n, max(0, buf.end - s))
            flags = ACK
            if self.fin_seq is not None and s + data_n == self.fin_seq and s + data_n < self.snd_max:
                flags |= FIN
            if data_n == 0 and not flags & FIN:
                return
            self._transmit(s, flags, buf.slice(s, data_n) if data_n else b"", data_n, now)
            self._high_rxt = s + n
            self.stats.fast_retransmits += 1

    def _retransmit_head(self, now: int) -> None:
        """Retransmit one segment at SND.UNA (fast retransmit / NewReno partial ACK)."""
        una = self.snd_una
        buf = self.sndbuf
        n = min(self.snd_mss, buf.end - una, self.snd_max - una)
        flags = ACK
        if n <= 0:
            n = 0
        if self.fin_seq is not None and una + n == self.fin_seq and self.snd_max > self.fin_seq:
            flags |= FIN
        if n == 0 and not flags & FIN:
            return
        self._transmit(una, flags, buf.slice(una, n) if n else b"", n, now)
        self.stats.fast_retransmits += 1

    # ------------------------------------------------------------------ input

    def receive(self, seg: TcpSegment, now: int) -> None:
        """Process one arriving segment (RFC 9293 3.10.7 'SEGMENT ARRIVES')."""
        self.stats.segs_in += 1
        self._now = now
        st = self.state
        if st is CLOSED:
            if self._detached:
                self._drop("detached")  # the TCB lives elsewhere now: never answer for it
                return
            r = rst_for(seg)
            if r is not None:
                self._queue(r)
            self._drop("closed")
            return
        if st is LISTEN:
            self._rx_listen(seg, now)
            return
        if st is SYN_SENT:
            self._rx_syn_sent(seg, now)
            return
        self._rx_synchronized(seg, now)

    def _negotiate(self, opts: TcpOptions | None) -> None:
        cfg = self.cfg
        if opts is None:
            opts = TcpOptions()
        self.peer_mss = shared_int(opts.mss) if opts.mss else 536  # RFC 9293 3.7.1 default
        if cfg.window_scaling and opts.wscale is not None:
            self.ws_ok = True
            self.snd_wscale = min(opts.wscale, 14)  # RFC 7323 2.3
        else:
            self.ws_ok = False
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_ok = cfg.sack and opts.sack_permitted
        if cfg.timestamps and opts.ts_val is not None:
            self.ts_ok = True
            self.ts_recent = opts.ts_val
        else:
            self.ts_ok = False
        self.snd_mss = self._mss_for_mtu(cfg.path_mtu, self.peer_mss)
        self.cc = make_cc(cfg.congestion_control, self.snd_mss, cfg.initial_window, cfg.abc_limit)

    def accept_syn(self, seg: TcpSegment, now: int) -> None:
        """LISTEN + SYN -> SYN-RCVD, queue the SYN-ACK (used by `Listener` and `listen()`)."""
        self._irs = seg.seq
        self.rcv_nxt = seg.seq + 1
        self.rcv_up = self.rcv_nxt
        self._negotiate(seg.options)
        if self.ts_ok:
            self.ts_recent_time = now
        self.snd_wnd = seg.window  # never scaled in a SYN (RFC 7323 2.2)
        self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.snd_wl2 = self.iss
        self.state = SYN_RCVD
        self._send_syn(now, with_ack=True)
        self._rtt_seq = self.iss + 1
        self._rtt_time = now
        self._arm_rtx(now)
        self._last_progress = now

    def _rx_listen(self, seg: TcpSegment, now: int) -> None:
        flags = seg.flags
        if flags & RST:
            self._drop("rst_in_listen")
            return
        if flags & ACK:
            self._queue(TcpSegment(self.local_port, self.remote_port, seg.ack, 0, RST, 0))
            return
        if flags & SYN:
            self.remote_port = seg.src_port
            self.accept_syn(seg, now)
            return
        self._drop("no_syn_in_listen")

    def _rx_syn_sent(self, seg: TcpSegment, now: int) -> None:
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            ack = self.iss + (((seg.ack - self.iss + HALF) & MASK) - HALF)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._queue(TcpSegment(self.local_port, self.remote_port, seg.ack, 0, RST, 0))
                self._drop("syn_sent_bad_ack")
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:
                self._emit(Reset("refused"))
                self._enter_closed("reset")
            else:
                self._drop("syn_sent_rst_without_ack")
            return
        if not flags & SYN:
            self._drop("syn_sent_no_syn")
            return
        self._irs = seg.seq
        self.rcv_nxt = seg.seq + 1
        self.rcv_up = self.rcv_nxt
        self._negotiate(seg.options)
        if self.ts_ok:
            self.ts_recent_time = now
        self.rcv_adv = self.rcv_adv_max = self.rcv_nxt + min(self.cfg.rcv_buf, 0xFFFF)
        if ack_ok:
            self.snd_una = self.iss + 1
            self._rtx_count = 0
            self._rtx_backoff = 0
            self._rtx_deadline = None
            if self._rtt_seq >= 0 and not self._syn_retransmitted:
                self._rtt_sample(now - self._rtt_time)
            elif self._syn_retransmitted and not self.have_rtt:
                self.rto = max(self.rto, 3_000_000_000)  # RFC 6298 5.7
            self._rtt_seq = -1
            self.snd_wnd = seg.window
            self.max_snd_wnd = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = self.snd_una
            self.state = ESTABLISHED
            self._restart_keepalive(now)
            self._emit(Connected())
            self._last_progress = now
            if len(seg.payload) or flags & FIN:
                self._rx_text(seg, self.rcv_nxt, seg.payload, flags & ~SYN, now)
            self._ack_now = True
            self._output(now)
            return
        # Simultaneous open (RFC 9293 3.5 figure 8): SYN-RCVD, send SYN,ACK.
        self.snd_wnd = seg.window
        self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.state = SYN_RCVD
        self._send_syn(now, with_ack=True)
        self._arm_rtx(now)

    def _rx_synchronized(self, seg: TcpSegment, now: int) -> None:
        flags = seg.flags
        opts = seg.options
        if (
            self.ts_ok
            and not flags & RST
            and (opts is None or opts.ts_val is None)
            and self.cfg.drop_missing_tsopt
            and self.state is not SYN_SENT
        ):
            self._drop("missing_tsopt")  # RFC 7323 3.2 SHOULD
            return
        if (flags | PSH) == (ACK | PSH) and self.state is ESTABLISHED and self._fast_path(seg, flags, now):
            return
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + (((seg.seq - rcv_nxt + HALF) & MASK) - HALF)
        payload = seg.payload
        plen = len(payload)
        # RFC 7323 5.3 R1: PAWS.
        tsv = None
        if self.ts_ok and opts is not None and opts.ts_val is not None:
            tsv = opts.ts_val
            if (
                not flags & RST
                and ((tsv - self.ts_recent + HALF) & MASK) < HALF
                and tsv != self.ts_recent
                and now - self.ts_recent_time < PAWS_IDLE_NS
            ):
                self._drop("paws")
                if seq < rcv_nxt and not flags & SYN:
                    # RFC 2883 4.3: the ACK PAWS requires may carry the D-SACK (as Linux tcp_send_dupack).
                    self._report_old_dup(seq, seq + plen + (1 if flags & FIN else 0))
                self._emit_seg(self._ack_seq(), ACK, b"", now)
                return
        if (
            flags & SYN
            and flags & ACK
            and self.state is SYN_RCVD
            and self._parent is None
            and seq + 1 == rcv_nxt
            and plen == 0
            and (seg.ack - self.snd_nxt) & MASK == 0
        ):
            # Simultaneous open: the peer's SYN,ACK repeats its SYN; take it as the ACK of ours.
            flags &= ~SYN
            seq = rcv_nxt
        # RFC 9293 3.10.7.4 first: sequence number acceptability (four cases).
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = self.rcv_adv_max - rcv_nxt
        if wnd < 0:
            wnd = 0
        if seglen == 0:
            # Right edge inclusive for empty segments (as Linux): a sender that filled our window
            # sends its ACKs with SEQ = RCV.NXT + RCV.WND.
            ok = seq == rcv_nxt if wnd == 0 else rcv_nxt <= seq <= rcv_nxt + wnd
        elif wnd == 0:
            ok = False
            if seq == rcv_nxt and flags & ACK:
                # Zero window: still take the ACK / URG / RST of an in-order segment.
                ok = True
                payload = b""
                plen = 0
                flags &= ~(FIN | SYN)
                self._drop("zero_window_data")
                self._ack_now = True  # tell the sender the window is still closed
        else:
            ok = rcv_nxt <= seq < rcv_nxt + wnd or rcv_nxt <= seq + seglen - 1 < rcv_nxt + wnd
        st = self.state
        if not ok:
            if flags & RST:
                self._drop("rst_out_of_window")
                return
            if st is SYN_RCVD and flags & SYN and not flags & ACK and seq == self._irs:
                # Retransmitted SYN: answer with our SYN,ACK again.
                self._send_syn(now, with_ack=True)
                return
            self._drop("unacceptable_seq")
            if seq < rcv_nxt and seglen and not flags & SYN:
                self._report_old_dup(seq, seq + seglen)  # RFC 2883 4.1.1: an old duplicate
            if seglen == 0 and now - self._oow_last < self.cfg.oow_ack_interval_ns:
                # Rate-limit dupACKs to out-of-window pure ACKs (as Linux tcp_invalid_ratelimit) so two
                # ends with diverging views cannot start an ACK storm.
                self._drop("oow_ack_rate_limited")
            else:
                if seglen == 0:
                    self._oow_last = now
                self._emit_seg(self._ack_seq(), ACK, b"", now)
            if st is TIME_WAIT and flags & FIN:
                self._tw_deadline = now + self.cfg.time_wait_ns
            return
        # Second: RST (RFC 5961 3.2: exact match resets, otherwise challenge ACK).
        if flags & RST:
            if seq != rcv_nxt:
                self._challenge_ack(now)
                return
            if st is TIME_WAIT and self.cfg.rfc1337:
                self._drop("rst_in_time_wait_rfc1337")
                return
            if st is SYN_RCVD and self._parent is not None:
                self._enter_closed("reset")  # back to LISTEN for the listener (RFC 9293 3.10.7.4)
                return
            if st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, SYN_RCVD):
                self._emit(Reset("refused" if st is SYN_RCVD else "reset"))
                self._enter_closed("reset")
            else:
                self._enter_closed("reset" if st is not TIME_WAIT else "time_wait_reset")
            return
        # Fourth: SYN in a synchronized state -> challenge ACK (RFC 5961 4.2).
        if flags & SYN:
            if st is SYN_RCVD and self._parent is not None and not flags & ACK:
                self._enter_closed("reset")
                return
            self._challenge_ack(now)
            return
        # Fifth: ACK field.
        if not flags & ACK:
            self._drop("no_ack")
            return
        if self.cfg.keepalive:
            self._ka_deadline = now + self.cfg.keepalive_idle_ns
            self._ka_probes = 0
        una = self.snd_una
        ack = una + (((seg.ack - una + HALF) & MASK) - HALF)
        if st is SYN_RCVD:
            if not una < ack <= self.snd_max:
                self._queue(TcpSegment(self.local_port, self.remote_port, seg.ack, 0, RST, 0))
                self._drop("syn_rcvd_bad_ack")
                return
            parent = self._parent
            if parent is not None and not parent._child_established(self):
                self._drop("accept_queue_full")
                return
            self.state = st = ESTABLISHED
            self.rcv_adv = max(self.rcv_adv, rcv_nxt)
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._restart_keepalive(now)
            self._emit(Connected())
            if self._fin_after_est:
                self._fin_after_est = False
                self.fin_seq = self.sndbuf.end
                self.state = st = FIN_WAIT_1
        # RFC 7323 5.3 R3: remember TS.Recent (after the acceptability test).
        if tsv is not None and seq <= self._last_ack_sent and ((tsv - self.ts_recent) & MASK) < HALF:
            self.ts_recent = tsv
            self.ts_recent_time = now
        if ack > self.snd_max:
            # RFC 9293: ACK for data not yet sent -> ACK and drop.
            self._drop("ack_beyond_snd_max")
            self._emit_seg(self._ack_seq(), ACK, b"", now)
            return
        if ack < una - self.max_snd_wnd:
            self._drop("ack_too_old")
            self._challenge_ack(now)  # RFC 5961 5.2
            return
        sack_new = 0
        dsack = False
        if self.sack_ok and opts is not None and opts.sack_blocks:
            if self.snd_max > una:
                # A D-SACK block below SND.UNA or inside SACKed data adds nothing to the scoreboard.
                sack_new = self._sack_update(opts, ack if ack > una else una)
            if _first_block_is_dsack(opts.sack_blocks, ack):
                dsack = True
                self.stats.dsacks_received += 1
        wnd_field = seg.window << self.snd_wscale
        if ack > una:
            self._on_new_ack(ack, seq, wnd_field, opts, now)
        else:
            # Window update rule (RFC 9293 3.10.7.4) on a non-advancing ACK.
            is_dup = (
                ack == una
                and plen == 0
                and not flags & FIN
                and self.snd_max > una
                and (wnd_field == self.snd_wnd or sack_new > 0)
                # RFC 6675 2 / RFC 2883 5: an ACK whose SACK news is only a D-SACK is not a duplicate ACK
                # (as Linux FLAG_DSACKING_ACK), or three spurious retransmissions would start recovery.
                and not (dsack and sack_new == 0)
            )
            if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
                self.snd_wnd = wnd_field
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                if wnd_field > self.max_snd_wnd:
                    self.max_snd_wnd = wnd_field
            if is_dup:
                self._on_dupack(now, sack_new)
        st = self.state
        if self._rtx_deadline is not None and self._rtx_mode == RTX_PERSIST:
            if self.snd_wnd > 0:
                # R-TMR-13: a non-zero window ends persist; an unacknowledged probe octet is sent again
                # in order with the rest (the receiver dropped it with its window closed).
                self._rtx_deadline = None
                self._rtx_count = 0
                self._persist_round = 0
                self.snd_nxt = self.snd_una
            else:
                # R-TMR-12: zero-window ACK -> next round.
                self._persist_round += 1
                self._rtx_count = 0
                self._rtx_deadline = now + self._persist_timeout(self._persist_round)
        fin_acked = self.fin_seq is not None and self.snd_una > self.fin_seq
        if st is FIN_WAIT_1 and fin_acked:
            self.state = st = FIN_WAIT_2
            self._rtx_deadline = None
            if self._user_closed and self.cfg.fin_wait2_timeout_ns > 0:
                self._rtx_mode = RTX_FIN_WAIT_2
                self._rtx_deadline = now + self.cfg.fin_wait2_timeout_ns
        elif st is CLOSING and fin_acked:
            self._enter_time_wait(now)
            return
        elif st is LAST_ACK and fin_acked:
            self._enter_closed("normal")
            return
        elif st is TIME_WAIT:
            if flags & FIN:
                self._emit_seg(self._ack_seq(), ACK, b"", now)
                self._tw_deadline = now + self.cfg.time_wait_ns
            return
        if st is FIN_WAIT_2 and self._rtx_deadline is not None and self._rtx_mode == RTX_FIN_WAIT_2:
            self._rtx_deadline = now + self.cfg.fin_wait2_timeout_ns  # R-TMR-23
        # Sixth/seventh/eighth: URG, text, FIN.
        if plen or flags & (FIN | URG):
            self._rx_text(seg, seq, payload, flags, now)
        self._output(now)

    def _fast_path(self, seg: TcpSegment, flags: int, now: int) -> bool:
        """Header prediction (the BSD/Linux fast path): an in-sequence pure ACK of new data, or in-order
        data that acknowledges nothing new, in ESTABLISHED with no recovery, persist, reassembly or
        options other than timestamps. Returns False to take the full RFC 9293 path."""
        rcv_nxt = self.rcv_nxt
        if (seg.seq - rcv_nxt) & MASK:
            return False
        opts = seg.options
        tsv = None
        if opts is not None:
            if opts.sack_blocks:
                return False
            tsv = opts.ts_val
            if tsv is not None and self.ts_ok and ((tsv - self.ts_recent) & MASK) >= HALF:
                return False  # PAWS candidate: full path
        if self._in_recovery or self._dup_acks or self._sack_board or self._user_closed or self._peer_fin_seq is not None:
            return False
        if self._rtx_deadline is not None and self._rtx_mode != RTX_RETRANSMIT:
            return False
        una = self.snd_una
        acked = (seg.ack - una) & MASK
        payload = seg.payload
        plen = len(payload)
        wnd_field = seg.window << self.snd_wscale
        if plen == 0:
            if acked == 0 or acked > self.snd_max - una or una == self.iss:
                return False
        elif acked != 0 or self.ooo or plen > self.rcv_adv_max - rcv_nxt:
            return False
        if tsv is not None and self.ts_ok and self._last_ack_sent == rcv_nxt:
            self.ts_recent = tsv  # RFC 7323 R3 (SEG.SEQ == Last.ACK.sent here)
            self.ts_recent_time = now
        if self._ka_deadline is not None:
            self._ka_deadline = now + self.cfg.keepalive_idle_ns
            self._ka_probes = 0
        if plen == 0:
            self._on_new_ack(una + acked, rcv_nxt, wnd_field, opts, now)
            self._send_loop(now, False)
            if self._ack_now:
                self._emit_seg(self._ack_seq(), ACK, b"", now)
            return True
        if self.snd_wl1 < rcv_nxt or (self.snd_wl1 == rcv_nxt and self.snd_wl2 <= una):
            self.snd_wnd = wnd_field
            self.snd_wl1 = rcv_nxt
            self.snd_wl2 = una
            if wnd_field > self.max_snd_wnd:
                self.max_snd_wnd = wnd_field
        self.rxq.append(payload)
        self.rcv_nxt = rcv_nxt + plen
        self.stats.bytes_in += plen
        self._emit(DataReadable(plen, bool(flags & PSH)))
        cfg = self.cfg
        self._unacked_segs += 1
        if not cfg.delayed_ack or self._unacked_segs >= cfg.ack_frequency:
            self._ack_now = True
        elif self._delack_deadline is None:
            self._delack_deadline = now + cfg.delack_timeout_ns
        if self.sndbuf.end > self.snd_nxt or self.fin_seq is not None:
            self._send_loop(now, False)
        if self._ack_now and not cfg.ack_at_batch_end:
            self._emit_seg(self._ack_seq(), ACK, b"", now)
        return True

    def _on_new_ack(self, ack: int, seq: int, wnd_field: int, opts: TcpOptions | None, now: int) -> None:
        una = self.snd_una
        acked = ack - una
        if una == self.iss:
            acked -= 1  # the SYN's sequence number is not data
        if self.fin_seq is not None and ack > self.fin_seq:
            acked -= 1
        self.sndbuf.consume_to(ack if self.fin_seq is None or ack <= self.fin_seq else self.fin_seq)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self._last_progress = now
        # RTT (RFC 6298 + Karn; RFC 7323 RTTM when the timed segment was lost).
        rtt = -1
        if self._rtt_seq >= 0 and ack >= self._rtt_seq:
            rtt = now - self._rtt_time
            self._rtt_seq = -1
        elif self.ts_ok and opts is not None and opts.ts_ecr and self._rtx_count == 0:
            rtt = (((now // self._ts_div + self._ts_offset) - opts.ts_ecr) & MASK) * self._ts_div
            if rtt > 0x7FFFFFFF * self._ts_div // 2:
                rtt = -1
        if rtt >= 0:
            self._rtt_sample(rtt)
        self._rtx_count = 0
        self._rtx_backoff = 0
        self._rtx_first = -1
        # Window update rule.
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            self.snd_wnd = wnd_field
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd_field > self.max_snd_wnd:
                self.max_snd_wnd = wnd_field
        flight_before = self.snd_max - una
        if self._sack_board:
            self._sack_trim()
        if self._in_recovery:
            if ack >= self._recover:
                self._in_recovery = False
                self._dup_acks = 0
                self.cc.on_recovery_end(now, self.snd_max - ack)
            elif self.sack_ok:
                if self._high_rxt < ack:
                    self._high_rxt = ack
            else:
                # RFC 6582 3.2 step 5: partial ACK -> retransmit, deflate, keep recovering.
                self._retransmit_head(now)
                cwnd = self.cc.cwnd - acked
                if acked >= self.snd_mss:
                    cwnd += self.snd_mss
                self.cc.cwnd = max(cwnd, self.snd_mss)
        else:
            self._dup_acks = 0
            self.cc.on_ack(acked, rtt if rtt >= 0 else self.srtt, now, flight_before)
        if self.snd_una == self.snd_max:
            if self._rtx_mode == RTX_RETRANSMIT:
                self._rtx_deadline = None
        elif self._rtx_mode == RTX_RETRANSMIT or self._rtx_deadline is None:
            self._arm_rtx(now)  # RFC 6298 5.3
        if self._send_blocked:
            space = self.cfg.snd_buf - (self.sndbuf.end - self.snd_una)
            if space * 3 >= self.cfg.snd_buf:
                self._send_blocked = False
                self._emit(SendSpace(space))

    def _on_dupack(self, now: int, sack_new: int) -> None:
        self._dup_acks += 1
        self.cc.on_dupack(now)
        cfg = self.cfg
        if self._in_recovery:
            if not self.sack_ok:
                self.cc.cwnd += self.snd_mss  # RFC 6582 step 4: inflate
            return
        trigger = self._dup_acks >= cfg.dupack_threshold
        if not trigger and self.sack_ok and self._sack_board:
            sacked = sum(r - left for left, r in self._sack_board)
            trigger = sacked > (cfg.dupack_threshold - 1) * self.snd_mss
        if not trigger:
            return
        # RFC 6582 3.2 step 2: only enter when the cumulative ACK covers `recover`.
        # `_recover` is exclusive (SND.MAX at entry), so "covers more than recover" is una >= recover.
        if self.snd_una < self._recover:
            return
        flight = self.snd_max - self.snd_una
        self._in_recovery = True
        self._recover = self.snd_max
        self._rtt_seq = -1
        if self.sack_ok:
            self.cc.on_loss(LOSS_SACK, flight, now)
            # RFC 6675 5 (4.3): retransmit HighACK+1 unconditionally, HighRxt = its end.
            self._retransmit_head(now)
            self._high_rxt = self.snd_una + min(self.snd_mss, self.snd_max - self.snd_una)
        else:
            self.cc.on_loss(LOSS_FAST, flight, now)
            self._retransmit_head(now)
            self.cc.cwnd += cfg.dupack_threshold * self.snd_mss  # RFC 6582 step 3 inflation

    def _rx_text(self, seg: TcpSegment, seq: int, payload: memoryview | bytes, flags: int, now: int) -> None:
        st = self.state
        rcv_nxt = self.rcv_nxt
        if flags & URG and st in _RECV_DATA_STATES:
            up = seq + seg.urg_ptr
            if up > self.rcv_up:
                self.rcv_up = up
                self._emit(UrgentData(up - (self._irs + 1)))
        plen = len(payload)
        fin = bool(flags & FIN)
        if st not in _RECV_DATA_STATES:
            if plen:
                self._drop("data_after_fin")
            if fin and st in (CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT):
                self._ack_now = True  # retransmitted FIN: re-ACK
            return
        if plen and self._user_closed and self.cfg.rst_on_data_after_close and seq + plen > rcv_nxt:
            # Nobody can read it: reset (Linux TCPABORTONDATA), the RST answering this segment.
            if flags & ACK:
                self._send_rst(seg.ack, now)
            else:
                self._send_rst(self.snd_max, now, ack=True)
            self._enter_closed("abort_on_data")
            return
        if plen:
            # Trim to [RCV.NXT, right edge advertised).
            if seq < rcv_nxt:
                self._report_old_dup(seq, seq + plen)  # RFC 2883 4.2: the part below RCV.NXT came again
                cut = rcv_nxt - seq
                if cut >= plen:
                    payload = b""
                    plen = 0
                else:
                    payload = payload[cut:]
                    plen -= cut
                seq = rcv_nxt
            right = self.rcv_adv_max
            if seq + plen > right:
                keep = right - seq
                if keep <= 0:
                    payload = b""
                    plen = 0
                else:
                    payload = payload[:keep]
                    plen = keep
                fin = False
                self._drop("beyond_window")
                self._ack_now = True
        if plen:
            if seq == rcv_nxt:
                rxq = self.rxq
                rxq.append(payload)
                rcv_nxt += plen
                n = plen
                gap_fill = False
                if self.ooo:
                    if self._dsack is None and self.sack_ok and self.cfg.dsack:
                        # RFC 2883 4.2.2: in-order data overlapping held data reports that overlap.
                        dup = self.ooo.overlap(seq, rcv_nxt)
                        if dup is not None:
                            self._dsack = dup
                    rcv_nxt, more = self.ooo.pop_ready(rcv_nxt)
                    for d in more:
                        rxq.append(d)
                        n += len(d)
                    gap_fill = True
                self.rcv_nxt = rcv_nxt
                self.stats.bytes_in += n
                if self._user_closed:
                    rxq.read(-1)  # nobody will read: acknowledge and discard
                else:
                    self._emit(DataReadable(n, bool(flags & PSH)))
                cfg = self.cfg
                self._unacked_segs += 1
                if gap_fill or not cfg.delayed_ack or self._unacked_segs >= cfg.ack_frequency:
                    self._ack_now = True
                elif self._delack_deadline is None:
                    self._delack_deadline = now + cfg.delack_timeout_ns
            else:
                ooo = self.ooo
                if ooo is None:
                    ooo = self.ooo = Reassembly(self.cfg.max_ooo_segments)
                elif self.sack_ok and self.cfg.dsack:
                    dup = ooo.overlap(seq, seq + plen)  # RFC 2883 4.1.3: a duplicate of held data
                    if dup is not None:
                        self._dsack = dup
                if not ooo.add(seq, payload):
                    self._drop("ooo_queue_full")
                self._ack_now = True  # RFC 5681 4.2: immediate ACK for out-of-order data
        if fin:
            fseq = seq + plen
            if fseq == self.rcv_nxt:
                self._accept_fin(now)
            elif fseq > self.rcv_nxt:
                self._peer_fin_seq = fseq
        elif self._peer_fin_seq is not None and self._peer_fin_seq == self.rcv_nxt:
            self._accept_fin(now)

    def _report_old_dup(self, seq: int, end: int) -> None:
        """RFC 2883 4.1.1 / 4.2.1: sequence space [seq, end) arrived again; its part below RCV.NXT is
        reported as a D-SACK in the ACK due now. Not in TIME-WAIT, where Linux answers without SACK."""
        nxt = self.rcv_nxt
        if seq < nxt and end > seq and self.sack_ok and self.cfg.dsack and self.state is not TIME_WAIT:
            self._dsack = (seq, end if end < nxt else nxt)
            self._ack_now = True

    def _accept_fin(self, now: int) -> None:
        self._peer_fin_seq = None
        self.ooo = None
        self.rcv_nxt += 1
        self._ack_now = True
        st = self.state
        if st is ESTABLISHED:
            self.state = CLOSE_WAIT
        elif st is FIN_WAIT_1:
            if self.fin_seq is not None and self.snd_una > self.fin_seq:
                self._enter_time_wait(now)
            else:
                self.state = CLOSING
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)
        if self.rxq.size == 0 or self._user_closed:
            self._emit(PeerClosed())
        else:
            self._peer_closed_pending = True
