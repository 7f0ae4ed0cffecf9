"""The real-time driver: the `Scheduler` interface on the monotonic clock, with fd readiness callbacks.

Used where the model talks to the outside world (TAP devices, sockets); simulation code runs unchanged.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

from chimney.sim.scheduler import Scheduler, Timer, callable_label

_Callback = tuple[Callable[..., Any], tuple[Any, ...]]


def _fileno(fd: Any) -> int:
    if isinstance(fd, int):
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}")
        return fd
    fileno = getattr(fd, "fileno", None)
    if fileno is None:
        raise TypeError(f"expected an int fd or an object with fileno(), got {type(fd).__name__}")
    return int(fileno())


class RealTimeScheduler(Scheduler):
    """Timers on `time.monotonic_ns()` plus `selectors`-based fd callbacks.

    Each wake-up dispatches every ready fd, then every timer that was due when the wake-up began
    (timers added by those callbacks wait for the next round, after a zero-timeout poll, so a
    `call_soon` chain cannot starve the fds). Between wake-ups it blocks in `select()` until the next
    timer, `until`, or fd activity, so it never busy-spins. `stop()` is safe from other threads and
    signal handlers (a self-pipe wakes the selector). Close it with `close()` or a `with` block.
    """

    def __init__(self, seed: int = 0, trace: bool = False) -> None:
        super().__init__(seed)
        self._heap: list[tuple[int, int, Timer]] = []
        self._seq = 0
        self._selector = selectors.DefaultSelector()
        self._readers: dict[int, _Callback] = {}
        self._writers: dict[int, _Callback] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._running = False
        self._closed = False
        if trace:
            self.trace = []

    # -- clock and timers ---------------------------------------------------------------------

    @property
    def now(self) -> int:
        return time.monotonic_ns()

    def call_at(self, when: int, fn: Callable[..., Any], *args: Any, label: str = "") -> Timer:
        # No "in the past" check: the clock moves on its own, a deadline already passed just runs
        # at the next wake-up.
        seq = self._seq = self._seq + 1
        t = Timer(int(when), seq, fn, args, label)
        heappush(self._heap, (t.when, seq, t))
        return t

    # -- file descriptors -----------------------------------------------------------------------

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        try:
            self._selector.get_key(fd)
            registered = True
        except KeyError:
            registered = False
        if events == 0:
            if registered:
                self._selector.unregister(fd)
        elif registered:
            self._selector.modify(fd, events)
        else:
            self._selector.register(fd, events)

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call `callback(*args)` whenever `fd` is readable (replaces an earlier reader of `fd`)."""
        n = _fileno(fd)
        if n == self._wake_r:
            raise ValueError("fd is the scheduler's internal wake-up pipe")
        self._readers[n] = (callback, args)
        self._update(n)

    def remove_reader(self, fd: Any) -> bool:
        n = _fileno(fd)
        if self._readers.pop(n, None) is None:
            return False
        self._update(n)
        return True

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call `callback(*args)` whenever `fd` is writable (replaces an earlier writer of `fd`)."""
        n = _fileno(fd)
        if n == self._wake_r:
            raise ValueError("fd is the scheduler's internal wake-up pipe")
        self._writers[n] = (callback, args)
        self._update(n)

    def remove_writer(self, fd: Any) -> bool:
        n = _fileno(fd)
        if self._writers.pop(n, None) is None:
            return False
        self._update(n)
        return True

    # -- control --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Make the running (or next) `run_until` return "stopped"; callable from any thread."""
        self._stop_requested = True
        if not self._closed:
            # A full pipe means a wake-up is pending anyway.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._readers.clear()
        self._writers.clear()

    def __enter__(self) -> RealTimeScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch(self, fn: Callable[..., Any], args: tuple[Any, ...], what: str) -> None:
        self.events_run += 1
        if self.trace is not None:
            self.trace.append(f"{time.monotonic_ns()} {what} {callable_label(fn)}")
        fn(*args)

    def run_until(
        self,
        until: int | None = None,
        predicate: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> str:
        """Run timers and fd callbacks until monotonic time `until`, `predicate()`, or `max_events`.

        Returns "predicate", "time", "max_events", "stopped", or "idle" (no timer, no fd and no
        `until`). `predicate` is checked before the first event and after every event. Exceptions
        from callbacks (and KeyboardInterrupt) propagate; the scheduler stays usable afterwards.
        """
        if self._closed:
            raise RuntimeError("RealTimeScheduler is closed")
        if self._running:
            raise RuntimeError("run_until is not re-entrant")
        if max_events is not None and max_events < 0:
            raise ValueError(f"negative max_events {max_events}")
        self._running = True
        try:
            return self._loop(until, predicate, -1 if max_events is None else max_events)
        finally:
            self._running = False

    def _loop(self, until: int | None, predicate: Callable[[], bool] | None, remaining: int) -> str:
        heap = self._heap
        select = self._selector.select
        wake_r = self._wake_r
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
            now = time.monotonic_ns()
            if until is not None and now >= until and not (heap and heap[0][0] <= until):
                return "time"
            has_fds = bool(self._readers or self._writers)
            deadline: int | None
            if heap:
                deadline = heap[0][0] if until is None else min(heap[0][0], until)
            elif until is not None:
                deadline = until
            elif has_fds:
                deadline = None
            else:
                return "idle"
            timeout = None if deadline is None else max(0, deadline - now) / 1e9
            ready = select(timeout)
            # Snapshot: this wake-up runs the timers due now, not the ones its callbacks add.
            now = time.monotonic_ns()
            last_seq = self._seq
            for key, mask in ready:
                fd = key.fd
                if fd == wake_r:
                    self._drain_wake_pipe()
                    continue
                if mask & selectors.EVENT_READ:
                    cb = self._readers.get(fd)
                    if cb is not None:
                        self._dispatch(cb[0], cb[1], f"read fd{fd}")
                        remaining -= 1
                        if remaining == 0 or self._stop_requested or (predicate is not None and predicate()):
                            break
                if mask & selectors.EVENT_WRITE:
                    cb = self._writers.get(fd)
                    if cb is not None:
                        self._dispatch(cb[0], cb[1], f"write fd{fd}")
                        remaining -= 1
                        if remaining == 0 or self._stop_requested or (predicate is not None and predicate()):
                            break
            else:
                limit = now if until is None or until > now else until
                while heap:
                    when, seq, t = heap[0]
                    if t.cancelled:
                        heappop(heap)
                        continue
                    if when > limit or seq > last_seq:
                        break
                    heappop(heap)
                    self.events_run += 1
                    if self.trace is not None:
                        self.trace.append(f"{now} {seq} {t.label or callable_label(t.fn)}")
                    t.fn(*t.args)
                    remaining -= 1
                    if remaining == 0 or self._stop_requested or (predicate is not None and predicate()):
                        break
