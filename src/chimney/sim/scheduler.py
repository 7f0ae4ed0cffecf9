"""The deterministic scheduler: virtual clock in integer nanoseconds, event heap, cancellable timers.

Everything in a simulation (links, drivers, TCP timers, asynchronous completions) is an event here.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


class Timer:
    """A scheduled callback; `cancel()` makes it a no-op (lazy deletion from the heap)."""

    __slots__ = ("args", "cancelled", "fn", "label", "seq", "when")

    def __init__(self, when: int, seq: int, fn: Callable[..., Any], args: tuple[Any, ...], label: str) -> None:
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.label = label

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Timer {self.label or getattr(self.fn, '__qualname__', self.fn)} at {self.when}ns{state}>"


class Scheduler:
    """Interface shared by the simulated and the real-time scheduler.

    `now` is integer nanoseconds. Callbacks run one at a time, never re-entrantly from `call_*`.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}

    @property
    def now(self) -> int:
        raise NotImplementedError

    def call_at(self, when: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        raise NotImplementedError

    def call_later(self, delay: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        return self.call_at(self.now + delay, fn, *args, label=label)

    def call_soon(self, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        return self.call_at(self.now, fn, *args, label=label)

    def rng(self, name: str) -> random.Random:
        """A random stream per component, derived from the scheduler seed and the name only.

        Adding a component never perturbs the draws of another, so traces stay comparable.
        """
        r = self._rngs.get(name)
        if r is None:
            r = random.Random(f"{self.seed}/{name}")
            self._rngs[name] = r
        return r


class SimScheduler(Scheduler):
    """Discrete-event scheduler with a virtual clock. Same seed and inputs give the same run."""

    def __init__(self, seed: int = 0, start_ns: int = 0) -> None:
        super().__init__(seed)
        self._now = start_ns
        self._heap: list[Timer] = []
        self._seq = 0
        self.events_run = 0
        self.trace: list[str] | None = None  # set to [] to record an event log

    @property
    def now(self) -> int:
        return self._now

    def call_at(self, when: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if when < self._now:
            raise ValueError(f"cannot schedule in the past: {when} < now {self._now}")
        self._seq += 1
        t = Timer(when, self._seq, fn, args, label)
        heapq.heappush(self._heap, t)
        return t

    def pending(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)

    def next_time(self) -> int | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].when if heap else None

    def step(self) -> bool:
        """Run the next due event; False when nothing is left."""
        heap = self._heap
        while heap:
            t = heapq.heappop(heap)
            if t.cancelled:
                continue
            self._now = t.when
            self.events_run += 1
            if self.trace is not None:
                self.trace.append(f"{t.when} {t.seq} {t.label or getattr(t.fn, '__qualname__', '?')}")
            t.fn(*t.args)
            return True
        return False

    def run_until(
        self,
        until: int | None = None,
        predicate: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> str:
        """Run events until virtual time `until`, `predicate()` is true, or `max_events` ran.

        Returns why it stopped: "predicate", "time", "idle" or "max_events". With `until`, the clock
        ends exactly at `until` (events at `until` run).
        """
        n = 0
        while True:
            if predicate is not None and predicate():
                return "predicate"
            if max_events is not None and n >= max_events:
                return "max_events"
            nt = self.next_time()
            if nt is None:
                if until is not None:
                    self._now = max(self._now, until)
                    return "time"
                return "idle"
            if until is not None and nt > until:
                self._now = until
                return "time"
            self.step()
            n += 1

    def run(self, max_events: int | None = None) -> str:
        return self.run_until(max_events=max_events)
