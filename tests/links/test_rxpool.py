"""Receive buffer pool: a buffer is lent again only when no view of it is left, never while one is held."""

from __future__ import annotations

import pytest

from chimney.links.rxpool import SCAN, RxBufferPool


def test_a_buffer_whose_views_are_gone_is_reused_and_one_still_viewed_is_not() -> None:
    pool = RxBufferPool(64, 1 << 20)
    a = pool.take()
    held = memoryview(a)[10:20]  # the stack keeps a payload view
    del a
    b = pool.take()
    assert b is not held.obj and pool.allocated == 2
    del b
    c = pool.take()  # the cursor is back at the viewed buffer: skipped, the free one is lent
    assert c is not held.obj and pool.reused == 1 and pool.allocated == 2
    del c
    held.release()
    del held
    assert pool.in_use() == 0
    pool.take()
    pool.take()
    assert pool.reused == 3 and pool.allocated == 2


def test_slices_of_slices_still_pin_their_buffer() -> None:
    pool = RxBufferPool(32, 1 << 10)
    buf = pool.take()
    buf[:4] = b"abcd"
    inner = memoryview(buf)[1:][1:3]
    del buf
    assert pool.in_use() == 1
    other = pool.take()
    other[:4] = b"XXXX"
    assert bytes(inner) == b"cd"


def test_buffers_come_back_oldest_first() -> None:
    pool = RxBufferPool(16, 1 << 10)
    first = [pool.take() for _ in range(3)]
    ids = [id(b) for b in first]
    del first
    assert [id(pool.take()) for _ in range(3)] == ids


def test_the_pool_stops_growing_at_its_byte_limit_and_lends_unpooled_buffers() -> None:
    pool = RxBufferPool(100, 350)
    held = [pool.take() for _ in range(5)]
    assert len(pool) == 3 and pool.pooled_bytes == 300
    assert pool.overflow == 2 and all(len(b) == 100 for b in held)
    assert len({id(b) for b in held}) == 5


def test_a_reader_behind_by_more_than_the_scan_window_makes_the_pool_grow() -> None:
    pool = RxBufferPool(8, 1 << 10)
    held = [pool.take() for _ in range(SCAN + 2)]
    del held[-1]  # a buffer past the scan window comes free; the oldest SCAN are still held
    pool.take()
    assert pool.allocated == SCAN + 3 and pool.reused == 0


def test_impossible_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RxBufferPool(0, 100)
    off = RxBufferPool(10, 0)  # no pooling: every take is a fresh buffer
    off.take()
    off.take()
    assert (len(off), off.overflow, off.reused) == (0, 2, 0)
