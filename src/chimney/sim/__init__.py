"""chimney.sim: the deterministic scheduler (virtual clock, seeded RNG streams, simulated CPUs)
and a real-time driver with the same interface for TAP work."""

from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, NS_PER_US, Scheduler, SimScheduler, Timer

__all__ = ["NS_PER_MS", "NS_PER_S", "NS_PER_US", "Scheduler", "SimScheduler", "Timer"]
