"""NBL, NB and MDL pools (NdisAllocateNetBufferListPool and friends) with allocation counters.
Owns allocate/free bookkeeping, capacity limits (counted failures) and per-pool leak reports.

NDIS name -> Python name:

    NdisAllocateNetBufferListPool / NdisFreeNetBufferListPool   NblPool(...) / NblPool.close()
    NdisAllocateNetBufferList                                   NblPool.allocate()
    NdisAllocateNetBufferAndNetBufferList                       NblPool(with_net_buffer=True).allocate(mdl_chain, ...)
    NdisFreeNetBufferList                                       NblPool.free(nbl)
    NdisAllocateNetBufferPool / NdisAllocateNetBuffer           NetBufferPool(...) / .allocate(mdl_chain, off, len)
    NdisFreeNetBuffer                                           NetBufferPool.free(nb)
    NdisAllocateMdl / NdisFreeMdl                               allocate_mdl(...) / free_mdl(mdl), MdlPool
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.buffers import (
    Mdl,
    NdisBufferError,
    NetBuffer,
    NetBufferList,
    mdl_chain_size,
)
from chimney.ndis.ownership import OwnershipTracker

FREED_OWNER = "<freed>"  # owner of a freed NBL: any later hand-off by a stale holder fails its check


class _Counters:
    """allocated / freed / peak / failures shared by the pools."""

    __slots__ = ("allocated", "capacity", "failures", "freed", "name", "peak")

    def __init__(self, name: str, capacity: int | None) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError(f"pool {name}: negative capacity {capacity}")
        self.name = name
        self.capacity = capacity
        self.allocated = 0
        self.freed = 0
        self.peak = 0
        self.failures = 0

    @property
    def outstanding(self) -> int:
        return self.allocated - self.freed

    def _full(self) -> bool:
        cap = self.capacity
        if cap is not None and self.allocated - self.freed >= cap:
            self.failures += 1
            return True
        return False

    def _note_allocated(self) -> None:
        self.allocated += 1
        out = self.allocated - self.freed
        if out > self.peak:
            self.peak = out

    def counters(self) -> dict[str, int]:
        return {
            "allocated": self.allocated,
            "freed": self.freed,
            "outstanding": self.outstanding,
            "peak": self.peak,
            "failures": self.failures,
        }


class NblPool(_Counters):
    """A NET_BUFFER_LIST pool; NBLs come out owned by the pool's owner (driver name)."""

    __slots__ = ("_out", "closed", "data_size", "owner", "tracker", "with_net_buffer")

    def __init__(
        self,
        name: str,
        owner: str,
        *,
        with_net_buffer: bool = False,
        data_size: int = 0,
        capacity: int | None = None,
        tracker: OwnershipTracker | None = None,
    ) -> None:
        super().__init__(name, capacity)
        if data_size < 0:
            raise ValueError(f"pool {name}: negative data_size {data_size}")
        self.owner = owner
        self.with_net_buffer = with_net_buffer or data_size > 0
        self.data_size = data_size
        self.tracker = tracker
        self.closed = False
        self._out: dict[int, NetBufferList] = {}  # serial -> NBL, allocation order

    def allocate(
        self, mdl_chain: Mdl | None = None, data_offset: int = 0, data_length: int | None = None
    ) -> NetBufferList | None:
        """NdisAllocateNetBufferList / NdisAllocateNetBufferAndNetBufferList; None when exhausted.

        Pools with a NET_BUFFER give each NBL one NB over `mdl_chain` or, with `data_size`, over a fresh
        zeroed buffer of that size; `data_length` defaults to everything after `data_offset`.
        """
        if self.closed:
            raise NdisBufferError(f"pool {self.name} is closed (NdisFreeNetBufferListPool)")
        if self._full():
            return None
        nb: NetBuffer | None = None
        if self.with_net_buffer:
            if mdl_chain is None and self.data_size:
                mdl_chain = Mdl(bytearray(self.data_size))
            if data_length is None:
                data_length = mdl_chain_size(mdl_chain) - data_offset
            nb = NetBuffer(mdl_chain, data_offset, data_length)
        elif mdl_chain is not None:
            raise NdisBufferError(f"pool {self.name} has no NET_BUFFERs; allocate the NB separately")
        nbl = NetBufferList(nb, self.owner)
        nbl.pool = self
        self._out[nbl.serial] = nbl
        self._note_allocated()
        tracker = self.tracker
        if tracker is not None:
            tracker.register(nbl, self.owner)
        return nbl

    def free(self, nbl: NetBufferList) -> None:
        """NdisFreeNetBufferList: only the pool owner, holding the NBL, frees it (R-NBL-02)."""
        if nbl.pool is not self:
            raise NdisBufferError(f"{nbl!r} was not allocated from pool {self.name}")
        if self._out.pop(nbl.serial, None) is None:
            raise NdisBufferError(f"{nbl!r} freed twice to pool {self.name}")
        tracker = self.tracker
        if tracker is not None:
            tracker.assert_owner(nbl, self.owner, "R-NBL-02", f"free to pool {self.name}")
            tracker.forget(nbl)
        self.freed += 1
        nbl.owner = FREED_OWNER

    def free_chain(self, head: NetBufferList | None) -> int:
        """Free every NBL of a chain (each must come from this pool); returns how many."""
        n = 0
        nbl = head
        while nbl is not None:
            nxt = nbl.next
            nbl.next = None
            self.free(nbl)
            nbl = nxt
            n += 1
        return n

    def outstanding_nbls(self) -> list[NetBufferList]:
        return list(self._out.values())

    def close(self) -> None:
        """NdisFreeNetBufferListPool: only once every NBL is back; refused with the leak report otherwise."""
        if self._out:
            raise NdisBufferError(f"closing a pool with NBLs still out:\n{self.leak_report()}")
        self.closed = True

    def leak_report(self) -> str:
        head = (
            f"pool {self.name} (owner {self.owner}): {self.outstanding} outstanding, "
            f"{self.allocated} allocated, {self.freed} freed, peak {self.peak}, {self.failures} failures"
        )
        return "\n".join([head, *(f"  {nbl!r}" for nbl in self._out.values())])

    def __repr__(self) -> str:
        return f"<NblPool {self.name} owner={self.owner} out={self.outstanding}>"


class NetBufferPool(_Counters):
    """A NET_BUFFER pool (NdisAllocateNetBufferPool)."""

    __slots__ = ("_out",)

    def __init__(self, name: str, *, capacity: int | None = None) -> None:
        super().__init__(name, capacity)
        self._out: dict[int, NetBuffer] = {}  # id -> NB; the pool keeps them alive, so ids stay unique

    def allocate(
        self, mdl_chain: Mdl | None = None, data_offset: int = 0, data_length: int = 0
    ) -> NetBuffer | None:
        """NdisAllocateNetBuffer(Pool, MdlChain, DataOffset, DataLength); None when exhausted."""
        if self._full():
            return None
        nb = NetBuffer(mdl_chain, data_offset, data_length)
        nb.pool = self
        self._out[id(nb)] = nb
        self._note_allocated()
        return nb

    def free(self, nb: NetBuffer) -> None:
        """NdisFreeNetBuffer."""
        if nb.pool is not self:
            raise NdisBufferError(f"{nb!r} was not allocated from NB pool {self.name}")
        if self._out.pop(id(nb), None) is None:
            raise NdisBufferError(f"{nb!r} freed twice to NB pool {self.name}")
        self.freed += 1
        nb.next = None

    def outstanding_nbs(self) -> list[NetBuffer]:
        return list(self._out.values())

    def leak_report(self) -> str:
        head = f"NB pool {self.name}: {self.outstanding} outstanding, {self.allocated} allocated, {self.freed} freed"
        return "\n".join([head, *(f"  {nb!r}" for nb in self._out.values())])


class MdlPool(_Counters):
    """Counted MDL allocation, for drivers that build their own chains (NdisAllocateMdl)."""

    __slots__ = ("_out",)

    def __init__(self, name: str, *, capacity: int | None = None) -> None:
        super().__init__(name, capacity)
        self._out: dict[int, Mdl] = {}

    def allocate_mdl(
        self, buffer: bytes | bytearray | memoryview, offset: int = 0, length: int | None = None
    ) -> Mdl | None:
        if self._full():
            return None
        mdl = Mdl(buffer, offset, length)
        mdl.pool = self
        self._out[id(mdl)] = mdl
        self._note_allocated()
        return mdl

    def free_mdl(self, mdl: Mdl) -> None:
        if mdl.pool is not self:
            raise NdisBufferError(f"{mdl!r} was not allocated from MDL pool {self.name}")
        if self._out.pop(id(mdl), None) is None:
            raise NdisBufferError(f"{mdl!r} freed twice to MDL pool {self.name}")
        self.freed += 1
        mdl.next = None

    def outstanding_mdls(self) -> list[Mdl]:
        return list(self._out.values())

    def leak_report(self) -> str:
        head = f"MDL pool {self.name}: {self.outstanding} outstanding, {self.allocated} allocated, {self.freed} freed"
        return "\n".join([head, *(f"  {m!r}" for m in self._out.values())])


def allocate_mdl(buffer: bytes | bytearray | memoryview, offset: int = 0, length: int | None = None) -> Mdl:
    """NdisAllocateMdl: an unpooled MDL over `length` bytes of `buffer` from `offset` (no copy)."""
    return Mdl(buffer, offset, length)


def free_mdl(mdl: Mdl) -> None:
    """NdisFreeMdl: returns a pooled MDL to its pool, unlinks an unpooled one."""
    pool: Any = mdl.pool
    if pool is not None:
        pool.free_mdl(mdl)
    else:
        mdl.next = None
