"""The pass-through chimney IM (§3.8): one scenario suite run on stacks of 0, 1 and 3 IMs with the
verifier STRICT and ImChecks on (R-IM-01..12): state operations through call and offload entries, every
I/O type and completion with identical NBL pointers, indications and their results, forward + forward
complete through each IM (ProtocolTcpOffloadForwardComplete), status indications, OIDs, normal path."""

from __future__ import annotations

from typing import Any

import pytest
from filter_doubles import (
    DELAY_NS,
    Box,
    Conn,
    Stack,
    T,
    TargetObj,
    chain,
    entry_chain,
    make_nbls,
    nbls_of,
    offloaded,
    target_obj,
)

from chimney.filters.checks import NdisSourceStamp, im_checks
from chimney.filters.passthrough import OffloadEntry, PassThroughChimneyIm
from chimney.ndis.blocklist import NodeRole, ProtocolOffloadBlockList, iter_tree, node_role
from chimney.ndis.buffers import NblInfo, nbl_from_bytes
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    TcpOffloadEventType,
    TcpUploadReason,
)
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    OID_TCP_TASK_OFFLOAD,
    NdisOidRequest,
    NdisTcpConnectionOffload,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode

DEPTHS = [0, 1, 3]
S = NdisStatus


def clean(s: Stack) -> None:
    """End of every scenario: no violations, nothing owed by any IM, no call entries left."""
    chk = im_checks(s.ndis)
    assert chk is not None
    assert chk.audit() == []
    assert s.verifier.violations == []
    for im in s.ims:
        assert im.call_entries == {}


def hops_of(s: Stack, nbl: Any, what: str) -> list[str]:
    """IM names (in call order) at which `nbl` crossed handler `what`."""
    return [im for im, w, n in s.hops if w == what and n is nbl]


# ----------------------------------------------------------------------------------- registration


@pytest.mark.parametrize("depth", [1, 3])
def test_r_im_01_registers_provider_and_client_chimney_handlers(depth: int) -> None:
    s = Stack(depth)
    for im, vm in zip(s.ims, s.vms):
        handles = s.ndis.drivers[im.name]
        assert {dh.kind for dh in handles} == {"miniport", "protocol"}
        for dh in handles:
            assert dh.chimney_provider if dh.kind == "miniport" else dh.chimney_client
        assert vm.chimney_capable and vm.offload_caps is s.target.caps
    req = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
    assert s.ndis.oid_request(s.binding, req) == S.SUCCESS and req.buffer is s.target.caps


# ----------------------------------------------------------------------------------- state operations


@pytest.mark.parametrize("depth", DEPTHS)
def test_initiate_tree_with_partial_failure_then_placeholder_and_linker(depth: int) -> None:
    s = Stack(depth)
    c = Conn()
    send_data = make_nbls("tcpip", 2)
    pbl = c.tree(second_tcp=True, send_data=chain(*send_data))
    tcp2 = pbl.dependent_block_list.dependent_block_list.next_block
    s.target.fail_state[id(tcp2.state)] = S.RESOURCES  # the target refuses the second connection
    s.ndis.initiate_offload(s.binding, pbl)
    # In flight: every IM holds one call entry. The block list is one overlaid structure, so its
    # ImReserved holds the call entry of the last IM that passed it down (the one above the target).
    for im in s.ims:
        assert len(im.call_entries) == 1
    if depth:
        assert pbl.im_reserved[0] is next(iter(s.ims[0].call_entries.values()))
    assert all(n.owner == "nic" for n in send_data)  # handed down to the target through every IM
    s.run()

    assert s.host.state_completions == [("initiate", pbl)]
    # §5.2: the path offloaded one of its two connections; its neighbor has all dependents offloaded.
    assert [n.status for n in iter_tree(pbl)] == [S.SUCCESS, S.OFFLOAD_PARTIAL_SUCCESS, S.SUCCESS, S.RESOURCES]
    # R-IM-06: ImReserved and SourceHandle are back to what NDIS gave the top IM.
    for node in iter_tree(pbl):
        assert node.im_reserved == [None, None]
        assert isinstance(node.source_handle, NdisSourceStamp) and node.source_handle.binding is s.binding
    # R-IM-04: an offload entry per offloaded object in every IM, chained down to the target's context.
    for h in (c.nh, c.ph, c.th):
        entries = entry_chain(h)
        assert len(entries) == depth
        assert [e.im for e in entries] == list(reversed(s.ims))
        assert isinstance(target_obj(h), TargetObj)
        if depth:
            assert entries[0].upper_ref.upper is h  # the host's handle, as NDIS referenced it
    assert c.th2.miniport_offload_context.value is None  # the failed object got nothing
    for im in s.ims:
        assert len(im.entries) == 3 and im.call_entries == {}

    # Second tree: neighbor placeholder, the path as a linker, one new TCP offload.
    th3 = type(c.th)("tcp3")
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, None)
    path = root.add_dependent(ProtocolOffloadBlockList(T.Ip4OffloadState, c.ph))
    path.add_dependent(ProtocolOffloadBlockList(T.TcpOffloadState, th3, ["const", "cached", "delegated"]))
    s.ndis.initiate_offload(s.binding, root)
    _, mbl = s.target.state_calls[-1]
    assert [node_role(n) for n in iter_tree(mbl)] == [NodeRole.PLACEHOLDER, NodeRole.LINKER, NodeRole.NEW_OFFLOAD]
    assert mbl.dependent_block_list.miniport_offload_context.value is target_obj(c.ph)
    s.run()
    assert [n.status for n in iter_tree(root)] == [S.SUCCESS] * 3
    assert target_obj(th3).type == T.TcpOffloadState
    for im in s.ims:
        assert len(im.entries) == 4
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_query_update_invalidate_then_terminate_frees_offload_entries(depth: int) -> None:
    send_data = make_nbls("tcpip", 2)
    s = Stack(depth)
    c = Conn()
    s.ndis.initiate_offload(s.binding, c.tree(send_data=chain(*send_data)))
    s.run()

    box = Box()
    query = ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, [box])
    s.ndis.query_offload_state(s.binding, query)
    s.run()
    assert s.host.state_completions[-1] == ("query", query)  # NdisMQueryOffloadStateComplete all the way up
    assert query.status == S.SUCCESS and box.value == f"obj{target_obj(c.th).id}"

    update = ProtocolOffloadBlockList(T.Ip4OffloadCachedState, c.ph, ["cached"])
    s.ndis.update_offload(s.binding, update)
    s.run()
    assert s.host.state_completions[-1] == ("update", update) and target_obj(c.ph).updates == 1

    inv = ProtocolOffloadBlockList(0, c.th)
    s.ndis.invalidate_offload(s.binding, inv)
    s.run()
    assert s.host.state_completions[-1] == ("invalidate", inv) and target_obj(c.th).invalid

    # Terminate dependent-first; each completed terminate frees that object's entry in every IM.
    live = 3
    for h, t in ((c.th, T.TcpOffloadDelegatedState), (c.ph, T.Ip4OffloadDelegatedState), (c.nh, T.NeighborOffloadDelegatedState)):
        entries = entry_chain(h)
        term = ProtocolOffloadBlockList(t, h, ["delegated"])
        s.ndis.terminate_offload(s.binding, term)
        s.run()
        live -= 1
        assert term.status == S.SUCCESS
        assert all(not e.live for e in entries)
        for im in s.ims:
            assert len(im.entries) == live
        if h is c.th:
            # The send data handed over at initiate comes back up through every IM to the host.
            assert nbls_of(term.net_buffer_list_chain) == send_data
            assert all(n.owner == "tcpip" for n in send_data)
    assert s.target.objects == {}
    clean(s)


@pytest.mark.parametrize("depth", [1, 3])
def test_operation_on_an_object_the_im_does_not_hold_fails_in_the_im(depth: int) -> None:
    s, c = offloaded(depth)
    stranger = type(c.th)("stranger")
    stranger.miniport_offload_context.value = "not-an-offload-entry"
    pbl = ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, stranger, ["delegated"])
    s.ndis.query_offload_state(s.binding, pbl)
    s.run()
    assert s.host.state_completions == [("query", pbl)] and pbl.status == S.FAILURE
    assert s.ims[-1].counters["state_bad_reference"] == 1
    assert [op for op, _ in s.target.state_calls] == ["initiate"]  # nothing went down
    clean(s)


@pytest.mark.parametrize("depth", [1, 3])
def test_initiate_linking_to_an_unknown_object_fails_in_the_im(depth: int) -> None:
    s, c = offloaded(depth)
    bogus = type(c.ph)("bogus-path")
    bogus.miniport_offload_context.value = object()  # "already offloaded", but not through this IM
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, None)
    root.add_dependent(ProtocolOffloadBlockList(T.Ip4OffloadState, bogus)).add_dependent(
        ProtocolOffloadBlockList(T.TcpOffloadState, type(c.th)("t"), ["const", "cached", "delegated"])
    )
    s.ndis.initiate_offload(s.binding, root)
    assert s.host.state_completions == []  # never completed inside MiniportInitiateOffload (R-OFF-01)
    s.run()
    assert [n.status for n in iter_tree(root)] == [S.SUCCESS, S.FAILURE, S.FAILURE]  # placeholder stays SUCCESS
    assert len(s.target.state_calls) == 1 and len(s.ims[-1].entries) == 3  # no new entry survived
    clean(s)


# ----------------------------------------------------------------------------------- chimney I/O


@pytest.mark.parametrize("depth", DEPTHS)
def test_every_io_type_and_completion_keeps_the_nbl_pointer_at_every_hop(depth: int) -> None:
    s, c = offloaded(depth)
    sends = make_nbls("tcpip", 3)
    post = make_nbls("tcpip", 1, 50)[0]
    fin = make_nbls("tcpip", 1, 10)[0]
    assert s.ndis.offload_tcp_send(c.th, chain(*sends)) == S.PENDING
    assert s.ndis.offload_tcp_receive(c.th, post) == S.PENDING
    assert s.ndis.offload_tcp_disconnect(c.th, fin, TCP_DISCONNECT_GRACEFUL_CLOSE) == S.PENDING

    # R-IM-07: the target got the very NBLs, flags and its own context for the connection.
    kinds = [(k, ctx, nbl, extra) for k, ctx, nbl, extra in s.target.io_calls]
    obj = target_obj(c.th)
    assert kinds == [
        ("send", obj, sends[0], ()), ("receive", obj, post, ()), ("disconnect", obj, fin, (TCP_DISCONNECT_GRACEFUL_CLOSE,))
    ]
    top_down = [im.name for im in reversed(s.ims)]
    for n in sends:
        assert hops_of(s, n, "send") == top_down
    assert hops_of(s, post, "receive") == top_down and hops_of(s, fin, "disconnect") == top_down

    s.run()
    bottom_up = [im.name for im in s.ims]
    assert [(k, n) for k, _, n in s.host.io_completions] == [
        ("send", sends[0]), ("send", sends[1]), ("send", sends[2]), ("receive", post), ("disconnect", fin)
    ]
    for n in sends:
        assert hops_of(s, n, "send_complete") == bottom_up  # R-IM-08
        assert n.status == S.SUCCESS and n.info[NblInfo.TcpOffloadBytesTransferred] == 100
    assert post.first_net_buffer.data_offset == 50  # the target advanced it by the bytes it placed
    assert hops_of(s, fin, "disconnect_complete") == bottom_up
    assert all(n.owner == "tcpip" for n in [*sends, post, fin])
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_forward_and_forward_complete_through_each_im(depth: int) -> None:
    """Seed page ProtocolTcpOffloadForwardComplete: a forward the host initiated goes down through every
    IM and its completion comes back up through each one, with the NBL pointer the IM was given."""
    s, c = offloaded(depth)
    segs = [nbl_from_bytes(bytes(20) + b"payload", "tcpip") for _ in range(2)]
    assert s.ndis.offload_tcp_forward(c.th, chain(*segs)) == S.PENDING
    assert s.target.io_calls == [("forward", target_obj(c.th), segs[0], ())]
    s.run()
    for seg in segs:
        assert hops_of(s, seg, "forward") == [im.name for im in reversed(s.ims)]
        assert hops_of(s, seg, "forward_complete") == [im.name for im in s.ims]
        assert seg.status == S.SUCCESS and seg.owner == "tcpip"
    assert [(k, n) for k, _, n in s.host.io_completions] == [("forward", segs[0]), ("forward", segs[1])]
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_abortive_disconnect_flags_reach_the_target_unchanged(depth: int) -> None:
    s, c = offloaded(depth)
    rst = make_nbls("tcpip", 1, 0)[0]
    s.ndis.offload_tcp_disconnect(c.th, rst, TCP_DISCONNECT_ABORTIVE_CLOSE)
    assert s.target.io_calls[-1][3] == (TCP_DISCONNECT_ABORTIVE_CLOSE,)
    s.run()
    assert s.host.io_completions[-1][2] is rst
    clean(s)


@pytest.mark.parametrize("depth", [1, 3])
def test_r_im_12_send_without_resources_completes_with_upload_requests(depth: int) -> None:
    s, c = offloaded(depth)
    s.ims[-1].fail_next_allocations(1)
    sends = make_nbls("tcpip", 3)
    assert s.ndis.offload_tcp_send(c.th, chain(*sends)) == S.PENDING
    assert s.target.io_calls == []  # nothing passed down
    assert [n.status for n in sends] == [S.REQUEST_UPLOAD, S.UPLOAD_REQUESTED, S.UPLOAD_REQUESTED]
    assert [n for _, _, n in s.host.io_completions] == sends
    assert s.ims[-1].counters["send_upload_requested"] == 1
    # The next send has resources again and goes all the way down.
    more = make_nbls("tcpip", 1)[0]
    s.ndis.offload_tcp_send(c.th, more)
    assert s.target.io_calls[-1][2] is more
    s.run()
    clean(s)


# ----------------------------------------------------------------------------------- indications


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize(
    "answer",
    [None, (S.OFFLOAD_DATA_NOT_ACCEPTED, 0), (S.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 40)],
    ids=["accepted", "not-accepted", "partially-accepted"],
)
def test_receive_indication_result_and_bytes_consumed_come_back_down(depth: int, answer: Any) -> None:
    s, c = offloaded(depth)
    s.host.indicate_result = answer
    (ret, consumed), nbl = s.target.indicate(target_obj(c.th), b"x" * 100)
    assert s.host.indications == [(c.th, nbl, S.SUCCESS)]  # host handle, same NBL, same Status (R-IM-10)
    assert hops_of(s, nbl, "receive_indicate") == [im.name for im in s.ims]
    if answer is None:
        assert (ret, consumed) == (S.SUCCESS, 100) and nbl.owner == "tcpip"
        # R-IM-09: the return goes down synchronously, the same NBL, before the call returns.
        assert s.ndis.offload_tcp_receive_return(s.binding, nbl) == S.SUCCESS
        assert s.target.receive_returns == [nbl] and nbl.owner == "nic"
        assert hops_of(s, nbl, "receive_return") == [im.name for im in reversed(s.ims)]
    else:
        assert (ret, consumed) == answer and nbl.owner == "nic"
        assert s.target.receive_returns == []
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_tcp_events_reach_the_host_with_its_handle(depth: int) -> None:
    s, c = offloaded(depth)
    obj = target_obj(c.th)
    events = [
        (TcpOffloadEventType.TcpIndicateSendBacklogChange, 65536),
        (TcpOffloadEventType.TcpIndicateRetrieve, TcpUploadReason.HighDropRate),  # before the FIN (R-EVT-08)
        (TcpOffloadEventType.TcpIndicateDisconnect, 0),
        (TcpOffloadEventType.TcpIndicateAbort, 0),
    ]
    for et, info in events:
        s.target.event(obj, et, info)
    assert s.host.events == [(c.th, et, info) for et, info in events]
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_neighbor_reachability_query_hrd_written_back_synchronously(depth: int) -> None:
    s, c = offloaded(depth)
    s.host.hrd_answer = 7
    cached = s.target.reachability_query(target_obj(c.nh), hrd=300, nrd=12)
    assert cached.host_reachability_delta == 7  # written by the host before NdisMOffloadEventIndicate returned
    ((pbl, _code),) = s.host.offload_events
    assert pbl.offload_handle is c.nh and pbl.state[1] is cached and pbl.state[2].nic_reachability_delta == 12
    clean(s)


# ----------------------------------------------------------------------------------- status, OIDs, normal path


@pytest.mark.parametrize("depth", DEPTHS)
def test_pause_upload_all_and_resume_are_relayed_with_new_capabilities(depth: int) -> None:
    s, _ = offloaded(depth)
    new_caps = NdisTcpConnectionOffload(tcp_connection_offload_capacity=8)
    s.target.status(S.OFFLOAD_PAUSE)
    s.target.status(S.UPLOAD_ALL)
    s.target.status(S.OFFLOAD_RESUME, new_caps)
    assert [i.status_code for i in s.host.statuses] == [S.OFFLOAD_PAUSE, S.UPLOAD_ALL, S.OFFLOAD_RESUME]
    assert s.host.statuses[-1].status_buffer is new_caps
    req = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
    s.ndis.oid_request(s.binding, req)
    assert req.buffer is new_caps  # the host re-queries after RESUME and sees the new capability
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_r_im_02_03_task_offload_query_and_sets_pass_down(depth: int) -> None:
    s = Stack(depth)
    q = NdisOidRequest.query(OID_TCP_TASK_OFFLOAD)
    assert s.ndis.oid_request(s.binding, q) == S.SUCCESS
    params = NdisTcpConnectionOffloadParameters()
    st = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, params)
    assert s.ndis.oid_request(s.binding, st) == S.SUCCESS
    assert s.target.oids == [q, st]  # the same request objects reached the target
    clean(s)


@pytest.mark.parametrize("config", [{"allow_chimney": False}, {"alters_packets": True}])
def test_r_im_02_im_without_chimney_answers_not_supported_but_passes_sets(config: dict[str, bool]) -> None:
    s = Stack(2, im_factory=lambda i, log: PassThroughChimneyIm(f"im{i}", **(config if i == 1 else {})))
    assert s.top.offload_caps is None  # it advertises nothing upward
    q = NdisOidRequest.query(OID_TCP_TASK_OFFLOAD)
    assert s.ndis.oid_request(s.binding, q) == S.NOT_SUPPORTED and s.target.oids == []
    hw = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
    assert s.ndis.oid_request(s.binding, hw) == S.NOT_SUPPORTED
    st = NdisOidRequest.set(OID_TCP_TASK_OFFLOAD, NdisTcpConnectionOffloadParameters())
    assert s.ndis.oid_request(s.binding, st) == S.SUCCESS and s.target.oids == [st]  # R-IM-03
    clean(s)


@pytest.mark.parametrize("depth", DEPTHS)
def test_normal_send_and_receive_paths_pass_through(depth: int) -> None:
    s = Stack(depth)
    out = make_nbls("tcpip", 2)
    s.ndis.send_net_buffer_lists(s.binding, chain(*out))
    assert s.target.sent == out
    s.run()
    assert s.host.send_completed == out and all(n.owner == "tcpip" for n in out)
    rx = make_nbls("nic", 2)
    s.ndis.m_indicate_receive_net_buffer_lists(s.nic, chain(*rx))
    assert s.host.received == rx and s.target.returned == rx
    clean(s)


@pytest.mark.parametrize("depth", [0, 3])
def test_verifier_off_routes_the_same_scenario(depth: int) -> None:
    s, c = offloaded(depth, mode=Mode.OFF)
    sends = make_nbls("tcpip", 4)
    s.ndis.offload_tcp_send(c.th, chain(*sends))
    s.run()
    assert [n for _, _, n in s.host.io_completions] == sends
    (ret, _), nbl = s.target.indicate(target_obj(c.th), b"abc")
    assert ret == S.SUCCESS and s.ndis.offload_tcp_receive_return(s.binding, nbl) == S.SUCCESS
    assert s.target.receive_returns == [nbl]
    assert sum(s.verifier.checks.values()) == 0 and im_checks(s.ndis) is None


def test_completion_latency_is_the_targets_delay_at_any_depth() -> None:
    s, c = offloaded(3)
    t0 = s.sched.now
    s.ndis.offload_tcp_send(c.th, make_nbls("tcpip", 1)[0])
    s.run()
    assert s.sched.now - t0 == DELAY_NS  # IMs add no simulated time: every re-issue is synchronous
    assert isinstance(c.th.miniport_offload_context.value, OffloadEntry)
    clean(s)


def test_im_rules_are_actually_checked_on_the_happy_path() -> None:
    """The clean runs above are not clean by accident: every R-IM check ran while they passed."""
    s, c = offloaded(3)
    s.ndis.offload_tcp_send(c.th, chain(*make_nbls("tcpip", 2)))
    s.run()
    (_, _), nbl = s.target.indicate(target_obj(c.th), b"q" * 8)
    s.ndis.offload_tcp_receive_return(s.binding, nbl)
    s.target.event(target_obj(c.th), TcpOffloadEventType.TcpIndicateAbort)
    s.ndis.oid_request(s.binding, NdisOidRequest.query(OID_TCP_TASK_OFFLOAD))
    s.ndis.oid_request(s.binding, NdisOidRequest.set(OID_TCP_TASK_OFFLOAD, NdisTcpConnectionOffloadParameters()))
    s.ndis.terminate_offload(s.binding, ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, ["delegated"]))
    s.run()
    checked = s.verifier.checks
    for rule_id in ("R-IM-02", "R-IM-03", "R-IM-04", "R-IM-05", "R-IM-06", "R-IM-07", "R-IM-08", "R-IM-09", "R-IM-10"):
        assert checked[rule_id] > 0, rule_id
    clean(s)
