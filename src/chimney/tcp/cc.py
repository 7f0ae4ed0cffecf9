"""Congestion control plug-ins: NewReno (RFC 5681 + RFC 6582 window arithmetic) and CUBIC (RFC 9438).

The connection owns loss detection and recovery; a controller only owns `cwnd`/`ssthresh` and reacts
to explicit events: on_ack, on_dupack, on_loss(kind), on_recovery_end, on_ecn.
"""

from __future__ import annotations

from chimney.tcp.buffers import shared_int

LOSS_FAST = "fast"
LOSS_SACK = "sack"
LOSS_RTO = "rto"


class CongestionControl:
    """Base: RFC 5681 slow start / congestion avoidance with appropriate byte counting (RFC 3465)."""

    __slots__ = ("abc_limit", "bytes_acked", "cwnd", "mss", "ssthresh")
    name = "base"

    def __init__(self, mss: int, initial_window: int, abc_limit: int = 2) -> None:
        self.mss = mss
        # RFC 6928 / RFC 5681 3.1: IW in segments, bounded in bytes.
        self.cwnd = shared_int(initial_window * mss)  # one object per value: memory per idle connection
        self.ssthresh = 0x7FFFFFFF
        self.bytes_acked = 0
        self.abc_limit = abc_limit

    def set_mss(self, mss: int) -> None:
        self.mss = mss

    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def slow_start(self, acked: int) -> int:
        """Grow cwnd for `acked` bytes in slow start; returns the bytes left for congestion avoidance.
        abc_limit L > 0: RFC 3465 2.2, at most L*SMSS per ACK. L == 0: Linux tcp_slow_start, every byte
        acked (a stretch ACK of a whole TSO super-segment counts all its segments) up to ssthresh, the
        rest carried into congestion avoidance."""
        limit = self.abc_limit
        if limit:
            self.cwnd += min(acked, limit * self.mss)
            return 0
        room = self.ssthresh - self.cwnd
        if acked <= room:
            self.cwnd += acked
            return 0
        self.cwnd = self.ssthresh
        return acked - room

    def on_ack(self, acked: int, rtt_ns: int, now: int, flight: int) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        self.bytes_acked += acked
        if self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self.cwnd += mss

    def on_dupack(self, now: int) -> None:
        return None

    def on_loss(self, kind: str, flight: int, now: int) -> None:
        """RFC 5681 (4): ssthresh = max(FlightSize/2, 2*SMSS); RTO -> loss window of one segment."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss if kind == LOSS_RTO else self.ssthresh
        self.bytes_acked = 0

    def on_recovery_end(self, now: int, flight: int) -> None:
        # RFC 6582 3.2 step 3: deflate to min(ssthresh, FlightSize + SMSS).
        self.cwnd = max(min(self.ssthresh, flight + self.mss), self.mss)

    def on_ecn(self, now: int, flight: int) -> None:
        self.on_loss(LOSS_FAST, flight, now)

    def export_cwnd(self) -> tuple[int, int]:
        return self.cwnd, self.ssthresh


class NewReno(CongestionControl):
    __slots__ = ()
    name = "newreno"


class Cubic(CongestionControl):
    """RFC 9438 CUBIC with fast convergence and the Reno-friendly region; windows kept in bytes."""

    __slots__ = ("epoch_start", "k", "w_est", "w_last_max", "w_max")
    name = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int, initial_window: int, abc_limit: int = 2) -> None:
        super().__init__(mss, initial_window, abc_limit)
        self.epoch_start = -1
        self.w_max = 0.0
        self.w_last_max = 0.0
        self.k = 0.0
        self.w_est = 0.0

    def on_ack(self, acked: int, rtt_ns: int, now: int, flight: int) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        cwnd_seg = self.cwnd / mss
        if self.epoch_start < 0:
            self.epoch_start = now
            if self.w_max < cwnd_seg:
                self.k = 0.0
                self.w_max = cwnd_seg
            else:
                self.k = ((self.w_max - cwnd_seg) / self.C) ** (1.0 / 3.0)
            self.w_est = cwnd_seg
        t = (now - self.epoch_start + max(rtt_ns, 0)) / 1e9  # RFC 9438 4.2: target at t + RTT
        target = self.C * (t - self.k) ** 3 + self.w_max
        # Reno-friendly estimate (RFC 9438 4.3): alpha = 3(1-beta)/(1+beta).
        alpha = 3.0 * (1.0 - self.BETA) / (1.0 + self.BETA)
        self.w_est += alpha * (acked / mss) / cwnd_seg
        if target < self.w_est:
            target = self.w_est
        target = min(target, 1.5 * cwnd_seg)
        if target > cwnd_seg:
            self.bytes_acked += acked
            # Grow by (target - cwnd)/cwnd segments per segment acked.
            inc = int((target - cwnd_seg) / cwnd_seg * self.bytes_acked)
            if inc > 0:
                self.cwnd += inc
                self.bytes_acked = 0
        else:
            self.bytes_acked += acked
            if self.bytes_acked >= 100 * self.cwnd:  # tiny growth in the plateau (RFC 9438 4.4)
                self.cwnd += mss
                self.bytes_acked = 0

    def on_loss(self, kind: str, flight: int, now: int) -> None:
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        # Fast convergence (RFC 9438 4.7).
        if cwnd_seg < self.w_last_max:
            self.w_last_max = cwnd_seg
            self.w_max = cwnd_seg * (1.0 + self.BETA) / 2.0
        else:
            self.w_last_max = cwnd_seg
            self.w_max = cwnd_seg
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * mss)
        self.cwnd = mss if kind == LOSS_RTO else self.ssthresh
        self.epoch_start = -1
        self.bytes_acked = 0

    def on_recovery_end(self, now: int, flight: int) -> None:
        self.cwnd = max(self.ssthresh, self.mss)
        self.epoch_start = -1


def make_cc(name: str, mss: int, initial_window: int, abc_limit: int = 2) -> CongestionControl:
    if name == "newreno":
        return NewReno(mss, initial_window, abc_limit)
    if name == "cubic":
        return Cubic(mss, initial_window, abc_limit)
    raise ValueError(f"unknown congestion control {name!r}")
