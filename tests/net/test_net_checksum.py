"""Internet checksum: the fast paths agree with the RFC 1071 reference loop, edges and piecewise sums."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimney.net import checksum as ck


@given(st.binary(max_size=3000))
def test_fast_checksum_matches_rfc1071_reference_loop(data: bytes) -> None:
    assert ck.checksum(data) == ck.reference_checksum(data)


@pytest.mark.skipif(not ck.HAVE_NUMPY, reason="numpy not installed: only the int path exists")
@given(st.binary(min_size=0, max_size=5000))
def test_numpy_and_int_paths_agree_including_odd_tails(data: bytes) -> None:
    assert ck.fold(ck._raw_sum_numpy(data)) == ck.fold(ck._raw_sum_int(data))


def test_all_zero_data_checksums_to_ffff_and_nonzero_sum_ffff_to_zero() -> None:
    assert ck.checksum(b"") == 0xFFFF
    assert ck.checksum(b"\x00" * 7) == 0xFFFF
    # words summing to 0xFFFF (negative zero) give checksum 0, not 0xFFFF
    assert ck.checksum(b"\xff\xff") == 0x0000
    assert ck.checksum(b"\x12\x34\xed\xcb") == 0x0000
    assert ck.reference_checksum(b"\x12\x34\xed\xcb") == 0x0000


def test_udp_sends_ffff_for_a_computed_zero_but_tcp_keeps_zero() -> None:
    raw = ck.raw_sum(b"\xff\xff")
    assert ck.finish(raw) == 0
    assert ck.finish_udp(raw) == 0xFFFF
    assert ck.finish_udp(ck.raw_sum(b"\x00\x01")) == 0xFFFE


def test_odd_length_is_padded_with_a_zero_byte_at_the_end() -> None:
    assert ck.checksum(b"\xab") == ck.checksum(b"\xab\x00") == 0xFFFF - 0xAB00
    assert ck.checksum(b"\x01\x02\x03") == ck.reference_checksum(b"\x01\x02\x03\x00")


def test_ipv4_header_checksum_known_vector() -> None:
    # RFC 1071-style worked example: a classic IPv4 header with checksum 0xb861 (the Wikipedia worked example)
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert ck.checksum(hdr) == 0xB861
    full = hdr[:10] + b"\xb8\x61" + hdr[12:]
    assert ck.verify_raw(ck.raw_sum(full))
    assert not ck.verify_raw(ck.raw_sum(hdr[:10] + b"\xb8\x62" + hdr[12:]))


@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_checksum_parts_equals_checksum_of_concatenation_for_any_split(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = []
    prev = 0
    for p in [*points, len(data)]:
        pieces.append(memoryview(data)[prev:p])
        prev = p
    assert ck.checksum_parts(pieces) == ck.reference_checksum(data)


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.binary(max_size=200))
def test_pseudo_header_sum_matches_explicit_pseudo_header_bytes(src: bytes, dst: bytes, seg: bytes) -> None:
    explicit = src + dst + bytes([0, 6]) + len(seg).to_bytes(2, "big") + seg
    assert ck.finish(ck.pseudo_sum_v4(src, dst, 6, len(seg)) + ck.raw_sum(seg)) == ck.reference_checksum(explicit)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.binary(max_size=200))
def test_ipv6_pseudo_header_sum_matches_rfc8200_layout(src: bytes, dst: bytes, seg: bytes) -> None:
    explicit = src + dst + len(seg).to_bytes(4, "big") + bytes([0, 0, 0, 58]) + seg
    assert ck.finish(ck.pseudo_sum_v6(src, dst, 58, len(seg)) + ck.raw_sum(seg)) == ck.reference_checksum(explicit)


def test_swap16_is_byte_swap_and_keeps_negative_zero() -> None:
    assert ck.swap16(0x1234) == 0x3412
    assert ck.swap16(0xFFFF) == 0xFFFF
    assert ck.swap16(0) == 0
