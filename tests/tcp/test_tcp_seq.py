"""Wrap-safe sequence arithmetic (RFC 9293 3.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chimney.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt, unwrap

u32 = st.integers(0, 2**32 - 1)


def test_comparisons_across_the_wrap() -> None:
    assert seq_lt(0xFFFFFFFE, 1)
    assert seq_gt(1, 0xFFFFFFFE)
    assert seq_le(5, 5) and seq_ge(5, 5) and not seq_lt(5, 5) and not seq_gt(5, 5)
    assert seq_add(0xFFFFFFFF, 2) == 1
    assert seq_diff(3, 0xFFFFFFFD) == 6


@given(u32, st.integers(1, 2**31 - 1))
def test_a_plus_positive_is_greater(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_lt(a, b) and seq_gt(b, a) and seq_diff(b, a) == n


@given(u32, st.integers(-(2**40), 2**40))
def test_unwrap_picks_nearest(wire: int, near: int) -> None:
    x = unwrap(wire, near)
    assert x & 0xFFFFFFFF == wire
    assert abs(x - near) <= 2**31
