"""The cheap checked NBL path still catches every fault: once a chain has made one round trip its NBLs
hold owner tokens and later crossings take the one-identity-test loop, so each fault is injected on a
*later* round trip (R-NBL-01/02/03), plus the history and coverage bookkeeping that path shares per chain."""

from __future__ import annotations

import pytest
from test_core_doubles import Stack, chain, make_nbls, nbls_of

from chimney.ndis.buffers import NBL_STATUS_UNSET, Mdl, NetBuffer, NetBufferList
from chimney.ndis.ownership import (
    HISTORY_LEN,
    MAX_HISTORY_DEPTH,
    OwnershipTracker,
    OwnerToken,
    history_hops,
)
from chimney.ndis.verifier import ContractViolation, Mode, Verifier


def round_trip(s: Stack, nbls: list[NetBufferList]) -> None:
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    s.mp.complete_sends(s.adapter)


def warmed(mode: Mode = Mode.STRICT, n: int = 5) -> tuple[Stack, list[NetBufferList]]:
    """A protocol -> IM -> miniport stack whose chain already made one clean round trip."""
    s = Stack(1, mode=mode)
    nbls = make_nbls("tcpip", n)
    round_trip(s, nbls)
    assert all(type(x.owner) is OwnerToken for x in nbls)  # the next crossings take the fast loop
    return s, nbls


def test_a_warm_chain_round_trips_cleanly_with_plain_equal_owners() -> None:
    s, nbls = warmed()
    round_trip(s, nbls)
    assert s.proto.send_completed == nbls + nbls
    assert all(x.owner == "tcpip" and x.source_handle is None for x in nbls)
    assert s.binding.sends_out == 0 and s.verifier.violations == []
    assert s.ndis.tracker.history(nbls[4])[-1] == ("NdisMSendNetBufferListsComplete", "im0", "tcpip")


def test_r_nbl_02_send_of_an_nbl_taken_from_a_warm_chain_raises_and_leaves_no_stamps() -> None:
    s, nbls = warmed()
    nbls[3].owner = "someone-else"  # a plain name written behind the tracker's back
    with pytest.raises(ContractViolation) as exc:
        s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    assert exc.value.rule_id == "R-NBL-02" and exc.value.objects == (nbls[3],)
    assert "(owner someone-else)" in str(exc.value)
    # The NBLs moved before the bad one keep no SourceHandle stamp and were not counted as sent.
    assert all(x.source_handle is None for x in nbls) and s.binding.sends_out == 0


def test_r_nbl_02_record_mode_reports_only_the_bad_nbl_of_a_warm_chain() -> None:
    s, nbls = warmed(Mode.RECORD)
    nbls[2].owner = "someone-else"
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    assert s.verifier.rule_ids() == ["R-NBL-02"] and s.verifier.violations[0].objects == (nbls[2],)
    assert all(x.owner == "nic" for x in nbls) and s.mp.sent[-5:] == nbls


def test_an_equal_plain_owner_written_directly_is_accepted_and_checked_the_slow_way() -> None:
    s, nbls = warmed()
    nbls[1].owner = "tcpip"  # same name, not the token: no fault, but no fast-path proof either
    round_trip(s, nbls)
    assert s.verifier.violations == [] and s.proto.send_completed[-5:] == nbls
    assert [h[0] for h in s.ndis.tracker.history(nbls[1])[-4:]] == [
        "NdisSendNetBufferLists",
        "NdisSendNetBufferLists",
        "NdisMSendNetBufferListsComplete",
        "NdisMSendNetBufferListsComplete",
    ]


def test_r_nbl_01_unset_status_in_the_middle_of_a_warm_chain() -> None:
    s, nbls = warmed(Mode.RECORD)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    for x in nbls:
        x.status = 0
    nbls[2].status = NBL_STATUS_UNSET
    s.mp.sent.clear()
    s.ndis.m_send_net_buffer_lists_complete(s.adapter, chain(*nbls), 0)
    # Reported where the miniport completes it and again where the IM passes it up unwritten.
    assert s.verifier.rule_ids() == ["R-NBL-01", "R-NBL-01"]
    assert all(v.objects == (nbls[2],) for v in s.verifier.violations)
    assert s.proto.send_completed[-5:] == nbls and s.binding.sends_out == 0


def test_r_nbl_01_unset_status_of_the_head_of_a_warm_chain_still_delivers_the_whole_chain() -> None:
    s, nbls = warmed(Mode.RECORD)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    for x in nbls[1:]:
        x.status = 0
    nbls[0].status = NBL_STATUS_UNSET
    s.mp.sent.clear()
    s.ndis.m_send_net_buffer_lists_complete(s.adapter, chain(*nbls), 0)
    assert s.verifier.rule_ids() == ["R-NBL-01", "R-NBL-01"]
    assert s.proto.send_completed[-5:] == nbls and s.binding.sends_out == 0


def test_bad_first_nbl_of_a_warm_chain_is_dropped_and_the_rest_delivered_in_order() -> None:
    """RECORD mode: the head breaks R-NBL-02 (the miniport gave it away before completing it), the
    rest go up as one chain that starts at the second NBL."""
    s, nbls = warmed(Mode.RECORD)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    for x in nbls:
        x.status = 0
    nbls[0].owner = "someone-else"
    s.mp.sent.clear()
    s.ndis.m_send_net_buffer_lists_complete(s.adapter, chain(*nbls), 0)
    assert s.verifier.rule_ids() == ["R-NBL-02"] and s.verifier.violations[0].objects == (nbls[0],)
    assert s.proto.send_completed[-4:] == nbls[1:] and nbls[0] not in s.proto.send_completed[-4:]
    assert all(x.owner == "tcpip" for x in nbls[1:])


def test_r_nbl_02_completion_with_a_tampered_source_handle_on_a_warm_chain() -> None:
    s, nbls = warmed()
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    nbls[3].source_handle = None  # the miniport scribbled on an NDIS-private field
    with pytest.raises(ContractViolation) as exc:
        s.mp.complete_sends(s.adapter)
    assert exc.value.rule_id == "R-NBL-02" and "SourceHandle None" in str(exc.value)


def test_r_nbl_02_miniport_completes_an_nbl_of_a_warm_chain_twice() -> None:
    s, nbls = warmed()
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    s.mp.complete_sends(s.adapter, list(nbls))
    with pytest.raises(ContractViolation) as exc:
        s.mp.complete_sends(s.adapter, [nbls[0]])
    assert exc.value.rule_id == "R-NBL-02"


def test_r_nbl_03_nb_swapped_while_a_warm_chain_is_away() -> None:
    s, nbls = warmed(Mode.RECORD)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    nbls[2].first_net_buffer = NetBuffer(Mdl(bytes(10)), 0, 10)
    s.mp.complete_sends(s.adapter)
    assert s.verifier.rule_ids() == ["R-NBL-03"] and s.verifier.violations[0].objects == (nbls[2],)
    assert "was [NB0], now [foreign" in s.verifier.violations[0].message


def test_r_nbl_03_nb_dropped_from_a_two_nb_nbl_of_a_warm_chain() -> None:
    s = Stack(1, mode=Mode.RECORD)
    nbls = make_nbls("tcpip", 3)
    extra = NetBuffer(Mdl(bytes(5)), 0, 5)
    assert nbls[1].first_net_buffer is not None
    nbls[1].first_net_buffer.next = extra
    round_trip(s, nbls)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    nbls[1].first_net_buffer.next = None
    s.mp.complete_sends(s.adapter)
    assert s.verifier.rule_ids() == ["R-NBL-03"]
    assert "was [NB0, NB1], now [NB0]" in s.verifier.violations[0].message


def test_history_stays_bounded_and_in_order_over_many_round_trips() -> None:
    s, nbls = warmed()
    for _ in range(3 * MAX_HISTORY_DEPTH):
        round_trip(s, nbls)
    for x in nbls:
        assert x.history is not None and x.history[2] <= MAX_HISTORY_DEPTH
        hops = s.ndis.tracker.history(x)
        assert len(hops) == HISTORY_LEN
        assert [(f, t) for _, f, t in hops[-4:]] == [("tcpip", "im0"), ("im0", "nic"), ("nic", "im0"), ("im0", "tcpip")]


def test_coverage_is_counted_per_chain_crossing_and_folded_into_checks() -> None:
    s, _nbls = warmed()
    checks = s.verifier.checks
    # One round trip through one IM: two sends and two delivered completions.
    assert checks["R-NBL-02"] == 4 and checks["R-NBL-01"] == 2 and checks["R-NBL-03"] == 1
    assert sum(s.verifier.hot) == 0  # folded on read


def test_transfer_keeps_each_nbls_own_history_when_chains_are_joined() -> None:
    tracker = OwnershipTracker(Verifier(Mode.STRICT))
    a = make_nbls("host", 2)
    b = make_nbls("host", 2)
    tracker.transfer(chain(*a), frm="host", to="target", rule_id="R-NBL-02", op="send-a")
    tracker.transfer(chain(*a), frm="target", to="host", rule_id="R-NBL-02", op="back-a")
    tracker.transfer(chain(*b), frm="host", to="target", rule_id="R-NBL-02", op="send-b")
    tracker.transfer(chain(*b), frm="target", to="host", rule_id="R-NBL-02", op="back-b")
    joined = chain(a[0], b[0], a[1], b[1])
    tracker.transfer(joined, frm="host", to="target", rule_id="R-NBL-02", op="send-all")
    assert [h[0] for h in tracker.history(b[1])] == ["send-b", "back-b", "send-all"]
    assert [h[0] for h in tracker.history(a[1])] == ["send-a", "back-a", "send-all"]
    assert nbls_of(joined) == [a[0], b[0], a[1], b[1]]
    for x in a + b:
        tracker.register(x, x.owner)
    assert tracker.by_owner() == {"target": 4}
    assert all(type(k) is str for k in tracker.by_owner())  # plain names, not the tokens


def test_history_hops_of_a_fresh_nbl_is_empty() -> None:
    assert history_hops(None) == [] and OwnershipTracker.history(NetBufferList()) == []
