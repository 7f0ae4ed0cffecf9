"""Delegated-state hand-over: export a Connection's TCB as the chimney TCP_OFFLOAD_STATE_CONST /
CACHED / DELEGATED structures (contract §2.4) and rebuild a Connection from them.

Timer rules: retransmit/persist/FIN_WAIT_2 travel in Retransmit.*, keepalive in KeepAlive.* (R-TMR-07/
08/15/19); delayed-ACK, push and SWS timers are flushed, never carried (R-TMR-04/16/21, §6 item 30).
Timestamps stay monotonic: the importer keeps a delta so its TSval continues from TsTime (R-TS-01/04).

NDIS name -> Python name (what a miniport/host handler calls here):
    MiniportInitiateOffload (target takes the TCB)      -> import_state(...) / Connection.import_state
    MiniportTerminateOffload (target returns the TCB)   -> export_state(conn, now, tps); detach(conn)
    MiniportQueryOffload / NdisQueryOffloadState        -> export_state(conn, now, tps, flush_delayed_ack=False)
    MiniportUpdateOffload (TCP_OFFLOAD_STATE_CACHED)    -> update_cached(conn, cached, now, tps)
    SndUna/SndNxt/SndMax, NetBufferListChain            -> delegated.snd_*, send_data (memoryviews from SND.UNA)
    BufferedData                                        -> buffered_rx (memoryviews, end just before RcvNxt)
"""

from __future__ import annotations

from collections.abc import Sequence

from chimney.ndis.offload_state import (
    MAX_RT_UNLIMITED as WIRE_MAX_RT_UNLIMITED,
)
from chimney.ndis.offload_state import (
    TIMER_NOT_RUNNING,
    KeepAliveState,
    RetransmitState,
    TcpCachedFlags,
    TcpConnectionState,
    TcpConstFlags,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    scale_rttvar,
    scale_srtt,
)
from chimney.net.tcp import ACK
from chimney.tcp.buffers import SendBuffer
from chimney.tcp.cc import make_cc
from chimney.tcp.config import MAX_RT_UNLIMITED, TcpConfig
from chimney.tcp.connection import (
    MASK,
    RTX_FIN_WAIT_2,
    RTX_PERSIST,
    RTX_RETRANSMIT,
    Connection,
    TcpStateError,
)

NS = 1_000_000_000

EXPORTABLE_STATES = frozenset(
    {
        TcpConnectionState.Established,
        TcpConnectionState.FinWait1,
        TcpConnectionState.FinWait2,
        TcpConnectionState.CloseWait,
        TcpConnectionState.Closing,
        TcpConnectionState.LastAck,
        TcpConnectionState.TimeWait,
    }
)
_OUR_FIN_QUEUED = frozenset({TcpConnectionState.FinWait1, TcpConnectionState.Closing, TcpConnectionState.LastAck})
_OUR_FIN_ACKED = frozenset({TcpConnectionState.FinWait2, TcpConnectionState.TimeWait})
_PEER_FIN_SEEN = frozenset(
    {
        TcpConnectionState.CloseWait,
        TcpConnectionState.Closing,
        TcpConnectionState.LastAck,
        TcpConnectionState.TimeWait,
    }
)


def _ticks(ns: int, tps: int) -> int:
    return ns * tps // NS


def _ns(ticks: int, tps: int) -> int:
    return ticks * NS // tps


def _delta(deadline: int | None, now: int, tps: int) -> int:
    """Ticks until `deadline`, rounded up so a timer never fires early; -1 (0xFFFFFFFF) if idle."""
    if deadline is None:
        return TIMER_NOT_RUNNING
    left = deadline - now
    if left <= 0:
        return 0
    return min(-(-left * tps // NS), TIMER_NOT_RUNNING - 1)


def export_state(
    conn: Connection, now: int, ticks_per_second: int, *, flush_delayed_ack: bool = True
) -> tuple[TcpOffloadStateConst, TcpOffloadStateCached, TcpOffloadStateDelegated, list[memoryview], list[memoryview]]:
    """Snapshot `conn` as (const, cached, delegated, send_data, buffered_rx).

    send_data: unacknowledged + unsent bytes from SND.UNA in order; buffered_rx: acknowledged bytes not
    yet read by the user (they end just before RCV.NXT, or before the peer's FIN)."""
    if conn.state not in EXPORTABLE_STATES:
        raise TcpStateError(f"cannot export a connection in {conn.state.name}")
    tps = ticks_per_second
    if tps <= 0:
        raise ValueError("ticks_per_second must be positive")
    if flush_delayed_ack and (conn._delack_deadline is not None or conn._ack_now):
        conn._emit_seg(conn._ack_seq(), ACK, b"", now)  # R-TMR-04: flush, do not carry
    cfg = conn.cfg
    cflags = 0
    if conn.ts_ok:
        cflags |= TcpConstFlags.TIMESTAMP_ENABLED
    if conn.sack_ok:
        cflags |= TcpConstFlags.SACK_ENABLED
    if conn.ws_ok:
        cflags |= TcpConstFlags.WINDOW_SCALING_ENABLED
    const = TcpOffloadStateConst(
        flags=int(cflags),
        remote_port=conn.remote_port,
        local_port=conn.local_port,
        snd_wind_scale=conn.snd_wscale,
        rcv_wind_scale=conn.rcv_wscale,
        remote_mss=conn.peer_mss,
    )
    kflags = 0
    if cfg.keepalive:
        kflags |= TcpCachedFlags.KEEP_ALIVE_ENABLED
    if cfg.nagle:
        kflags |= TcpCachedFlags.NAGLING_ENABLED
    if cfg.max_rt_ns == 0:
        max_rt = 0
    elif cfg.max_rt_ns == MAX_RT_UNLIMITED:
        max_rt = WIRE_MAX_RT_UNLIMITED
    else:
        max_rt = max(1, min(_ticks(cfg.max_rt_ns, tps), WIRE_MAX_RT_UNLIMITED - 1))
    cached = TcpOffloadStateCached(
        flags=int(kflags),
        initial_rcv_wnd=cfg.rcv_buf,
        ka_probe_count=min(cfg.keepalive_count, 255),
        ka_timeout=min(_ticks(cfg.keepalive_idle_ns, tps), 0xFFFFFFFF),
        ka_interval=min(_ticks(cfg.keepalive_interval_ns, tps), 0xFFFFFFFF),
        max_rt=max_rt,
    )
    una = conn.snd_una
    srtt_ticks = conn.srtt * tps / NS if conn.have_rtt else 0.0
    rttvar_ticks = conn.rttvar * tps / NS if conn.have_rtt else 0.0
    rtx_deadline = conn._rtx_deadline
    delegated = TcpOffloadStateDelegated(
        state=conn.state,
        rcv_nxt=conn.rcv_nxt & MASK,
        rcv_wnd=max(0, conn.rcv_adv_max - conn.rcv_nxt),
        snd_una=una & MASK,
        snd_nxt=conn.snd_nxt & MASK,
        snd_max=conn.snd_max & MASK,
        snd_wnd=conn.snd_wnd,
        max_snd_wnd=conn.max_snd_wnd,
        send_wl1=conn.snd_wl1 & MASK,
        cwnd=min(conn.cc.cwnd, 0xFFFFFFFF),
        ss_thresh=min(conn.cc.ssthresh, 0xFFFFFFFF),
        srtt=scale_srtt(srtt_ticks),  # §6 item 12: x8, saturating
        rtt_var=scale_rttvar(rttvar_ticks),  # x4
        ts_recent=conn.ts_recent,
        ts_recent_age=min(_ticks(now - conn.ts_recent_time, tps), 0xFFFFFFFF) if conn.ts_recent_time >= 0 else 0,
        ts_time=conn.ts_now(now),  # R-TS-04
        total_rt=min(_ticks(now - conn._rtx_first, tps), 0xFFFFFFFF) if conn._rtx_first >= 0 else 0,
        dup_ack_count=min(conn._dup_acks, 255),
        snd_wnd_probe_count=min(conn._persist_round, 255),
        keep_alive=KeepAliveState(min(conn._ka_probes, 255), _delta(conn._ka_deadline, now, tps)),
        retransmit=RetransmitState(min(conn._rtx_count, 255), _delta(rtx_deadline, now, tps)),
    )
    send_data = conn.sndbuf.views()
    buffered = conn.rxq.views()
    return const, cached, delegated, send_data, buffered


def detach(conn: Connection) -> None:
    """Make an exported connection inert (its state now lives elsewhere): no timers, no output."""
    conn._rtx_deadline = None
    conn._delack_deadline = None
    conn._ka_deadline = None
    conn._tw_deadline = None
    conn._ack_now = False
    conn._detached = True
    conn.state = TcpConnectionState.Closed


def import_state(
    const: TcpOffloadStateConst,
    cached: TcpOffloadStateCached,
    delegated: TcpOffloadStateDelegated,
    send_data: Sequence[memoryview | bytes],
    buffered_rx: Sequence[memoryview | bytes],
    now: int,
    ticks_per_second: int,
    cfg: TcpConfig | None = None,
    path_mtu: int | None = None,
) -> Connection:
    """Rebuild a Connection that continues exactly where the exporter stopped."""
    tps = ticks_per_second
    if tps <= 0:
        raise ValueError("ticks_per_second must be positive")
    st = TcpConnectionState(delegated.state)
    if st not in EXPORTABLE_STATES:
        raise TcpStateError(f"cannot import a connection in {st.name}")
    base = cfg if cfg is not None else TcpConfig()
    if cached.max_rt == 0:
        max_rt_ns = 0
    elif cached.max_rt == WIRE_MAX_RT_UNLIMITED:
        max_rt_ns = MAX_RT_UNLIMITED
    else:
        max_rt_ns = _ns(cached.max_rt, tps)
    cfg = base.replace(
        keepalive=bool(cached.flags & TcpCachedFlags.KEEP_ALIVE_ENABLED),
        nagle=bool(cached.flags & TcpCachedFlags.NAGLING_ENABLED),
        keepalive_count=cached.ka_probe_count,
        keepalive_idle_ns=_ns(cached.ka_timeout, tps) or base.keepalive_idle_ns,
        keepalive_interval_ns=_ns(cached.ka_interval, tps) or base.keepalive_interval_ns,
        max_rt_ns=max_rt_ns,
        rcv_buf=max(cached.initial_rcv_wnd, 1),
        rcv_wscale=const.rcv_wind_scale,
        window_scaling=bool(const.flags & TcpConstFlags.WINDOW_SCALING_ENABLED),
        timestamps=bool(const.flags & TcpConstFlags.TIMESTAMP_ENABLED),
        sack=bool(const.flags & TcpConstFlags.SACK_ENABLED),
        **({"path_mtu": path_mtu} if path_mtu is not None else {}),
    )
    una_w = delegated.snd_una & MASK
    c = Connection(cfg, const.local_port, const.remote_port, (una_w - 1) & MASK)
    una = c.iss + 1
    c.snd_una = una
    # An idle connection has SND.NXT == SND.MAX == SND.UNA: one int object for all three (memory).
    d_nxt = (delegated.snd_nxt - una_w) & MASK
    d_max = (delegated.snd_max - una_w) & MASK
    c.snd_nxt = una + d_nxt if d_nxt else una
    c.snd_max = una + d_max if d_max else una
    c.ws_ok = bool(const.flags & TcpConstFlags.WINDOW_SCALING_ENABLED)
    c.ts_ok = bool(const.flags & TcpConstFlags.TIMESTAMP_ENABLED)
    c.sack_ok = bool(const.flags & TcpConstFlags.SACK_ENABLED)
    c.snd_wscale = const.snd_wind_scale if c.ws_ok else 0
    c.rcv_wscale = const.rcv_wind_scale if c.ws_ok else 0
    c.peer_mss = const.remote_mss
    c.snd_mss = c._mss_for_mtu(cfg.path_mtu, const.remote_mss)
    buf = SendBuffer(una)
    for d in send_data:
        buf.append(d if isinstance(d, memoryview) else memoryview(d))
    c.sndbuf = buf
    if st in _OUR_FIN_QUEUED:
        c.fin_seq = buf.end
    elif st in _OUR_FIN_ACKED:
        c.fin_seq = una - 1
    rcv_nxt = delegated.rcv_nxt & MASK
    c.rcv_nxt = rcv_nxt
    nbuf = 0
    for d in buffered_rx:
        c.rxq.append(d)
        nbuf += len(d)
    c._irs = rcv_nxt - 1 - nbuf - (1 if st in _PEER_FIN_SEEN else 0)
    c.rcv_up = rcv_nxt
    c.rcv_adv = c.rcv_adv_max = rcv_nxt + delegated.rcv_wnd
    c._last_ack_sent = rcv_nxt
    if st in _PEER_FIN_SEEN and nbuf:
        c._peer_closed_pending = True
    c.snd_wnd = delegated.snd_wnd
    c.max_snd_wnd = max(delegated.max_snd_wnd, delegated.snd_wnd)
    c.snd_wl1 = rcv_nxt + (((delegated.send_wl1 - rcv_nxt + 0x80000000) & MASK) - 0x80000000)
    c.snd_wl2 = una
    c.cc = make_cc(cfg.congestion_control, c.snd_mss, cfg.initial_window, cfg.abc_limit)
    c.cc.cwnd = max(delegated.cwnd, c.snd_mss)
    c.cc.ssthresh = max(delegated.ss_thresh, 2 * c.snd_mss)
    # R-TMR-22: descale SRtt/8 and RttVar/4 ticks, then RFC 6298 RTO. Offloadable connections are
    # synchronized, so they hold an RTT sample; SRtt 0 means a sub-tick RTT, not "no sample".
    c.srtt = delegated.srtt * NS // (8 * tps)
    c.rttvar = delegated.rtt_var * NS // (4 * tps)
    c.have_rtt = True
    var4 = c.rttvar << 2
    rto = c.srtt + max(var4, cfg.clock_granularity_ns)
    c.rto = min(max(rto, cfg.rto_min_ns), cfg.rto_max_ns)
    if c.ts_ok:
        # R-TS-01: delta = TsTime - local clock, so ts_now(now) == TsTime and continues from there.
        c._ts_offset = (delegated.ts_time - now // c._ts_div) & MASK
        c.ts_recent = delegated.ts_recent
        c.ts_recent_time = now - _ns(delegated.ts_recent_age, tps)
    c._dup_acks = delegated.dup_ack_count
    c._rtx_count = delegated.retransmit.count
    # The state carries no RFC 6582 `recover`: it guards a window that was in loss recovery or timed
    # out; otherwise the next three duplicate ACKs must start a fast retransmit (RFC 5681 3.2 step 2).
    c._recover = una
    if c._dup_acks >= cfg.dupack_threshold and c.snd_max > una:
        c._in_recovery = True
        c._high_rxt = una
        c._recover = c.snd_max
    elif c._rtx_count and c.snd_max > una:
        c._recover = c.snd_max
    c._persist_round = delegated.snd_wnd_probe_count
    c._rtx_first = now - _ns(delegated.total_rt, tps) if delegated.total_rt or c._rtx_count else -1
    delta = delegated.retransmit.timeout_delta
    if delta != TIMER_NOT_RUNNING:
        c._rtx_deadline = now + _ns(delta, tps)
        if st is TcpConnectionState.FinWait2:
            c._rtx_mode = RTX_FIN_WAIT_2  # R-TMR-07
        elif c.snd_wnd == 0 and c.snd_max == una and buf.end > una:
            c._rtx_mode = RTX_PERSIST  # R-TMR-15
        else:
            c._rtx_mode = RTX_RETRANSMIT  # R-TMR-19
            c._rtx_backoff = c._rtx_count
    ka = delegated.keep_alive
    if cfg.keepalive:
        c._ka_probes = ka.probe_count  # R-TMR-08
        if ka.timeout_delta != TIMER_NOT_RUNNING:
            c._ka_deadline = now + _ns(ka.timeout_delta, tps)
    c.state = st
    if st is TcpConnectionState.TimeWait:
        c._tw_deadline = now + cfg.time_wait_ns
    c._last_progress = now
    c._output(now)  # R-TMR-21: send handed-over data now rather than carry an SWS timer
    return c


def update_cached(conn: Connection, cached: TcpOffloadStateCached, now: int, ticks_per_second: int) -> None:
    """Apply an updated TCP_OFFLOAD_STATE_CACHED (UpdateOffload) to a live connection: keepalive and
    Nagle switches, KaTimeout/KaInterval/KaProbeCount, MaxRT (R-TMR-17) and the flag-driven actions
    KEEP_ALIVE_RESTART, MAX_RT_RESTART (TotalRT = 0) and UPDATE_RCV_WND (advertise the new window)."""
    tps = ticks_per_second
    if tps <= 0:
        raise ValueError("ticks_per_second must be positive")
    f = cached.flags
    if cached.max_rt == 0:
        max_rt_ns = 0
    elif cached.max_rt == WIRE_MAX_RT_UNLIMITED:
        max_rt_ns = MAX_RT_UNLIMITED
    else:
        max_rt_ns = _ns(cached.max_rt, tps)
    old = conn.cfg
    ka_on = bool(f & TcpCachedFlags.KEEP_ALIVE_ENABLED)
    conn.cfg = old.replace(
        keepalive=ka_on,
        nagle=bool(f & TcpCachedFlags.NAGLING_ENABLED),
        keepalive_count=cached.ka_probe_count,
        keepalive_idle_ns=_ns(cached.ka_timeout, tps) or old.keepalive_idle_ns,
        keepalive_interval_ns=_ns(cached.ka_interval, tps) or old.keepalive_interval_ns,
        max_rt_ns=max_rt_ns,
        rcv_buf=cached.initial_rcv_wnd if f & TcpCachedFlags.UPDATE_RCV_WND else old.rcv_buf,
    )
    if not ka_on:
        conn._ka_deadline = None
        conn._ka_probes = 0
    elif f & TcpCachedFlags.KEEP_ALIVE_RESTART or (not old.keepalive and ka_on):
        conn._ka_probes = 0
        conn._ka_deadline = now + conn.cfg.keepalive_idle_ns
    if f & TcpCachedFlags.MAX_RT_RESTART:
        if conn._rtx_first >= 0:
            conn._rtx_first = now
        # R-UPD-11: under MAX_RT_RESTART a changed KaProbeCount restarts the probe count and a changed
        # KaTimeout/KaInterval restarts the keepalive timer with the new values.
        new = conn.cfg
        if ka_on and old.keepalive:
            if new.keepalive_count != old.keepalive_count:
                conn._ka_probes = 0
            if (new.keepalive_idle_ns, new.keepalive_interval_ns) != (old.keepalive_idle_ns,
                                                                      old.keepalive_interval_ns):
                conn._ka_deadline = now + (new.keepalive_interval_ns if conn._ka_probes
                                           else new.keepalive_idle_ns)
    if f & TcpCachedFlags.UPDATE_RCV_WND and cached.initial_rcv_wnd != old.rcv_buf:
        before = conn.rcv_adv_max
        conn._rcv_window()
        if conn.rcv_adv_max != before:
            conn._emit_seg(conn._ack_seq(), ACK, b"", now)
