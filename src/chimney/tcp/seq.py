"""Wrap-safe 32-bit TCP sequence arithmetic (RFC 9293 3.4, RFC 1982 style comparisons).

The engine keeps sequence numbers internally as unwrapped Python ints (no per-operation objects);
these helpers are for wire values and for callers/tests that hold raw u32 numbers.
"""

from __future__ import annotations

from typing import NewType

Seq = NewType("Seq", int)

SEQ_MASK = 0xFFFFFFFF
SEQ_HALF = 0x80000000


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in the 32-bit circle, in [-2**31, 2**31)."""
    return ((a - b + SEQ_HALF) & SEQ_MASK) - SEQ_HALF


def seq_add(a: int, n: int) -> Seq:
    return Seq((a + n) & SEQ_MASK)


def seq_lt(a: int, b: int) -> bool:
    return ((a - b + SEQ_HALF) & SEQ_MASK) < SEQ_HALF


def seq_le(a: int, b: int) -> bool:
    return ((b - a + SEQ_HALF) & SEQ_MASK) >= SEQ_HALF


def seq_gt(a: int, b: int) -> bool:
    return ((b - a + SEQ_HALF) & SEQ_MASK) < SEQ_HALF


def seq_ge(a: int, b: int) -> bool:
    return ((a - b + SEQ_HALF) & SEQ_MASK) >= SEQ_HALF


def unwrap(wire: int, near: int) -> int:
    """The unwrapped int congruent to `wire` mod 2**32 that is closest to the unwrapped `near`."""
    return near + (((wire - near + SEQ_HALF) & SEQ_MASK) - SEQ_HALF)
