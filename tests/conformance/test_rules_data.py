"""The data-path scenarios of `chimney verify` (conformance/scenarios_data.py): the built-in target passes every
rule they check, and each deliberately broken target of examples/broken_data_targets.py is caught with exactly
the rule id it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimney.conformance import VerifyReport, load_target, run_battery
from chimney.conformance.runner import FAIL, PASS
from chimney.conformance.scenarios_data import DATA_SCENARIOS
from chimney.ndis.rules import rule

ROOT = Path(__file__).resolve().parents[2]
BROKEN_FILE = ROOT / "examples" / "broken_data_targets.py"
DATA = [s.name for s in DATA_SCENARIOS]

# Every rule the data scenarios decide, with the scenario that must have checked it on the built-in target.
RULES: dict[str, str] = {
    "R-RECV-04": "recv-push-modes", "R-RECV-05": "recv-push-modes", "R-RECV-06": "recv-push-modes",
    "R-RECV-07": "recv-push-modes", "R-RECV-08": "recv-push-modes", "R-RECV-09": "recv-push-modes",
    "R-RECV-10": "recv-push-modes", "R-RECV-12": "recv-push-modes", "R-RECV-19": "recv-push-modes",
    "R-RECV-13": "recv-reentrant", "R-RECV-14": "recv-reentrant", "R-RECV-17": "recv-reentrant",
    "R-RECV-18": "recv-reentrant",
    "R-DISC-08": "disconnect-graceful-sends", "R-DISC-10": "disconnect-graceful-sends",
    "R-DISC-11": "disconnect-graceful-sends", "R-DISC-12": "disconnect-graceful-sends",
    "R-DISC-13": "disconnect-graceful-sends", "R-DISC-14": "disconnect-graceful-sends",
    "R-DISC-04": "disconnect-abortive-sends", "R-DISC-05": "disconnect-abortive-sends",
    "R-DISC-06": "disconnect-abortive-sends",
    "R-FWD-04": "forward-ip-options", "R-FWD-05": "forward-ip-options", "R-RX-05": "forward-ip-options",
    "R-RX-03": "rx-special", "R-RX-04": "rx-special", "R-RX-08": "rx-special", "R-RX-09": "rx-special",
    "R-RX-11": "rx-special", "R-SEC-02": "rx-special", "R-SEC-04": "rx-special", "R-RFC-01": "rx-special",
    "R-RFC-02": "rx-special",
    "R-VLAN-01": "vlan-tagged", "R-VLAN-06": "vlan-tagged",
    "R-OFF-15": "offload-data-in-flight", "R-OFF-18": "offload-data-in-flight", "R-OFF-19": "offload-data-in-flight",
    "R-SEND-15": "send-path", "R-SEND-16": "send-path", "R-TRM-17": "send-path",
    "R-RX-07": "rx-urgent",
}


@pytest.fixture(scope="module")
def builtin_data() -> VerifyReport:
    return run_battery(load_target(None), seed=1, only=DATA, quick=True)


def test_builtin_target_passes_every_data_scenario(builtin_data: VerifyReport) -> None:
    r = builtin_data
    assert [s.name for s in r.scenarios] == DATA
    assert r.functional_failures == [], [(s.name, s.failures) for s in r.functional_failures]
    assert r.failed_rules == [], [(x.id, x.first) for x in r.failed_rules]


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_builtin_target_is_checked_and_passes(builtin_data: VerifyReport, rule_id: str) -> None:
    """Each rule is checked (not 'not exercised') by the scenario that owns it, and holds."""
    assert builtin_data.rule(rule_id).result == PASS
    by_name = {s.name: s for s in builtin_data.scenarios}
    assert rule_id in by_name[RULES[rule_id]].checked


# Rules a broken target may break besides its own, only where the damage cannot be kept apart from it.
CONSEQUENTIAL: dict[str, frozenset[str]] = {
    # A completion held back leaves its request outstanding at the boundary while the target goes on to
    # indicate the rest of the segment: NDIS sees an indication with a request posted.
    # The held-back bytes then reach the host after bytes that arrived later (R-RECV-19).
    "LateFullCompletion": frozenset({"R-IND-01", "R-RECV-19"}),
    # A disconnect completion that carries send NBLs is a chain, not the single NBL of R-DISC-01.
    "SendsCompletedWithDisconnect": frozenset({"R-DISC-01"}),
    # SUCCESS for sends whose bytes were never acknowledged is what R-SEND-05 forbids.
    "AbortSendsCompletedSuccess": frozenset({"R-SEND-05"}),
    # A connection let go after its FIN cannot go on receiving the peer's data (R-DISC-13).
    "FreesAfterFin": frozenset({"R-DISC-13"}),
    # Reporting one byte too many also reports 1 byte for a zero-byte request, which R-IND-10 forbids.
    "OffByOneBytesTransferred": frozenset({"R-IND-10"}),
    # A request never completed is still outstanding when the terminate completes (R-TRM-09) and still lent
    # out when the host's binding closes (R-NBL-02's leak report).
    "ZeroByteRequestsDropped": frozenset({"R-TRM-09", "R-NBL-02"}),
    # R-RX-04 and R-RX-08 are both about ICMP reaching the host; dropping all ICMP breaks both by design.
    "SwallowsIcmp": frozenset({"R-RX-08"}),
    # Taking every SYN as in order includes the out-of-window SYN of R-SEC-04, which then gets no ACK.
    "OutOfOrderSynUploads": frozenset({"R-SEC-04"}),
}


def _caught(cls: str, rule_id: str, scenario: str | None = None) -> VerifyReport:
    """Run the scenario owning `rule_id` against the broken target `cls`: `rule_id` fails, and no other
    MUST / MUST NOT rule does unless listed in CONSEQUENTIAL (with the reason there)."""
    r = run_battery(load_target(f"{BROKEN_FILE}:{cls}"), seed=1, only=[scenario or RULES[rule_id]], quick=True)
    failed = [(x.id, x.first) for x in r.failed_rules]
    assert r.rule(rule_id).result == FAIL, (cls, rule_id, failed)
    others = {x.id for x in r.failed_rules if x.id != rule_id and rule(x.id).level in ("MUST", "MUST NOT")}
    assert others <= CONSEQUENTIAL.get(cls, frozenset()), (cls, rule_id, failed)
    assert not r.ok
    return r


def test_r_recv_05_non_push_request_ignores_psh() -> None:
    _caught("PshCompletesNonPush", "R-RECV-05")


def test_r_recv_06_push_request_without_push_timer_never_completes() -> None:
    _caught("NoPushTimer", "R-RECV-06")


def test_r_recv_07_filled_request_completed_late() -> None:
    _caught("LateFullCompletion", "R-RECV-07")


def test_r_recv_08_push_timer_not_restarted_by_new_data() -> None:
    _caught("PushTimerNotRestarted", "R-RECV-08")


def test_r_recv_09_bytes_transferred_differs_from_bytes_placed() -> None:
    _caught("OffByOneBytesTransferred", "R-RECV-09")


def test_r_recv_12_zero_byte_request_never_completed() -> None:
    _caught("ZeroByteRequestsDropped", "R-RECV-12")


def test_r_recv_18_segment_arriving_during_an_indication_is_dropped() -> None:
    _caught("DropsSegmentsWhileBusy", "R-RECV-18")


def test_r_recv_17_request_posted_after_a_refusal_waits_for_new_data() -> None:
    """R-RECV-17: the pass a post starts must fill the request from the buffered bytes (§3.6 B.2)."""
    _caught("LazyPostAfterRefusal", "R-RECV-17")


def test_r_recv_19_indication_of_several_segments_out_of_order() -> None:
    _caught("ReversedIndicationMdls", "R-RECV-19", "recv-reentrant")


def test_r_disc_11_send_nbls_returned_by_the_disconnect_completion() -> None:
    """R-DISC-11: the old check compared only the disconnect request's own NBL with the sends."""
    _caught("SendsCompletedWithDisconnect", "R-DISC-11")


def test_r_disc_04_sends_outstanding_at_an_abort_completed_with_success() -> None:
    """R-DISC-04: the old check accepted SUCCESS for sends outstanding at the abortive disconnect."""
    _caught("AbortSendsCompletedSuccess", "R-DISC-04")


def test_r_off_19_later_sends_before_the_rest_of_send_data_head() -> None:
    _caught("HeadTailAfterLaterSends", "R-OFF-19")


def test_r_vlan_06_priority_advertised_but_not_inserted() -> None:
    """R-VLAN-06: the old check accepted all-zero priorities whatever the target reported."""
    _caught("PriorityDroppedThoughAdvertised", "R-VLAN-06")


def test_r_disc_08_graceful_disconnect_completed_before_its_sends() -> None:
    _caught("GracefulCompletesEarly", "R-DISC-08")


def test_r_disc_12_graceful_disconnect_failed_on_a_healthy_connection() -> None:
    _caught("GracefulDisconnectFailed", "R-DISC-12")


def test_r_disc_13_target_stops_receiving_after_its_fin() -> None:
    _caught("StopsReceivingAfterFin", "R-DISC-13")


def test_r_disc_04_abortive_disconnect_completed_before_the_sends_were_aborted() -> None:
    _caught("AbortCompletesBeforeSends", "R-DISC-04")


def test_r_disc_05_target_acknowledges_data_after_an_abortive_disconnect() -> None:
    _caught("AbortKeepsReceiving", "R-DISC-05")


def test_r_fwd_04_forwarded_segment_completed_with_failure() -> None:
    _caught("ForwardStatusFailure", "R-FWD-04")


def test_r_fwd_05_forwarded_segment_not_processed() -> None:
    _caught("ForwardIgnored", "R-FWD-05")


def test_r_rx_05_segment_with_ip_options_processed_by_the_target() -> None:
    _caught("IpOptionsProcessed", "R-RX-05")


def test_r_rx_04_and_r_rx_08_icmp_swallowed_by_the_target() -> None:
    r = _caught("SwallowsIcmp", "R-RX-04")
    assert r.rule("R-RX-08").result == FAIL


def test_r_rx_11_corrupted_tcp_header_dropped_without_counting() -> None:
    _caught("CorruptHeaderDroppedUncounted", "R-RX-11")


def test_r_rx_09_tagged_frame_dropped_with_neighbor_vlan_0() -> None:
    _caught("TaggedFramesDropped", "R-RX-09")


def test_r_vlan_01_target_without_any_non_zero_vlan() -> None:
    _caught("NoVlanSupport", "R-VLAN-01")


def test_r_vlan_06_user_priority_neither_inserted_nor_ignored() -> None:
    _caught("WrongUserPriority", "R-VLAN-06")


def test_r_rfc_02_segment_with_sack_option_dropped() -> None:
    _caught("SackSegmentsDropped", "R-RFC-02")


def test_r_rfc_01_out_of_order_segments_not_queued() -> None:
    _caught("NoOutOfOrderQueue", "R-RFC-01")


def test_r_sec_02_rst_at_rcv_nxt_ignored() -> None:
    _caught("RstAtRcvNxtIgnored", "R-SEC-02")


def test_r_sec_04_syn_outside_the_window_gets_no_ack() -> None:
    _caught("SilentOutOfWindowSyn", "R-SEC-04")


def test_r_rx_03_out_of_order_syn_taken_as_in_order() -> None:
    _caught("OutOfOrderSynUploads", "R-RX-03")


def test_r_off_15_buffered_data_not_delivered() -> None:
    _caught("DropsBufferedData", "R-OFF-15")


def test_r_trm_17_pending_ack_dropped_at_terminate() -> None:
    _caught("TerminateDropsPendingAck", "R-TRM-17")


def test_r_send_15_data_sent_on_an_invalidated_path() -> None:
    _caught("SendsOnInvalidPath", "R-SEND-15")


def test_r_disc_06_abortive_disconnect_success_without_an_rst() -> None:
    _caught("AbortWithoutRst", "R-DISC-06")


def test_r_send_16_nagle_flag_ignored() -> None:
    _caught("NagleIgnored", "R-SEND-16")


def test_r_off_18_new_data_before_the_bytes_to_retransmit() -> None:
    _caught("NewDataBeforeRetransmission", "R-OFF-18")


def test_r_recv_04_non_push_requests_not_supported() -> None:
    _caught("NonPushRequestsRejected", "R-RECV-04")


def test_r_recv_10_completed_bytes_never_leave_the_receive_window() -> None:
    _caught("WindowKeptAfterCompletion", "R-RECV-10")


def test_r_disc_10_graceful_disconnect_byte_count_wrong() -> None:
    _caught("DisconnectBytesMisreported", "R-DISC-10")


def test_r_disc_14_connection_let_go_after_its_fin() -> None:
    _caught("FreesAfterFin", "R-DISC-14")


def test_r_rx_07_urgent_data_processed_inline() -> None:
    _caught("UrgentDataInline", "R-RX-07")


def test_r_vlan_06_target_without_802_1p_passes_with_priority_zero() -> None:
    """R-VLAN-06: a target that reports no 802.1p support in OID_GEN_MAC_OPTIONS and sends priority 0 is
    right; the same target reporting support would be wrong (test above)."""
    from chimney.target import OffloadTarget

    class No8021p(OffloadTarget):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.limits.support_8021p = False

    r = run_battery(No8021p, seed=1, only=["vlan-tagged"], quick=True)
    assert r.rule("R-VLAN-06").result == PASS, [(x.id, x.first) for x in r.failed_rules]
    assert r.ok
