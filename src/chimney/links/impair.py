"""Impairment configuration and the one-direction channel engine (queue, serialization, delay, loss...).

Owns `Impairments`, `GilbertElliott`, `corrupt_frame` and `Channel`, which `Link` and `Switch` ports reuse.

Per frame the channel applies, in this order: link state, runt/MTU check, drop-tail queue and
serialization (rate), Bernoulli loss, Gilbert-Elliott burst loss, propagation delay + jitter (kept
monotonic unless the frame is picked for reordering), corruption, duplication. Every random draw comes
from the channel's own stream `scheduler.rng(f"link/{name}/{direction}")`, so one seed gives one run.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chimney.links.base import ETH_HLEN, DropCause, LinkCounters, max_frame_len
from chimney.sim.scheduler import NS_PER_S, Scheduler, Timer

# (frame, meta) -> whether it was accepted (False: nobody listening)
DeliverFn = Callable[[bytes, "str | None"], bool]


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """Two-state burst-loss model; the state moves once per frame, then the frame is lost with the
    loss probability of the state it is in."""

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good", "loss_good", "loss_bad"):
            _check_prob(f"GilbertElliott.{name}", getattr(self, name))
        if self.p_good_to_bad + self.p_bad_to_good == 0.0:
            raise ValueError("GilbertElliott: p_good_to_bad and p_bad_to_good cannot both be 0")

    @property
    def stationary_bad(self) -> float:
        return self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)

    @property
    def stationary_loss(self) -> float:
        """Long-run loss rate: pi_bad * loss_bad + pi_good * loss_good."""
        pb = self.stationary_bad
        return pb * self.loss_bad + (1.0 - pb) * self.loss_good


@dataclass(frozen=True, slots=True)
class Impairments:
    """Configuration of one direction. The defaults describe a perfect, infinitely fast wire.

    rate_bps: line rate; None means no serialization delay and no queue.
    queue_limit_frames / queue_limit_bytes: drop-tail limit on frames *waiting* for the transmitter
        (the frame being serialized does not count); need a rate.
    delay_ns: propagation delay; jitter_ns: extra uniform delay in [0, jitter_ns].
    loss: Bernoulli loss probability; burst_loss: Gilbert-Elliott model (both may be set).
    duplicate: probability of one extra copy; reorder: probability that a frame is held back by
        reorder_delay_ns (later frames may overtake it -- the only way frames get reordered).
    corrupt: probability of flipping `corrupt_bits` distinct random bits at offsets >= corrupt_skip
        (default 14: damage happens past the Ethernet FCS check, e.g. in a router's memory, so it lands in
        the IP packet where the codec checksums must catch it; one flipped bit is always caught by an
        Internet checksum).
    framing_overhead: bytes added to every frame's wire time only (24 = preamble, FCS and inter-frame gap of
        real Ethernet; 0 keeps the arithmetic of tests simple).
    mtu: max L2 payload; longer frames (beyond 14 bytes of header, 18 if VLAN-tagged) are dropped.
    """

    rate_bps: int | None = None
    queue_limit_frames: int | None = None
    queue_limit_bytes: int | None = None
    delay_ns: int = 0
    jitter_ns: int = 0
    loss: float = 0.0
    burst_loss: GilbertElliott | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay_ns: int = 0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    corrupt_skip: int = ETH_HLEN
    framing_overhead: int = 0
    mtu: int = 1500

    def __post_init__(self) -> None:
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"rate_bps must be positive, got {self.rate_bps}")
        for name in ("queue_limit_frames", "queue_limit_bytes"):
            v = getattr(self, name)
            if v is not None:
                if v < 0:
                    raise ValueError(f"{name} must be >= 0, got {v}")
                if self.rate_bps is None:
                    raise ValueError(f"{name} needs rate_bps: without a line rate no queue ever builds up")
        for name in ("delay_ns", "jitter_ns", "reorder_delay_ns", "corrupt_skip", "framing_overhead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            _check_prob(name, getattr(self, name))
        if self.reorder > 0.0 and self.reorder_delay_ns <= 0:
            raise ValueError("reorder > 0 needs reorder_delay_ns > 0 (the hold-back that lets frames overtake)")
        if self.corrupt_bits < 1:
            raise ValueError(f"corrupt_bits must be >= 1, got {self.corrupt_bits}")
        if self.mtu <= 0:
            raise ValueError(f"mtu must be positive, got {self.mtu}")

    def serialization_ns(self, nbytes: int) -> int:
        """Time to clock `nbytes` onto the wire, rounded up to whole ns (0 without a rate)."""
        if self.rate_bps is None:
            return 0
        return -((-(nbytes + self.framing_overhead) * 8 * NS_PER_S) // self.rate_bps)


PERFECT = Impairments()


def corrupt_frame(frame: bytes, rng: random.Random, nbits: int = 1, skip: int = ETH_HLEN) -> bytes:
    """A copy of `frame` with `nbits` distinct bits flipped at offsets >= `skip` (the only frame copy a link
    makes). Frames with no bytes past `skip` are returned unchanged."""
    span = (len(frame) - skip) * 8
    if span <= 0:
        return frame
    out = bytearray(frame)
    for bit in rng.sample(range(span), min(nbits, span)):
        out[skip + (bit >> 3)] ^= 0x80 >> (bit & 7)
    return bytes(out)


class Channel:
    """One direction of a wire: accepts frames with `send`, hands them to `deliver` at their arrival time.

    Deliveries due at the same instant share one scheduler event.
    """

    __slots__ = (
        "_burst",
        "_busy_until",
        "_deliver",
        "_ge_bad",
        "_last_arrival",
        "_pending",
        "_rng",
        "_timers",
        "_waiting",
        "_waiting_bytes",
        "counters",
        "direction",
        "imp",
        "name",
        "scheduler",
        "up",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        name: str,
        direction: str,
        impairments: Impairments | None,
        deliver: DeliverFn | None,
        counters: LinkCounters | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.name = name
        self.direction = direction
        self.imp = impairments or PERFECT
        self._deliver: DeliverFn = deliver if deliver is not None else self._unconnected
        self.counters = counters if counters is not None else LinkCounters()
        self.up = True
        self._rng = scheduler.rng(f"link/{name}/{direction}")
        self._busy_until = 0
        self._last_arrival = 0
        # (start of serialization, size) of frames waiting for the transmitter, oldest first
        self._waiting: deque[tuple[int, int]] = deque()
        self._waiting_bytes = 0
        self._burst = self.imp.burst_loss
        self._ge_bad = False
        self._pending: dict[int, list[tuple[bytes, str | None]]] = {}
        self._timers: dict[int, Timer] = {}

    def connect(self, deliver: DeliverFn) -> None:
        """Set where frames go on arrival (bound once; the per-frame path calls it directly)."""
        self._deliver = deliver

    def reconfigure(self, impairments: Impairments | None) -> None:
        """Change the impairments from now on (e.g. a path MTU drop or a loss burst mid-run). Frames
        already queued or in flight keep their times; the Gilbert-Elliott state carries over."""
        self.imp = impairments or PERFECT
        self._burst = self.imp.burst_loss
        if self._burst is None:
            self._ge_bad = False

    def _unconnected(self, frame: bytes, meta: str | None) -> bool:
        return False

    @property
    def rng_name(self) -> str:
        return f"link/{self.name}/{self.direction}"

    def queued(self) -> tuple[int, int]:
        """(frames, bytes) waiting for the transmitter now."""
        self._expire_waiting(self.scheduler.now)
        return len(self._waiting), self._waiting_bytes

    def in_flight(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def _expire_waiting(self, now: int) -> None:
        w = self._waiting
        while w and w[0][0] <= now:
            self._waiting_bytes -= w.popleft()[1]

    def send(self, frame: bytes, meta: str | None = None) -> None:
        c = self.counters
        n = len(frame)
        c.sent += 1
        c.bytes_sent += n
        if not self.up:
            c.dropped[DropCause.LINK_DOWN] += 1
            return
        imp = self.imp
        if n < ETH_HLEN:
            c.dropped[DropCause.RUNT] += 1
            return
        if n > imp.mtu + ETH_HLEN and n > max_frame_len(frame, imp.mtu):
            c.dropped[DropCause.MTU] += 1
            return
        now = self.scheduler.now
        if imp.rate_bps is not None:
            start = self._busy_until if self._busy_until > now else now
            if start > now:
                self._expire_waiting(now)
                lim_f = imp.queue_limit_frames
                lim_b = imp.queue_limit_bytes
                if (lim_f is not None and len(self._waiting) >= lim_f) or (
                    lim_b is not None and self._waiting_bytes + n > lim_b
                ):
                    c.dropped[DropCause.QUEUE_FULL] += 1
                    return
                self._waiting.append((start, n))
                self._waiting_bytes += n
            t = start + imp.serialization_ns(n)
            self._busy_until = t
        else:
            t = now
        rng = self._rng
        if imp.loss and rng.random() < imp.loss:
            c.dropped[DropCause.LOSS] += 1
            return
        ge = self._burst
        if ge is not None:
            if self._ge_bad:
                if rng.random() < ge.p_bad_to_good:
                    self._ge_bad = False
            elif rng.random() < ge.p_good_to_bad:
                self._ge_bad = True
            p = ge.loss_bad if self._ge_bad else ge.loss_good
            if p and rng.random() < p:
                c.dropped[DropCause.BURST_LOSS] += 1
                return
        t += imp.delay_ns
        if imp.jitter_ns:
            t += rng.randint(0, imp.jitter_ns)
        if imp.reorder and rng.random() < imp.reorder:
            # Held back without raising the monotonic floor: frames sent after it may arrive first.
            t += imp.reorder_delay_ns
            c.reordered += 1
            meta = f"{meta}; reordered" if meta else "reordered"
        else:
            if t < self._last_arrival:
                t = self._last_arrival
            self._last_arrival = t
        if imp.corrupt and rng.random() < imp.corrupt:
            damaged = corrupt_frame(frame, rng, imp.corrupt_bits, imp.corrupt_skip)
            if damaged is not frame:
                frame = damaged
                c.corrupted += 1
                meta = f"{meta}; corrupted" if meta else "corrupted"
        self._enqueue(t, frame, meta)
        if imp.duplicate and rng.random() < imp.duplicate:
            c.duplicated += 1
            self._enqueue(t, frame, f"{meta}; duplicate" if meta else "duplicate")

    def _enqueue(self, t: int, frame: bytes, meta: str | None) -> None:
        batch = self._pending.get(t)
        if batch is None:
            self._pending[t] = [(frame, meta)]
            self._timers[t] = self.scheduler.call_at(t, self._deliver_due, t, label=f"link/{self.name}/{self.direction}")
        else:
            batch.append((frame, meta))

    def _deliver_due(self, t: int) -> None:
        batch = self._pending.pop(t)
        del self._timers[t]
        c = self.counters
        deliver = self._deliver
        for frame, meta in batch:
            if deliver(frame, meta):
                c.delivered += 1
                c.bytes_delivered += len(frame)
            else:
                c.dropped[DropCause.NO_RECEIVER] += 1

    def set_up(self, up: bool) -> None:
        """Bring the direction up or down; going down loses everything queued or in flight."""
        if up == self.up:
            return
        self.up = up
        if not up:
            lost = self.in_flight()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._pending.clear()
            self._waiting.clear()
            self._waiting_bytes = 0
            now = self.scheduler.now
            self._busy_until = now
            self._last_arrival = now
            if lost:
                self.counters.dropped[DropCause.LINK_DOWN] += lost
