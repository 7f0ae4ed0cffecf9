"""MiniportInitiateOffload tree processing: placeholders, linkers, new offloads, the §5.2 status
aggregation (reference example), root failure (R-OFF-04), specific resource codes (R-OFF-06/07,
R-VLAN-02..04) and context references written only on success (R-TREE-07/08)."""

from __future__ import annotations

import pytest
from target_harness import IP_HOST, IP_PEER, Rig, link_rows, neighbor_node, path_node, tcp_node

from chimney.ndis.blocklist import NdisOffloadHandle, ProtocolOffloadBlockList, iter_tree
from chimney.ndis.status import NdisStatus
from chimney.target import NeighborCtx, PathCtx, TargetLimits, TcpCtx

OK = NdisStatus.SUCCESS
PARTIAL = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
FAIL = NdisStatus.FAILURE
IP6_A = bytes.fromhex("20010db8000000000000000000000001")
IP6_B = bytes.fromhex("20010db8000000000000000000000002")


def H(name: str) -> NdisOffloadHandle:
    return NdisOffloadHandle(name)


def initiate(rig: Rig, root: ProtocolOffloadBlockList) -> ProtocolOffloadBlockList:
    n = len(rig.host.completions["initiate"])
    rig.ndis.initiate_offload(rig.binding, root)
    assert len(rig.host.completions["initiate"]) == n  # R-OFF-01: completion is asynchronous
    rig.run(until=lambda: len(rig.host.completions["initiate"]) > n)
    return rig.host.completions["initiate"][-1]


def ctx_of(node: ProtocolOffloadBlockList) -> object:
    assert node.offload_handle is not None
    return node.offload_handle.miniport_offload_context.value


def test_reference_example_partial_offload_statuses_section_5_2() -> None:
    """R-OFF-03/05, R-TREE-06/07/08: Neighbor1 PARTIAL (Path2 failed), Path1 PARTIAL (TCP2 failed),
    TCP1 SUCCESS, TCP2 RESOURCES, Path2 FAILURE, TCP3 FAILURE (never attempted)."""
    rig = Rig(limits=TargetLimits(max_contexts=3, support_ipv6=False))
    t1, t2, t3 = tcp_node(H("t1"), 1001), tcp_node(H("t2"), 1002), tcp_node(H("t3"), 1003)
    p1 = link_rows(path_node(H("p1")), t1, t2)
    p2 = link_rows(path_node(H("p2"), src=IP6_A, dst=IP6_B), t3)
    n1 = link_rows(neighbor_node(H("n1")), p1, p2)
    initiate(rig, n1)
    assert [n1.status, p1.status, t1.status, t2.status, p2.status, t3.status] == [
        PARTIAL, PARTIAL, OK, NdisStatus.RESOURCES, FAIL, FAIL
    ]
    assert isinstance(ctx_of(n1), NeighborCtx) and isinstance(ctx_of(p1), PathCtx) and isinstance(ctx_of(t1), TcpCtx)
    assert ctx_of(t2) is None and ctx_of(p2) is None and ctx_of(t3) is None
    assert len(rig.target.tcps) == 1


def test_linkers_and_placeholders_r_tree_05_06() -> None:
    rig = Rig()
    hn, hp = H("n"), H("p")
    initiate(rig, link_rows(neighbor_node(hn), link_rows(path_node(hp), tcp_node(H("t1"), 1001))))
    # Second tree: neighbor and path are linkers; one new TCP offloads, a duplicate 4-tuple fails.
    ln = ProtocolOffloadBlockList(neighbor_node(hn).header.type, hn)
    lp = ProtocolOffloadBlockList(path_node(hp).header.type, hp)
    t_new, t_dup = tcp_node(H("t2"), 1002), tcp_node(H("t1b"), 1001)
    initiate(rig, link_rows(ln, link_rows(lp, t_new, t_dup)))
    assert (ln.status, lp.status, t_new.status, t_dup.status) == (OK, PARTIAL, OK, FAIL)
    # A linker all of whose dependents failed is FAILURE; its ancestors see a failed dependent.
    ln2 = ProtocolOffloadBlockList(ln.header.type, hn)
    lp2 = ProtocolOffloadBlockList(lp.header.type, hp)
    initiate(rig, link_rows(ln2, link_rows(lp2, tcp_node(H("t1c"), 1001))))
    assert (ln2.status, lp2.status) == (FAIL, FAIL)
    # A placeholder (no context slot) is always SUCCESS, even without dependents.
    ph = ProtocolOffloadBlockList(0, None)
    initiate(rig, ph)
    assert ph.status == OK
    ph2 = ProtocolOffloadBlockList(0, None)
    lp3 = ProtocolOffloadBlockList(lp.header.type, hp)
    initiate(rig, link_rows(ph2, link_rows(lp3, tcp_node(H("t3"), 1003))))
    assert (ph2.status, lp3.status) == (OK, OK)
    assert len(rig.target.tcps) == 3


def test_root_failure_stops_traversal_r_off_04() -> None:
    """R-OFF-07: non-zero DlSourceAddress without configurable MACs fails the neighbor with
    HW_ADDRESS_ENTRIES; it is the root, so its valid sibling is not attempted (§6.9)."""
    rig = Rig()
    root = link_rows(neighbor_node(H("n1"), src_mac=bytes.fromhex("021111111111")), path_node(H("p1")))
    sib = link_rows(neighbor_node(H("n2")), path_node(H("p2")))
    root.next_block = sib
    initiate(rig, root)
    statuses = [n.status for n in iter_tree(root)]
    assert root.status == NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES
    assert statuses[1:] == [FAIL] * 3
    assert not rig.target.neighbors and all(ctx_of(n) is None for n in iter_tree(root))


def test_non_root_failure_skips_only_its_subtree_r_off_03() -> None:
    rig = Rig(limits=TargetLimits(max_neighbors=2, configurable_source_macs=1))
    n1 = link_rows(neighbor_node(H("n1")), path_node(H("p1")))
    n2 = link_rows(neighbor_node(H("n2"), src_mac=bytes.fromhex("021111111111")), path_node(H("p2")))
    n3 = link_rows(neighbor_node(H("n3")), path_node(H("p3"), src=bytes([198, 18, 0, 9])))
    n1.next_block = n2
    n2.next_block = n3
    initiate(rig, n1)
    assert [n1.status, n2.status, n3.status] == [OK, OK, NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES]
    assert n3.dependent_block_list.status == FAIL  # type: ignore[union-attr]
    # The custom source MAC is used for frames of dependents (R-OFF-08).
    assert ctx_of(n2).src_mac == bytes.fromhex("021111111111")  # type: ignore[union-attr]


def _one(rig: Rig, root: ProtocolOffloadBlockList, node: ProtocolOffloadBlockList) -> int:
    initiate(rig, root)
    assert ctx_of(node) is None or node.status in (OK, PARTIAL)
    return node.status


@pytest.mark.parametrize(
    ("limits", "layer", "code"),
    [
        (TargetLimits(max_tcp=1), "tcp", NdisStatus.OFFLOAD_TCP_ENTRIES),
        (TargetLimits(max_paths=1), "path", NdisStatus.OFFLOAD_PATH_ENTRIES),
        (TargetLimits(max_source_ips=1), "path", NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES),
        (TargetLimits(max_path_mtu=1400), "path_mtu", NdisStatus.OFFLOAD_PATH_MTU),
        (TargetLimits(max_rcv_window=1 << 18), "tcp_wnd", NdisStatus.OFFLOAD_TCP_RCV_WINDOW),
        (TargetLimits(rcv_buffer_budget=300_000), "tcp", NdisStatus.OFFLOAD_TCP_RCV_BUFFER),
        (TargetLimits(max_contexts=3), "tcp", NdisStatus.RESOURCES),
    ],
)
def test_resource_limits_give_specific_codes_r_off_06(limits: TargetLimits, layer: str, code: int) -> None:
    rig = Rig(limits=limits)
    t1 = tcp_node(H("t1"), 1001, rcv_wnd=200_000)
    p1 = link_rows(path_node(H("p1")), t1)
    if layer == "tcp":
        victim = tcp_node(H("t2"), 1002, rcv_wnd=200_000)
        p1.dependent_block_list.next_block = victim  # type: ignore[union-attr]
        root = link_rows(neighbor_node(H("n")), p1)
    elif layer == "tcp_wnd":
        victim = tcp_node(H("t2"), 1002, rcv_wnd=1 << 20)
        p1.dependent_block_list.next_block = victim  # type: ignore[union-attr]
        root = link_rows(neighbor_node(H("n")), p1)
    elif layer == "path_mtu":
        victim = path_node(H("p2"), dst=bytes([198, 18, 0, 7]), mtu=1500)
        p1.state[1].path_mtu = 1400
        root = link_rows(neighbor_node(H("n")), p1, victim)
    else:
        victim = path_node(H("p2"), src=bytes([198, 18, 0, 5]), dst=bytes([198, 18, 0, 7]))
        root = link_rows(neighbor_node(H("n")), p1, victim)
    initiate(rig, root)
    assert victim.status == code
    assert ctx_of(victim) is None  # R-TREE-08
    # R-OFF-05: the victim's parent is PARTIAL; a PARTIAL dependent still counts as offloaded above it.
    parent = p1 if layer.startswith("tcp") else root
    assert t1.status == OK and parent.status == PARTIAL
    assert root.status == (OK if layer.startswith("tcp") else PARTIAL)


@pytest.mark.parametrize(
    ("limits", "vid", "code"),
    [
        (TargetLimits(interface_vlans=frozenset({5})), 9, NdisStatus.OFFLOAD_VLAN_MISMATCH),  # R-VLAN-04
        (TargetLimits(interface_vlans=frozenset({5})), 5, OK),
        (TargetLimits(interface_vlans=frozenset({5})), 0, OK),
        (TargetLimits(), 9, OK),  # R-VLAN-03: interface VLAN 0 never fails on VlanId
        (TargetLimits(max_vlans=1), 9, NdisStatus.OFFLOAD_VLAN_ENTRIES),  # R-VLAN-02
    ],
)
def test_vlan_offload_decisions(limits: TargetLimits, vid: int, code: int) -> None:
    """R-VLAN-02 (no VLAN entry left: OFFLOAD_VLAN_ENTRIES), R-VLAN-03 (interface VLAN 0: any VlanId
    accepted) and R-VLAN-04 (interface VLAN 5: VlanId 0 or 5 accepted, 9 fails with VLAN_MISMATCH)."""
    rig = Rig(limits=limits)
    first = neighbor_node(H("n0"), vlan_id=5 if limits.interface_vlans or limits.max_vlans == 1 else 0)
    second = neighbor_node(H("n1"), vlan_id=vid)
    first.next_block = second
    initiate(rig, first)
    assert first.status == OK
    assert second.status == code


def test_terminate_frees_contexts_and_counts_r_trm_23() -> None:
    rig = Rig(limits=TargetLimits(max_tcp=1))
    hn, hp, ht = H("n"), H("p"), H("t")
    root = link_rows(neighbor_node(hn), link_rows(path_node(hp), tcp_node(ht, 1001)))
    initiate(rig, root)
    ctx = ctx_of(root.dependent_block_list.dependent_block_list)  # type: ignore[union-attr]
    assert isinstance(ctx, TcpCtx)
    from chimney.ndis.offload_state import (
        NeighborOffloadStateDelegated,
        OffloadStateType,
        PathOffloadStateDelegated,
        TcpOffloadStateDelegated,
    )

    tn = ProtocolOffloadBlockList(OffloadStateType.NeighborOffloadDelegatedState, hn, [NeighborOffloadStateDelegated()])
    tp = ProtocolOffloadBlockList(OffloadStateType.Ip4OffloadDelegatedState, hp, [PathOffloadStateDelegated()])
    tt = ProtocolOffloadBlockList(OffloadStateType.TcpOffloadDelegatedState, ht, [TcpOffloadStateDelegated()])
    link_rows(tn, link_rows(tp, tt))
    rig.ndis.terminate_offload(rig.binding, tn)
    assert not rig.host.completions["terminate"]  # R-TRM-06
    rig.run(until=lambda: bool(rig.host.completions["terminate"]))
    assert [n.status for n in iter_tree(tn)] == [OK, OK, OK]  # R-TRM-08
    assert ctx.phase.value == "terminated" and not rig.target.tcps and not rig.target.paths
    # The TCP slot is free again: a new connection on the same tuple offloads.
    initiate(rig, link_rows(neighbor_node(H("n2")), link_rows(path_node(H("p2")), tcp_node(H("t2"), 1001))))
    assert len(rig.target.tcps) == 1
    assert IP_HOST in rig.target._source_ips and IP_PEER not in rig.target._source_ips


def test_no_indication_while_another_initiate_is_in_progress_r_off_10_12() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    tree_b = link_rows(neighbor_node(H("nb")), link_rows(path_node(H("pb")), tcp_node(H("tb"), 1001)))
    tree_c = link_rows(neighbor_node(H("nc")), link_rows(path_node(H("pc")), tcp_node(H("tc"), 1002)))
    rig.ndis.initiate_offload(rig.binding, tree_b)
    rig.ndis.initiate_offload(rig.binding, tree_c)  # R-OFF-10: a second one while the first is pending
    rig.peer_conn.send(b"hello", rig.sched.now)
    (seg,) = rig.peer_conn.pop_segments()
    rig.link.a.deliver(rig.peer.builder.build_frame(seg))  # data for the offloaded connection, right now
    rig.run(until=lambda: len(rig.host.completions["initiate"]) == 3)
    rig.run(1)
    log = rig.host.log
    last_complete = max(i for i, e in enumerate(log) if e == "initiate_complete")
    first_indicate = next(i for i, e in enumerate(log) if e.startswith("indicate"))
    assert last_complete < first_indicate
    assert bytes(rig.host.received) == b"hello"
    assert tree_b.status == tree_c.status == OK


def test_failed_tcp_offload_leaves_its_send_data_untouched_r_off_23() -> None:
    from target_harness import nbls_of, pattern

    from chimney.ndis.buffers import NBL_STATUS_UNSET

    rig = Rig(limits=TargetLimits(max_contexts=2))
    rig.connect()
    held: list[bytes] = []
    rig.link.b.set_receiver(held.append)  # keep the data unacknowledged so it travels with the offload
    rig.host.conn.send(pattern(5000, 1), rig.sched.now)  # type: ignore[union-attr]
    rig.host.pump()
    rig.run(1)
    tree = rig.offload_tree()
    tcp = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    chain = nbls_of(tcp.net_buffer_list_chain)
    assert chain
    rig.ndis.initiate_offload(rig.binding, tree)
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    assert tcp.status == NdisStatus.RESOURCES and tree.dependent_block_list.status == PARTIAL  # type: ignore[union-attr]
    assert all(n.status == NBL_STATUS_UNSET for n in chain) and not rig.host.send_done
    assert all(n.owner == rig.host.name for n in chain)


def _record_creates(rig: Rig) -> list[tuple[object, object, object]]:
    """(MiniportOffloadBlockList node, context created, status) for every node the target creates, in order."""
    seen: list[tuple[object, object, object]] = []
    create = rig.target._create

    def spy(node: object, parent: object, new: list[TcpCtx]) -> tuple[object, int]:
        ctx, st = create(node, parent, new)  # type: ignore[arg-type]
        seen.append((node, ctx, st))
        return ctx, st

    rig.target._create = spy  # type: ignore[method-assign]
    return seen


def _label(node: object) -> str:
    for s in node.state:  # type: ignore[attr-defined]
        if hasattr(s, "local_port"):
            return f"t{s.local_port}"
        if hasattr(s, "destination_address"):
            return f"p{s.destination_address[-1]}"
    return "n"


def test_r_off_02_node_then_its_dependents_then_its_next_sibling() -> None:
    """R-OFF-02: neighbor -> (path A -> TCP 1001, 1002), path B -> TCP 1003 is processed n, pA, t1001, t1002,
    pB, t1003 (depth-first along dependents, then NextBlock); breadth-first would visit pB before t1001."""
    rig = Rig()
    seen = _record_creates(rig)
    other = IP_PEER[:3] + bytes([IP_PEER[3] + 1])
    pa = link_rows(path_node(H("pa")), tcp_node(H("t1"), 1001), tcp_node(H("t2"), 1002))
    pb = link_rows(path_node(H("pb"), dst=other), tcp_node(H("t3"), 1003))
    root = link_rows(neighbor_node(H("n")), pa, pb)
    initiate(rig, root)
    assert all(n.status == OK for n in iter_tree(root))
    assert [_label(n) for n, _c, _s in seen] == ["n", f"p{IP_PEER[3]}", "t1001", "t1002", f"p{other[3]}", "t1003"]


def test_r_tree_13_neighbor_and_tcp_contexts_keep_the_node_ndis_offload_handle() -> None:
    """R-TREE-13: the context the target creates for a neighbor and a TCP node holds that node's
    NdisOffloadHandle (the one NDIS routes its indications by), not a parent's or a sibling's."""
    rig = Rig()
    seen = _record_creates(rig)
    root = link_rows(neighbor_node(H("n")), link_rows(path_node(H("p")), tcp_node(H("t1"), 1001),
                                                     tcp_node(H("t2"), 1002)))
    initiate(rig, root)
    kept = [(node, ctx) for node, ctx, _s in seen if isinstance(ctx, NeighborCtx | TcpCtx)]
    assert len(kept) == 3
    handles = [node.ndis_offload_handle for node, _ctx in kept]  # type: ignore[attr-defined]
    assert all(h is not None for h in handles) and len({id(h) for h in handles}) == 3
    for node, ctx in kept:
        assert ctx.handle is node.ndis_offload_handle  # type: ignore[attr-defined, union-attr]
