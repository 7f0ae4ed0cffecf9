"""NBL ownership hand-offs through the verifier: a driver passing an NBL it does not own breaks the rule
id the caller names (STRICT raises, RECORD collects, OFF skips), and NB-structure snapshots catch R-NBL-03."""

from __future__ import annotations

import pytest

from chimney.ndis.buffers import (
    Mdl,
    NetBuffer,
    NetBufferList,
    chain_nbls,
    chain_net_buffers,
    nbl_from_bytes,
)
from chimney.ndis.ownership import HISTORY_LEN, NDIS_OWNER, OwnershipTracker
from chimney.ndis.verifier import ContractViolation, Mode, Verifier


def host_chain(n: int) -> NetBufferList:
    head = chain_nbls(nbl_from_bytes(bytes(100), "host") for _ in range(n))
    assert head is not None
    return head


def two_nb_nbl(owner: str) -> tuple[NetBufferList, NetBuffer, NetBuffer]:
    nb1 = NetBuffer(Mdl(bytes(10)), 0, 10)
    nb2 = NetBuffer(Mdl(bytes(20)), 0, 20)
    return NetBufferList(chain_net_buffers(nb1, nb2), owner), nb1, nb2


def test_send_and_completion_move_every_nbl_of_the_chain(verifier: Verifier) -> None:
    tracker = OwnershipTracker(verifier)
    head = host_chain(3)
    tracker.transfer(head, frm="host", to="target", rule_id="R-NBL-02", op="tcp_offload_send")
    assert [n.owner for n in (head, head.next, head.next.next)] == ["target"] * 3  # type: ignore[union-attr]
    tracker.transfer(head, frm="target", to="host", rule_id="R-NBL-02", op="tcp_offload_send_complete")
    assert head.owner == "host"
    assert verifier.checks["R-NBL-02"] == 2  # coverage counts one check per hand-off of a chain
    assert tracker.history(head) == [
        ("tcp_offload_send", "host", "target"),
        ("tcp_offload_send_complete", "target", "host"),
    ]


def test_strict_completion_of_an_nbl_the_target_does_not_own_raises_with_the_rule_id() -> None:
    """R-NBL-02: after completing an NBL the target must not pass it again."""
    tracker = OwnershipTracker(Verifier(Mode.STRICT))
    nbl = nbl_from_bytes(b"data", "host")
    tracker.transfer(nbl, frm="host", to="target", rule_id="R-SEND-01", op="tcp_offload_send")
    tracker.transfer(nbl, frm="target", to="host", rule_id="R-NBL-02", op="tcp_offload_send_complete")
    with pytest.raises(ContractViolation) as exc:
        tracker.transfer(nbl, frm="target", to="host", rule_id="R-NBL-02", op="tcp_offload_send_complete")
    assert exc.value.rule_id == "R-NBL-02"
    text = str(exc.value)
    assert "tcp_offload_send_complete: target passed" in text and "(owner host)" in text
    assert "history: tcp_offload_send host->target, tcp_offload_send_complete target->host" in text
    assert exc.value.objects == (nbl,)


def test_record_mode_collects_each_bad_nbl_and_still_moves_ownership() -> None:
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    head = host_chain(3)
    assert head.next is not None
    head.next.owner = "someone-else"
    tracker.transfer(head, frm="host", to="target", rule_id="R-RECV-01", op="tcp_offload_receive")
    assert verifier.rule_ids() == ["R-RECV-01"]
    assert verifier.violations[0].objects == (head.next,)
    assert head.next.owner == "target"
    assert verifier.checks["R-RECV-01"] == 1


def test_off_mode_only_sets_owners() -> None:
    verifier = Verifier(Mode.OFF)
    tracker = OwnershipTracker(verifier)
    head = host_chain(2)
    tracker.transfer(head, frm="nobody", to="target", rule_id="R-NBL-02", op="send")
    assert head.owner == "target" and head.next is not None and head.next.owner == "target"
    assert verifier.violations == [] and not verifier.checks
    assert tracker.history(head) == []
    assert tracker.assert_owner(head, "host", "R-NBL-04", "use MiniportReserved") is False
    assert verifier.violations == []


def test_transfer_of_an_empty_chain_is_a_no_op(verifier: Verifier) -> None:
    OwnershipTracker(verifier).transfer(None, frm="host", to="target", rule_id="R-NBL-02", op="send")
    assert not verifier.checks


def test_history_keeps_only_the_last_hops(verifier: Verifier) -> None:
    tracker = OwnershipTracker(verifier)
    nbl = nbl_from_bytes(b"x", "a")
    for i in range(HISTORY_LEN + 3):
        frm, to = ("a", "b") if i % 2 == 0 else ("b", "a")
        tracker.transfer(nbl, frm=frm, to=to, rule_id="R-NBL-02", op=f"hop{i}")
    hops = tracker.history(nbl)
    assert len(hops) == HISTORY_LEN
    assert hops[-1][0] == f"hop{HISTORY_LEN + 2}" and hops[0][0] == "hop3"


def test_assert_owner_before_using_miniport_reserved() -> None:
    """R-NBL-04: MiniportReserved of host NBLs is used only while the target owns them."""
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    nbl = nbl_from_bytes(b"x", "host")
    assert tracker.assert_owner(nbl, "host", "R-NBL-04", "queue") is True
    assert tracker.assert_owner(nbl, "target", "R-NBL-04", "queue send") is False
    assert verifier.rule_ids() == ["R-NBL-04"]
    assert "queue send: target used" in verifier.violations[0].message
    assert verifier.checks["R-NBL-04"] == 2


def test_assert_chain_owner_checks_every_nbl() -> None:
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    head = host_chain(3)
    assert tracker.assert_chain_owner(head, "host", "R-NBL-02", "walk")
    assert head.next is not None and head.next.next is not None
    head.next.next.owner = "target"
    assert not tracker.assert_chain_owner(head, "host", "R-NBL-02", "walk")
    assert len(verifier.violations) == 1


def test_structure_snapshot_accepts_an_untouched_nbl(verifier: Verifier) -> None:
    tracker = OwnershipTracker(verifier)
    nbl, nb1, _nb2 = two_nb_nbl("host")
    tracker.snapshot_structure(nbl)
    nb1.advance(5)  # data offsets may change (completion); the NB list may not
    nbl.miniport_reserved[0] = "queued"
    assert tracker.verify_structure(nbl, "R-NBL-03", "send_complete")
    assert verifier.checks["R-NBL-03"] == 1


def test_structure_snapshot_catches_an_nb_moved_to_another_nbl() -> None:
    """R-NBL-03: the target never moves NBs between NBLs it did not create."""
    tracker = OwnershipTracker(Verifier(Mode.STRICT))
    a, a1, a2 = two_nb_nbl("host")
    b, b1, _b2 = two_nb_nbl("host")
    tracker.snapshot_structure(chain_nbls([a, b]), chain=True)
    # The target "helpfully" moves a's second NB to the front of b.
    a1.next = None
    a2.next = b1
    b.first_net_buffer = a2
    with pytest.raises(ContractViolation) as exc:
        tracker.verify_structure(a, "R-NBL-03", "tcp_offload_send_complete")
    assert exc.value.rule_id == "R-NBL-03"
    assert "was [NB0, NB1], now [NB0]" in str(exc.value)
    with pytest.raises(ContractViolation, match=r"now \[foreign <NB off=0 len=20 mdls=1>, NB0, NB1\]"):
        tracker.verify_structure(b, "R-NBL-03", "tcp_offload_send_complete")


def test_structure_snapshot_catches_an_edited_nb_next() -> None:
    """R-NBL-03: the target never edits NB.Next of host NBLs."""
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    nbl, nb1, _nb2 = two_nb_nbl("host")
    tracker.hand_off(nbl, frm="host", to="target", rule_id="R-SEND-01", op="tcp_offload_send")
    nb1.next = None  # dropped the second NB
    tracker.take_back(nbl, frm="target", to="host", rule_id="R-NBL-02", op="tcp_offload_send_complete")
    assert verifier.rule_ids() == ["R-NBL-03"]
    assert "was [NB0, NB1], now [NB0]" in verifier.violations[0].message
    # The snapshot is consumed: a second return has nothing to compare.
    assert tracker.verify_structure(nbl, "R-NBL-03", "again")


def test_structure_snapshot_catches_a_cycle_without_hanging() -> None:
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    nbl, nb1, nb2 = two_nb_nbl("host")
    tracker.snapshot_structure(nbl)
    nb2.next = nb1
    assert not tracker.verify_structure(nbl, "R-NBL-03", "complete")
    assert "now [NB0, NB1, NB0" in verifier.violations[0].message


def test_structure_checks_are_skipped_when_off() -> None:
    tracker = OwnershipTracker(Verifier(Mode.OFF))
    nbl, nb1, _nb2 = two_nb_nbl("host")
    tracker.snapshot_structure(nbl)
    nb1.next = None
    assert tracker.verify_structure(nbl, "R-NBL-03", "complete")


def test_register_forget_and_leak_report_by_owner(verifier: Verifier) -> None:
    tracker = OwnershipTracker(verifier)
    a, b, c = (nbl_from_bytes(b"x", "target") for _ in range(3))
    for nbl in (a, b, c):
        tracker.register(nbl, "target")
    tracker.transfer(b, frm="target", to="host", rule_id="R-IND-01", op="tcp_offload_receive_indicate")
    assert tracker.by_owner() == {"target": 2, "host": 1}
    assert tracker.outstanding("target") == [a, c]
    report = tracker.leak_report("host")
    assert f"NBL#{b.serial}" in report and f"NBL#{a.serial}" not in report
    assert "tcp_offload_receive_indicate target->host" in report
    tracker.forget(b)
    assert tracker.by_owner() == {"target": 2}
    assert tracker.leak_report("host") == "no live NBLs (host)"
    assert tracker.history(b) == []
    assert "2 live NBL(s) (all owners)" in tracker.leak_report()


def test_ndis_owner_is_the_default_owner_of_a_new_nbl() -> None:
    assert NetBufferList().owner == NDIS_OWNER == "NDIS"


def test_structure_snapshot_catches_a_single_nb_swapped_or_grown() -> None:
    """R-NBL-03 for the common one-NB shape (snapshotted without building a tuple)."""
    verifier = Verifier(Mode.RECORD)
    tracker = OwnershipTracker(verifier)
    swapped = nbl_from_bytes(b"abc", "host")
    grown = nbl_from_bytes(b"def", "host")
    empty = NetBufferList(None, "host")
    tracker.snapshot_structure(chain_nbls([swapped, grown, empty]), chain=True)
    swapped.first_net_buffer = NetBuffer(Mdl(b"xyz"), 0, 3)
    assert grown.first_net_buffer is not None
    grown.first_net_buffer.next = NetBuffer(Mdl(b"!"), 0, 1)
    empty.first_net_buffer = NetBuffer()
    assert not tracker.verify_structure(swapped, "R-NBL-03", "complete", chain=True)
    messages = [v.message for v in verifier.violations]
    assert len(messages) == 3
    assert "was [NB0], now [foreign <NB off=0 len=3 mdls=1>]" in messages[0]
    assert "was [NB0], now [NB0, foreign <NB off=0 len=1 mdls=1>]" in messages[1]
    assert "was [none], now [foreign <NB off=0 len=0 mdls=0>]" in messages[2]
    assert verifier.checks["R-NBL-03"] == 1


def test_forget_drops_history_and_pending_snapshot(verifier: Verifier) -> None:
    tracker = OwnershipTracker(verifier)
    nbl, nb1, _nb2 = two_nb_nbl("host")
    tracker.hand_off(nbl, frm="host", to="target", rule_id="R-NBL-02", op="send")
    tracker.forget(nbl)
    nb1.next = None
    assert tracker.history(nbl) == []
    assert tracker.verify_structure(nbl, "R-NBL-03", "complete")
