"""Hypothesis properties of the NET_BUFFER offset arithmetic: for random MDL chains (zero-length MDLs,
MDLs in the middle of larger buffers) and random advance/retreat sequences the NB always describes
exactly the reference slice of the concatenated MDL bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chimney.ndis.buffers import (
    Mdl,
    NdisBufferError,
    NetBuffer,
    chain_mdls,
    chain_nbls,
    iter_mdls,
    iter_nbl_chain,
    nbl_chain_length,
    nbl_from_bytes,
    split_nbl_chain,
)

# One MDL: (slack before, described bytes, slack after) inside its own backing buffer.
mdl_specs = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 12) | st.just(0), st.integers(0, 3)), min_size=1, max_size=7
)
ops = st.lists(st.tuples(st.sampled_from(["advance", "retreat"]), st.integers(-2, 90)), max_size=25)


def build_chain(specs: list[tuple[int, int, int]], seed: int) -> tuple[Mdl, bytes]:
    """The MDL chain and the reference bytes it describes (concatenated)."""
    mdls: list[Mdl] = []
    ref = bytearray()
    for k, (before, count, after) in enumerate(specs):
        backing = bytearray((seed + 37 * k + i) & 0xFF for i in range(before + count + after))
        mdls.append(Mdl(backing, before, count))
        ref += backing[before : before + count]
    head = chain_mdls(*mdls)
    assert head is not None
    return head, bytes(ref)


def check_describes(nb: NetBuffer, ref: bytes, offset: int, length: int) -> None:
    assert (nb.data_offset, nb.data_length) == (offset, length)
    views = nb.data_views()
    assert all(len(v) > 0 for v in views)
    assert b"".join(views) == ref[offset : offset + length]
    # The current MDL is where the data starts, and every byte can be located where the views say.
    assert nb.locate(0) == (nb.current_mdl, nb.current_mdl_offset)
    for i in range(length):
        mdl, off = nb.locate(i)
        assert 0 <= off < mdl.byte_count
        assert mdl.view()[off] == ref[offset + i]
    mdl, off = nb.locate(length)
    assert off <= mdl.byte_count


@settings(max_examples=200)  # the core arithmetic property: worth more examples than the profile default
@given(mdl_specs, st.data(), ops, st.integers(0, 255))
def test_advance_and_retreat_keep_the_views_equal_to_the_reference_slice(
    specs: list[tuple[int, int, int]], data: st.DataObject, steps: list[tuple[str, int]], seed: int
) -> None:
    head, ref = build_chain(specs, seed)
    total = len(ref)
    offset = data.draw(st.integers(0, total), label="data_offset")
    length = data.draw(st.integers(0, total - offset), label="data_length")
    nb = NetBuffer(head, offset, length)
    assert nb.total_size() == total
    check_describes(nb, ref, offset, length)
    for op, delta in steps:
        ok = 0 <= delta <= (length if op == "advance" else offset)
        try:
            getattr(nb, op)(delta)
        except NdisBufferError:
            assert not ok, f"{op}({delta}) refused with offset {offset} length {length}"
        else:
            assert ok, f"{op}({delta}) accepted with offset {offset} length {length}"
            if op == "advance":
                offset, length = offset + delta, length - delta
            else:
                offset, length = offset - delta, length + delta
        check_describes(nb, ref, offset, length)


@given(mdl_specs, st.data(), st.integers(0, 255))
def test_sub_range_views_and_copies_agree_with_the_reference(
    specs: list[tuple[int, int, int]], data: st.DataObject, seed: int
) -> None:
    head, ref = build_chain(specs, seed)
    offset = data.draw(st.integers(0, len(ref)))
    nb = NetBuffer(head, offset, len(ref) - offset)
    start = data.draw(st.integers(0, nb.data_length))
    n = data.draw(st.integers(0, nb.data_length - start))
    expected = ref[offset + start : offset + start + n]
    assert b"".join(nb.data_views(start, n)) == expected
    assert nb.copy_data(start, n) == expected


@given(mdl_specs, st.lists(st.integers(0, 20), max_size=10), st.integers(0, 255))
def test_advance_with_free_mdl_keeps_the_data_and_drops_only_leading_mdls(
    specs: list[tuple[int, int, int]], deltas: list[int], seed: int
) -> None:
    head, ref = build_chain(specs, seed)
    nb = NetBuffer(head, 0, len(ref))
    consumed = 0
    freed: list[Mdl] = []
    for delta in deltas:
        delta = min(delta, nb.data_length)
        nb.advance(delta, freed.append)
        consumed += delta
        assert nb.mdl_chain is nb.current_mdl
        assert nb.data_offset == nb.current_mdl_offset
        assert nb.copy_data() == ref[consumed:]
        assert sum(m.byte_count for m in freed) + nb.total_size() == len(ref)
        assert all(m.next is None for m in freed)


@given(st.lists(st.binary(max_size=5), max_size=8))
def test_nbl_chain_helpers_round_trip(payloads: list[bytes]) -> None:
    nbls = [nbl_from_bytes(p, "host") for p in payloads]
    head = chain_nbls(nbls)
    assert list(iter_nbl_chain(head)) == nbls
    assert nbl_chain_length(head) == len(nbls)
    assert [n.data_length() for n in iter_nbl_chain(head)] == [len(p) for p in payloads]
    assert split_nbl_chain(head) == nbls
    assert all(n.next is None for n in nbls)


@given(st.lists(st.binary(max_size=6), min_size=1, max_size=8))
def test_mdl_chain_round_trips(pieces: list[bytes]) -> None:
    mdls = [Mdl(p) for p in pieces]
    head = chain_mdls(*mdls)
    assert list(iter_mdls(head)) == mdls
    nb = NetBuffer(head, 0, sum(map(len, pieces)))
    assert nb.copy_data() == b"".join(pieces)
