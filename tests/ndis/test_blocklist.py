"""Block-list structures: walk order (node, dependents, next: R-OFF-02), node roles (placeholder /
linker / new offload), R-TREE-01 shape checks, and PBL <-> MBL conversion round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimney.ndis.blocklist import (
    STATUS_UNSET,
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    NodeRole,
    ProtocolOffloadBlockList,
    Slot,
    build_pbl,
    count_nodes,
    iter_dependents,
    iter_tree,
    iter_tree_depth,
    mbl_results_to_pbl,
    mbl_to_pbl,
    node_role,
    pbl_results_to_mbl,
    pbl_to_mbl,
    tree_shape_problems,
    unset_nodes,
)
from chimney.ndis.offload_state import OffloadStateType as T
from chimney.ndis.status import NdisStatus


def named(name: str) -> NdisOffloadHandle:
    return NdisOffloadHandle(owner=name)


def worked_example() -> ProtocolOffloadBlockList:
    """Neighbor1 -> (Path1 -> TCP1, TCP2), (Path2 -> TCP3) as in the Partial Offloads example."""
    pbl = build_pbl(
        [
            (
                T.NeighborOffloadState,
                named("N1"),
                None,
                [
                    (T.Ip4OffloadState, named("P1"), None, [
                        (T.TcpOffloadState, named("T1"), None, []),
                        (T.TcpOffloadState, named("T2"), None, []),
                    ]),
                    (T.Ip4OffloadState, named("P2"), None, [(T.TcpOffloadState, named("T3"), None, [])]),
                ],
            )
        ]
    )
    assert pbl is not None
    return pbl


def names(nodes: list[ProtocolOffloadBlockList]) -> list[str]:
    return [n.offload_handle.owner for n in nodes]  # type: ignore[union-attr]


def test_walk_is_node_then_dependents_then_next() -> None:
    root = worked_example()
    assert names(list(iter_tree(root))) == ["N1", "P1", "T1", "T2", "P2", "T3"]
    assert [d for _, d in iter_tree_depth(root)] == [0, 1, 2, 2, 1, 2]
    assert names(list(iter_dependents(root.dependent_block_list))) == ["T1", "T2"]
    assert count_nodes(root) == 6 and count_nodes(None) == 0


def test_roles() -> None:
    placeholder = ProtocolOffloadBlockList(T.NeighborOffloadState, None)
    linker_handle = named("L")
    linker_handle.miniport_offload_context.value = "ctx"
    linker = ProtocolOffloadBlockList(T.NeighborOffloadState, linker_handle)
    new = ProtocolOffloadBlockList(T.NeighborOffloadState, named("new"))
    assert [node_role(n) for n in (placeholder, linker, new)] == [
        NodeRole.PLACEHOLDER, NodeRole.LINKER, NodeRole.NEW_OFFLOAD
    ]
    assert node_role(MiniportOffloadBlockList(T.TcpOffloadState, None)) is NodeRole.PLACEHOLDER
    assert node_role(MiniportOffloadBlockList(T.TcpOffloadState, Slot())) is NodeRole.NEW_OFFLOAD
    assert node_role(MiniportOffloadBlockList(T.TcpOffloadState, Slot(1))) is NodeRole.LINKER


def test_well_formed_tree_has_no_shape_problems() -> None:
    assert tree_shape_problems(worked_example()) == []


def test_r_tree_01_tcp_node_with_dependents() -> None:
    root = ProtocolOffloadBlockList(T.TcpOffloadState, named("T"))
    root.add_dependent(ProtocolOffloadBlockList(T.TcpOffloadState, named("T2")))
    problems = tree_shape_problems(root)
    assert any("TCP node with dependents" in p for p in problems)


def test_r_tree_01_path_below_path() -> None:
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, named("N"))
    p = root.add_dependent(ProtocolOffloadBlockList(T.Ip4OffloadState, named("P")))
    p.add_dependent(ProtocolOffloadBlockList(T.Ip6OffloadState, named("P6")))
    assert any("PATH at depth 2" in x for x in tree_shape_problems(root))


def test_r_tree_01_four_layers() -> None:
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, None)
    node = root
    for _ in range(3):
        node = node.add_dependent(ProtocolOffloadBlockList(0, None))
    assert any("depth 3" in x for x in tree_shape_problems(root))


def test_pbl_to_mbl_and_back_keeps_identity_of_slots_state_and_root() -> None:
    root = worked_example()
    made: list[NdisOffloadHandle] = []

    def make(h: NdisOffloadHandle) -> NdisOffloadHandleRef:
        made.append(h)
        return NdisOffloadHandleRef("binding", h)

    mroot = pbl_to_mbl(root, make)
    assert mroot is not None
    assert [h.owner for h in made] == ["N1", "P1", "T1", "T2", "P2", "T3"]
    pnodes = list(iter_tree(root))
    mnodes = list(iter_tree(mroot))
    for p, m in zip(pnodes, mnodes, strict=True):
        assert m.miniport_offload_context is p.offload_handle.miniport_offload_context  # type: ignore[union-attr]
        assert m.ndis_offload_handle.upper is p.offload_handle
        assert m.state is p.state and m.header.type == p.header.type
        assert m.status == STATUS_UNSET
    assert len(unset_nodes(mroot)) == 6
    for i, m in enumerate(mnodes):
        m.status = NdisStatus.SUCCESS if i % 2 else NdisStatus.FAILURE
    assert mbl_results_to_pbl(mroot) is root
    assert [p.status for p in pnodes] == [m.status for m in mnodes]


def test_mbl_to_pbl_overlay_and_back() -> None:
    mroot = MiniportOffloadBlockList(T.NeighborOffloadState, Slot("n"), "hN", ["s"])
    mroot.add_dependent(MiniportOffloadBlockList(T.Ip4OffloadState, Slot("p"), "hP"))
    handles = {"hN": named("N"), "hP": named("P")}
    proot = mbl_to_pbl(mroot, lambda m: handles[m.ndis_offload_handle])
    assert proot is not None
    assert names(list(iter_tree(proot))) == ["N", "P"]
    assert proot.state is mroot.state
    for p in iter_tree(proot):
        p.status = NdisStatus.SUCCESS
    assert pbl_results_to_mbl(proot) is mroot
    assert all(m.status == NdisStatus.SUCCESS for m in iter_tree(mroot))


def test_results_back_on_a_foreign_tree_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pbl_to_mbl"):
        mbl_results_to_pbl(MiniportOffloadBlockList(T.TcpOffloadState, Slot()))
    with pytest.raises(ValueError, match="mbl_to_pbl"):
        pbl_results_to_mbl(ProtocolOffloadBlockList(T.TcpOffloadState, None))


def test_placeholder_converts_to_no_context_and_no_handle() -> None:
    root = ProtocolOffloadBlockList(T.NeighborOffloadState, None)
    m = pbl_to_mbl(root, lambda h: NdisOffloadHandleRef(None, h))
    assert m is not None and m.miniport_offload_context is None and m.ndis_offload_handle is None


@st.composite
def trees(draw: st.DrawFn) -> ProtocolOffloadBlockList:
    def row(depth: int) -> list[tuple[int, NdisOffloadHandle | None, None, list]]:  # type: ignore[type-arg]
        types = [T.NeighborOffloadState, T.Ip4OffloadState, T.TcpOffloadState]
        n = draw(st.integers(1, 3))
        out = []
        for _ in range(n):
            handle = draw(st.sampled_from([None, "new", "linker"]))
            h = None if handle is None else NdisOffloadHandle()
            if handle == "linker":
                assert h is not None
                h.miniport_offload_context.value = object()
            deps = row(depth + 1) if depth < 2 and draw(st.booleans()) else []
            out.append((types[depth], h, None, deps))
        return out

    pbl = build_pbl(row(0))
    assert pbl is not None
    return pbl


@given(trees())
def test_conversion_preserves_shape_roles_and_order(root: ProtocolOffloadBlockList) -> None:
    mroot = pbl_to_mbl(root, lambda h: NdisOffloadHandleRef(None, h))
    assert mroot is not None
    pairs = list(zip(iter_tree_depth(root), iter_tree_depth(mroot), strict=True))
    for (p, pd), (m, md) in pairs:
        assert pd == md and node_role(p) is node_role(m)
    assert tree_shape_problems(root) == []
    for m in iter_tree(mroot):
        m.status = NdisStatus.SUCCESS
    assert mbl_results_to_pbl(mroot) is root
    assert unset_nodes(root) == []
