"""Target-side context areas of offloaded objects (contract §2.9): neighbor, path and TCP contexts,
the TCP->path->neighbor links used to build headers, and the per-connection send-queue entry.

The `Slot.value` a target writes at offload (R-TREE-07/12) is one of these objects; it stays the same
object until its terminate completes (R-TREE-09). Per-connection queues are `Fifo`s that hold no
storage while empty (memory per idle offloaded connection, bench/bench_memory.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from chimney.ndis.offload_state import (
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    PathOffloadStateCached,
    PathOffloadStateConst,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
)

if TYPE_CHECKING:
    from chimney.ndis.buffers import NetBufferList
    from chimney.net.frame import TcpFrameBuilder
    from chimney.sim.scheduler import Timer
    from chimney.tcp import Connection


T = TypeVar("T")


class Fifo(Generic[T]):
    """A FIFO that holds no storage while empty: a deque costs ~760 B even when empty, and an idle
    offloaded connection has an empty send queue, posted-receive queue and urgent-frame list.
    Supports what the target uses of a deque: append, popleft, [i], len, bool, iteration, clear."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: deque[T] | None = None  # None exactly when empty

    def __bool__(self) -> bool:
        return self._d is not None

    def __len__(self) -> int:
        d = self._d
        return 0 if d is None else len(d)

    def __iter__(self) -> Iterator[T]:
        d = self._d
        return iter(()) if d is None else iter(d)

    def __getitem__(self, i: int) -> T:
        d = self._d
        if d is None:
            raise IndexError("Fifo is empty")
        return d[i]

    def __repr__(self) -> str:
        return f"Fifo({list(self)!r})"

    @property
    def allocated(self) -> bool:
        return self._d is not None

    def append(self, x: T) -> None:
        d = self._d
        if d is None:
            d = self._d = deque()
        d.append(x)

    def popleft(self) -> T:
        d = self._d
        if d is None:
            raise IndexError("pop from an empty Fifo")
        x = d.popleft()
        if not d:
            self._d = None
        return x

    def clear(self) -> None:
        self._d = None


class Phase(Enum):
    """Suggested target-side connection phases (§5.11)."""

    OFFLOADING = "offloading"
    OFFLOADED = "offloaded"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


class NeighborCtx:
    """A neighbor (framing-layer) object: next hop MAC, source MAC, VLAN."""

    __slots__ = ("cached", "children", "const", "handle", "hrt", "nrt", "phase", "queries", "src_mac", "valid")
    kind = "neighbor"

    def __init__(
        self, handle: Any, const: NeighborOffloadStateConst, cached: NeighborOffloadStateCached, src_mac: bytes
    ) -> None:
        self.handle = handle  # NdisOffloadHandle (R-TREE-13)
        self.const = const
        self.cached = cached
        self.src_mac = src_mac  # DlSourceAddress or the interface MAC (R-OFF-08)
        self.nrt = 0  # NRT: ns of the last forward progress the target saw (R-NBR-01/03)
        self.hrt = 0  # HRT: ns of the last reachability confirmation the host reported (R-NBR-01/06)
        self.queries = 0  # NeighborReachabilityQuery indications made (R-NBR-04)
        self.children: set[PathCtx] = set()
        self.valid = True
        self.phase = Phase.OFFLOADED

    @property
    def dst_mac(self) -> bytes:
        return bytes(self.cached.dl_destination_address[:6])

    def __repr__(self) -> str:
        return f"<NeighborCtx vlan={self.const.vlan_id} {self.phase.value}>"


class PathCtx:
    """A path (IP-layer) object: source/destination address and path MTU; linked to its neighbor."""

    __slots__ = ("cached", "children", "const", "handle", "neighbor", "phase", "v6", "valid")
    kind = "path"

    def __init__(
        self, handle: Any, const: PathOffloadStateConst, cached: PathOffloadStateCached, neighbor: NeighborCtx
    ) -> None:
        self.handle = handle  # R-TREE-18
        self.const = const
        self.cached = cached
        self.neighbor = neighbor
        self.v6 = len(const.source_address) == 16
        self.children: set[TcpCtx] = set()
        self.valid = True
        self.phase = Phase.OFFLOADED

    def __repr__(self) -> str:
        return f"<PathCtx v{'6' if self.v6 else '4'} mtu={self.cached.path_mtu} {self.phase.value}>"


class SendEntry:
    """One queued send NBL (R-SEND-02): its byte count and the engine sequence number just past it."""

    __slots__ = ("end", "nbl", "nbytes")

    def __init__(self, nbl: NetBufferList, end: int, nbytes: int) -> None:
        self.nbl = nbl
        self.end = end
        self.nbytes = nbytes


class TcpCtx:
    """An offloaded TCP connection: the engine Connection plus the chimney bookkeeping of §2.9."""

    __slots__ = (
        "aborted",
        "abortive",
        "backlog",
        "backlog_at",
        "builder",
        "cached",
        "closed_by_syn",
        "conn",
        "const",
        "disconnect",
        "disconnect_indicated",
        "dwnd",
        "handle",
        "in_pump",
        "ind_out",
        "key",
        "last_push",
        "path",
        "phase",
        "posted",
        "pump_again",
        "push_timer",
        "refused",
        "rx_busy",
        "send_q",
        "timer",
        "timer_at",
        "tx_high",
        "upload_requested",
        "urgent_frames",
        "valid",
    )
    kind = "tcp"

    def __init__(
        self,
        handle: Any,
        const: TcpOffloadStateConst,
        cached: TcpOffloadStateCached,
        path: PathCtx,
        conn: Connection,
        key: tuple[bytes, bytes, int, int],
        builder: TcpFrameBuilder,
    ) -> None:
        self.handle = handle  # R-TREE-13/14: passed to every event / receive indication
        self.const = const
        self.cached = cached
        self.path = path
        self.conn = conn
        self.key = key
        self.builder = builder
        self.dwnd = 0  # §6.13: opaque pass-through
        self.backlog: int | None = None  # last SendBacklogSize reported (or the baseline)
        self.backlog_at = 0
        self.phase = Phase.OFFLOADING
        self.send_q: Fifo[SendEntry] = Fifo()
        self.disconnect: tuple[NetBufferList, int, int] | None = None  # (nbl, data bytes, FIN end seq)
        self.posted: Fifo[Any] = Fifo()  # posted receive requests, FIFO (R-RECV-02)
        self.push_timer: Timer | None = None
        self.last_push = False  # the latest in-order data carried PSH
        self.refused = False  # R-IND-08: no indication until a receive is posted
        self.rx_busy = False  # §3.6 "busy"
        self.in_pump = False
        self.pump_again = False
        self.ind_out = 0  # accepted indications the host still holds
        self.aborted = False
        self.abortive = False
        self.closed_by_syn = False
        self.disconnect_indicated = False
        self.upload_requested: int | None = None  # TCP_UPLOAD_REASON once TcpIndicateRetrieve was made
        self.urgent_frames: Fifo[bytes] = Fifo()  # R-RX-07: held for the non-offload path after upload
        self.valid = True
        self.timer: Timer | None = None
        self.timer_at: int | None = None
        self.tx_high: int | None = None  # highest wire sequence number sent + 1 (R-STAT-08)

    def __repr__(self) -> str:
        return f"<TcpCtx {self.const.local_port}>{self.const.remote_port} {self.conn.state.name} {self.phase.value}>"
