"""Offload block lists (contract §2.2-2.3): NDIS_OBJECT_HEADER, Slot, NDIS_OFFLOAD_HANDLE, the miniport
and protocol block-list nodes, tree walks, node roles and the PBL <-> MBL conversions NDIS and IMs do.

NDIS name -> Python name:
  NDIS_OBJECT_HEADER -> NdisObjectHeader, NDIS_OFFLOAD_HANDLE -> NdisOffloadHandle,
  NDIS_MINIPORT_OFFLOAD_BLOCK_LIST -> MiniportOffloadBlockList (MBL),
  NDIS_PROTOCOL_OFFLOAD_BLOCK_LIST -> ProtocolOffloadBlockList (PBL), PVOID* -> Slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from chimney.ndis.offload_state import Layer, OffloadStateType, layer_of

# Block Status before the target wrote it (R-TREE-02). Not a u32, so it can never be a real NDIS_STATUS.
STATUS_UNSET: int = -1


class Slot:
    """A PVOID* : `value` is the PVOID the underlying driver writes (its offload context reference)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Slot({self.value!r})"


class NdisObjectHeader:
    """NDIS_OBJECT_HEADER: for block lists `type` carries an OFFLOAD_STATE_TYPE (§5.6)."""

    __slots__ = ("revision", "size", "type")

    def __init__(self, type: int = 0, revision: int = 1, size: int = 0) -> None:
        self.type = type
        self.revision = revision
        self.size = size

    def __repr__(self) -> str:
        return f"NdisObjectHeader(type={self.type}, revision={self.revision}, size={self.size})"


class NdisOffloadHandle:
    """NDIS_OFFLOAD_HANDLE: one per offloaded object in the host TCB or an IM offload entry.

    `ndis_reserved[0]` is NDIS's: the `NdisOffloadHandleRef` created the first time the handle crossed
    a binding. `miniport_offload_context` is the slot the driver below writes its context into.
    `owner` is free for the creating driver (e.g. the host TCB or the IM offload entry).
    """

    __slots__ = ("miniport_offload_context", "ndis_reserved", "owner")

    def __init__(self, owner: Any = None) -> None:
        self.ndis_reserved: list[Any] = [None]
        self.miniport_offload_context = Slot()
        self.owner = owner

    def __repr__(self) -> str:
        return f"<NdisOffloadHandle ctx={self.miniport_offload_context.value!r} owner={self.owner!r}>"


class NdisOffloadHandleRef:
    """The NdisOffloadHandle NDIS puts into a miniport block list: resolves back to the binding and the
    caller's NDIS_OFFLOAD_HANDLE, so NdisTcpOffloadEventHandler / ReceiveHandler can find the protocol."""

    __slots__ = ("binding", "upper")

    def __init__(self, binding: Any, upper: NdisOffloadHandle) -> None:
        self.binding = binding
        self.upper = upper

    def __repr__(self) -> str:
        return f"<NdisOffloadHandleRef binding={self.binding!r} upper={self.upper!r}>"


class _BlockBase:
    __slots__ = (
        "dependent_block_list",
        "header",
        "im_reserved",
        "miniport_reserved",
        "net_buffer_list_chain",
        "next_block",
        "port_number",
        "protocol_reserved",
        "scratch",
        "source_handle",
        "state",
        "status",
    )

    def __init__(self, type: int, state: list[Any] | None, port_number: int) -> None:
        self.header = NdisObjectHeader(type)
        self.next_block: Any = None
        self.dependent_block_list: Any = None
        self.status: int = STATUS_UNSET
        self.protocol_reserved: list[Any] = [None, None]
        self.miniport_reserved: list[Any] = [None, None]
        self.im_reserved: list[Any] = [None, None]
        self.scratch: list[Any] = [None, None]
        self.source_handle: Any = None
        self.port_number = port_number
        self.net_buffer_list_chain: Any = None
        # The trailing state structures (§2.3 "(trailing)"): CONST, CACHED, DELEGATED order for *State types.
        self.state: list[Any] = state if state is not None else []

    @property
    def layer(self) -> Layer | None:
        try:
            return layer_of(OffloadStateType(self.header.type))
        except ValueError:
            return None

    def add_dependent(self, child: Any) -> Any:
        """Append `child` to this node's dependent list (keeps NextBlock order); returns child."""
        if self.dependent_block_list is None:
            self.dependent_block_list = child
        else:
            last = self.dependent_block_list
            while last.next_block is not None:
                last = last.next_block
            last.next_block = child
        return child


class MiniportOffloadBlockList(_BlockBase):
    """NDIS_MINIPORT_OFFLOAD_BLOCK_LIST: the node a miniport (target or IM virtual miniport) sees."""

    __slots__ = ("miniport_offload_context", "ndis_offload_handle", "ndis_reserved")

    def __init__(
        self,
        type: int = 0,
        miniport_offload_context: Slot | None = None,
        ndis_offload_handle: Any = None,
        state: list[Any] | None = None,
        port_number: int = 0,
    ) -> None:
        super().__init__(type, state, port_number)
        self.ndis_reserved: list[Any] = [None, None]
        self.miniport_offload_context = miniport_offload_context
        self.ndis_offload_handle = ndis_offload_handle

    def __repr__(self) -> str:
        return (
            f"<MBL type={self.header.type} role={node_role(self).value} status={_st(self.status)} "
            f"ctx={self.miniport_offload_context!r}>"
        )


class ProtocolOffloadBlockList(_BlockBase):
    """NDIS_PROTOCOL_OFFLOAD_BLOCK_LIST: the node a protocol (host or IM lower edge) builds and gets back."""

    __slots__ = ("ndis_reserved", "offload_handle")

    def __init__(
        self,
        type: int = 0,
        offload_handle: NdisOffloadHandle | None = None,
        state: list[Any] | None = None,
        port_number: int = 0,
    ) -> None:
        super().__init__(type, state, port_number)
        self.ndis_reserved: list[Any] = [None, None, None]
        self.offload_handle = offload_handle

    def __repr__(self) -> str:
        return f"<PBL type={self.header.type} status={_st(self.status)} handle={self.offload_handle!r}>"


def _st(code: int) -> str:
    return "unset" if code == STATUS_UNSET else f"0x{code:08X}"


class NodeRole(Enum):
    """Placeholders, Linkers, and New Offloads (§2.3 table)."""

    PLACEHOLDER = "placeholder"
    LINKER = "linker"
    NEW_OFFLOAD = "new"


def node_role(node: MiniportOffloadBlockList | ProtocolOffloadBlockList) -> NodeRole:
    if isinstance(node, MiniportOffloadBlockList):
        slot = node.miniport_offload_context
    else:
        slot = node.offload_handle.miniport_offload_context if node.offload_handle is not None else None
    if slot is None:
        return NodeRole.PLACEHOLDER
    return NodeRole.NEW_OFFLOAD if slot.value is None else NodeRole.LINKER


def iter_tree(root: Any) -> Iterator[Any]:
    """Every node, in the target's walk order: node, then its dependent subtree, then its NextBlock."""
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        yield node
        if node.next_block is not None:
            stack.append(node.next_block)
        if node.dependent_block_list is not None:
            stack.append(node.dependent_block_list)


def iter_tree_depth(root: Any) -> Iterator[tuple[Any, int]]:
    """(node, depth) pairs in the same order as `iter_tree`; the root layer has depth 0."""
    stack = [(root, 0)] if root is not None else []
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if node.next_block is not None:
            stack.append((node.next_block, depth))
        if node.dependent_block_list is not None:
            stack.append((node.dependent_block_list, depth + 1))


def iter_dependents(node: Any) -> Iterator[Any]:
    """The direct dependents of `node` (its DependentBlockList and that node's NextBlock chain)."""
    child = node.dependent_block_list
    while child is not None:
        yield child
        child = child.next_block


def count_nodes(root: Any) -> int:
    return sum(1 for _ in iter_tree(root))


def unset_nodes(root: Any) -> list[Any]:
    """Nodes whose Status was never written (R-TREE-02)."""
    return [n for n in iter_tree(root) if n.status == STATUS_UNSET]


def tree_shape_problems(root: Any) -> list[str]:
    """R-TREE-01: NextBlock links the same layer, DependentBlockList goes exactly one layer up, depth <= 3.

    Nodes with no recognised layer (placeholders, invalidate trees of bare nodes) take their layer
    from their position, so only typed nodes are checked against their position.
    """
    problems: list[str] = []
    for node, depth in iter_tree_depth(root):
        if depth > 2:
            problems.append(f"{node!r} at depth {depth} (max 3 layers)")
            continue
        layer = node.layer
        if node_role(node) is not NodeRole.PLACEHOLDER and layer is not None and node.header.type != 0:
            ref_layer = _root_layer(root)
            if ref_layer is not None and layer != ref_layer + depth:
                problems.append(f"{node!r} is layer {layer.name} at depth {depth} below a {ref_layer.name} root")
        if layer is Layer.TCP and node.dependent_block_list is not None:
            problems.append(f"{node!r} is a TCP node with dependents")
    return problems


def _root_layer(root: Any) -> Layer | None:
    """The layer of the root row: from the first typed node, discounted by its depth."""
    for node, depth in iter_tree_depth(root):
        layer = node.layer
        if layer is not None and node_role(node) is not NodeRole.PLACEHOLDER:
            return Layer(max(0, layer - depth))
    return None


HandleFactory = Callable[[NdisOffloadHandle], Any]


def pbl_to_mbl(root: ProtocolOffloadBlockList | None, make_handle: HandleFactory) -> MiniportOffloadBlockList | None:
    """Build the miniport block list NDIS passes down for `root` (a PBL tree).

    Per node: MiniportOffloadContext = the Slot inside the caller's NDIS_OFFLOAD_HANDLE (None for a
    placeholder); NdisOffloadHandle = make_handle(offload handle). The trailing state list and the
    NetBufferListChain are shared, not copied (real NDIS overlays the same memory). `ndis_reserved[0]`
    of every MBL node points at its PBL node so `mbl_to_pbl_back` can write results back.
    """
    if root is None:
        return None
    return _convert_down(root, make_handle)


def _convert_down(proot: ProtocolOffloadBlockList, make_handle: HandleFactory) -> MiniportOffloadBlockList:
    # Iterative, in walk order (node, its dependents, then NextBlock): a row of 10,000 sibling TCP
    # nodes must not recurse along NextBlock.
    mroot = _mbl_node(proot, make_handle)
    stack: list[tuple[ProtocolOffloadBlockList, MiniportOffloadBlockList, bool]] = []
    if proot.next_block is not None:
        stack.append((proot.next_block, mroot, False))
    if proot.dependent_block_list is not None:
        stack.append((proot.dependent_block_list, mroot, True))
    while stack:
        pnode, parent, dependent = stack.pop()
        m = _mbl_node(pnode, make_handle)
        if dependent:
            parent.dependent_block_list = m
        else:
            parent.next_block = m
        if pnode.next_block is not None:
            stack.append((pnode.next_block, m, False))
        if pnode.dependent_block_list is not None:
            stack.append((pnode.dependent_block_list, m, True))
    return mroot


def _mbl_node(pnode: ProtocolOffloadBlockList, make_handle: HandleFactory) -> MiniportOffloadBlockList:
    h = pnode.offload_handle
    m = MiniportOffloadBlockList(
        pnode.header.type,
        h.miniport_offload_context if h is not None else None,
        make_handle(h) if h is not None else None,
        pnode.state,
        pnode.port_number,
    )
    m.header.revision = pnode.header.revision
    m.header.size = pnode.header.size
    m.net_buffer_list_chain = pnode.net_buffer_list_chain
    m.source_handle = pnode.source_handle
    m.im_reserved = pnode.im_reserved
    m.protocol_reserved = pnode.protocol_reserved
    m.status = STATUS_UNSET
    m.ndis_reserved[0] = pnode
    return m


def mbl_results_to_pbl(mroot: MiniportOffloadBlockList) -> ProtocolOffloadBlockList:
    """Write a completed MBL tree's outputs (Status, NetBufferListChain, trailing state) back into the
    PBL tree it was built from; returns the PBL root. Trees must have the shape `pbl_to_mbl` produced."""
    for m in iter_tree(mroot):
        p = m.ndis_reserved[0]
        if not isinstance(p, ProtocolOffloadBlockList):
            raise ValueError(f"{m!r} was not built by pbl_to_mbl (NdisReserved[0] lost)")
        p.status = m.status
        p.net_buffer_list_chain = m.net_buffer_list_chain
        p.state = m.state
    return mroot.ndis_reserved[0]


def mbl_to_pbl(
    root: MiniportOffloadBlockList | None, resolve: Callable[[MiniportOffloadBlockList], NdisOffloadHandle | None]
) -> ProtocolOffloadBlockList | None:
    """Build a PBL tree overlaying an MBL tree (upward indications, or an IM re-issuing downward).

    `resolve(mnode)` supplies the OffloadHandle for each node (None for placeholders). Each PBL node's
    `ndis_reserved[2]` (a slot NDIS itself never uses) points back at its MBL node so
    `pbl_results_to_mbl` can rebuild the MBL.
    """
    if root is None:
        return None
    proot = _pbl_node(root, resolve)
    stack: list[tuple[MiniportOffloadBlockList, ProtocolOffloadBlockList, bool]] = []  # as in pbl_to_mbl
    if root.next_block is not None:
        stack.append((root.next_block, proot, False))
    if root.dependent_block_list is not None:
        stack.append((root.dependent_block_list, proot, True))
    while stack:
        m, parent, dependent = stack.pop()
        p = _pbl_node(m, resolve)
        if dependent:
            parent.dependent_block_list = p
        else:
            parent.next_block = p
        if m.next_block is not None:
            stack.append((m.next_block, p, False))
        if m.dependent_block_list is not None:
            stack.append((m.dependent_block_list, p, True))
    return proot


def _pbl_node(
    m: MiniportOffloadBlockList, resolve: Callable[[MiniportOffloadBlockList], NdisOffloadHandle | None]
) -> ProtocolOffloadBlockList:
    p = ProtocolOffloadBlockList(m.header.type, resolve(m), m.state, m.port_number)
    p.header.revision = m.header.revision
    p.header.size = m.header.size
    p.net_buffer_list_chain = m.net_buffer_list_chain
    p.status = m.status
    p.source_handle = m.source_handle
    p.im_reserved = m.im_reserved
    p.protocol_reserved = m.protocol_reserved
    p.ndis_reserved[2] = m
    return p


def pbl_results_to_mbl(proot: ProtocolOffloadBlockList) -> MiniportOffloadBlockList:
    """Inverse of `mbl_to_pbl` for completions: copy Status / NetBufferListChain / state back."""
    for p in iter_tree(proot):
        m = p.ndis_reserved[2]
        if not isinstance(m, MiniportOffloadBlockList):
            raise ValueError(f"{p!r} was not built by mbl_to_pbl (NdisReserved[0] lost)")
        m.status = p.status
        m.net_buffer_list_chain = p.net_buffer_list_chain
        m.state = p.state
    return proot.ndis_reserved[2]


def build_pbl(
    spec: list[tuple[int, NdisOffloadHandle | None, list[Any] | None, list[Any]]],
) -> ProtocolOffloadBlockList | None:
    """Convenience for tests and the host: nested (type, offload_handle, state, dependents) tuples of
    one layer row -> a linked PBL row; returns the first node."""
    first: ProtocolOffloadBlockList | None = None
    prev: ProtocolOffloadBlockList | None = None
    for type_, handle, state, deps in spec:
        node = ProtocolOffloadBlockList(type_, handle, state)
        node.dependent_block_list = build_pbl(deps)
        if prev is None:
            first = node
        else:
            prev.next_block = node
        prev = node
    return first
