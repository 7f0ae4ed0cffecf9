"""A tiny coroutine layer over any `Scheduler`: futures, tasks, sleep and timeouts, no asyncio.

APIs "awaitable in simulation" return a `SimFuture`; `spawn` runs a coroutine as a `Task`.

Determinism: a future runs its done-callbacks synchronously, in registration order, when it is
resolved; a task never resumes inside that call but through `scheduler.call_soon`, so coroutine
steps are ordinary scheduler events (labelled "task <coroutine qualname>") and the same seed
replays the same order. Only `call_soon` and `call_later` are used, so this works on the simulated
and the real-time scheduler alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from chimney.sim.scheduler import Scheduler, callable_label

T = TypeVar("T")

_PENDING = 0
_DONE = 1
_CANCELLED = 2


class CancelledError(Exception):
    """Raised into a cancelled task, and by `result()` of a cancelled future."""


class InvalidStateError(RuntimeError):
    """A future was resolved twice, or its result was read before it was done."""


class SimFuture(Generic[T]):
    """A result that will be set later: `await fut` in a task, or `add_done_callback(fn)`."""

    __slots__ = ("_callbacks", "_exception", "_result", "_state")

    def __init__(self) -> None:
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[SimFuture[T]], Any]] = []

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self) -> T:
        if self._state == _PENDING:
            raise InvalidStateError("result is not set yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def exception(self) -> BaseException | None:
        if self._state == _PENDING:
            raise InvalidStateError("result is not set yet")
        return self._exception

    def set_result(self, value: T) -> None:
        if self._state != _PENDING:
            raise InvalidStateError(f"future already done: {self!r}")
        self._result = value
        self._state = _DONE
        self._run_callbacks()

    def set_exception(self, exc: BaseException | type[BaseException]) -> None:
        if self._state != _PENDING:
            raise InvalidStateError(f"future already done: {self!r}")
        if isinstance(exc, type):
            exc = exc()
        if isinstance(exc, StopIteration):
            raise TypeError("StopIteration cannot be stored in a future (it would end the awaiting coroutine)")
        self._exception = exc
        self._state = _DONE
        self._run_callbacks()

    def cancel(self, msg: str = "") -> bool:
        """Resolve as cancelled (False when already done)."""
        if self._state != _PENDING:
            return False
        self._exception = CancelledError(msg or "cancelled")
        self._state = _CANCELLED
        self._run_callbacks()
        return True

    def add_done_callback(self, fn: Callable[[SimFuture[T]], Any]) -> None:
        """Call `fn(self)` when resolved; immediately if already done."""
        if self._state != _PENDING:
            fn(self)
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[SimFuture[T]], Any]) -> int:
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return before - len(self._callbacks)

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def __await__(self) -> Generator[SimFuture[T], None, T]:
        if self._state == _PENDING:
            yield self
        if self._state == _PENDING:
            raise RuntimeError("await resumed before the future was done (awaited outside a Task?)")
        return self.result()

    __iter__ = __await__

    def __repr__(self) -> str:
        state = ("pending", "done", "cancelled")[self._state]
        return f"<{type(self).__name__} {state}>"


class Task(SimFuture[T]):
    """Runs a coroutine step by step as scheduler events; it is also the future of its result."""

    __slots__ = ("_coro", "_label", "_must_cancel", "_scheduler", "_waiting_on", "name")

    def __init__(self, scheduler: Scheduler, coro: Coroutine[Any, Any, T], name: str = "") -> None:
        super().__init__()
        if not hasattr(coro, "send") or not hasattr(coro, "throw"):
            raise TypeError(f"spawn needs a coroutine object, got {type(coro).__name__}")
        self._scheduler = scheduler
        self._coro = coro
        self.name = name or callable_label(coro)
        self._label = f"task {self.name}"
        self._waiting_on: SimFuture[Any] | None = None
        self._must_cancel = False
        scheduler.call_soon(self._step, None, label=self._label)

    def cancel(self, msg: str = "") -> bool:
        """Throw `CancelledError` into the coroutine at its current `await` (it may catch it)."""
        if self._state != _PENDING:
            return False
        w = self._waiting_on
        if w is not None:
            self._waiting_on = None
            if isinstance(w, Task) and w.cancel(msg):
                return True  # the awaited task's cancellation reaches us through its result
            # A plain future belongs to its producer, who may still resolve it: detach from it only.
            w.remove_done_callback(self._wakeup)
            self._scheduler.call_soon(self._step, CancelledError(msg or "cancelled"), label=self._label)
        else:
            self._must_cancel = True
        return True

    def _wakeup(self, fut: SimFuture[Any]) -> None:
        self._waiting_on = None
        self._scheduler.call_soon(self._step, None, label=self._label)

    def _step(self, exc: BaseException | None) -> None:
        if self._state != _PENDING:
            return
        if self._must_cancel:
            self._must_cancel = False
            exc = CancelledError("cancelled")
        try:
            yielded = self._coro.send(None) if exc is None else self._coro.throw(exc)
        except StopIteration as stop:
            SimFuture.set_result(self, stop.value)
            return
        except CancelledError:
            SimFuture.cancel(self)
            return
        except Exception as e:
            SimFuture.set_exception(self, e)
            return
        if not isinstance(yielded, SimFuture):
            err = TypeError(f"task {self.name} awaited {type(yielded).__name__}; only SimFuture can be awaited")
            self._scheduler.call_soon(self._step, err, label=self._label)
            return
        if yielded is self:
            err = RuntimeError(f"task {self.name} awaited itself")
            self._scheduler.call_soon(self._step, err, label=self._label)
            return
        self._waiting_on = yielded
        yielded.add_done_callback(self._wakeup)

    def __repr__(self) -> str:
        state = ("pending", "done", "cancelled")[self._state]
        return f"<Task {self.name} {state}>"


def spawn(scheduler: Scheduler, coro: Coroutine[Any, Any, T], name: str = "") -> Task[T]:
    """Start `coro` as a task; its first step runs as a `call_soon` event."""
    return Task(scheduler, coro, name)


def _resolve(fut: SimFuture[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


async def sleep(scheduler: Scheduler, ns: int, result: T | None = None) -> T | None:
    """Resume after `ns` nanoseconds on `scheduler`'s clock (0 = after the events already due)."""
    fut: SimFuture[T | None] = SimFuture()
    timer = scheduler.call_later(ns, _resolve, fut, result, label="sleep")
    try:
        return await fut
    finally:
        timer.cancel()


async def wait_for(scheduler: Scheduler, aw: Awaitable[T], timeout_ns: int | None) -> T:
    """Await `aw` for at most `timeout_ns`; on expiry cancel it (if it is a Task) and raise TimeoutError.

    A coroutine is spawned as a task first. A plain SimFuture is left pending on timeout: its
    producer still owns it.
    """
    if timeout_ns is None:
        return await aw
    if timeout_ns < 0:
        raise ValueError(f"negative timeout {timeout_ns}")
    if isinstance(aw, SimFuture):
        inner: SimFuture[T] = aw
    elif hasattr(aw, "send") and hasattr(aw, "throw"):
        inner = spawn(scheduler, aw)  # type: ignore[arg-type]
    else:
        raise TypeError(f"wait_for needs a coroutine or a SimFuture, got {type(aw).__name__}")
    if inner.done():
        return inner.result()
    waiter: SimFuture[None] = SimFuture()

    def on_inner_done(_: SimFuture[T]) -> None:
        _resolve(waiter, None)

    inner.add_done_callback(on_inner_done)
    timer = scheduler.call_later(timeout_ns, _resolve, waiter, None, label="wait_for timeout")
    try:
        await waiter
    finally:
        timer.cancel()
        inner.remove_done_callback(on_inner_done)
        if not inner.done() and isinstance(inner, Task):
            inner.cancel()
    if inner.done():
        return inner.result()
    raise TimeoutError(f"timed out after {timeout_ns} ns")


def gather(scheduler: Scheduler, *aws: Awaitable[Any]) -> SimFuture[list[Any]]:
    """A future of all results, in argument order; coroutines are spawned as tasks.

    The first exception (in completion order) resolves it; the other awaitables keep running.
    """
    futs: list[SimFuture[Any]] = []
    for aw in aws:
        if isinstance(aw, SimFuture):
            futs.append(aw)
        elif hasattr(aw, "send") and hasattr(aw, "throw"):
            futs.append(spawn(scheduler, aw))  # type: ignore[arg-type]
        else:
            raise TypeError(f"gather needs coroutines or SimFutures, got {type(aw).__name__}")
    out: SimFuture[list[Any]] = SimFuture()
    left = len(futs)
    if left == 0:
        out.set_result([])
        return out

    def one_done(f: SimFuture[Any]) -> None:
        nonlocal left
        if out.done():
            return
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        left -= 1
        if left == 0:
            out.set_result([g.result() for g in futs])

    for f in futs:
        f.add_done_callback(one_done)
    return out


def run_task(
    scheduler: Scheduler,
    coro: Coroutine[Any, Any, T],
    until: int | None = None,
    max_events: int | None = None,
) -> T:
    """Spawn `coro`, run the scheduler until it finishes, return its result (or raise its exception).

    Raises TimeoutError when the scheduler stops first (time limit, max_events or idle: a deadlock).
    """
    task = spawn(scheduler, coro)
    why = scheduler.run_until(until=until, predicate=task.done, max_events=max_events)
    if not task.done():
        raise TimeoutError(f"task {task.name} not finished: scheduler stopped ({why})")
    return task.result()
