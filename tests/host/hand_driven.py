"""One connection from host A to a listener on host B over an offload pair, driven by hand through
non-blocking sockets: the shared setup of the chimney state/close scenario tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.host.socket import Socket
from chimney.links.impair import Impairments
from chimney.ndis.offload_state import TcpConnectionState
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler


class HandDrivenConn:
    """A's socket `sa` connected to B's `sb` (the listener closed again), the pair `p`, its scheduler."""

    def __init__(self, seed: int, wire: Impairments, port: int, policy: OffloadPolicy) -> None:
        self.p: OffloadPair = build_offload_pair(SimScheduler(seed), seed, wire, policy=policy)
        self.sched = self.p.host_a.scheduler
        lst = self.p.host_b.listen(port)
        lst.setblocking(False)
        self.sa: Socket = self.p.host_a.socket()
        self.sa.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            self.sa.connect(("198.18.0.2", port))
        self.until(lambda: self.tcb_a() is not None and self.tcb_a().state is TcpConnectionState.Established)
        self.run(2)
        self.sb, _ = lst.accept()
        self.sb.setblocking(False)
        lst.close()

    def tcb_a(self) -> Any:
        return next(iter(self.p.host_a.tcp.connections()), None)

    def run(self, ms: float) -> None:
        self.sched.run_until(self.sched.now + int(ms * NS_PER_MS))

    def until(self, pred: Callable[[], bool], limit_s: float = 30) -> None:
        self.sched.run_until(self.sched.now + int(limit_s * NS_PER_S), predicate=pred)
        assert pred()
