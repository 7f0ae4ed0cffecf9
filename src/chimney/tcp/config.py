"""TCP engine configuration: `TcpConfig` (RFC defaults) and `linux_profile()` (Linux defaults).

All durations are integer nanoseconds; sizes are bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MS = 1_000_000
S = 1_000_000_000

MAX_RT_COUNT = 0  # max_rt_ns == 0: limit retransmissions by count (R-TMR-17 MaxRT == 0)
MAX_RT_UNLIMITED = -1  # max_rt_ns == -1: never give up (R-TMR-17 MaxRT == 0xFFFFFFFF)


REPLACE_CACHE_MAX = 512  # distinct (config, changes) pairs whose result is kept for sharing
_REPLACED: dict[tuple[TcpConfig, tuple[tuple[str, object], ...]], TcpConfig] = {}


@dataclass(slots=True, frozen=True)
class TcpConfig:
    """Per-connection tunables. Defaults follow the RFCs; `linux_profile()` gives Linux's.

    Immutable, so connections share one object (a copy costs ~430 B per connection): derive
    variants with `replace`, which hands out one shared object per distinct (config, changes)."""

    mss: int = 1460  # MSS we advertise (RFC 9293 3.7.1: MTU - 40 for IPv4)
    path_mtu: int = 1500
    ip_header_size: int = 20  # 20 IPv4, 40 IPv6
    initial_window: int = 10  # segments (RFC 6928)
    rcv_buf: int = 262_144
    snd_buf: int = 262_144
    window_scaling: bool = True
    rcv_wscale: int | None = None  # None: smallest shift that fits rcv_buf
    timestamps: bool = True
    sack: bool = True
    # RFC 2883 D-SACK: with SACK negotiated, an ACK answering a duplicate segment reports it in its first
    # SACK block (Linux net.ipv4.tcp_dsack=1). Receiver side only: D-SACKs received are never new SACK data.
    dsack: bool = True
    ts_hz: int = 1000  # timestamp clock rate (R-TS-05: calibrate to TicksPerSecond when offloading)
    delayed_ack: bool = True
    delack_timeout_ns: int = 200 * MS  # RFC 9293 3.8.6.3: < 0.5 s
    ack_frequency: int = 2  # ACK at least every second full-sized segment
    # The receive path hands segments over in batches and flushes after each (a TAP drain, like Linux
    # GRO): an ACK owed by in-order data waits for that flush (`flush_ack`) instead of being queued every
    # ack_frequency segments and coalesced away. TS.Recent then echoes the first unacknowledged segment
    # of the batch, as with any delayed ACK (RFC 7323 4.3).
    ack_at_batch_end: bool = False
    nagle: bool = True
    rto_initial_ns: int = 1 * S  # RFC 6298 2.1
    rto_min_ns: int = 200 * MS  # RFC 6298 says 1 s; Linux uses 200 ms, configurable
    rto_max_ns: int = 60 * S  # RFC 6298 2.5: at least 60 s
    clock_granularity_ns: int = 1 * MS  # G in RFC 6298 2.2/2.3
    max_retransmissions: int = 15  # TcpMaximumRetransmissions (R-TMR-17 with max_rt_ns == 0)
    max_rt_ns: int = MAX_RT_COUNT  # MaxRT: 0 count limit, -1 unlimited, > 0 total retransmit time
    syn_retries: int = 6
    synack_retries: int = 5
    user_timeout_ns: int = 0  # RFC 5482-style: 0 disabled
    keepalive: bool = False
    keepalive_idle_ns: int = 7200 * S
    keepalive_interval_ns: int = 75 * S
    keepalive_count: int = 9
    fin_wait2_timeout_ns: int = 120 * S  # R-TMR-05 (only for connections closed by the user)
    msl_ns: int = 60 * S  # TIME-WAIT lasts 2*MSL
    congestion_control: str = "newreno"  # or "cubic"
    dupack_threshold: int = 3
    limited_transmit: bool = True  # RFC 3042
    # RFC 3465 L: segments per ACK that slow start may count (2 is its limit); 0: no limit, Linux's
    # tcp_slow_start, where one stretch ACK of a 64 KB TSO super-segment counts every segment it acks.
    abc_limit: int = 2
    sws_sender_fraction: int = 2  # send a sub-MSS segment when >= max_snd_wnd / this
    challenge_ack_limit: int = 100  # challenge ACKs per second per connection (RFC 5961 7)
    rfc1337: bool = False  # ignore RST in TIME-WAIT
    oow_ack_interval_ns: int = 100 * MS  # min gap between dupACKs answering out-of-window pure ACKs
    max_ooo_segments: int = 512  # reassembly queue entries before further out-of-order data is dropped
    persist_min_ns: int = 200 * MS
    persist_max_ns: int = 60 * S
    # RFC 9293 3.8.6.1: a zero-window probe carries one octet of new data when there is some; False
    # sends Linux's zero-length probe with SEG.SEQ = SND.UNA - 1 (tcp_xmit_probe_skb).
    zero_window_probe_octet: bool = True
    # RFC 7323 3.2 SHOULD: once timestamps are negotiated, drop a non-RST segment without TSopt;
    # False accepts it (Linux tcp_validate_incoming does not check for a missing TSopt).
    drop_missing_tsopt: bool = True
    # Linux tcp_nagle_check with tcp_minshall_check: a sub-MSS segment waits only while an earlier sub-MSS
    # segment is unacknowledged; False: RFC 896 (while any data is unacknowledged).
    nagle_minshall: bool = False
    # Linux tcp_send_active_reset: the RST of an abort carries ACK = RCV.NXT; False: RFC 9293 3.10.5's
    # <SEQ=SND.NXT><CTL=RST>.
    rst_ack_on_abort: bool = False
    # Linux (TCPABORTONDATA): new data arriving after close() resets the connection, RFC 1122 4.2.2.13's
    # SHOULD; False: acknowledged and discarded as RFC 9293 3.10.7.4 processes it.
    rst_on_data_after_close: bool = False
    # Linux tcp_push_pending_frames on setsockopt(TCP_NODELAY, 1): what Nagle held goes out at once;
    # False: with the next write.
    nodelay_pushes: bool = False
    # Linux TCP_MAXSEG: the MSS we send with is bounded by it too (mss_clamp), not only the one we advertise.
    snd_mss_clamp: bool = False
    # Linux socket option semantics: SO_RCVBUF/SO_SNDBUF store (and getsockopt reports) twice the value
    # set, clamped to [2304|4608, 2 * 212992] (net.core.rmem_max/wmem_max); TCP_MAXSEG takes 0 or
    # 88..32767 and reads 536 before a connection exists. Not in linux_profile() (its rmem_max clamp
    # would cap the large buffers applications here ask for): `linux_profile(linux_sockopts=True)`.
    linux_sockopts: bool = False
    # An offload target must not originate an RST (R-DISC-03) and hands timed-out connections back
    # (R-TMR-14/18): True makes keepalive/retransmit/persist/user-timeout exhaustion emit TimedOut but
    # keep the TCB with its expired timer, so the owner that takes it over (the host) acts on it at once.
    hand_back_on_give_up: bool = False

    @property
    def time_wait_ns(self) -> int:
        return 2 * self.msl_ns

    def replace(self, **changes: object) -> TcpConfig:
        if not changes:
            return self
        try:
            # The value's type is part of the key: replace(x=1) and replace(x=True) compare equal but must
            # not share a result.
            key = (self, tuple(sorted((k, type(v).__name__, v) for k, v in changes.items())))
            hit = _REPLACED.get(key)
        except TypeError:  # an unhashable value: no sharing, still a correct config
            return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        if hit is None:
            hit = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
            if len(_REPLACED) >= REPLACE_CACHE_MAX:
                _REPLACED.clear()
            _REPLACED[key] = hit
        return hit

    def validate(self) -> None:
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"mss {self.mss} out of range")
        if self.rcv_buf <= 0 or self.snd_buf <= 0:
            raise ValueError("buffer sizes must be positive")
        if self.congestion_control not in ("newreno", "cubic"):
            raise ValueError(f"unknown congestion control {self.congestion_control!r}")
        if self.abc_limit < 0:
            raise ValueError("abc_limit must be >= 0 (0: no per-ACK limit)")
        if self.rcv_wscale is not None and not 0 <= self.rcv_wscale <= 14:
            raise ValueError("rcv_wscale must be 0..14 (RFC 7323 2.3)")
        if not self.rto_min_ns <= self.rto_initial_ns <= self.rto_max_ns:
            raise ValueError("need rto_min <= rto_initial <= rto_max")


def linux_profile(**overrides: object) -> TcpConfig:
    """Linux defaults (net.ipv4.tcp_* as of 6.x): 40 ms delayed ACK floor, 200 ms min RTO,
    120 s max RTO, tcp_retries2=15, syn_retries=6, FIN_WAIT_2 60 s, TIME-WAIT 60 s, CUBIC, wscale 7."""
    cfg = TcpConfig(
        rcv_buf=131_072,
        snd_buf=16_384 * 4,
        rcv_wscale=7,
        delack_timeout_ns=40 * MS,
        rto_min_ns=200 * MS,
        rto_max_ns=120 * S,
        max_retransmissions=15,
        syn_retries=6,
        synack_retries=5,
        keepalive_idle_ns=7200 * S,
        keepalive_interval_ns=75 * S,
        keepalive_count=9,
        fin_wait2_timeout_ns=60 * S,
        msl_ns=30 * S,
        congestion_control="cubic",
        challenge_ack_limit=1000,
        oow_ack_interval_ns=500 * MS,  # net.ipv4.tcp_invalid_ratelimit
        zero_window_probe_octet=False,
        drop_missing_tsopt=False,
        nagle_minshall=True,
        rst_ack_on_abort=True,
        rst_on_data_after_close=True,
        nodelay_pushes=True,
        snd_mss_clamp=True,
        abc_limit=0,
        dsack=True,  # net.ipv4.tcp_dsack
    )
    return cfg.replace(**overrides) if overrides else cfg
