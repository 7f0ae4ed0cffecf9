"""Receive buffers a port reads frames into and lends to the stack as memoryviews (a NIC's receive ring).
A buffer comes back for reuse once nothing refers to it any more, so bulk receive allocates nothing per frame.

Why: a fresh 64 KB `bytes` per `os.read` (or a fresh 100-250 KB slab per batch) makes glibc grow and trim
the heap, or mmap/munmap, on every frame; the page faults and page clearing that follow cost more than the
kernel's copy itself. Reusing a few buffers keeps them mapped and warm in the cache.

"Nothing refers to it" is read from the reference count: every memoryview cut from a buffer (and every
slice of those) holds one reference to it through their shared buffer export, so a buffer that only the
pool holds is free. NDIS analogue: the miniport's pre-allocated receive buffers, indicated up without
NDIS_RECEIVE_FLAGS_RESOURCES; dropping the last view is the protocol's NdisReturnNetBufferLists.
"""

from __future__ import annotations

import sys
from typing import Final

_refcount = sys.getrefcount
#: Buffers looked at past the cursor before the pool grows: buffers come back roughly in the order they
#: went out, so when the oldest one is still held the reader is behind and scanning further rarely helps.
SCAN: Final = 4


class RxBufferPool:
    """Equal-sized bytearrays handed out round robin (oldest first); at most `max_bytes` of them are kept.

    `take()` returns a buffer nothing else refers to. When none near the cursor is free the pool grows by
    one; past `max_bytes` it hands out an unpooled buffer instead (counted in `overflow`), so a reader
    that holds on to every frame costs memory only while it holds it.
    """

    __slots__ = ("_bufs", "_free_refs", "_next", "allocated", "buf_size", "max_bufs", "overflow", "reused")

    def __init__(self, buf_size: int, max_bytes: int) -> None:
        if buf_size <= 0:
            raise ValueError(f"buffer size must be positive, not {buf_size}")
        self.buf_size = buf_size
        self.max_bufs = max(1, max_bytes // buf_size) if max_bytes > 0 else 0
        self._bufs: list[bytearray] = []
        self._next = 0
        self.allocated = 0
        self.reused = 0
        self.overflow = 0
        # The count a free buffer shows when looked at as `bufs[j]` below: the list's reference plus
        # the call's own (measured rather than assumed, so it holds for this interpreter).
        probe = [bytearray(1)]
        self._free_refs = _refcount(probe[0])

    def __len__(self) -> int:
        return len(self._bufs)

    @property
    def pooled_bytes(self) -> int:
        return len(self._bufs) * self.buf_size

    def take(self) -> bytearray:
        bufs = self._bufs
        n = len(bufs)
        i = self._next
        free = self._free_refs
        for k in range(SCAN if n > SCAN else n):
            j = i + k
            if j >= n:
                j -= n
            if _refcount(bufs[j]) == free:
                self._next = j + 1 if j + 1 < n else 0
                self.reused += 1
                return bufs[j]
        b = bytearray(self.buf_size)
        if n < self.max_bufs:
            # Inserted just before the oldest lent-out buffer: the ring order stays "oldest at the cursor".
            bufs.insert(i, b)
            self._next = i + 1
            self.allocated += 1
        else:
            self.overflow += 1
        return b

    def in_use(self) -> int:
        """Pooled buffers something still refers to (views held by the stack or the application)."""
        free = self._free_refs
        bufs = self._bufs
        return sum(1 for j in range(len(bufs)) if _refcount(bufs[j]) != free)

    def clear(self) -> None:
        """Forget every buffer (views still held stay valid: they keep their buffer alive)."""
        self._bufs = []
        self._next = 0
