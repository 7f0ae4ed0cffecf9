"""Send buffer (user memoryviews indexed by sequence offset) and receive side (in-order queue plus
bounded out-of-order reassembly that also yields RFC 2018 SACK and RFC 2883 D-SACK blocks).

Memory: a host holds thousands of idle connections, so every container starts as the shared empty
tuple `EMPTY` and is allocated on the first write; a container that drains is released again (lists,
56 B, cheap to create; an empty deque would cost ~760 B). Readers treat `EMPTY` as an empty
container; only the writers (`append`, `add`, `_touch`) allocate. `NO_DROPS` and `shared_int` do
the same for a stats dict and for per-connection constants (bench/bench_memory.py measures it).
"""

from __future__ import annotations

from bisect import bisect_right
from types import MappingProxyType
from typing import Any

#: The shared "not allocated" container: falsy, iterable, len 0, indexable like an empty list.
EMPTY: tuple[Any, ...] = ()
#: The shared "no drops counted yet" mapping of a stats object: readable like a dict, never written.
NO_DROPS: MappingProxyType[str, int] = MappingProxyType({})

_SHARED_INTS: dict[int, int] = {}
SHARED_INTS_MAX = 4096


def shared_int(v: int) -> int:
    """One int object per value for per-connection constants (MSS, initial window, clock divisor):
    CPython caches only -5..256, so each connection would otherwise hold its own 32-byte copies.
    Only for values set at handshake/configuration time, never on the per-segment path."""
    s = _SHARED_INTS.get(v)
    if s is None:
        if len(_SHARED_INTS) >= SHARED_INTS_MAX:
            return v
        s = _SHARED_INTS[v] = v
    return s


class SendBuffer:
    """Unacked + unsent user data as a list of memoryviews; `start`/`end` are unwrapped sequence numbers.

    No per-byte work: slices are memoryview slices; only a slice spanning two user buffers is copied once.
    """

    __slots__ = ("_bufs", "_head", "_starts", "end", "start")

    def __init__(self, start: int) -> None:
        self._bufs: list[memoryview] | tuple[()] = EMPTY
        self._starts: list[int] | tuple[()] = EMPTY
        self._head = 0
        self.start = start
        self.end = start

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: memoryview) -> None:
        if not len(data):
            return  # keeps "allocated exactly while holding bytes"
        bufs = self._bufs
        if bufs is EMPTY:
            self._bufs = [data]
            self._starts = [self.end]
        else:
            bufs.append(data)  # type: ignore[union-attr]
            self._starts.append(self.end)  # type: ignore[union-attr]
        self.end += len(data)

    @property
    def allocated(self) -> bool:
        """True while the buffer holds list storage (False for a fresh or fully acknowledged one)."""
        return self._bufs is not EMPTY

    def consume_to(self, seq: int) -> None:
        """Drop everything before `seq` (acknowledged)."""
        if seq <= self.start:
            return
        if seq > self.end:
            seq = self.end
        self.start = seq
        if seq == self.end:
            # All acknowledged: release the storage (and the caller's buffers) at once.
            self._bufs = self._starts = EMPTY
            self._head = 0
            return
        bufs, starts = self._bufs, self._starts
        h = self._head
        n = len(bufs)
        while h < n and starts[h] + len(bufs[h]) <= seq:
            bufs[h] = None  # type: ignore[index]  # release the caller's buffer early
            h += 1
        self._head = h
        if h > 32 and h * 2 > n:
            del bufs[:h]  # type: ignore[union-attr]
            del starts[:h]  # type: ignore[union-attr]
            self._head = 0

    def slice(self, seq: int, n: int) -> memoryview | bytes:
        """Bytes [seq, seq+n) (must be inside the buffer)."""
        if seq < self.start or seq + n > self.end:
            raise ValueError(f"send buffer slice [{seq},{seq + n}) outside [{self.start},{self.end})")
        if not n:
            return b""
        bufs, starts = self._bufs, self._starts
        i = bisect_right(starts, seq, self._head) - 1
        off = seq - starts[i]
        b = bufs[i]
        if off + n <= len(b):
            return b[off : off + n]
        parts = [b[off:]]
        got = len(b) - off
        while got < n:
            i += 1
            b = bufs[i]
            take = min(len(b), n - got)
            parts.append(b[:take])
            got += take
        return b"".join(parts)

    def views(self) -> list[memoryview]:
        """The buffered bytes in order as views (for export)."""
        out: list[memoryview] = []
        for i in range(self._head, len(self._bufs)):
            b = self._bufs[i]
            s = self._starts[i]
            lo = max(self.start - s, 0)
            if lo < len(b):
                out.append(b[lo:])
        return out


class ReceiveQueue:
    """In-order bytes not yet read by the user: a list consumed from index `_h` (cheaper to create than
    a deque, which matters because the list is released whenever the reader drains the queue)."""

    __slots__ = ("_h", "_q", "size")

    def __init__(self) -> None:
        self._q: list[memoryview | bytes] | tuple[()] = EMPTY
        self._h = 0
        self.size = 0

    def append(self, data: memoryview | bytes) -> None:
        n = len(data)
        if not n:
            return  # nothing to read: keeps "allocated exactly while size > 0"
        q = self._q
        if q is EMPTY:
            self._q = [data]
        else:
            q.append(data)  # type: ignore[union-attr]
        self.size += n

    @property
    def allocated(self) -> bool:
        """True while the queue holds a list (False when nothing is waiting to be read)."""
        return self._q is not EMPTY

    @property
    def head_len(self) -> int:
        """Bytes in the first waiting entry (one received segment or merged run); 0 when empty."""
        return len(self._q[self._h]) if self.size else 0

    def _consumed(self, h: int) -> None:
        """Entries before index h are read."""
        q = self._q
        if h >= len(q):
            self._q = EMPTY  # drained: an idle connection keeps no list
            self._h = 0
        elif h > 32 and h * 2 > len(q):
            del q[:h]  # type: ignore[union-attr]
            self._h = 0
        else:
            self._h = h

    def read(self, max_bytes: int) -> memoryview | bytes:
        q = self._q
        if not q or max_bytes == 0:
            return b""
        if max_bytes < 0 or max_bytes > self.size:
            max_bytes = self.size
        h = self._h
        first = q[h]
        if len(first) >= max_bytes:
            self.size -= max_bytes
            if len(first) == max_bytes:
                if h + 1 == len(q):
                    self._q = EMPTY  # drained (the common case, inline)
                    self._h = 0
                else:
                    self._consumed(h + 1)
                return first
            q[h] = first[max_bytes:]  # type: ignore[index]
            return first[:max_bytes]
        parts = []
        got = 0
        while got < max_bytes:
            b = q[h]
            take = min(len(b), max_bytes - got)
            if take == len(b):
                h += 1
                parts.append(b)
            else:
                parts.append(b[:take])
                q[h] = b[take:]  # type: ignore[index]
            got += take
        self.size -= got
        self._consumed(h)
        return b"".join(parts)

    def views(self) -> list[memoryview]:
        q = self._q
        return [memoryview(q[i]) for i in range(self._h, len(q))]


class Reassembly:
    """Out-of-order segments as non-overlapping (start, data) pieces sorted by start (unwrapped seqs)."""

    __slots__ = ("_data", "_starts", "bytes", "max_pieces", "recent")

    def __init__(self, max_pieces: int) -> None:
        self._starts: list[int] | tuple[()] = EMPTY
        self._data: list[memoryview | bytes] | tuple[()] = EMPTY
        self.bytes = 0
        self.max_pieces = max_pieces
        # seqs of the latest arrivals, newest first (RFC 2018 4); meaningless once the queue drains
        self.recent: list[int] | tuple[()] = EMPTY

    def __bool__(self) -> bool:
        return bool(self._starts)

    @property
    def allocated(self) -> bool:
        """True while any of the piece lists exists (False for an empty queue)."""
        return self._starts is not EMPTY or self._data is not EMPTY or self.recent is not EMPTY

    def _release(self) -> None:
        self._starts = self._data = self.recent = EMPTY
        self.bytes = 0

    def add(self, seq: int, data: memoryview | bytes) -> bool:
        """Insert data at seq, trimming overlaps with what is held. False if dropped for memory."""
        starts = self._starts
        if starts is EMPTY:
            if not data:
                return True
            if self.max_pieces <= 0:
                return False
            starts = self._starts = []
            self._data = []
        datas = self._data
        end = seq + len(data)
        i = bisect_right(starts, seq)
        # Trim against the piece before.
        if i > 0:
            pe = starts[i - 1] + len(datas[i - 1])
            if pe >= end:
                self._touch(seq)
                return True
            if pe > seq:
                data = data[pe - seq :]
                seq = pe
        # Insert pieces around the following ones.
        while data:
            if i < len(starts) and starts[i] < end:
                ns = starts[i]
                if ns > seq:
                    if len(starts) >= self.max_pieces:
                        return False
                    starts.insert(i, seq)  # type: ignore[union-attr]
                    datas.insert(i, data[: ns - seq])  # type: ignore[union-attr]
                    self.bytes += ns - seq
                    i += 1
                ne = ns + len(datas[i])
                if ne >= end:
                    break
                data = data[ne - seq :] if ne > seq else data
                seq = max(seq, ne)
                i += 1
                continue
            if len(starts) >= self.max_pieces:
                return False
            starts.insert(i, seq)  # type: ignore[union-attr]
            datas.insert(i, data)  # type: ignore[union-attr]
            self.bytes += len(data)
            break
        self._touch(seq)
        return True

    def _touch(self, seq: int) -> None:
        r = self.recent
        if r is EMPTY:
            self.recent = [seq]
            return
        if seq in r:
            r.remove(seq)  # type: ignore[union-attr]
        r.insert(0, seq)  # type: ignore[union-attr]
        del r[4:]  # type: ignore[union-attr]

    def pop_ready(self, rcv_nxt: int) -> tuple[int, list[memoryview | bytes]]:
        """Remove pieces now contiguous with rcv_nxt; returns (new rcv_nxt, their data in order)."""
        starts, datas = self._starts, self._data
        out: list[memoryview | bytes] = []
        while starts and starts[0] <= rcv_nxt:
            s = starts.pop(0)  # type: ignore[union-attr]
            d = datas.pop(0)  # type: ignore[union-attr]
            self.bytes -= len(d)
            e = s + len(d)
            if e > rcv_nxt:
                out.append(d[rcv_nxt - s :])
                rcv_nxt = e
        if not starts:
            self._release()
        return rcv_nxt, out

    def drop_beyond(self, seq: int) -> None:
        starts, datas = self._starts, self._data
        while starts and starts[-1] >= seq:
            starts.pop()  # type: ignore[union-attr]
            self.bytes -= len(datas.pop())  # type: ignore[union-attr]
        if not starts:
            self._release()

    def blocks(self) -> list[tuple[int, int]]:
        """Merged contiguous ranges, ascending."""
        out: list[tuple[int, int]] = []
        for s, d in zip(self._starts, self._data):
            e = s + len(d)
            if out and out[-1][1] == s:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return out

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` blocks, the one holding the most recent arrival first (RFC 2018 4)."""
        blocks = self.blocks()
        chosen: list[tuple[int, int]] = []
        for seq in self.recent:
            for b in blocks:
                if b[0] <= seq < b[1] and b not in chosen:
                    chosen.append(b)
                    break
        for b in reversed(blocks):
            if b not in chosen:
                chosen.append(b)
        return chosen[:limit]

    def overlap(self, seq: int, end: int) -> tuple[int, int] | None:
        """The first contiguous run of held bytes inside [seq, end): what a segment carrying [seq, end)
        duplicates (RFC 2883 4.2: only the first of several non-contiguous duplicates is reported)."""
        starts, datas = self._starts, self._data
        n = len(starts)
        i = bisect_right(starts, seq) - 1
        if i < 0:
            i = 0
        while i < n and starts[i] + len(datas[i]) <= seq:
            i += 1
        if i >= n or starts[i] >= end:
            return None
        s = starts[i]
        lo = s if s > seq else seq
        hi = s + len(datas[i])
        i += 1
        while hi < end and i < n and starts[i] == hi:  # adjacent pieces are one held run
            hi += len(datas[i])
            i += 1
        return lo, hi if hi < end else end

    def dsack_blocks(self, dup: tuple[int, int], limit: int) -> list[tuple[int, int]]:
        """RFC 2883 4 SACK list for an ACK reporting the duplicate `dup`: the D-SACK block first, then the
        held block containing it (when the duplicate lies above RCV.NXT), then the RFC 2018 blocks, most
        recent first; at most `limit` blocks."""
        out = [dup]
        if self._starts:
            rest = self.sack_blocks(len(self._starts))
            lo, hi = dup
            for k, b in enumerate(rest):
                if b[0] <= lo and hi <= b[1]:
                    out.append(b)
                    del rest[k]
                    break
            out += rest
        return out[:limit]

    def clear(self) -> None:
        self._release()
