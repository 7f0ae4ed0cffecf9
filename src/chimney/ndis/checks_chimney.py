"""ChimneyChecks: the per-offloaded-object phase machine of the contract verifier (contract §5.11) and
the TREE/OFF/TRM/SEND/IND/EVT/TMR/TS rules checked on it at the NDIS boundary.

The checks every `Ndis(scheduler, verifier)` runs unless `checks=` names another class (core.DEFAULT_CHECKS /
`default_checks`; `checks=BoundaryChecks` keeps only the crossing checks). Every object NDIS routes an initiate
for gets an `OffloadedObject` keyed by its MiniportOffloadContext slot (one per binding level, so IM
stacks are checked at each edge) that walks OFFLOADING -> OFFLOADED (+ flags) -> TERMINATING ->
TERMINATED (or FAILED). The edges it needs beyond the crossing checks (handler entered/returned for
state calls, chimney I/O, indications and events; status indications) come from the core
`BoundaryChecks` edge hooks it overrides.

NDIS name -> checked at (Python):
  MiniportInitiateOffload / NdisMInitiateOffloadComplete -> state_op / state_complete (+ call windows)
  MiniportTerminateOffload / NdisMTerminateOffloadComplete -> state_op / state_complete
  NdisOffloadTcpSend/Receive/Disconnect/Forward -> io_request;  NdisTcpOffload*Complete -> complete
  NdisTcpOffloadReceiveHandler -> indication;  NdisTcpOffloadEventHandler -> tcp_event_pre
  NdisMIndicateReceiveNetBufferLists -> rx_indicate (normal-receive pools, R-IND-15)
  NdisMIndicateStatusEx -> status_indication (OFFLOAD_PAUSE / UPLOAD_ALL bookkeeping)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import Enum, IntFlag
from typing import Any

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    NodeRole,
    ProtocolOffloadBlockList,
    Slot,
    iter_dependents,
    iter_tree,
    node_role,
)
from chimney.ndis.buffers import NblInfo, NetBufferList
from chimney.ndis.core import Adapter, AdapterState, Binding, BoundaryChecks, Ndis, Op, pnode_role
from chimney.ndis.offload_state import (
    OFFLOADABLE_STATES,
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    TIMER_NOT_RUNNING,
    Layer,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpCachedFlags,
    TcpConnectionState,
    TcpOffloadEventType,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.status import NdisStatus

SEQ_MASK = 0xFFFFFFFF
_BYTES = NblInfo.TcpOffloadBytesTransferred
_OK_NODE = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)
_FIN_SENT_STATES = frozenset(
    {TcpConnectionState.FinWait1, TcpConnectionState.FinWait2, TcpConnectionState.Closing, TcpConnectionState.LastAck}
)
_FIN_RCVD_STATES = frozenset({TcpConnectionState.CloseWait, TcpConnectionState.Closing, TcpConnectionState.LastAck})
_STATE_CLASSES = (
    NeighborOffloadStateConst,
    NeighborOffloadStateCached,
    NeighborOffloadStateDelegated,
    PathOffloadStateConst,
    PathOffloadStateCached,
    PathOffloadStateDelegated,
    TcpOffloadStateConst,
    TcpOffloadStateCached,
    TcpOffloadStateDelegated,
)
_T = OffloadStateType
# R-TREE-16: the trailing structures each Header.Type announces, in order.
EXPECTED_STATE: dict[int, tuple[type, ...]] = {
    _T.NeighborOffloadConstState: (NeighborOffloadStateConst,),
    _T.NeighborOffloadCachedState: (NeighborOffloadStateCached,),
    _T.NeighborOffloadDelegatedState: (NeighborOffloadStateDelegated,),
    _T.NeighborOffloadState: (NeighborOffloadStateConst, NeighborOffloadStateCached, NeighborOffloadStateDelegated),
    _T.Ip4OffloadConstState: (PathOffloadStateConst,),
    _T.Ip4OffloadCachedState: (PathOffloadStateCached,),
    _T.Ip4OffloadDelegatedState: (PathOffloadStateDelegated,),
    _T.Ip4OffloadState: (PathOffloadStateConst, PathOffloadStateCached, PathOffloadStateDelegated),
    _T.Ip6OffloadConstState: (PathOffloadStateConst,),
    _T.Ip6OffloadCachedState: (PathOffloadStateCached,),
    _T.Ip6OffloadDelegatedState: (PathOffloadStateDelegated,),
    _T.Ip6OffloadState: (PathOffloadStateConst, PathOffloadStateCached, PathOffloadStateDelegated),
    _T.TcpOffloadConstState: (TcpOffloadStateConst,),
    _T.TcpOffloadCachedState: (TcpOffloadStateCached,),
    _T.TcpOffloadDelegatedState: (TcpOffloadStateDelegated,),
    _T.TcpOffloadState: (TcpOffloadStateConst, TcpOffloadStateCached, TcpOffloadStateDelegated),
}


class Phase(Enum):
    """§5.11 connection phases (FAILED: the initiate completed without offloading the object)."""

    OFFLOADING = "offloading"
    OFFLOADED = "offloaded"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


class ConnFlag(IntFlag):
    """§5.11 optional flags of an OFFLOADED object."""

    UPLOAD_REQUESTED = 0x01
    MANDATORY_RETRIEVE = 0x02
    DISCONNECT_INDICATED = 0x04
    ABORTED = 0x08
    FIN_SENT = 0x10
    RST_SENT = 0x20
    INVALIDATED = 0x40


# Plain ints for the per-I/O paths (IntFlag arithmetic costs ~1 µs a time on 3.11).
F_UPLOAD_REQUESTED = int(ConnFlag.UPLOAD_REQUESTED)
F_MANDATORY = int(ConnFlag.MANDATORY_RETRIEVE)
F_DISCONNECT = int(ConnFlag.DISCONNECT_INDICATED)
F_ABORTED = int(ConnFlag.ABORTED)
F_FIN_SENT = int(ConnFlag.FIN_SENT)
F_RST_SENT = int(ConnFlag.RST_SENT)
F_INVALIDATED = int(ConnFlag.INVALIDATED)
_OFFLOADING = Phase.OFFLOADING
_OFFLOADED = Phase.OFFLOADED
_TERMINATING = Phase.TERMINATING
_TERMINATED = Phase.TERMINATED
_SUCCESS = int(NdisStatus.SUCCESS)


class IoRecord:
    """One NBL handed to the target (chimney I/O or initiate NetBufferListChain), with the NB layout
    at hand-off so the completion's data-start advance can be compared (R-SEND-04)."""

    __slots__ = (
        "abort_expected",
        "after_refusal",
        "after_retrieve",
        "from_initiate",
        "kind",
        "layout",
        "nbl",
        "obj",
        "total",
    )

    def __init__(self, obj: OffloadedObject, kind: str, nbl: NetBufferList, *, from_initiate: bool = False) -> None:
        self.obj = obj
        self.kind = kind
        self.nbl = nbl
        layout = []
        total = 0
        nb = nbl.first_net_buffer
        while nb is not None:
            layout.append((nb, nb.data_offset, nb.data_length, nb.mdl_chain))
            total += nb.data_length
            nb = nb.next
        self.layout: tuple[tuple[Any, int, int, Any], ...] = tuple(layout)
        self.total = total
        self.from_initiate = from_initiate
        self.after_refusal = False
        self.after_retrieve = bool(obj.flags & F_MANDATORY)
        self.abort_expected = False

    def advanced(self) -> int | None:
        """Bytes the data start moved since hand-off; None when the NB list or an MDL chain was
        changed (FreeMdl must be None, R-SEND-04)."""
        nb = self.nbl.first_net_buffer
        moved = 0
        for rec_nb, off, length, mdl in self.layout:
            if nb is not rec_nb or nb.mdl_chain is not mdl:
                return None
            delta = nb.data_offset - off
            if delta < 0 or delta > length or nb.data_length != length - delta:
                return None
            moved += delta
            nb = nb.next
        return moved if nb is None else None


class OffloadedObject:
    """One offloaded neighbor/path/TCP object as seen at one NDIS edge (§5.11 phase machine)."""

    __slots__ = (
        "adapter",
        "cached",
        "calls_in",
        "chain_snap",
        "children",
        "completing",
        "context",
        "flags",
        "in_recv",
        "in_send",
        "indicating",
        "io",
        "last_backlog",
        "layer",
        "parent",
        "pending_ops",
        "phase",
        "posts",
        "recv_reentry_ok",
        "refused",
        "send_reentry_ok",
        "sends",
        "slot",
        "ts_time",
        "unconsumed",
    )

    def __init__(self, slot: Slot, layer: Layer | None, adapter: Adapter, parent: OffloadedObject | None) -> None:
        self.slot = slot
        self.layer = layer
        self.adapter = adapter
        self.parent = parent
        self.children: list[OffloadedObject] = []
        if parent is not None:
            parent.children.append(self)
        self.phase = Phase.OFFLOADING
        self.flags = 0  # ConnFlag bits as a plain int
        self.context: Any = None
        self.completing = False  # inside NdisMInitiateOffloadComplete (R-OFF-09)
        self.sends: dict[int, IoRecord] = {}  # outstanding send NBLs, submission order (R-SEND-03, R-TRM-12)
        self.io: dict[int, IoRecord] = {}  # outstanding receive/disconnect/forward NBLs
        self.in_send = 0  # MiniportTcpOffloadSend calls in progress (R-SEND-11)
        self.send_reentry_ok = False  # a send completed inside the call: the host may react with a send
        self.in_recv = 0  # MiniportTcpOffloadReceive calls in progress (R-RECV-16)
        self.recv_reentry_ok = False  # a request completed inside the call: the host may post from its handler
        self.posts = 0  # receive requests ever posted (a post inside an indication re-enables it, R-IND-08)
        self.calls_in = 0  # receive-post / disconnect calls in progress (R-TRM-05)
        self.indicating = 0  # receive indications / events in progress (R-TRM-10, R-EVT-01)
        self.pending_ops = 0  # update/query/invalidate not completed (R-TRM-05)
        self.refused = False  # an indication was refused and no receive was posted since (R-IND-08)
        self.unconsumed = False  # refused data not yet drained (R-EVT-01)
        self.last_backlog: int | None = None  # R-EVT-10
        self.ts_time: int | None = None  # TsTime the host handed over (R-TS-04)
        self.cached: Any = None
        self.chain_snap: tuple[tuple[NetBufferList, int], ...] = ()  # NetBufferListChain statuses at initiate

    @property
    def live(self) -> bool:
        return self.phase in (Phase.OFFLOADING, Phase.OFFLOADED, Phase.TERMINATING)

    @property
    def half_closed(self) -> bool:
        """FIN_WAIT1/2 or CLOSE_WAIT as far as the boundary shows (§6.8)."""
        if self.flags & (F_ABORTED | F_RST_SENT):
            return False
        return bool(self.flags & F_FIN_SENT) != bool(self.flags & F_DISCONNECT)

    def __repr__(self) -> str:
        layer = self.layer.name if self.layer is not None else "?"
        return f"<OffloadedObject {layer} {self.phase.value} flags={ConnFlag(self.flags)!r} ctx={self.context!r}>"


def _nbls(head: NetBufferList | None) -> Iterator[NetBufferList]:
    while head is not None:
        yield head
        head = head.next


def _find(state: list[Any], cls: type) -> Any:
    for s in state:
        if isinstance(s, cls):
            return s
    return None


def _subtree(node: Any) -> Iterator[Any]:
    """Every node below `node` (its dependent list, their NextBlocks and their subtrees)."""
    if node.dependent_block_list is not None:
        yield from iter_tree(node.dependent_block_list)


class ChimneyChecks(BoundaryChecks):
    """BoundaryChecks plus the chimney phase machine. Rules listed in `ADVISORY` (SHOULD-level rules a
    correct target may legitimately break under load) are counted and kept in `advisories` instead of
    failing; a subclass with `ADVISORY = frozenset()` enforces them too."""

    ADVISORY: frozenset[str] = frozenset({"R-OFF-12", "R-OFF-28"})
    NORMAL_NBL_PASSTHROUGH = ("complete",)  # complete() adds checks only for chimney I/O completions
    TREE_HISTORY = 32  # completed trees kept for the R-TREE-04 write-after-completion check
    HISTORY = 8192  # returned / failed-offload NBLs and dead objects remembered for R-TRM-23 / R-OFF-23

    def __init__(self, ndis: Ndis) -> None:
        super().__init__(ndis)
        self.objects: dict[int, OffloadedObject] = {}  # id(slot) -> object (slot kept alive by the object)
        self.live_contexts: dict[int, OffloadedObject] = {}  # id(context value) -> object (R-TREE-12)
        self.io: dict[tuple[int, int], IoRecord] = {}  # (id(adapter), NBL serial) -> outstanding I/O
        # Bounded memories (oldest dropped past HISTORY) so long runs do not grow without limit.
        self.failed_chain: dict[tuple[int, int], None] = {}  # R-OFF-23
        self.returned: dict[tuple[int, int], OffloadedObject] = {}  # returned at terminate (R-TRM-23)
        self.initiating: dict[int, int] = {}  # id(adapter) -> initiates in progress (R-OFF-12)
        self.upload_all: set[int] = set()  # id(adapter) after OFFLOAD_PAUSE / UPLOAD_ALL (R-SEND-14)
        self.normal_pools: dict[int, set[int]] = {}  # id(adapter) -> id(pool) of normal receives (R-IND-15)
        self.in_call: set[int] = set()  # id(root PBL) while the miniport handler runs (R-OFF-01, R-TRM-06)
        self.tree_objs: dict[int, list[OffloadedObject]] = {}  # id(root PBL) -> objects of a pending op
        self.completing: dict[int, list[OffloadedObject]] = {}  # id(root MBL) -> objects being completed
        self.completed_trees: deque[tuple[MiniportOffloadBlockList, list[tuple[Any, int, Any]]]] = deque(
            maxlen=self.TREE_HISTORY
        )
        self.advisories: list[tuple[str, str]] = []
        # >0 while NDIS fails a tree itself (no chimney below, R-IM-13) and delivers that completion inline:
        # an IM relaying it upward then completes inside its own handler through no fault of its own.
        self.ndis_inline = 0

    # ------------------------------------------------------------------------------- plumbing

    def _fail(self, rule_id: str, message: str, *objects: Any) -> None:
        if rule_id in self.ADVISORY:
            self.v.count(rule_id)
            self.advisories.append((rule_id, message))
            return
        self.v.fail(rule_id, message, *objects)

    def _check(self, ok: bool, rule_id: str, message: str, *objects: Any) -> bool:
        if rule_id in self.ADVISORY:
            self.v.count(rule_id)
            if not ok:
                self.advisories.append((rule_id, message))
            return ok
        return self.v.check(ok, rule_id, message, *objects)

    # ------------------------------------------------------------------------------- core edge hooks

    def state_call_enter(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        self.in_call.add(id(pbl))
        self.ndis_inline += blocked

    def state_call_exit(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        self.in_call.discard(id(pbl))
        self.ndis_inline -= blocked

    def state_complete_returned(self, op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
        for obj in self.completing.pop(id(mbl), ()):
            obj.completing = False  # R-OFF-09: ProtocolInitiateOffloadComplete has returned

    def io_enter(
        self, kind: str, handle: NdisOffloadHandle, nbl: NetBufferList, extra: tuple[int, ...]
    ) -> OffloadedObject | None:
        obj = self._obj_of(handle)
        if obj is None:
            return None
        self.io_request(kind, obj, handle, nbl, extra)
        if kind == "send":
            if not obj.in_send:
                obj.send_reentry_ok = False
            obj.in_send += 1
        elif kind == "receive" or kind == "disconnect":  # R-TRM-05 names these two
            obj.calls_in += 1
            if kind == "receive":
                if not obj.in_recv:
                    obj.recv_reentry_ok = False
                obj.in_recv += 1
        return obj

    def io_exit(self, kind: str, handle: NdisOffloadHandle, token: Any) -> None:
        obj: OffloadedObject | None = token
        if obj is None:
            return
        if kind == "send":
            obj.in_send -= 1
        elif kind == "receive" or kind == "disconnect":
            obj.calls_in -= 1
            if kind == "receive":
                obj.in_recv -= 1

    def indication_enter(self, ref: NdisOffloadHandleRef, nbl: NetBufferList, status: int) -> Any:
        obj = self._obj_of_ref(ref)
        if obj is None:
            return None
        self.indication(obj, ref, nbl)
        obj.indicating += 1
        return (obj, obj.posts)

    def indication_exit(self, ref: NdisOffloadHandleRef, token: Any, result: tuple[int, int] | None) -> None:
        if token is None:
            return
        obj, posts = token
        obj.indicating -= 1
        if result is None:
            return
        if result[0] == NdisStatus.SUCCESS:
            obj.unconsumed = False
        else:
            obj.unconsumed = True
            # A receive posted from inside the indication handler already re-enabled indications.
            obj.refused = obj.posts == posts

    def event_enter(self, ref: NdisOffloadHandleRef, event_type: int, info: int) -> Any:
        obj = self._obj_of_ref(ref)
        if obj is None:
            return None
        self.tcp_event_pre(obj, event_type, info)
        obj.indicating += 1
        return obj

    def event_exit(self, ref: NdisOffloadHandleRef, token: Any, completed: bool) -> None:
        if token is not None:
            token.indicating -= 1

    def _obj_of(self, offload_handle: Any) -> OffloadedObject | None:
        slot = getattr(offload_handle, "miniport_offload_context", None)
        return self.objects.get(id(slot)) if slot is not None else None

    def _obj_of_ref(self, ref: Any) -> OffloadedObject | None:
        if not isinstance(ref, NdisOffloadHandleRef):
            return None  # core reports R-TREE-14
        return self._obj_of(ref.upper)

    # ------------------------------------------------------------------------------- state operations

    def state_op(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        super().state_op(op, binding, pbl)
        self._check_completed_trees()
        adapter = binding.adapter
        if _blocked(adapter):
            return  # NDIS fails the tree itself; nothing reaches a target
        if op is Op.INITIATE:
            self._initiate(binding, adapter, pbl)
            return
        objs: list[OffloadedObject] = []
        ids: set[int] = set()
        for node in iter_tree(pbl):
            h = node.offload_handle
            obj = self._obj_of(h) if h is not None else None
            if op is Op.INVALIDATE:
                self.v.check(
                    not node.state, "R-TREE-17", "invalidate tree node carries trailing state structures", node
                )
            elif node.state:
                self._state_types(node, "R-TREE-16")
            if obj is None:
                continue
            self.v.check(
                obj.phase is not Phase.OFFLOADING,
                "R-OFF-11",
                f"{op.value} of an object whose offload is still in progress",
                obj,
                node,
            )
            if obj.phase is Phase.OFFLOADED:
                self._same_context(obj, f"Ndis{op.value.capitalize()}Offload")
            objs.append(obj)
            ids.add(id(obj))
        if op is Op.TERMINATE:
            for obj in objs:
                if obj.layer is Layer.TCP:
                    self.v.check(
                        obj.pending_ops == 0 and obj.calls_in == 0,
                        "R-TRM-05",
                        f"terminate with {obj.pending_ops} update/query/invalidate pending and "
                        f"{obj.calls_in} receive/disconnect call(s) not returned",
                        obj,
                    )
                else:
                    left = [c for c in obj.children if c.live and c.phase is not Phase.TERMINATING and id(c) not in ids]
                    self.v.check(
                        not left,
                        "R-TRM-04",
                        f"terminate of a {obj.layer!r} object with {len(left)} dependent object(s) still offloaded "
                        "and not in the batch",
                        obj,
                        *left,
                    )
                if obj.phase is Phase.OFFLOADED:
                    obj.phase = Phase.TERMINATING
        else:
            for obj in objs:
                obj.pending_ops += 1
        self.tree_objs[id(pbl)] = objs

    def _initiate(self, binding: Binding, adapter: Adapter, pbl: ProtocolOffloadBlockList) -> None:
        v = self.v
        aid = id(adapter)
        self.initiating[aid] = self.initiating.get(aid, 0) + 1
        objs: list[OffloadedObject] = []
        stack: list[tuple[ProtocolOffloadBlockList, OffloadedObject | None]] = [(pbl, None)]
        while stack:
            node, parent = stack.pop()
            if node.next_block is not None:
                stack.append((node.next_block, parent))
            h = node.offload_handle
            slot = h.miniport_offload_context if h is not None else None
            role = node_role(node)
            obj: OffloadedObject | None = None
            if node.state:
                self._state_types(node, "R-TREE-16")
            if slot is not None:
                existing = self.objects.get(id(slot))
                busy = existing is not None and existing.phase is Phase.OFFLOADING
                v.check(
                    not busy,
                    "R-OFF-11",
                    "initiate names an object whose offload is still in progress (offloaded twice concurrently)"
                    if role is NodeRole.NEW_OFFLOAD
                    else "initiate links to an object whose offload is still in progress",
                    existing,
                    node,
                )
                if role is NodeRole.NEW_OFFLOAD and not busy:
                    if len(self.objects) > self.HISTORY:
                        self._prune()
                    obj = OffloadedObject(slot, node.layer, adapter, parent)
                    self.objects[id(slot)] = obj
                    objs.append(obj)
                    if obj.layer is Layer.TCP:
                        self._initiate_tcp(binding, adapter, obj, node)
                else:
                    obj = existing
            if node.dependent_block_list is not None:
                stack.append((node.dependent_block_list, obj))
        self.tree_objs[id(pbl)] = objs

    def _initiate_tcp(
        self, binding: Binding, adapter: Adapter, obj: OffloadedObject, node: ProtocolOffloadBlockList
    ) -> None:
        v = self.v
        dlg = _find(node.state, TcpOffloadStateDelegated)
        obj.cached = _find(node.state, TcpOffloadStateCached)
        head = node.net_buffer_list_chain
        if dlg is not None:
            v.check(
                dlg.state in OFFLOADABLE_STATES,
                "R-OFF-24",
                f"connection offloaded in state {TcpConnectionState(dlg.state).name}",
                dlg,
            )
            obj.ts_time = dlg.ts_time
            if dlg.state in _FIN_SENT_STATES:
                obj.flags |= F_FIN_SENT
            if dlg.state in _FIN_RCVD_STATES:
                obj.flags |= F_DISCONNECT
            if head is not None:
                tail = None
                total = 0
                for n in _nbls(head):
                    tail = n
                    total += n.data_length()
                v.check(
                    dlg.send_data_head is head and dlg.send_data_tail is tail,
                    "R-OFF-21",
                    "SendDataHead/SendDataTail are not the first/last NBL of NetBufferListChain",
                    dlg,
                    head,
                )
                nxt = (dlg.snd_nxt - dlg.snd_una) & SEQ_MASK
                mx = (dlg.snd_max - dlg.snd_una) & SEQ_MASK
                v.check(
                    nxt <= mx <= total + _fin(dlg),
                    "R-OFF-20",
                    f"SndNxt/SndMax offsets {nxt}/{mx} do not fit the {total} bytes of NetBufferListChain",
                    dlg,
                )
        # The core hands the chain to the target like an NdisOffloadTcpSend (R-OFF-22, stamp and ownership
        # in BoundaryChecks.chain_down); here it is tracked as outstanding send data.
        for n in _nbls(head):
            rec = IoRecord(obj, "send", n, from_initiate=True)
            key = (id(adapter), n.serial)
            self.io[key] = rec
            obj.sends[n.serial] = rec
            self.returned.pop(key, None)
            self.failed_chain.pop(key, None)
        obj.chain_snap = tuple((n, n.status) for n in _nbls(head))  # R-OFF-23

    def _prune(self) -> None:
        """Forget the oldest half of the terminated/failed objects (R-TRM-23 then only covers newer ones)."""
        dead = [k for k, o in self.objects.items() if not o.live]
        for k in dead[: max(1, len(dead) // 2)]:
            obj = self.objects.pop(k)
            if obj.parent is not None and obj in obj.parent.children:
                obj.parent.children.remove(obj)

    def _state_types(self, node: Any, rule_id: str) -> None:
        """R-TREE-16: trailing structures match Header.Type (checked when real state structs are used)."""
        state = node.state
        if not any(isinstance(s, _STATE_CLASSES) for s in state):
            return
        expected = EXPECTED_STATE.get(node.header.type)
        if expected is not None and expected[-1] is PathOffloadStateDelegated and len(state) == len(expected) - 1:
            expected = expected[:-1]  # tolerated: PATH_OFFLOAD_STATE_DELEGATED has no variables (§2.4)
        ok = expected is not None and len(state) == len(expected) and all(
            isinstance(s, e) for s, e in zip(state, expected, strict=True)
        )
        self.v.check(
            ok,
            rule_id,
            f"trailing state {[type(s).__name__ for s in state]} does not match Header.Type {node.header.type}",
            node,
        )

    def _same_context(self, obj: OffloadedObject, what: str) -> None:
        self.v.check(
            obj.slot.value is obj.context,
            "R-TREE-09",
            f"{what}: context reference changed while offloaded ({obj.context!r} -> {obj.slot.value!r})",
            obj,
        )

    def state_complete(self, op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> bool:
        if not super().state_complete(op, adapter, mbl):
            return False
        self._check_completed_trees()
        root_pbl = mbl.ndis_reserved[0]
        if self.ndis_inline:
            pass
        elif op is Op.INITIATE:
            self.v.check(
                id(root_pbl) not in self.in_call,
                "R-OFF-01",
                "NdisMInitiateOffloadComplete called inside MiniportInitiateOffload (must be asynchronous)",
                mbl,
            )
        elif op is Op.TERMINATE:
            self.v.check(
                id(root_pbl) not in self.in_call,
                "R-TRM-06",
                "NdisMTerminateOffloadComplete called inside MiniportTerminateOffload (must be asynchronous)",
                mbl,
            )
        objs = self.tree_objs.pop(id(root_pbl), [])
        if op is Op.INITIATE:
            aid = id(adapter)
            self.initiating[aid] = max(0, self.initiating.get(aid, 0) - 1)
            self._aggregation(mbl)
            self._initiate_results(adapter, mbl)
        elif op is Op.TERMINATE:
            self._terminate_results(adapter, mbl)
        else:
            for obj in objs:
                obj.pending_ops = max(0, obj.pending_ops - 1)
                if op is Op.INVALIDATE:
                    obj.flags |= F_INVALIDATED
            for node in iter_tree(mbl):
                if op is Op.INVALIDATE:
                    self.v.check(not node.state, "R-TREE-17", "invalidate completion carries state structures", node)
                elif op is Op.UPDATE:
                    if node.dependent_block_list is not None:
                        # Each path node's own status says whether it moved (the host re-links by the same
                        # per-node rule), even when the neighbor node itself failed.
                        self._relink(node)
                    # The CACHED variables the target runs with from now on (keepalive on/off: R-TRM-25);
                    # after a failed update they are unknown (the host terminates), so R-TRM-25 stops there.
                    cached = _find(node.state, TcpOffloadStateCached)
                    obj = self._obj_of_node(node) if cached is not None else None
                    if obj is not None:
                        obj.cached = cached if node.status == _SUCCESS else None
                elif op is Op.QUERY:
                    obj = self._obj_of_node(node)
                    dlg = _find(node.state, TcpOffloadStateDelegated)
                    if obj is not None and dlg is not None:
                        self._timers(obj, dlg, sum(r.total for r in obj.sends.values()), "R-QRY-08", "query")
        self.completed_trees.append(
            (mbl, [(node, node.status, node.net_buffer_list_chain) for node in iter_tree(mbl)])
        )
        return True

    def _relink(self, node: MiniportOffloadBlockList) -> None:
        """R-UPD-03: the paths below an updated neighbor node now depend on that neighbor (its old one may
        be terminated without them, R-TRM-04)."""
        parent = self._obj_of_node(node)
        if parent is None:
            return
        for dep in iter_dependents(node):
            child = self._obj_of_node(dep)
            if child is None or child.parent is parent or dep.status != _SUCCESS:
                continue
            old = child.parent
            if old is not None and child in old.children:
                old.children.remove(child)
            child.parent = parent
            parent.children.append(child)

    def _obj_of_node(self, node: MiniportOffloadBlockList) -> OffloadedObject | None:
        slot = node.miniport_offload_context
        return self.objects.get(id(slot)) if slot is not None else None

    def _check_completed_trees(self) -> None:
        """R-TREE-04 (the writes part): a completed tree must not change afterwards."""
        for mbl, snap in self.completed_trees:
            for node, status, chain in snap:
                if node.status != status or node.net_buffer_list_chain is not chain:
                    self.completed_trees.clear()
                    self.v.fail("R-TREE-04", "block list written after its completion call", mbl, node)
                    return

    def _aggregation(self, mbl: MiniportOffloadBlockList) -> None:
        """§5.2 status aggregation: R-OFF-03/04/05, R-TREE-06."""
        v = self.v
        skipped: set[int] = set()  # nodes never attempted: below a failed node, or after a failed root
        for node in iter_tree(mbl):
            if id(node) in skipped or pnode_role(node) is not NodeRole.NEW_OFFLOAD or node.status in _OK_NODE:
                continue
            below = list(_subtree(node))
            skipped.update(id(d) for d in below)
            bad = [d for d in below if d.status != NdisStatus.FAILURE]
            v.check(
                not bad,
                "R-OFF-03",
                f"dependents of a node that failed with 0x{node.status & SEQ_MASK:08X} are not all FAILURE",
                node,
                *bad,
            )
            if node is mbl:
                rest: list[Any] = []
                sib = mbl.next_block
                while sib is not None:
                    rest.extend([sib, *_subtree(sib)])
                    sib = sib.next_block
                skipped.update(id(d) for d in rest)
                bad = [d for d in rest if d.status != NdisStatus.FAILURE]
                v.check(not bad, "R-OFF-04", "root failed but traversal went on to its siblings", mbl, *bad)
        for node in iter_tree(mbl):
            if id(node) in skipped:
                continue
            role = pnode_role(node)
            deps = list(iter_dependents(node))
            ok = sum(1 for d in deps if d.status in _OK_NODE)
            if role is NodeRole.NEW_OFFLOAD and node.status in _OK_NODE:
                want = NdisStatus.SUCCESS if ok == len(deps) else NdisStatus.OFFLOAD_PARTIAL_SUCCESS
                v.check(
                    node.status == want,
                    "R-OFF-05",
                    f"new-offload node with {ok}/{len(deps)} dependents offloaded has Status "
                    f"0x{node.status & SEQ_MASK:08X}, expected 0x{want:08X}",
                    node,
                )
            elif role is NodeRole.LINKER:
                if ok == len(deps):
                    want = NdisStatus.SUCCESS
                elif ok == 0:
                    want = NdisStatus.FAILURE
                else:
                    want = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
                v.check(
                    node.status == want,
                    "R-TREE-06",
                    f"linker with {ok}/{len(deps)} dependents offloaded has Status 0x{node.status & SEQ_MASK:08X}",
                    node,
                )

    def _initiate_results(self, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
        v = self.v
        aid = id(adapter)
        done: list[OffloadedObject] = []
        for node in iter_tree(mbl):
            obj = self._obj_of_node(node)
            if obj is None or obj.phase is not Phase.OFFLOADING or pnode_role(node) is not NodeRole.NEW_OFFLOAD:
                continue
            if node.status in _OK_NODE and obj.slot.value is not None:
                obj.phase = Phase.OFFLOADED
                obj.context = obj.slot.value
                other = self.live_contexts.get(id(obj.context))
                v.check(
                    other is None or other is obj or not other.live,
                    "R-TREE-12",
                    "two offloaded objects share one context area",
                    obj,
                    other,
                )
                self.live_contexts[id(obj.context)] = obj
                obj.completing = True
                done.append(obj)
                continue
            obj.phase = Phase.FAILED
            # The core already gave the chain back to the host (BoundaryChecks.chains_back, R-OFF-23).
            for n, status in obj.chain_snap:
                key = (aid, n.serial)
                v.check(
                    n.status == status,
                    "R-OFF-23",
                    "target wrote Status into a NetBufferListChain NBL of a failed offload",
                    n,
                )
                rec = self.io.pop(key, None)
                if rec is not None:
                    rec.obj.sends.pop(n.serial, None)
                _remember(self.failed_chain, key, None, self.HISTORY)
        self.completing[id(mbl)] = done

    def _terminate_results(self, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
        aid = id(adapter)
        for node in iter_tree(mbl):
            # R-TRM-08 (SUCCESS or FAILURE only) is the core's R-TREE-15 check for terminate trees.
            if node.state:
                self._state_types(node, "R-TREE-16")
            obj = self._obj_of_node(node)
            returned = list(_nbls(node.net_buffer_list_chain))
            if obj is not None and obj.live:
                self._terminate_object(adapter, obj, node, returned)
            for n in returned:  # the core already unstamped them and gave them to the host
                rec = self.io.pop((aid, n.serial), None)
                if rec is not None:
                    rec.obj.sends.pop(n.serial, None)
                if obj is not None:
                    _remember(self.returned, (aid, n.serial), obj, self.HISTORY)

    def _terminate_object(
        self, adapter: Adapter, obj: OffloadedObject, node: MiniportOffloadBlockList, returned: list[NetBufferList]
    ) -> None:
        v = self.v
        if obj.phase is Phase.OFFLOADED or obj.phase is Phase.TERMINATING:
            self._same_context(obj, "NdisMTerminateOffloadComplete")
        v.check(
            not obj.io,
            "R-TRM-09",
            f"terminate completed with {len(obj.io)} receive/disconnect/forward request(s) outstanding: "
            + ", ".join(f"{r.kind} {r.nbl!r}" for r in obj.io.values()),
            obj,
        )
        v.check(
            obj.indicating == 0,
            "R-TRM-10",
            "terminate completed while an indication/event on the connection has not returned",
            obj,
        )
        if obj.layer is Layer.TCP:
            self._returned_sends(obj, node, returned)
        obj.phase = Phase.TERMINATED
        self.live_contexts.pop(id(obj.context), None)
        for r in obj.io.values():
            self.io.pop((id(adapter), r.nbl.serial), None)
        obj.io.clear()

    def _returned_sends(self, obj: OffloadedObject, node: MiniportOffloadBlockList, returned: list[NetBufferList]) -> None:
        v = self.v
        outstanding = list(obj.sends)
        originals = [n for n in returned if n.serial in obj.sends]
        v.check(
            len(originals) == len(returned),
            "R-TRM-12",
            "returned NetBufferListChain contains NBLs that are not outstanding host send NBLs",
            *[n for n in returned if n.serial not in obj.sends],
        )
        order = [outstanding.index(n.serial) for n in originals]
        v.check(order == sorted(order), "R-TRM-12", "returned send NBLs are not in their original order", *returned)
        missing = [obj.sends[s] for s in outstanding if s not in {n.serial for n in returned}]
        from_initiate = [r.nbl for r in missing if r.from_initiate]
        v.check(
            not from_initiate,
            "R-OFF-22",
            "send data handed over at offload was neither completed nor returned at terminate",
            *from_initiate,
        )
        v.check(
            not missing,
            "R-TRM-11",
            "outstanding send NBL(s) neither completed nor returned at terminate",
            *[r.nbl for r in missing],
        )
        dlg = _find(node.state, TcpOffloadStateDelegated)
        total = sum(n.data_length() for n in returned)
        if not returned:
            v.check(
                dlg is None or (dlg.send_data_head is None and dlg.send_data_tail is None),
                "R-TRM-14",
                "no send data returned but SendDataHead/SendDataTail are set",
                dlg,
            )
        else:
            v.check(total > 0, "R-TRM-14", "NetBufferListChain returned without send data (must be None)", *returned)
            if dlg is not None and node.status == _SUCCESS:
                nxt = (dlg.snd_nxt - dlg.snd_una) & SEQ_MASK
                mx = (dlg.snd_max - dlg.snd_una) & SEQ_MASK
                v.check(
                    dlg.send_data_head is returned[0]
                    and dlg.send_data_tail is returned[-1]
                    and nxt <= mx <= total + _fin(dlg),
                    "R-TRM-13",
                    f"returned send data ({len(returned)} NBLs, {total} bytes) inconsistent with "
                    f"SendDataHead/Tail and SndUna/SndNxt/SndMax offsets {nxt}/{mx}",
                    dlg,
                )
        if dlg is not None and node.status == _SUCCESS:
            # A FAILURE node returns no state (lost catastrophically, R-TRM-08): only SUCCESS state is checked.
            if obj.ts_time is not None:
                delta = (dlg.ts_time - obj.ts_time) & SEQ_MASK
                v.check(
                    delta < 0x80000000,
                    "R-TS-04",
                    f"returned TsTime {dlg.ts_time} is behind the TsTime {obj.ts_time} handed over at offload",
                    dlg,
                )
            self._timers(obj, dlg, total, "R-TRM-25", "terminate")

    def _timers(self, obj: OffloadedObject, dlg: TcpOffloadStateDelegated, unsent: int, rule_id: str, what: str) -> None:
        """R-TRM-25 / R-QRY-08: TimeoutDelta -1 exactly for timers the returned state says are idle."""
        v = self.v
        idle_rtx = (
            dlg.snd_una == dlg.snd_max and unsent == 0 and dlg.state != TcpConnectionState.FinWait2
        )
        if idle_rtx:
            v.check(
                dlg.retransmit.timeout_delta == TIMER_NOT_RUNNING,
                rule_id,
                f"{what}: nothing outstanding, yet Retransmit.TimeoutDelta = {dlg.retransmit.timeout_delta}",
                dlg,
            )
        # The converse (unacked data => timer running) does not hold: an aborted connection, or one
        # whose retransmission limit triggered an upload request, keeps unacked data with no timer.
        cached = obj.cached
        if cached is not None and not cached.flags & TcpCachedFlags.KEEP_ALIVE_ENABLED:
            v.check(
                dlg.keep_alive.timeout_delta == TIMER_NOT_RUNNING,
                rule_id,
                f"{what}: keepalive disabled, yet KeepAlive.TimeoutDelta = {dlg.keep_alive.timeout_delta}",
                dlg,
            )

    # ------------------------------------------------------------------------------- chimney I/O

    def io_request(
        self, kind: str, obj: OffloadedObject, handle: NdisOffloadHandle, head: NetBufferList, extra: tuple[int, ...]
    ) -> None:
        """NdisOffloadTcpSend/Receive/Disconnect/Forward, before the target sees it. Per-NBL path: messages
        are built only on failure."""
        v = self.v
        count = v.count
        phase = obj.phase
        refusal = False
        is_send = kind == "send"
        if phase is _OFFLOADING:
            v.fail("R-OFF-11", f"NdisOffloadTcp{kind.capitalize()} on a connection whose offload is in progress", obj)
        else:
            count("R-OFF-11")
        if is_send or kind == "receive":
            if phase is _TERMINATING or phase is _TERMINATED:
                v.fail("R-TRM-22", f"NdisOffloadTcp{kind.capitalize()} after NdisTerminateOffload of the connection", obj)
            else:
                count("R-TRM-22")
        if phase is _OFFLOADED:
            if obj.slot.value is obj.context:
                count("R-TREE-09")
            else:
                self._same_context(obj, f"NdisOffloadTcp{kind.capitalize()}")
        if is_send:
            if obj.in_send and not obj.send_reentry_ok:
                v.fail("R-SEND-11", "NdisOffloadTcpSend while another send on the connection is in progress", obj)
            else:
                count("R-SEND-11")
        elif kind == "receive":
            # R-RECV-16: posts on one connection are serialized (several may be outstanding); a post from the
            # completion handler of a request completed inside the call is a reaction, like R-SEND-11.
            if obj.in_recv and not obj.recv_reentry_ok:
                v.fail("R-RECV-16", "NdisOffloadTcpReceive while another receive post on the connection is in "
                       "progress", obj)
            else:
                count("R-RECV-16")
            obj.posts += 1
            if obj.refused:
                obj.refused = False  # R-IND-08: a posted request re-enables indications
                refusal = True
        elif kind == "disconnect" and extra:
            if extra[0] & TCP_DISCONNECT_GRACEFUL_CLOSE:
                obj.flags |= F_FIN_SENT
            if extra[0] & TCP_DISCONNECT_ABORTIVE_CLOSE:
                obj.flags |= F_RST_SENT
        aid = id(obj.adapter)
        io = self.io
        returned = self.returned
        failed_chain = self.failed_chain
        table = obj.sends if is_send else obj.io
        n: NetBufferList | None = head
        while n is not None:
            rec = IoRecord(obj, kind, n)
            rec.after_refusal = refusal
            key = (aid, n.serial)
            io[key] = rec
            table[n.serial] = rec
            if returned:
                returned.pop(key, None)
            if failed_chain:
                failed_chain.pop(key, None)
            n = n.next

    def complete(self, adapter: Adapter, head: NetBufferList, what: str) -> list[tuple[Binding, NetBufferList, int]]:
        if what != "NdisMSendNetBufferListsComplete":
            self._io_complete(adapter, head, what)
        return super().complete(adapter, head, what)

    def _io_complete(self, adapter: Adapter, head: NetBufferList, what: str) -> None:
        v = self.v
        aid = id(adapter)
        io = self.io
        failed_seen: dict[int, bool] = {}  # id(obj) -> a non-SUCCESS send seen earlier in this list
        partials: dict[int, int] = {}
        for n in _nbls(head):
            key = (aid, n.serial)
            rec = io.pop(key, None)
            if rec is None:
                if key in self.failed_chain:
                    v.fail("R-OFF-23", f"{what} of an NBL from the NetBufferListChain of a failed offload", n)
                elif key in self.returned:
                    v.fail("R-TRM-23", f"{what} of an NBL already returned at terminate", n, self.returned[key])
                continue
            obj = rec.obj
            if obj.phase is _TERMINATED:
                v.fail("R-TRM-23", f"{what} on a terminated connection", obj, n)
            else:
                v.count("R-TRM-23")
            status = n.status
            if rec.abort_expected:
                v.check(
                    status == NdisStatus.REQUEST_ABORTED,
                    "R-EVT-03",
                    f"{rec.kind} outstanding at TcpIndicateAbort completed with {status!r}, not REQUEST_ABORTED",
                    n,
                )
            if rec.kind == "send":
                self._send_done(obj, rec, n, failed_seen, partials)
                continue
            obj.io.pop(n.serial, None)
            if rec.kind == "receive":
                obj.unconsumed = False
                if obj.in_recv:
                    obj.recv_reentry_ok = True  # completed inside MiniportTcpOffloadReceive (R-RECV-16)
                if rec.total == 0:
                    v.check(
                        n.info.get(_BYTES, 0) == 0,
                        "R-IND-10",
                        f"zero-byte receive request completed with {n.info.get(_BYTES)} bytes transferred",
                        n,
                    )
            if rec.after_retrieve and not obj.flags & F_ABORTED:
                self._check(
                    status == NdisStatus.UPLOAD_IN_PROGRESS,
                    "R-OFF-28",
                    f"{rec.kind} posted after a mandatory TcpIndicateRetrieve completed with {status!r}",
                    n,
                )

    def _send_done(
        self,
        obj: OffloadedObject,
        rec: IoRecord,
        n: NetBufferList,
        failed_seen: dict[int, bool],
        partials: dict[int, int],
    ) -> None:
        """One completed send NBL (per-NBL path: messages are built only on failure)."""
        v = self.v
        count = v.count
        status = n.status
        moved = rec.advanced()
        sent = n.info.get(_BYTES)
        if sent is not None and moved is not None and sent == moved:
            count("R-SEND-04")
        else:
            v.fail(
                "R-SEND-04",
                f"TcpOffloadBytesTransferred {sent!r} vs data start advanced by {moved!r} (NB/MDL chain changed?)",
                n,
            )
        transferred = moved if moved is not None else (sent or 0)
        ok = status == _SUCCESS
        sends = obj.sends
        if ok or transferred:
            # ACKs are cumulative: data can only be acknowledged in submission order. A send failed
            # untouched (0 bytes, e.g. UPLOAD_IN_PROGRESS) may complete while older data waits for terminate.
            first = next(iter(sends), None)
            if first == n.serial:
                count("R-SEND-03")
            else:
                v.fail(
                    "R-SEND-03",
                    f"send NBL with acknowledged data completed out of submission order (oldest outstanding is NBL#{first})",
                    n,
                )
        sends.pop(n.serial, None)
        if obj.in_send:
            # Completed inside MiniportTcpOffloadSend (an R-SEND-01 matter): a send the host issues from its
            # completion handler is a reaction, not concurrency (R-SEND-11).
            obj.send_reentry_ok = True
        if ok:
            if transferred == rec.total:
                count("R-SEND-05")
            else:
                v.fail("R-SEND-05", f"send completed SUCCESS with {transferred} of {rec.total} bytes transferred", n)
        oid = id(obj)
        if not ok and transferred > 0:
            partials[oid] = partials.get(oid, 0) + 1
            v.check(partials[oid] <= 1, "R-SEND-07", "more than one partial completion in one completed list", n)
        if failed_seen.get(oid):
            v.check(
                not ok and transferred == 0,
                "R-SEND-06",
                f"send after a failed one in the same completion has {status!r}, {transferred} bytes",
                n,
            )
        if not ok:
            failed_seen[oid] = True
            self._send_failed(obj, n, status)
        if rec.after_retrieve and not obj.flags & F_ABORTED:
            v.check(
                status == NdisStatus.UPLOAD_IN_PROGRESS,
                "R-TRM-21",
                f"send posted after a mandatory TcpIndicateRetrieve completed with {status!r}",
                n,
            )

    def _send_failed(self, obj: OffloadedObject, n: NetBufferList, status: int) -> None:
        v = self.v
        v.check(
            status != NdisStatus.PAUSED,
            "R-SEND-14",
            "chimney send completed with NDIS_STATUS_PAUSED (use UPLOAD_IN_PROGRESS)",
            n,
        )
        if obj.flags & F_ABORTED:
            v.check(
                status == NdisStatus.REQUEST_ABORTED,
                "R-SEND-08",
                f"send failed with {status!r} on an aborted connection (REQUEST_ABORTED expected)",
                n,
            )
        elif obj.phase is _TERMINATING or id(obj.adapter) in self.upload_all:
            v.check(
                status == NdisStatus.UPLOAD_IN_PROGRESS,
                "R-SEND-08",
                f"send failed with {status!r} while the connection is being uploaded",
                n,
            )

    # ------------------------------------------------------------------------------- indications, events

    def _indication_window(self, obj: OffloadedObject, what: str) -> None:
        v = self.v
        count = v.count
        phase = obj.phase
        if phase is _TERMINATED:
            v.fail("R-TRM-23", f"{what} on a terminated connection", obj)
        else:
            count("R-TRM-23")
        if phase is _OFFLOADING or obj.completing:
            v.fail("R-OFF-09", f"{what} before NdisMInitiateOffloadComplete returned", obj)
        else:
            count("R-OFF-09")
        busy = self.initiating.get(id(obj.adapter), 0)
        if busy:
            self._fail("R-OFF-12", f"{what} while {busy} initiate(s) are in progress on the adapter", obj)
        else:
            count("R-OFF-12")

    def indication(self, obj: OffloadedObject, ref: NdisOffloadHandleRef, nbl: NetBufferList) -> None:
        """NdisTcpOffloadReceiveHandler, before the host sees it (per indication: lazy messages)."""
        v = self.v
        count = v.count
        self._indication_window(obj, "NdisTcpOffloadReceiveHandler")
        if obj.layer is Layer.TCP:
            count("R-TREE-14")
        else:
            v.fail("R-TREE-14", "receive indication on a non-TCP object's handle", obj)
        if obj.io:
            # A zero-byte request holds no buffer to fill (R-IND-10): it does not make a request "available".
            posted = [r for r in obj.io.values() if r.kind == "receive" and r.total]
            if posted:
                refusal = any(r.after_refusal for r in posted)
                v.fail(
                    "R-IND-09" if refusal else "R-IND-01",
                    f"receive indication while {len(posted)} posted receive request(s) are outstanding",
                    obj,
                    nbl,
                )
        count("R-IND-01")
        if obj.refused:
            v.fail("R-IND-08", "indication after a refused indication before the host posted a receive request", obj, nbl)
        else:
            count("R-IND-08")
        pools = self.normal_pools.get(id(obj.adapter))
        if nbl.pool is not None and pools and id(nbl.pool) in pools:
            v.fail("R-IND-15", "chimney indication NBL from the pool used for normal receive indications", nbl)
        else:
            count("R-IND-15")

    def tcp_event_pre(self, obj: OffloadedObject, event_type: int, info: int) -> None:
        """NdisTcpOffloadEventHandler, before the host sees it."""
        v = self.v
        self._indication_window(obj, f"NdisTcpOffloadEventHandler({event_type})")
        if event_type == TcpOffloadEventType.TcpIndicateRetrieve:
            v.check(obj.layer is Layer.TCP, "R-TRM-02", "termination requested for a neighbor/path object", obj)
            reason = TcpUploadReason(info) if info in _REASONS else None
            mandatory = reason is not None and reason.mandatory
            if not mandatory:
                v.check(
                    not obj.half_closed,
                    "R-EVT-08",
                    f"discretionary TcpIndicateRetrieve ({reason!r}) on a half-closed connection",
                    obj,
                )
            obj.flags |= F_UPLOAD_REQUESTED
            if mandatory:
                obj.flags |= F_MANDATORY
            return
        v.check(obj.layer is Layer.TCP, "R-TREE-14", f"TCP event {event_type} on a non-TCP object's handle", obj)
        if event_type == TcpOffloadEventType.TcpIndicateDisconnect:
            v.check(info == 0, "R-EVT-11", f"TcpIndicateDisconnect with EventSpecificInformation {info}", obj)
            v.check(
                obj.indicating == 0 and not obj.unconsumed,
                "R-EVT-01",
                "TcpIndicateDisconnect while received data is not yet consumed by the host",
                obj,
            )
            obj.flags |= F_DISCONNECT
        elif event_type == TcpOffloadEventType.TcpIndicateAbort:
            v.check(info == 0, "R-EVT-11", f"TcpIndicateAbort with EventSpecificInformation {info}", obj)
            obj.flags |= F_ABORTED
            for r in obj.sends.values():
                r.abort_expected = True
            for r in obj.io.values():
                r.abort_expected = r.kind in ("receive", "disconnect")
        elif event_type == TcpOffloadEventType.TcpIndicateSendBacklogChange:
            v.check(
                info != obj.last_backlog,
                "R-EVT-10",
                f"TcpIndicateSendBacklogChange repeats the unchanged backlog {info}",
                obj,
            )
            obj.last_backlog = info

    def status_indication(self, adapter: Adapter, status: int) -> None:
        """NdisMIndicateStatusEx: OFFLOAD_PAUSE / UPLOAD_ALL start the upload-all window (R-SEND-08/14)."""
        if status in (NdisStatus.OFFLOAD_PAUSE, NdisStatus.UPLOAD_ALL):
            self.upload_all.add(id(adapter))
        elif status == NdisStatus.OFFLOAD_RESUME:
            self.upload_all.discard(id(adapter))

    def rx_indicate(self, adapter: Adapter, nbls: list[NetBufferList]) -> None:
        super().rx_indicate(adapter, nbls)
        if nbls and nbls[0].pool is not None:
            pools = self.normal_pools.get(id(adapter))
            if pools is None:
                pools = self.normal_pools[id(adapter)] = set()
            pools.add(id(nbls[0].pool))

    # ------------------------------------------------------------------------------- reports

    def phases(self) -> dict[str, int]:
        """Objects per phase (for traces and the `chimney rules` command)."""
        out: dict[str, int] = {}
        for obj in self.objects.values():
            out[obj.phase.value] = out.get(obj.phase.value, 0) + 1
        return out


_REASONS = frozenset(int(r) for r in TcpUploadReason)


def _remember(d: dict[Any, Any], key: Any, value: Any, cap: int) -> None:
    d[key] = value
    if len(d) > cap:
        del d[next(iter(d))]


def _fin(dlg: TcpOffloadStateDelegated) -> int:
    """1 when SndMax may count a FIN beyond the data (our FIN sent: FIN_WAIT*, CLOSING, LAST_ACK, ...)."""
    return 0 if dlg.state in _NO_FIN_STATES else 1


_NO_FIN_STATES = frozenset({TcpConnectionState.Established, TcpConnectionState.CloseWait})


def _blocked(adapter: Adapter) -> bool:
    """NDIS fails state operations itself on this adapter (no chimney handlers below, or halted)."""
    dh = adapter.dh
    return dh.provider_generic is None or dh.provider_tcp is None or adapter.state is AdapterState.HALTED

