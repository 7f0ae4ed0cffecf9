"""NDIS 5 packet descriptors, pools and helper operations; buffer-chain properties against a list model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimney.ndis.buffers import Mdl
from chimney.ndis.ndis5.packet import (
    NdisPacket,
    NdisPacketOobData,
    PacketPoolError,
    PacketState,
    adjust_buffer_length,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_back,
    chain_buffer_at_front,
    copy_from_packet,
    free_buffer,
    free_buffer_pool,
    free_packet,
    free_packet_pool,
    get_packet_header_size,
    get_packet_media_specific_info,
    get_packet_status,
    get_packet_time_received,
    get_packet_time_sent,
    oob_data_from_packet,
    packet_buffers,
    packet_pool_usage,
    query_buffer,
    query_packet,
    reinitialize_packet,
    set_packet_header_size,
    set_packet_media_specific_info,
    set_packet_status,
    set_packet_time_received,
    set_packet_time_sent,
    unchain_buffer_at_back,
    unchain_buffer_at_front,
    zero_packet_oob_data,
)
from chimney.ndis.status import NdisStatus

# ---- packet pool ---------------------------------------------------------------------------------


def test_packet_pool_hands_out_its_capacity_then_resources() -> None:
    st_, pool = allocate_packet_pool(2, name="rx")
    assert st_ == NdisStatus.SUCCESS and pool is not None
    a = allocate_packet(pool)[1]
    b = allocate_packet(pool)[1]
    assert a is not None and b is not None and a is not b
    assert a.pool is pool and b.pool is pool
    assert allocate_packet(pool) == (NdisStatus.RESOURCES, None)
    assert (pool.allocations, pool.failures, packet_pool_usage(pool)) == (2, 1, 2)
    free_packet(a)
    assert allocate_packet(pool)[1] is a  # the freed descriptor is reused
    assert pool.frees == 1


def test_freeing_twice_or_a_foreign_packet_is_an_error() -> None:
    _, pool = allocate_packet_pool(1)
    assert pool is not None
    p = allocate_packet(pool)[1]
    assert p is not None
    free_packet(p)
    assert p.state == PacketState.FREE
    with pytest.raises(PacketPoolError, match="twice"):
        free_packet(p)
    with pytest.raises(PacketPoolError, match="not allocated from a packet pool"):
        free_packet(NdisPacket())


def test_packet_pool_cannot_be_freed_with_packets_out() -> None:
    _, pool = allocate_packet_pool(2)
    assert pool is not None
    p = allocate_packet(pool)[1]
    assert p is not None
    with pytest.raises(PacketPoolError, match="still allocated"):
        free_packet_pool(pool)
    free_packet(p)
    free_packet_pool(pool)
    with pytest.raises(PacketPoolError):
        allocate_packet(pool)


def test_free_packet_returns_a_clean_descriptor() -> None:
    _, pool = allocate_packet_pool(1)
    _, bpool = allocate_buffer_pool(1)
    assert pool is not None and bpool is not None
    p = allocate_packet(pool)[1]
    assert p is not None
    b = allocate_buffer(bpool, bytearray(b"x" * 32), 0, 32)[1]
    assert b is not None
    chain_buffer_at_back(p, b)
    set_packet_status(p, NdisStatus.RESOURCES)
    free_packet(p)
    p2 = allocate_packet(pool)[1]
    assert p2 is p
    assert query_packet(p2) == (0, 0, None, 0)
    assert oob_data_from_packet(p2).is_zero()


def test_buffer_pool_allocation_describes_memory_without_copying() -> None:
    mem = bytearray(b"0123456789")
    _, bpool = allocate_buffer_pool(1)
    assert bpool is not None
    st_, b = allocate_buffer(bpool, mem, 2, 5)
    assert st_ == NdisStatus.SUCCESS and b is not None
    view, length = query_buffer(b)
    assert (bytes(view), length) == (b"23456", 5)
    mem[2] = ord("X")
    assert bytes(query_buffer(b)[0]) == b"X3456"
    assert allocate_buffer(bpool, mem, 0, 1) == (NdisStatus.RESOURCES, None)
    with pytest.raises(PacketPoolError):
        free_buffer_pool(bpool)
    free_buffer(b)
    with pytest.raises(PacketPoolError):
        free_buffer(b)
    free_buffer_pool(bpool)


def test_adjust_buffer_length_stays_inside_the_mapping() -> None:
    b = Mdl(bytearray(100), 10, 50)
    adjust_buffer_length(b, 20)
    assert b.byte_count == 20
    adjust_buffer_length(b, 90)
    with pytest.raises(PacketPoolError):
        adjust_buffer_length(b, 91)


def test_query_packet_counts_pages_buffers_and_length() -> None:
    p = NdisPacket()
    mem = bytearray(3 * 4096)
    chain_buffer_at_back(p, Mdl(mem, 4000, 200))  # straddles a page boundary: 2 pages
    chain_buffer_at_back(p, Mdl(mem, 8192, 100))  # 1 page
    phys, count, first, total = query_packet(p)
    assert (phys, count, total) == (3, 2, 300)
    assert first is packet_buffers(p)[0]


def test_copy_from_packet_walks_the_chain() -> None:
    p = NdisPacket()
    chain_buffer_at_back(p, Mdl(bytearray(b"hello "), 0))
    chain_buffer_at_back(p, Mdl(bytearray(b"world"), 0))
    assert copy_from_packet(p) == b"hello world"
    assert copy_from_packet(p, 3, 5) == b"lo wo"


# ---- OOB accessors (R-N5-17) ---------------------------------------------------------------------


def test_r_n5_17_oob_block_is_reachable_only_through_the_accessors() -> None:
    p = NdisPacket()
    assert not hasattr(p, "oob")
    oob = oob_data_from_packet(p)
    assert isinstance(oob, NdisPacketOobData)
    with pytest.raises(AttributeError):
        oob.status = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        oob.extra = 1  # type: ignore[attr-defined]


def test_r_n5_17_accessors_round_trip_and_zeroing_clears_the_block() -> None:
    p = NdisPacket()
    set_packet_status(p, NdisStatus.RESOURCES)
    set_packet_time_received(p, 1234)
    set_packet_time_sent(p, 1200)
    set_packet_header_size(p, 14)
    set_packet_media_specific_info(p, {"priority": 5}, 4)
    assert get_packet_status(p) == NdisStatus.RESOURCES
    assert (get_packet_time_received(p), get_packet_time_sent(p), get_packet_header_size(p)) == (1234, 1200, 14)
    assert get_packet_media_specific_info(p) == ({"priority": 5}, 4)
    zero_packet_oob_data(p)
    assert oob_data_from_packet(p).is_zero()
    assert get_packet_media_specific_info(p) == (None, 0)


def test_media_specific_info_and_size_go_together() -> None:
    p = NdisPacket()
    with pytest.raises(ValueError):
        set_packet_media_specific_info(p, None, 4)
    with pytest.raises(ValueError):
        set_packet_media_specific_info(p, b"x", 0)


# ---- buffer-chain properties ---------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["front", "back"]), st.integers(1, 64)),
        st.tuples(st.sampled_from(["unfront", "unback"]), st.just(0)),
        st.tuples(st.just("adjust"), st.integers(0, 64)),
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(ops=OPS, adjust_pick=st.integers(0, 1000))
def test_chain_operations_match_a_list_model(ops: list[tuple[str, int]], adjust_pick: int) -> None:
    """NdisChain/Unchain at front/back and NdisAdjustBufferLength behave like a Python list."""
    p = NdisPacket()
    model: list[Mdl] = []
    mem = bytearray(64)
    for op, n in ops:
        if op == "front":
            b = Mdl(mem, 0, n)
            chain_buffer_at_front(p, b)
            model.insert(0, b)
        elif op == "back":
            b = Mdl(mem, 0, n)
            chain_buffer_at_back(p, b)
            model.append(b)
        elif op == "unfront":
            got = unchain_buffer_at_front(p)
            want = model.pop(0) if model else None
            assert got is want
            if got is not None:
                assert got.next is None
        elif op == "unback":
            got = unchain_buffer_at_back(p)
            want = model.pop() if model else None
            assert got is want
            if got is not None:
                assert got.next is None
        elif model:
            adjust_buffer_length(model[adjust_pick % len(model)], n)
        chain = packet_buffers(p)
        assert chain == model
        phys, count, first, total = query_packet(p)
        assert count == len(model)
        assert first is (model[0] if model else None)
        assert total == sum(b.byte_count for b in model)
        assert phys == sum(1 for b in model if b.byte_count)
        if model:
            assert model[-1].next is None
    reinitialize_packet(p)
    assert packet_buffers(p) == []
    assert query_packet(p) == (0, 0, None, 0)


@settings(max_examples=60)
@given(front=st.lists(st.integers(1, 8), min_size=1, max_size=5), back=st.lists(st.integers(1, 8), max_size=5))
def test_chaining_a_buffer_chain_keeps_its_order(front: list[int], back: list[int]) -> None:
    """Chaining the head of an existing chain links the whole chain (as an IM sharing buffers does)."""
    mem = bytearray(8)
    sub = [Mdl(mem, 0, n) for n in front]
    for a, b in itertools.pairwise(sub):
        a.next = b
    p = NdisPacket()
    tail = [Mdl(mem, 0, n) for n in back]
    for b in tail:
        chain_buffer_at_back(p, b)
    chain_buffer_at_front(p, sub[0])
    assert packet_buffers(p) == sub + tail
    q = NdisPacket()
    chain_buffer_at_back(q, sub[0])
    assert packet_buffers(q)[: len(sub)] == sub
