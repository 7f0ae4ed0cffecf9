"""Simulated processors: per-CPU work queues interleaved by a seeded policy, spin locks, and the
activity monitor that checks the contract's per-connection serialization rules.

A work item is a plain callable (runs atomically, one step) or a generator function whose every bare
`yield` is a preemption point: another CPU may run before it continues. Each step is one scheduler
event, and the policy that picks the next CPU draws only from `scheduler.rng("cpus")`, so a failing
interleaving replays exactly from its seed. CPU steps take `step_ns` of virtual time (default 0).

Rules served: R-SEND-09 (target send queues protected against concurrent MiniportXxx calls) through
`SpinLock.assert_held`; R-SEND-11, R-RECV-13, R-RECV-14, R-RECV-16 (per-connection serialization,
non-re-entry) through `ActivityMonitor.active`. The NDIS layer picks the rule id; this module only
detects the overlap and reports it through `Verifier.check`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Hashable, Sequence
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from chimney.sim.scheduler import Scheduler, Timer, callable_label

if TYPE_CHECKING:
    from chimney.ndis.verifier import Verifier

Policy = str | Sequence[int]
_WorkItem = tuple[Callable[..., Any], tuple[Any, ...], str]


class Cpu:
    """One simulated processor: a FIFO of work items and the generator item it is running, if any."""

    __slots__ = ("active", "active_label", "held", "index", "items_done", "queue", "steps")

    def __init__(self, index: int) -> None:
        self.index = index
        self.queue: deque[_WorkItem] = deque()
        self.active: Generator[None, None, Any] | None = None
        self.active_label = ""
        self.held: list[SpinLock] = []
        self.steps = 0
        self.items_done = 0

    @property
    def runnable(self) -> bool:
        return self.active is not None or bool(self.queue)

    def __repr__(self) -> str:
        return f"<cpu{self.index} queued={len(self.queue)} running={self.active_label or '-'}>"


# The CPU whose work item is executing right now. Events never nest, so one global is exact even
# with several Processors sets (several simulated machines) on one scheduler.
_current: Cpu | None = None


def current_cpu() -> int | None:
    """Index of the simulated CPU running the current work item, None outside work items."""
    cpu = _current
    return None if cpu is None else cpu.index


def _where(cpu: Cpu | None) -> str:
    return "event context" if cpu is None else f"cpu{cpu.index}"


class Processors:
    """`count` simulated CPUs sharing one scheduler.

    `policy` picks the next runnable CPU at each step: "random" (seeded, `scheduler.rng(rng_name)`),
    "round_robin", or an explicit list of CPU indices (a replay schedule: entries naming a CPU with
    nothing to run are skipped; when the list is used up it continues round robin). With `count=1`
    there is nothing to interleave: each work item, generator or not, runs to completion in one event.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        count: int,
        policy: Policy = "random",
        step_ns: int = 0,
        rng_name: str = "cpus",
    ) -> None:
        if count < 1:
            raise ValueError(f"need at least one CPU, got {count}")
        if step_ns < 0:
            raise ValueError(f"negative step_ns {step_ns}")
        self.scheduler = scheduler
        self.count = count
        self.cpus = [Cpu(i) for i in range(count)]
        self.step_ns = step_ns
        self._schedule: list[int] | None = None
        self._schedule_pos = 0
        if isinstance(policy, str):
            if policy not in ("random", "round_robin"):
                raise ValueError(f"unknown policy {policy!r} (random, round_robin or a list of CPU indices)")
            self.policy = policy
        else:
            sched = [int(i) for i in policy]
            bad = [i for i in sched if not 0 <= i < count]
            if bad:
                raise ValueError(f"schedule names CPUs {bad} outside 0..{count - 1}")
            self.policy = "schedule"
            self._schedule = sched
        self._rng = scheduler.rng(rng_name)
        self._last = count - 1  # round robin starts at cpu0
        self._pending: Timer | None = None
        self.steps = 0

    # -- public ----------------------------------------------------------------------------------

    def queue_work(self, cpu_index: int, fn: Callable[..., Any], *args: Any, label: str = "") -> None:
        """Queue `fn(*args)` on CPU `cpu_index`, behind the items already queued there."""
        if not 0 <= cpu_index < self.count:
            raise IndexError(f"cpu {cpu_index} out of range 0..{self.count - 1}")
        self.cpus[cpu_index].queue.append((fn, args, label or callable_label(fn)))
        if self._pending is None:
            self._schedule_step()

    @property
    def current_cpu(self) -> int | None:
        """Index of this set's CPU running the current work item, None otherwise."""
        cpu = _current
        if cpu is None or cpu.index >= self.count or self.cpus[cpu.index] is not cpu:
            return None
        return cpu.index

    @property
    def idle(self) -> bool:
        """True when no CPU has anything queued or running."""
        return self._pending is None

    def queued(self, cpu_index: int) -> int:
        cpu = self.cpus[cpu_index]
        return len(cpu.queue) + (cpu.active is not None)

    # -- stepping --------------------------------------------------------------------------------

    def _pick(self) -> Cpu | None:
        cpus = self.cpus
        if self.count == 1:
            cpu = cpus[0]
            return cpu if cpu.active is not None or cpu.queue else None
        runnable = [c for c in cpus if c.active is not None or c.queue]
        if not runnable:
            return None
        if len(runnable) == 1:
            cpu = runnable[0]
        elif self.policy == "random":
            cpu = runnable[int(self._rng.random() * len(runnable))]
        else:
            cpu = None
            sched = self._schedule
            if sched is not None:
                while self._schedule_pos < len(sched):
                    c = cpus[sched[self._schedule_pos]]
                    self._schedule_pos += 1
                    if c.active is not None or c.queue:
                        cpu = c
                        break
            if cpu is None:
                n = self.count
                for k in range(1, n + 1):
                    c = cpus[(self._last + k) % n]
                    if c.active is not None or c.queue:
                        cpu = c
                        break
        assert cpu is not None
        self._last = cpu.index
        return cpu

    def _schedule_step(self) -> None:
        cpus = self.cpus
        if self.count == 1:
            runnable = cpus[0].active is not None or bool(cpus[0].queue)
        else:
            runnable = any(c.active is not None or c.queue for c in cpus)
        self._pending = self.scheduler.call_later(self.step_ns, self._step, label="cpus:") if runnable else None

    def _step(self) -> None:
        # The CPU is picked when the step runs, not when it was scheduled, so work queued in between
        # (same instant) takes part in the choice.
        cpu = self._pick()
        if cpu is None:
            self._pending = None
            return
        scheduler = self.scheduler
        if scheduler.trace is not None:
            label = cpu.active_label if cpu.active is not None else cpu.queue[0][2]
            scheduler.annotate(f"cpu{cpu.index} {label}")
        global _current
        prev = _current
        _current = cpu
        self.steps += 1
        cpu.steps += 1
        try:
            gen = cpu.active
            if gen is None:
                fn, args, label = cpu.queue.popleft()
                r = fn(*args)
                if r.__class__ is GeneratorType:
                    if self.count == 1:
                        for v in r:
                            if v is not None:
                                self._bad_yield(r, label, v)
                    else:
                        cpu.active = r
                        cpu.active_label = label
                        self._advance(cpu, r)
                        return
                self._finish(cpu, label)
            else:
                self._advance(cpu, gen)
        except BaseException:
            # A generator that raised is finished. Free its locks too, or the other CPUs would spin
            # forever if the caller catches the exception and keeps running the simulation.
            cpu.active = None
            for lock in cpu.held:
                lock._owner = None
            cpu.held.clear()
            raise
        finally:
            _current = prev
            self._schedule_step()

    def _advance(self, cpu: Cpu, gen: Generator[None, None, Any]) -> None:
        try:
            v = next(gen)
        except StopIteration:
            cpu.active = None
            self._finish(cpu, cpu.active_label)
            return
        if v is not None:
            self._bad_yield(gen, cpu.active_label, v)

    @staticmethod
    def _bad_yield(gen: Generator[None, None, Any], label: str, value: Any) -> None:
        gen.close()
        raise TypeError(
            f"work item {label} yielded {type(value).__name__}: a bare `yield` is a preemption point, "
            "waiting for events is not supported inside CPU work items"
        )

    @staticmethod
    def _finish(cpu: Cpu, label: str) -> None:
        cpu.items_done += 1
        if cpu.held:
            names = ", ".join(lock.name for lock in cpu.held)
            raise RuntimeError(f"work item {label} on cpu{cpu.index} finished holding spin lock(s) {names}")


class SpinLock:
    """A spin lock for generator work items: `yield from lock.acquire()` ... `lock.release()`.

    Waiting spins (yields) until the holder releases it; the test-and-set after the last spin is
    atomic because no `yield` separates them. Models the spin-lock protected queues of R-SEND-09.
    """

    __slots__ = ("_owner", "acquisitions", "name", "spins")

    def __init__(self, name: str) -> None:
        self.name = name
        self._owner: Cpu | None = None
        self.acquisitions = 0
        self.spins = 0  # preemption points spent waiting: > 0 shows the lock was contended

    def _cpu(self, what: str) -> Cpu:
        cpu = _current
        if cpu is None:
            raise RuntimeError(f"spin lock {self.name}: {what} outside a simulated CPU work item")
        return cpu

    def acquire(self) -> Generator[None, None, None]:
        cpu = self._cpu("acquire")
        if self._owner is cpu:
            raise RuntimeError(f"spin lock {self.name} re-acquired by cpu{cpu.index}, which holds it: deadlock")
        while self._owner is not None:
            self.spins += 1
            yield
        self._owner = cpu
        cpu.held.append(self)
        self.acquisitions += 1

    def try_acquire(self) -> bool:
        cpu = self._cpu("try_acquire")
        if self._owner is not None:
            return False
        self._owner = cpu
        cpu.held.append(self)
        self.acquisitions += 1
        return True

    def release(self) -> None:
        cpu = self._cpu("release")
        if self._owner is not cpu:
            raise RuntimeError(f"spin lock {self.name} released by cpu{cpu.index} but held by {self.held_by}")
        self._owner = None
        cpu.held.remove(self)

    @property
    def held_by(self) -> int | None:
        """Index of the holding CPU, None when free."""
        owner = self._owner
        return None if owner is None else owner.index

    def assert_held(self, verifier: Verifier, rule_id: str, what: str = "access") -> bool:
        """Report `rule_id` through `verifier` unless the current CPU holds this lock."""
        cpu = _current
        ok = cpu is not None and self._owner is cpu
        if ok:
            return verifier.check(True, rule_id, "")
        return verifier.check(
            False,
            rule_id,
            f"{what} on {_where(cpu)} without holding spin lock {self.name} (held by "
            f"{'nobody' if self._owner is None else _where(self._owner)})",
            self,
        )

    def __repr__(self) -> str:
        return f"<SpinLock {self.name} held_by={self.held_by}>"


class _Activity:
    __slots__ = ("cpu", "key", "monitor", "reentrant", "rule_id", "what")

    def __init__(self, monitor: ActivityMonitor, key: Hashable, rule_id: str, what: str, reentrant: bool) -> None:
        self.monitor = monitor
        self.key = key
        self.rule_id = rule_id
        self.what = what
        self.reentrant = reentrant
        self.cpu: Cpu | None = None

    def __enter__(self) -> _Activity:
        cpu = self.cpu = _current
        m = self.monitor
        inside = m._inside.get(self.key)
        if inside is None:
            m._inside[self.key] = [self]
            if m.verifier.enabled:
                m.verifier.checks[self.rule_id] += 1
            return self
        for other in inside:
            if other.cpu is not cpu:
                m.verifier.check(
                    False,
                    self.rule_id,
                    f"{self.what} on {_where(cpu)} while {other.what} is active on {_where(other.cpu)} "
                    f"for {self.key!r}",
                    self.key,
                )
                break
            if not self.reentrant:
                m.verifier.check(
                    False,
                    self.rule_id,
                    f"{self.what} re-entered on {_where(cpu)} while {other.what} is still active "
                    f"for {self.key!r}",
                    self.key,
                )
                break
        else:
            if m.verifier.enabled:
                m.verifier.checks[self.rule_id] += 1
        inside.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        m = self.monitor
        inside = m._inside[self.key]
        inside.remove(self)
        if not inside:
            del m._inside[self.key]


class ActivityMonitor:
    """Detects two CPUs inside the same activity key at once (per-connection serialization rules).

    `with monitor.active(key, "R-SEND-11", "MiniportTcpOffloadSend"):` reports `rule_id` when another
    CPU (or event context) is inside `key` at that moment. Different keys never conflict. Nesting on
    the same CPU is allowed unless `reentrant=False` (R-RECV-14: no re-entry before the previous
    call returned). Several functions may share a key (R-RECV-13: receive indication and receive
    completion for one connection).
    """

    __slots__ = ("_inside", "verifier")

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._inside: dict[Hashable, list[_Activity]] = {}

    def active(self, key: Hashable, rule_id: str, what: str = "", reentrant: bool = True) -> _Activity:
        return _Activity(self, key, rule_id, what or rule_id, reentrant)

    def holders(self, key: Hashable) -> list[int | None]:
        """CPU indices (None = event context) currently inside `key`."""
        return [None if a.cpu is None else a.cpu.index for a in self._inside.get(key, ())]
