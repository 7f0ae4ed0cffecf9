"""chimney.sim: the deterministic scheduler (virtual clock, seeded RNG streams, simulated CPUs)
and a real-time driver with the same interface for TAP work."""

from chimney.sim.cpu import ActivityMonitor, Cpu, Processors, SpinLock, current_cpu
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import (
    NS_PER_MS,
    NS_PER_S,
    NS_PER_US,
    Scheduler,
    SimScheduler,
    Timer,
    callable_label,
)
from chimney.sim.tasks import (
    CancelledError,
    InvalidStateError,
    SimFuture,
    Task,
    gather,
    run_task,
    sleep,
    spawn,
    wait_for,
)

__all__ = [
    "NS_PER_MS",
    "NS_PER_S",
    "NS_PER_US",
    "ActivityMonitor",
    "CancelledError",
    "Cpu",
    "InvalidStateError",
    "Processors",
    "RealTimeScheduler",
    "Scheduler",
    "SimFuture",
    "SimScheduler",
    "SpinLock",
    "Task",
    "Timer",
    "callable_label",
    "current_cpu",
    "gather",
    "run_task",
    "sleep",
    "spawn",
    "wait_for",
]
