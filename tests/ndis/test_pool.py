"""NBL / NB / MDL pools: allocation counters, capacity exhaustion, double and foreign frees, and leak
reports naming the NBLs still out."""

from __future__ import annotations

import pytest

from chimney.ndis.buffers import Mdl, NdisBufferError, chain_mdls, chain_nbls, nbl_from_bytes
from chimney.ndis.ownership import OwnershipTracker
from chimney.ndis.pool import (
    FREED_OWNER,
    MdlPool,
    NblPool,
    NetBufferPool,
    allocate_mdl,
    free_mdl,
)
from chimney.ndis.verifier import ContractViolation, Mode, Verifier


def test_allocate_five_free_three_leak_report_lists_the_two_serials() -> None:
    pool = NblPool("rx-indicate", "target")
    nbls = [pool.allocate() for _ in range(5)]
    assert all(n is not None for n in nbls)
    for nbl in nbls[:3]:
        assert nbl is not None
        pool.free(nbl)
    assert (pool.allocated, pool.freed, pool.outstanding, pool.peak, pool.failures) == (5, 3, 2, 5, 0)
    report = pool.leak_report()
    assert "2 outstanding" in report
    for nbl in nbls[3:]:
        assert nbl is not None and f"NBL#{nbl.serial} " in report
    for nbl in nbls[:3]:
        assert nbl is not None and f"NBL#{nbl.serial} " not in report
    assert pool.outstanding_nbls() == nbls[3:]


def test_plain_pool_nbls_have_no_net_buffer_and_belong_to_the_pool_owner() -> None:
    pool = NblPool("ctl", "host")
    nbl = pool.allocate()
    assert nbl is not None
    assert nbl.first_net_buffer is None and nbl.owner == "host" and nbl.pool is pool
    with pytest.raises(NdisBufferError, match="no NET_BUFFERs"):
        pool.allocate(Mdl(b"abc"))


def test_data_size_pool_gives_each_nbl_its_own_zeroed_buffer() -> None:
    pool = NblPool("rx", "target", data_size=64)
    a, b = pool.allocate(), pool.allocate()
    assert a is not None and b is not None
    nb_a, nb_b = a.first_net_buffer, b.first_net_buffer
    assert nb_a is not None and nb_b is not None
    assert (nb_a.data_offset, nb_a.data_length) == (0, 64)
    nb_a.write(0, b"hello")
    assert nb_b.copy_data(0, 5) == bytes(5)
    assert nb_a.copy_data(0, 5) == b"hello"


def test_net_buffer_pool_allocates_over_a_caller_mdl_chain() -> None:
    pool = NblPool("tx", "host", with_net_buffer=True)
    chain = chain_mdls(Mdl(b"0123456789"), Mdl(b"abcdef"))
    nbl = pool.allocate(chain, 4)
    assert nbl is not None and nbl.first_net_buffer is not None
    assert nbl.first_net_buffer.copy_data() == b"456789abcdef"
    empty = pool.allocate()
    assert empty is not None and empty.data_length() == 0


def test_capacity_exhaustion_returns_none_and_is_counted() -> None:
    pool = NblPool("small", "target", capacity=2)
    a, b = pool.allocate(), pool.allocate()
    assert pool.allocate() is None and pool.allocate() is None
    assert pool.failures == 2 and pool.outstanding == 2
    assert a is not None and b is not None
    pool.free(a)
    assert pool.allocate() is not None
    assert pool.counters() == {"allocated": 3, "freed": 1, "outstanding": 2, "peak": 2, "failures": 2}
    with pytest.raises(ValueError, match="negative capacity"):
        NblPool("bad", "x", capacity=-1)


def test_double_free_and_foreign_free_are_refused() -> None:
    pool = NblPool("p", "target")
    other = NblPool("q", "target")
    nbl = pool.allocate()
    assert nbl is not None
    with pytest.raises(NdisBufferError, match="not allocated from pool q"):
        other.free(nbl)
    with pytest.raises(NdisBufferError, match="not allocated from pool p"):
        pool.free(nbl_from_bytes(b"x", "target"))
    pool.free(nbl)
    assert nbl.owner == FREED_OWNER
    with pytest.raises(NdisBufferError, match="freed twice to pool p"):
        pool.free(nbl)
    assert pool.freed == 1


def test_free_chain_frees_every_nbl_and_cuts_links() -> None:
    pool = NblPool("p", "target")
    nbls = [pool.allocate() for _ in range(3)]
    head = chain_nbls(n for n in nbls if n is not None)
    assert pool.free_chain(head) == 3
    assert pool.outstanding == 0 and all(n is not None and n.next is None for n in nbls)


def test_pool_with_tracker_registers_allocations_and_forgets_frees() -> None:
    tracker = OwnershipTracker(Verifier(Mode.STRICT))
    pool = NblPool("rx", "target", data_size=16, tracker=tracker)
    a, b = pool.allocate(), pool.allocate()
    assert a is not None and b is not None
    tracker.transfer(a, frm="target", to="host", rule_id="R-IND-01", op="tcp_offload_receive_indicate")
    assert tracker.by_owner() == {"host": 1, "target": 1}
    assert "pool=rx" in tracker.leak_report("host")
    pool.free(b)
    assert tracker.by_owner() == {"host": 1}


def test_freeing_an_nbl_another_driver_still_holds_breaks_r_nbl_02() -> None:
    """R-NBL-02: the target may not touch (here: free) an indicated NBL before the host returns it."""
    tracker = OwnershipTracker(Verifier(Mode.STRICT))
    pool = NblPool("rx", "target", data_size=16, tracker=tracker)
    nbl = pool.allocate()
    assert nbl is not None
    tracker.transfer(nbl, frm="target", to="host", rule_id="R-IND-01", op="tcp_offload_receive_indicate")
    with pytest.raises(ContractViolation) as exc:
        pool.free(nbl)
    assert exc.value.rule_id == "R-NBL-02"
    assert "free to pool rx: target used" in str(exc.value)


def test_use_after_free_shows_up_as_an_ownership_violation() -> None:
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    pool = NblPool("rx", "target", tracker=tracker)
    nbl = pool.allocate()
    assert nbl is not None
    pool.free(nbl)
    tracker.transfer(nbl, frm="target", to="host", rule_id="R-NBL-02", op="indicate stale")
    assert verifier.rule_ids() == ["R-NBL-02"]
    assert "(owner <freed>)" in verifier.violations[0].message


def test_net_buffer_pool_counts_and_refuses_bad_frees() -> None:
    pool = NetBufferPool("nbs", capacity=1)
    nb = pool.allocate(Mdl(b"abcdef"), 2, 3)
    assert nb is not None and nb.copy_data() == b"cde" and nb.pool is pool
    assert pool.allocate() is None and pool.failures == 1
    assert "1 outstanding" in pool.leak_report()
    assert pool.outstanding_nbs() == [nb]
    pool.free(nb)
    with pytest.raises(NdisBufferError, match="freed twice"):
        pool.free(nb)
    other = NetBufferPool("other")
    foreign = other.allocate()
    assert foreign is not None
    with pytest.raises(NdisBufferError, match="not allocated from NB pool nbs"):
        pool.free(foreign)
    assert pool.counters()["outstanding"] == 0


def test_mdl_pool_and_unpooled_mdls() -> None:
    pool = MdlPool("mdls", capacity=2)
    m1 = pool.allocate_mdl(bytearray(8), 2, 4)
    m2 = pool.allocate_mdl(b"xy")
    assert m1 is not None and m2 is not None and pool.allocate_mdl(b"z") is None
    chain_mdls(m1, m2)
    free_mdl(m1)  # NdisFreeMdl returns a pooled MDL to its pool and unlinks it
    assert m1.next is None and pool.outstanding == 1
    assert pool.outstanding_mdls() == [m2]
    with pytest.raises(NdisBufferError, match="freed twice"):
        pool.free_mdl(m1)
    loose = allocate_mdl(b"abcdef", 1, 3)
    assert bytes(loose.view()) == b"bcd" and loose.pool is None
    with pytest.raises(NdisBufferError, match="not allocated from MDL pool"):
        pool.free_mdl(loose)
    loose.next = m2
    free_mdl(loose)
    assert loose.next is None
    assert "MDL pool mdls: 1 outstanding" in pool.leak_report()


def test_closing_a_pool_with_nbls_out_is_refused_with_the_leak_report() -> None:
    pool = NblPool("rx", "target")
    nbl = pool.allocate()
    assert nbl is not None
    with pytest.raises(NdisBufferError, match=rf"still out:\n.*\n  <NBL#{nbl.serial} "):
        pool.close()
    pool.free(nbl)
    pool.close()
    with pytest.raises(NdisBufferError, match="closed"):
        pool.allocate()
