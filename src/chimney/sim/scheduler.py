"""The deterministic scheduler: virtual clock in integer nanoseconds, event heap, cancellable timers.

Everything in a simulation (links, drivers, TCP timers, asynchronous completions) is an event here.

Determinism: events at the same instant run in insertion order (FIFO), every random draw comes from
`rng(name)` (seeded from the scheduler seed and the name only), and the optional event log (`trace`)
holds only virtual times, sequence numbers and labels built from `__qualname__`s, never object ids,
so two runs with the same seed and inputs give byte-identical `trace_text()`.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def callable_label(fn: Callable[..., Any]) -> str:
    """A deterministic name for a callable: its `__qualname__` (never a repr with an address)."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    if isinstance(fn, functools.partial):
        return f"partial({callable_label(fn.func)})"
    return type(fn).__qualname__


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
        # Drop the argument references now: a cancelled timer may sit in the heap for a long time.
        self.args = ()

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Timer {self.label or callable_label(self.fn)} at {self.when}ns{state}>"


# Heap entries are (when, seq, timer) tuples: tuple comparison runs in C and `seq` is unique, so the
# Timer itself is never compared. This keeps push/pop cheap on the per-segment hot path.
_Entry = tuple[int, int, Timer]


class Scheduler:
    """Interface shared by the simulated and the real-time scheduler.

    `now` is integer nanoseconds. Callbacks run one at a time, never re-entrantly from `call_*`.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self.trace: list[str] | None = None  # set to [] to record an event log
        self.events_run = 0
        self._stop_requested = False
        # Both schedulers keep their timers here as (when, seq, Timer): tuple order is the event order.
        self._heap: list[tuple[int, int, Timer]] = []

    @property
    def now(self) -> int:
        raise NotImplementedError

    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        return sum(1 for e in self._heap if not e[2].cancelled)

    def next_time(self) -> int | None:
        """When the next live timer is due (cancelled ones at the top are dropped on the way)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heappop(heap)
        return heap[0][0] if heap else None

    def call_at(self, when: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        raise NotImplementedError

    def call_later(self, delay: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        return self.call_at(self.now + delay, fn, *args, label=label)

    def call_soon(self, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        return self.call_at(self.now, fn, *args, label=label)

    def run_until(
        self,
        until: int | None = None,
        predicate: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        """Make the running (or next) `run_until` return "stopped" after the current event."""
        self._stop_requested = True

    def rng(self, name: str) -> random.Random:
        """A random stream per component, derived from the scheduler seed and the name only.

        Adding a component never perturbs the draws of another, so traces stay comparable.
        """
        r = self._rngs.get(name)
        if r is None:
            r = random.Random(f"{self.seed}/{name}")
            self._rngs[name] = r
        return r

    def note(self, text: str) -> None:
        """Append a free-form line to the event log (when recording), stamped with `now`."""
        if self.trace is not None:
            self.trace.append(f"{self.now} - {text}")

    def annotate(self, text: str) -> None:
        """Append `text` to the log line of the event running now (when recording).

        For dispatchers whose real subject is only known when the event runs (the CPU model).
        """
        trace = self.trace
        if trace:
            trace[-1] = f"{trace[-1]} {text}"

    def trace_text(self) -> str:
        """The event log as one string, one event per line ("" when not recording)."""
        if not self.trace:
            return ""
        return "\n".join(self.trace) + "\n"

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no file descriptors")

    def remove_reader(self, fd: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} has no file descriptors")

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no file descriptors")

    def remove_writer(self, fd: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} has no file descriptors")


class SimScheduler(Scheduler):
    """Discrete-event scheduler with a virtual clock. Same seed and inputs give the same run."""

    def __init__(self, seed: int = 0, start_ns: int = 0, trace: bool = False) -> None:
        super().__init__(seed)
        self._now = start_ns
        self._heap: list[_Entry] = []
        self._seq = 0
        if trace:
            self.trace = []

    @property
    def now(self) -> int:
        return self._now

    def call_at(self, when: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if when < self._now:
            raise ValueError(f"cannot schedule in the past: {when} < now {self._now}")
        if when.__class__ is not int and not isinstance(when, int):
            # A float time would make the clock (and the trace text) platform dependent.
            raise TypeError(f"event time must be an int number of ns, got {when!r}")
        seq = self._seq = self._seq + 1
        t = Timer(when, seq, fn, args, label)
        heappush(self._heap, (when, seq, t))
        return t

    def call_later(self, delay: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        if delay.__class__ is not int and not isinstance(delay, int):
            raise TypeError(f"delay must be an int number of ns, got {delay!r}")
        when = self._now + delay
        seq = self._seq = self._seq + 1
        t = Timer(when, seq, fn, args, label)
        heappush(self._heap, (when, seq, t))
        return t

    def call_soon(self, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        when = self._now
        seq = self._seq = self._seq + 1
        t = Timer(when, seq, fn, args, label)
        heappush(self._heap, (when, seq, t))
        return t

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError("simulated scheduler has no file descriptors (use RealTimeScheduler)")

    def remove_reader(self, fd: Any) -> bool:
        raise NotImplementedError("simulated scheduler has no file descriptors (use RealTimeScheduler)")

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError("simulated scheduler has no file descriptors (use RealTimeScheduler)")

    def remove_writer(self, fd: Any) -> bool:
        raise NotImplementedError("simulated scheduler has no file descriptors (use RealTimeScheduler)")

    def _run(self, t: Timer) -> None:
        self._now = t.when
        self.events_run += 1
        trace = self.trace
        if trace is not None:
            trace.append(f"{t.when} {t.seq} {t.label or callable_label(t.fn)}")
        t.fn(*t.args)

    def step(self) -> bool:
        """Run the next due event; False when nothing is left."""
        heap = self._heap
        while heap:
            t = heappop(heap)[2]
            if t.cancelled:
                continue
            self._run(t)
            return True
        return False

    def run_until(
        self,
        until: int | None = None,
        predicate: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> str:
        """Run events until virtual time `until`, `predicate()` is true, or `max_events` ran.

        Returns why it stopped: "predicate", "time", "idle", "max_events" or "stopped" (`stop()`).
        `predicate` is checked before the first event and after each one. With `until`, the clock
        ends exactly at `until` (events at `until` run). "idle" means no event is left and no `until`.
        """
        if max_events is not None and max_events < 0:
            raise ValueError(f"negative max_events {max_events}")
        if until is not None and until < self._now:
            raise ValueError(f"until {until} is in the past (now {self._now})")
        heap = self._heap
        remaining = -1 if max_events is None else max_events
        # The loop is written out (no step()/next_time() calls) because it runs once per event.
        while True:
            if predicate is not None and predicate():
                return "predicate"
            if remaining == 0:
                return "max_events"
            if self._stop_requested:
                self._stop_requested = False
                return "stopped"
            while heap and heap[0][2].cancelled:
                heappop(heap)
            if not heap:
                if until is not None:
                    self._now = until
                    return "time"
                return "idle"
            when = heap[0][0]
            if until is not None and when > until:
                self._now = until
                return "time"
            t = heappop(heap)[2]
            self._now = when
            self.events_run += 1
            trace = self.trace
            if trace is not None:
                trace.append(f"{when} {t.seq} {t.label or callable_label(t.fn)}")
            t.fn(*t.args)
            remaining -= 1

    def run(self, max_events: int | None = None) -> str:
        return self.run_until(max_events=max_events)
