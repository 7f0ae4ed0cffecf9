"""Verifier coverage table for the TREE/OFF/TRM/SEND/IND/EVT/TMR/TS areas (plus R-QRY-08): for each rule id,
where the verifier enforces it at the NDIS boundary, which test shows it, or why it cannot be checked there.

Used by the `chimney rules` command through `coverage_report()`; `docs/verifier-coverage.md` is the prose.
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.rules import catalogue

AREAS = ("TREE", "OFF", "TRM", "SEND", "IND", "EVT", "TMR", "TS")

CHIMNEY = "chimney"  # boundary check in ChimneyChecks.<method>
CORE = "core"  # boundary check in BoundaryChecks.<method> (chimney.ndis.core)
TEST = "test"  # shown by a test only (holds by construction of the model)
UNCHECKABLE = "uncheckable"  # not mechanically checkable at the boundary

_OFF = "tests/ndis/test_checks_chimney_off.py"
_TRM = "tests/ndis/test_checks_chimney_trm.py"
_SEND = "tests/ndis/test_checks_chimney_send.py"
_IND = "tests/ndis/test_checks_chimney_ind_evt.py"
_IM = "tests/ndis/test_checks_chimney_im.py"
_CORE_OFF = "tests/ndis/test_core_offload.py"
_SEC = "tests/conformance/test_rules_sec.py"
# A SHOULD the built-in target deliberately does not follow (or follows in part); the test shows the behaviour chosen.
_DEVIATION = "documented deviation: "

_WIRE = "needs observation of segments on the wire, not of NDIS calls"
_INTERNAL = "internal target state/timing that never crosses the NDIS boundary"
# Not at the boundary, but `chimney verify` observes it on the wire or through queries (conformance/scenarios*.py).
_VERIFY = " (at the NDIS boundary); `chimney verify` checks it in conformance scenario "

# rule id -> (kind, where / reason, tests)
COVERAGE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # ---------------------------------------------------------------- TREE
    "R-TREE-01": (CORE, "BoundaryChecks.state_op", (_CORE_OFF,)),
    "R-TREE-02": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-03": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-04": (
        CHIMNEY,
        "ChimneyChecks._check_completed_trees (writes to a completed tree's Status/NetBufferListChain are caught at "
        "the next state operation or completion; reads after completion are invisible)",
        (f"{_OFF}::test_r_tree_04_target_writes_a_tree_after_completing_it",),
    ),
    "R-TREE-05": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-06": (CHIMNEY, "ChimneyChecks._aggregation", (f"{_OFF}::test_r_tree_06_linker_with_all_dependents_failed_reports_partial",)),
    "R-TREE-07": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-08": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-09": (
        CHIMNEY,
        "ChimneyChecks._same_context (at every I/O, state operation and terminate completion on the object)",
        (f"{_OFF}::test_r_tree_09_context_reference_changed_while_offloaded",),
    ),
    "R-TREE-10": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-11": (
        UNCHECKABLE,
        "what the target relies on in Scratch is internal; the boundary only shows who owns the block list "
        "(writes after completion are R-TREE-04)",
        (),
    ),
    "R-TREE-12": (CHIMNEY, "ChimneyChecks._initiate_results", (f"{_OFF}::test_r_tree_12_two_objects_share_one_context",)),
    "R-TREE-13": (
        UNCHECKABLE,
        "the context area is an opaque PVOID; its use is checked indirectly by R-TREE-14 and R-TRM-23",
        (),
    ),
    "R-TREE-14": (
        CHIMNEY,
        "BoundaryChecks (handle type, in Ndis.tcp_offload_*_handler) + ChimneyChecks.indication / tcp_event_pre "
        "(the handle must name an offloaded TCP object)",
        (f"{_IND}::test_r_tree_14_receive_indication_with_a_path_objects_handle",),
    ),
    "R-TREE-15": (CORE, "BoundaryChecks.state_complete", (_CORE_OFF,)),
    "R-TREE-16": (
        CHIMNEY,
        "ChimneyChecks._state_types (trailing structures match Header.Type in initiate/terminate/query/update trees; "
        "the target's interpretation itself is internal)",
        (
            f"{_OFF}::test_r_tree_16_trailing_state_out_of_order",
            f"{_OFF}::test_placeholder_and_cached_struct_of_another_layer_is_r_tree_16",
        ),
    ),
    "R-TREE-17": (CHIMNEY, "ChimneyChecks.state_op / state_complete", (f"{_OFF}::test_r_tree_17_invalidate_tree_with_state_structures",)),
    "R-TREE-18": (UNCHECKABLE, "target memory layout for future path indications; no NDIS call uses it", ()),
    # ---------------------------------------------------------------- OFF
    "R-OFF-01": (
        CHIMNEY,
        "ChimneyChecks.state_complete (completion inside the MiniportInitiateOffload call window)",
        (f"{_OFF}::test_r_off_01_initiate_completed_inside_miniport_initiate_offload",),
    ),
    "R-OFF-02": (UNCHECKABLE, "traversal order is internal; its visible results are checked as R-OFF-03/04/05", ()),
    "R-OFF-03": (CHIMNEY, "ChimneyChecks._aggregation", (f"{_OFF}::test_r_off_03_dependents_of_a_failed_node_not_failure",)),
    "R-OFF-04": (CHIMNEY, "ChimneyChecks._aggregation", (f"{_OFF}::test_r_off_04_traversal_goes_on_after_the_root_failed",)),
    "R-OFF-05": (CHIMNEY, "ChimneyChecks._aggregation", (f"{_OFF}::test_r_off_05_partial_success_reported_as_success",)),
    "R-OFF-06": (
        UNCHECKABLE,
        "whether a failure cause is 'known' is internal to the target; the allowed code set is core R-TREE-02",
        (),
    ),
    "R-OFF-07": (UNCHECKABLE, "depends on the target's source-MAC capacity, which NDIS cannot see", ()),
    "R-OFF-08": (UNCHECKABLE, _WIRE, ()),
    "R-OFF-09": (
        CHIMNEY,
        "ChimneyChecks._indication_window (OFFLOADING phase, and while NdisMInitiateOffloadComplete has not returned)",
        (
            f"{_OFF}::test_r_off_09_indication_before_initiate_complete_returned",
            f"{_OFF}::test_r_off_09_indication_from_inside_the_initiate_completion",
        ),
    ),
    "R-OFF-10": (
        UNCHECKABLE,
        "MiniportInitiateOffload returns nothing; accepting a concurrent initiate is only visible as its eventual "
        "completion (liveness)",
        (),
    ),
    "R-OFF-11": (
        CHIMNEY,
        "ChimneyChecks.state_op / _initiate / io_request (HOST-INVARIANT)",
        (
            f"{_OFF}::test_r_off_11_send_on_a_connection_still_offloading",
            f"{_OFF}::test_r_off_11_same_object_offloaded_twice_concurrently",
            f"{_OFF}::test_r_off_11_terminate_of_an_object_still_offloading",
        ),
    ),
    "R-OFF-12": (
        CHIMNEY,
        "ChimneyChecks._indication_window (advisory by default: counted and listed in the advisories list; "
        "fails when removed from ADVISORY)",
        (
            f"{_OFF}::test_r_off_12_event_while_another_initiate_is_in_progress",
            f"{_OFF}::test_r_off_12_is_advisory_by_default",
        ),
    ),
    "R-OFF-13": (UNCHECKABLE, "copying BufferedData is internal; ownership of those NBLs is core R-NBL-02", ()),
    "R-OFF-14": (UNCHECKABLE, "buffer allocation failure is internal (FAILURE is indistinguishable from other causes)", ()),
    "R-OFF-15": (UNCHECKABLE, "needs the received byte stream (payload order), not the NDIS calls" + _VERIFY
                 + "offload-data-in-flight (BufferedData delivered before later wire data)", ()),
    "R-OFF-16": (UNCHECKABLE, "BufferedData carries bytes only (no urgent pointer or URG mark travels with it), "
                 "so urgent bytes inside it are indistinguishable from normal data for target and verifier", ()),
    "R-OFF-17": (UNCHECKABLE, _WIRE, ()),
    "R-OFF-18": (UNCHECKABLE, _WIRE + _VERIFY + "offload-data-in-flight (SndNxt..SndMax sent first)", ()),
    "R-OFF-19": (UNCHECKABLE, _WIRE + _VERIFY + "offload-data-in-flight (then the data beyond SndMax)", ()),
    "R-OFF-20": (
        CHIMNEY,
        "ChimneyChecks._initiate_tcp (SndNxt/SndMax offsets must fall inside NetBufferListChain; the target's "
        "mapping itself is internal)",
        (f"{_OFF}::test_r_off_20_snd_max_beyond_the_handed_over_data",),
    ),
    "R-OFF-21": (CHIMNEY, "ChimneyChecks._initiate_tcp", (f"{_OFF}::test_r_off_21_send_data_tail_not_the_last_nbl",)),
    "R-OFF-22": (
        CHIMNEY,
        "ChimneyChecks._returned_sends ('eventually' is decided at terminate: completed or returned)",
        (
            f"{_TRM}::test_r_off_22_offload_send_data_lost_at_terminate",
            f"{_SEND}::test_initiate_send_data_completes_through_ndis_tcp_offload_send_complete",
        ),
    ),
    "R-OFF-23": (
        CHIMNEY,
        "ChimneyChecks._initiate_results / _io_complete",
        (
            f"{_OFF}::test_r_off_23_failed_offload_send_data_completed_by_the_target",
            f"{_OFF}::test_r_off_23_failed_offload_send_data_status_written",
        ),
    ),
    "R-OFF-24": (CHIMNEY, "ChimneyChecks._initiate_tcp (HOST-INVARIANT)", (f"{_OFF}::test_r_off_24_host_offloads_a_time_wait_connection",)),
    "R-OFF-25": (UNCHECKABLE, "descaling is internal, visible only in retransmission timing on the wire" + _VERIFY
                 + "rtt-descaling / ticks-10 / ticks-100 (RTO after a loss vs the offered SRtt/RttVar)", ()),
    "R-OFF-26": (UNCHECKABLE, "accepting an initiate is not observable (no return value); see R-OFF-10", ()),
    "R-OFF-27": (UNCHECKABLE, "a resource shortage after offload is internal to the target", ()),
    "R-OFF-28": (
        CHIMNEY,
        "ChimneyChecks._io_complete (receive/disconnect/forward posted after a mandatory TcpIndicateRetrieve; "
        "advisory by default)",
        (f"{_IND}::test_r_off_28_receive_posted_after_mandatory_retrieve_filled_normally",),
    ),
    "R-OFF-29": (UNCHECKABLE, "queuing while paused is internal; completions stay asynchronous either way", ()),
    # ---------------------------------------------------------------- TRM
    "R-TRM-01": (
        CORE,
        "BoundaryChecks.state_complete (R-TREE-03: no terminate completion without a host NdisTerminateOffload); "
        "requests are checked as R-TRM-02",
        (_CORE_OFF,),
    ),
    "R-TRM-02": (CHIMNEY, "ChimneyChecks.tcp_event_pre", (f"{_TRM}::test_r_trm_02_and_r_trm_03_retrieve_names_one_tcp_connection",)),
    "R-TRM-03": (
        UNCHECKABLE,
        "holds by construction: NdisTcpOffloadEventHandler carries exactly one NdisOffloadHandle and repetition is "
        "allowed; nothing further to check",
        (),
    ),
    "R-TRM-04": (
        CHIMNEY,
        "ChimneyChecks.state_op (HOST-INVARIANT, dependents tracked per object)",
        (
            f"{_TRM}::test_r_trm_04_path_terminated_while_its_connection_stays_offloaded",
            f"{_TRM}::test_terminating_neighbor_path_and_tcp_in_one_batch_is_fine",
        ),
    ),
    "R-TRM-05": (
        CHIMNEY,
        "ChimneyChecks.state_op (HOST-INVARIANT)",
        (
            f"{_TRM}::test_r_trm_05_terminate_while_a_query_is_pending",
            f"{_TRM}::test_r_trm_05_terminate_from_inside_a_receive_post_call",
        ),
    ),
    "R-TRM-06": (CHIMNEY, "ChimneyChecks.state_complete", (f"{_TRM}::test_r_trm_06_terminate_completed_synchronously",)),
    "R-TRM-07": (UNCHECKABLE, "NDIS sees only that the values exist, not whether they are current" + _VERIFY
                 + "rtt-descaling (RcvNxt/SndUna/SndMax of a quiet connection vs the wire)", ()),
    "R-TRM-08": (
        CORE,
        "BoundaryChecks.state_complete (reported as R-TREE-15: terminate node Status limited to SUCCESS/FAILURE)",
        (f"{_TRM}::test_r_trm_08_terminate_node_status_other_than_success_or_failure",),
    ),
    "R-TRM-09": (CHIMNEY, "ChimneyChecks._terminate_object", (f"{_TRM}::test_r_trm_09_receive_request_outstanding_at_terminate_completion",)),
    "R-TRM-10": (
        CHIMNEY,
        "ChimneyChecks._terminate_object (receive indications and TCP events; status/offload-event indications "
        "are not attributed to objects)",
        (f"{_TRM}::test_r_trm_10_terminate_completed_from_inside_an_indication",),
    ),
    "R-TRM-11": (CHIMNEY, "ChimneyChecks._returned_sends", (f"{_TRM}::test_r_trm_11_outstanding_send_neither_completed_nor_returned",)),
    "R-TRM-12": (
        CHIMNEY,
        "ChimneyChecks._returned_sends",
        (
            f"{_TRM}::test_r_trm_12_returned_send_nbls_reordered",
            f"{_TRM}::test_r_trm_12_returned_chain_holds_a_target_nbl",
            f"{_IM}::test_reordered_return_is_caught_at_the_target_edge_below_the_im",
        ),
    ),
    "R-TRM-13": (
        CHIMNEY,
        "ChimneyChecks._returned_sends",
        (f"{_TRM}::test_r_trm_13_snd_max_beyond_returned_data", f"{_TRM}::test_r_trm_13_send_data_head_not_the_chain"),
    ),
    "R-TRM-14": (CHIMNEY, "ChimneyChecks._returned_sends", (f"{_TRM}::test_r_trm_14_send_data_head_set_although_nothing_returned",)),
    "R-TRM-15": (UNCHECKABLE, "which received bytes were acknowledged is only visible on the wire", ()),
    "R-TRM-16": (UNCHECKABLE, "target memory accesses between crossings are invisible; ownership is core R-NBL-02", ()),
    "R-TRM-17": (UNCHECKABLE, _WIRE + " (pending ACKs) and internal timer state" + _VERIFY + "send-path", ()),
    "R-TRM-18": (UNCHECKABLE, _INTERNAL + " (push/SWS timers); a timer left running shows only as a completion "
                 "or segment after the terminate, which is R-TRM-23 / R-TRM-19", ()),
    "R-TRM-19": (UNCHECKABLE, _WIRE, ()),
    "R-TRM-20": (UNCHECKABLE, _WIRE, ()),
    "R-TRM-21": (
        CHIMNEY,
        "ChimneyChecks._send_done (sends posted after a mandatory TcpIndicateRetrieve; an unannounced preparation "
        "is invisible)",
        (
            f"{_TRM}::test_r_trm_21_send_after_mandatory_retrieve_completed_success",
            f"{_TRM}::test_sends_after_mandatory_retrieve_completed_upload_in_progress_are_fine",
        ),
    ),
    "R-TRM-22": (CHIMNEY, "ChimneyChecks.io_request (HOST-INVARIANT)", (f"{_TRM}::test_r_trm_22_send_after_ndis_terminate_offload",)),
    "R-TRM-23": (
        CHIMNEY,
        "ChimneyChecks._indication_window / _io_complete",
        (
            f"{_TRM}::test_r_trm_23_event_on_a_terminated_connection",
            f"{_TRM}::test_r_trm_23_completion_of_a_send_returned_at_terminate",
        ),
    ),
    "R-TRM-24": (
        UNCHECKABLE,
        "the exact NicTime + NicDelta is internal; its monotonic part is enforced as R-TS-04 in "
        "ChimneyChecks._returned_sends",
        (),
    ),
    "R-TRM-25": (
        CHIMNEY,
        "ChimneyChecks._timers (-1 when nothing is outstanding or keepalive is off)",
        (
            f"{_TRM}::test_r_trm_25_idle_retransmit_timer_not_reported_as_minus_one",
            f"{_TRM}::test_r_trm_25_keepalive_off_but_keepalive_timer_reported",
        ),
    ),
    "R-TRM-26": (UNCHECKABLE, "compliance means the terminate eventually completes (liveness, not a crossing)", ()),
    "R-TRM-27": (
        UNCHECKABLE,
        "hardware corruption is internal; the visible steps are checked as R-TRM-06/09 and R-EVT-03" + _VERIFY
        + "hardware-failure (the whole sequence, through the target's hardware_failure() hook)",
        (),
    ),
    # ---------------------------------------------------------------- SEND
    "R-SEND-01": (CORE, "BoundaryChecks.io_return", (_CORE_OFF,)),
    "R-SEND-02": (CORE, "BoundaryChecks.io_return (reported as R-SEND-01: PENDING is the only acceptance)", (_CORE_OFF,)),
    "R-SEND-03": (
        CHIMNEY,
        "ChimneyChecks._send_done (completion order of acknowledged data per connection, the boundary proxy for wire order)",
        (
            f"{_SEND}::test_r_send_03_later_send_acknowledged_before_an_earlier_one",
            f"{_SEND}::test_r_send_03_reordered_within_one_completion_list",
        ),
    ),
    "R-SEND-04": (
        CHIMNEY,
        "ChimneyChecks._send_done",
        (f"{_SEND}::test_r_send_04_bytes_transferred_missing", f"{_SEND}::test_r_send_04_data_start_not_advanced"),
    ),
    "R-SEND-05": (CHIMNEY, "ChimneyChecks._send_done", (f"{_SEND}::test_r_send_05_success_for_a_partly_acknowledged_nbl",)),
    "R-SEND-06": (CHIMNEY, "ChimneyChecks._send_done", (f"{_SEND}::test_r_send_06_data_acknowledged_for_an_nbl_after_the_first_failure",)),
    "R-SEND-07": (CHIMNEY, "ChimneyChecks._send_done", (f"{_SEND}::test_r_send_07_two_partial_completions_in_one_list",)),
    "R-SEND-08": (
        CHIMNEY,
        "ChimneyChecks._send_done (UPLOAD_IN_PROGRESS while terminating/upload-all, REQUEST_ABORTED after an abort)",
        (
            f"{_SEND}::test_r_send_08_failed_send_during_terminate_not_upload_in_progress",
            f"{_SEND}::test_r_send_08_failed_send_after_abort_not_request_aborted",
        ),
    ),
    "R-SEND-09": (UNCHECKABLE, "locking of internal queues", ()),
    "R-SEND-10": (UNCHECKABLE, _WIRE, ()),
    "R-SEND-11": (
        CHIMNEY,
        "ChimneyChecks.io_request (re-entrant send on one connection; urgent data is not visible in an NBL)",
        (
            f"{_SEND}::test_r_send_11_send_issued_while_another_send_is_inside_the_target",
            f"{_SEND}::test_sequential_sends_from_one_thread_are_not_concurrent",
        ),
    ),
    "R-SEND-12": (UNCHECKABLE, _WIRE, ()),
    "R-SEND-13": (UNCHECKABLE, _WIRE, ()),
    "R-SEND-14": (CHIMNEY, "ChimneyChecks._send_done", (f"{_SEND}::test_r_send_14_chimney_send_completed_with_paused",)),
    "R-SEND-15": (UNCHECKABLE, _WIRE + " (a completion may cover data sent before the invalidation)" + _VERIFY
                  + "send-path", ()),
    "R-SEND-16": (UNCHECKABLE, _WIRE + _VERIFY + "send-path (small sends held while data is unacknowledged)", ()),
    "R-SEND-17": (UNCHECKABLE, _WIRE, ()),
    # ---------------------------------------------------------------- IND
    "R-IND-01": (CHIMNEY, "ChimneyChecks.indication", (f"{_IND}::test_r_ind_01_indication_while_a_receive_request_is_posted",)),
    "R-IND-02": (CORE, "BoundaryChecks.receive_indication", (_CORE_OFF,)),
    "R-IND-03": (CORE, "BoundaryChecks.receive_indication", (_CORE_OFF,)),
    "R-IND-04": (CORE, "BoundaryChecks.receive_indication_result", (_CORE_OFF,)),
    "R-IND-05": (CORE, "BoundaryChecks.receive_indication_result", (_CORE_OFF,)),
    "R-IND-06": (CORE, "BoundaryChecks.receive_indication_result", (_CORE_OFF,)),
    "R-IND-07": (CORE, "BoundaryChecks.receive_return", (_CORE_OFF,)),
    "R-IND-08": (
        CHIMNEY,
        "ChimneyChecks.indication",
        (
            f"{_IND}::test_r_ind_08_reindication_after_refusal_without_a_posted_receive",
            f"{_IND}::test_r_ind_08_partial_acceptance_also_stops_indications",
        ),
    ),
    "R-IND-09": (CHIMNEY, "ChimneyChecks.indication", (f"{_IND}::test_r_ind_09_indication_before_filling_receives_posted_after_a_refusal",)),
    "R-IND-10": (
        CHIMNEY,
        "ChimneyChecks._io_complete (no data in a zero-byte request) + io_request (it re-enables indications); "
        "'still completed' is R-TRM-09",
        (
            f"{_IND}::test_r_ind_10_zero_byte_receive_completed_with_data",
            f"{_IND}::test_r_ind_10_zero_byte_receive_re_enables_indications",
        ),
    ),
    "R-IND-11": (UNCHECKABLE, "a preference: smaller indications are legal when less data is buffered", ()),
    "R-IND-12": (UNCHECKABLE, _WIRE, ()),
    "R-IND-13": (CORE, "BoundaryChecks.receive_return_status", (_CORE_OFF,)),
    "R-IND-14": (CORE, "BoundaryChecks.binding_quiet / halt", (_CORE_OFF,)),
    "R-IND-15": (
        CHIMNEY,
        "ChimneyChecks.indication + rx_indicate (NBL pool identity vs pools seen in NdisMIndicateReceiveNetBufferLists)",
        (f"{_IND}::test_r_ind_15_indication_nbl_from_the_normal_receive_pool",),
    ),
    # ---------------------------------------------------------------- EVT
    "R-EVT-01": (
        CHIMNEY,
        "ChimneyChecks.tcp_event_pre (refused data not drained, or an indication still in progress)",
        (
            f"{_IND}::test_r_evt_01_disconnect_indicated_while_refused_data_is_buffered",
            f"{_IND}::test_r_evt_01_disconnect_indicated_from_inside_the_data_indication",
        ),
    ),
    "R-EVT-02": (UNCHECKABLE, "the RST is only visible on the wire; the abort's consequences are R-EVT-03", ()),
    "R-EVT-03": (
        CHIMNEY,
        "ChimneyChecks.tcp_event_pre + _io_complete",
        (
            f"{_IND}::test_r_evt_03_outstanding_receive_not_aborted_after_abort_event",
            f"{_IND}::test_r_evt_03_outstanding_send_completed_success_after_abort_event",
        ),
    ),
    "R-EVT-04": (UNCHECKABLE, "freeing resources is internal (a later terminate succeeding is all the boundary shows)", ()),
    "R-EVT-05": (UNCHECKABLE, _WIRE, ()),
    "R-EVT-06": (CORE, "BoundaryChecks.tcp_event", (_CORE_OFF,)),
    "R-EVT-07": (
        UNCHECKABLE,
        "'stops normal processing' is internal; its observable parts are enforced as R-TRM-21 (sends) and "
        "R-OFF-28 (other I/O) after a mandatory retrieve",
        (),
    ),
    "R-EVT-08": (
        CHIMNEY,
        "ChimneyChecks.tcp_event_pre (§6.8: optional reasons only; half-closed from delegated state, graceful "
        "disconnects and disconnect events)",
        (
            f"{_IND}::test_r_evt_08_discretionary_retrieve_on_a_half_closed_connection",
            f"{_IND}::test_mandatory_retrieve_on_a_half_closed_connection_is_allowed",
        ),
    ),
    "R-EVT-09": (UNCHECKABLE, "the optimum backlog is the target's own estimate" + _VERIFY + "persist-state "
                 "(more data posted behind a zero window leaves it unchanged)", ()),
    "R-EVT-10": (
        CHIMNEY,
        "ChimneyChecks.tcp_event_pre (an event repeating the unchanged value; rate/size thresholds are policy)",
        (f"{_IND}::test_r_evt_10_send_backlog_event_without_a_change",),
    ),
    "R-EVT-11": (CHIMNEY, "ChimneyChecks.tcp_event_pre", (f"{_IND}::test_r_evt_11_disconnect_event_with_information",)),
    "R-EVT-12": (UNCHECKABLE, "the motive of an upload request cannot be observed", ()),
    # ---------------------------------------------------------------- TMR
    "R-TMR-01": (UNCHECKABLE, _INTERNAL + _VERIFY + "update-flags / rtt-descaling / persist-state (keepalive, "
                 "retransmit and persist timers by their segments)", ()),
    "R-TMR-02": (UNCHECKABLE, _INTERNAL + " (counter width)" + _VERIFY + "update-flags (a three-week KaTimeout "
                 "read back by a query)", ()),
    "R-TMR-03": (UNCHECKABLE, "entering TIME_WAIT is only visible on the wire", ()),
    "R-TMR-04": (
        TEST,
        "holds by construction: TCP_OFFLOAD_STATE_DELEGATED has no delayed-ACK field, so no such state can cross",
        (f"{_TRM}::test_r_tmr_04_16_21_delegated_state_has_no_delayed_ack_push_or_sws_fields",),
    ),
    "R-TMR-05": (UNCHECKABLE, _INTERNAL, ()),
    "R-TMR-06": (UNCHECKABLE, "timer expiry is internal; the retrieve itself is checked as R-EVT-06/R-EVT-08", ()),
    "R-TMR-07": (UNCHECKABLE, _INTERNAL + " (resumed timer)", ()),
    "R-TMR-08": (UNCHECKABLE, _INTERNAL + " (resumed timer); idle -1 on the way back is R-TRM-25", ()),
    "R-TMR-09": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-10": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-11": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-12": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-13": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-14": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-15": (UNCHECKABLE, _INTERNAL + " (persist state); the -1-if-idle part is R-TRM-25 / R-QRY-08" + _VERIFY
                 + "persist-state", ()),
    "R-TMR-16": (
        TEST,
        "holds by construction: no push-timer field crosses the boundary; its wire behaviour is not observable here",
        (f"{_TRM}::test_r_tmr_04_16_21_delegated_state_has_no_delayed_ack_push_or_sws_fields",),
    ),
    "R-TMR-17": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-18": (UNCHECKABLE, "a MAY; the resulting retrieve is checked as R-EVT-06", ()),
    "R-TMR-19": (UNCHECKABLE, _INTERNAL + " (resumed retransmit state)", ()),
    "R-TMR-20": (UNCHECKABLE, _WIRE + _VERIFY + "rtt-descaling (a whole small NBL is not held back)", ()),
    "R-TMR-21": (
        TEST,
        "holds by construction: no SWS-timer field crosses the boundary; restart-or-send is wire behaviour",
        (f"{_TRM}::test_r_tmr_04_16_21_delegated_state_has_no_delayed_ack_push_or_sws_fields",),
    ),
    "R-TMR-22": (UNCHECKABLE, _WIRE + _VERIFY + "rtt-descaling / ticks-10 / ticks-100", ()),
    "R-TMR-23": (UNCHECKABLE, _WIRE, ()),
    "R-TMR-24": (UNCHECKABLE, _INTERNAL, ()),
    # ---------------------------------------------------------------- TS
    "R-TS-01": (UNCHECKABLE, _INTERNAL + " (NicTime)", ()),
    "R-TS-02": (UNCHECKABLE, _WIRE, ()),
    "R-TS-03": (UNCHECKABLE, _INTERNAL + _VERIFY + "rtt-descaling (queried SRtt vs the timestamp RTT)", ()),
    "R-TS-04": (
        CHIMNEY,
        "ChimneyChecks._returned_sends (returned TsTime not behind the offered one, modulo 2^32)",
        (f"{_TRM}::test_r_ts_04_returned_ts_time_behind_the_offered_one", f"{_TRM}::test_r_ts_04_ts_time_may_wrap_forward"),
    ),
    "R-TS-05": (UNCHECKABLE, _INTERNAL + " (clock rate)" + _VERIFY + "rtt-descaling (TSval rate)", ()),
    "R-TS-06": (UNCHECKABLE, "correct TsRecent values need the peer's timestamps from the wire" + _VERIFY
                + "rtt-descaling (TSecr echoes, TsRecent at terminate)", ()),
    "R-TS-07": (UNCHECKABLE, _WIRE, ()),
    # ---------------------------------------------------------------- extra (same timer check)
    "R-QRY-08": (
        CHIMNEY,
        "ChimneyChecks._timers at query completion",
        (f"{_TRM}::test_r_qry_08_query_reports_an_idle_retransmit_timer_as_running",),
    ),
    # ---------------------------------------------------------------- RFC (hardware only)
    "R-RFC-04": (UNCHECKABLE, "64-bit PCI addressing is a property of DMA hardware; a software target has none", ()),
    # ---------------------------------------------------------------- documented deviations (SHOULD)
    "R-RFC-03": (TEST, "NewReno, limited transmit and SACK present; " + _DEVIATION + "no ECN (RFC 3168: no ECT "
                 "codepoint, no ECE/CWR) and no SWS timer (see R-INIT-13)",
                 (f"{_SEC}::test_r_rfc_03_newreno_limited_transmit_and_sack_present_ecn_absent",)),
    "R-INIT-13": (TEST, _DEVIATION + "no SWS prevention timer (TcpSwsPreventionTicks unused: sub-MSS data waits "
                  "for an ACK or the persist timer) and reaching TcpDoubtReachabilityRetransmissions indicates "
                  "nothing (NeighborReachabilityInDoubt is reserved, R-NBR-07 / §6 item 11; the R-NBR-04 staleness "
                  "test runs before every send anyway)",
                  (f"{_SEC}::test_r_init_13_sws_ticks_and_doubt_retransmissions_change_nothing_on_the_wire",)),
    "R-SEC-08": (TEST, "`chimney verify` checks it in conformance scenario sec-keepalive-interplay (keepalive on); "
                 + _DEVIATION + "with KEEP_ALIVE_ENABLED clear an upload during mitigation returns the probes sent "
                 "with TimeoutDelta -1 (the host cannot run a keepalive it switched off; R-TRM-25)",
                 (f"{_SEC}::test_r_sec_08_keepalive_off_upload_returns_probes_with_an_idle_timer",)),
}


def how(rule_id: str) -> str:
    """One line: 'boundary check in ...', 'test ...' or 'not mechanically checkable: ...'."""
    kind, where, tests = COVERAGE[rule_id]
    if kind in (CHIMNEY, CORE):
        return f"boundary check in {where}"
    if kind == TEST:
        return f"test {tests[0]} ({where})"
    return f"not mechanically checkable: {where}"


def coverage_report() -> list[dict[str, Any]]:
    """Every rule of the covered areas (catalogue order) with its coverage, for `chimney rules`."""
    rules = catalogue()
    out: list[dict[str, Any]] = []
    for rid, r in rules.items():
        if r.area not in AREAS and rid not in COVERAGE:
            continue
        kind, where, tests = COVERAGE.get(rid, (UNCHECKABLE, "not yet classified", ()))
        out.append(
            {
                "id": rid,
                "area": r.area,
                "level": r.level,
                "side": r.side,
                "kind": kind,
                "how": how(rid) if rid in COVERAGE else f"not mechanically checkable: {where}",
                "tests": list(tests),
            }
        )
    return out


def summary() -> dict[str, int]:
    """Rules per coverage kind over `coverage_report()`."""
    counts: dict[str, int] = {}
    for row in coverage_report():
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    return counts


def markdown_table() -> str:
    """The rule table of docs/verifier-coverage.md (regenerate the doc's table from this)."""
    lines = ["| rule | level | kind | how |", "|---|---|---|---|"]
    for r in coverage_report():
        side = " (host)" if r["side"] != "target" else ""
        text = r["how"].replace("|", "\\|")
        lines.append(f"| {r['id']} | {r['level']}{side} | {r['kind']} | {text} |")
    return "\n".join(lines)
