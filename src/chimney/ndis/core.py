"""The `Ndis` library object: driver registry, adapters, bindings (protocol -> [IM ...] -> miniport) and
the routing of every call, completion and indication, with the contract checks made at each crossing.

NDIS name -> Python name (all methods of `Ndis` unless noted):
  NdisMRegisterMiniportDriver / NdisRegisterProtocolDriver -> register_miniport_driver / register_protocol_driver
  NdisIMRegisterDriver (both edges) -> register_intermediate_driver
  NdisSetOptionalHandlers -> set_optional_handlers;  NdisMGetOffloadHandlers -> m_get_offload_handlers
  NdisMSetMiniportAttributes -> m_set_miniport_attributes
  (PnP) adapter arrival / MiniportInitializeEx -> add_adapter;  NdisIMInitializeDeviceInstanceEx -> add_im
  ProtocolBindAdapterEx+NdisOpenAdapterEx -> bind;  ProtocolUnbindAdapterEx+NdisCloseAdapterEx -> unbind
  MiniportPause/Restart/HaltEx -> pause_adapter / restart_adapter / halt_adapter;
  NdisMPauseComplete / NdisMRestartComplete -> m_pause_complete / m_restart_complete
  NdisSendNetBufferLists -> send_net_buffer_lists;  NdisMSendNetBufferListsComplete -> m_send_net_buffer_lists_complete
  NdisMIndicateReceiveNetBufferLists / NdisReturnNetBufferLists -> see chimney.ndis.receive (mixin)
  NdisInitiateOffload / NdisTerminateOffload / NdisUpdateOffload / NdisInvalidateOffload / NdisQueryOffloadState
    -> initiate_offload / terminate_offload / update_offload / invalidate_offload / query_offload_state
  NdisMInitiateOffloadComplete (... NdisMQueryOffloadStateComplete) -> m_initiate_offload_complete (...
    m_query_offload_state_complete)
  NdisOffloadTcpSend/Receive/Disconnect/Forward/ReceiveReturn -> offload_tcp_send / _receive / _disconnect /
    _forward / _receive_return
  NdisTcpOffloadSend/Receive/Disconnect/ForwardComplete -> tcp_offload_send_complete (...)
  NdisTcpOffloadReceiveHandler -> tcp_offload_receive_handler;  NdisTcpOffloadEventHandler -> tcp_offload_event_handler
  NdisMOffloadEventIndicate -> m_offload_event_indicate;  NdisMIndicateStatusEx -> m_indicate_status_ex
  NdisOidRequest / NdisMOidRequestComplete -> oid_request / m_oid_request_complete

Checks: `BoundaryChecks` (one method per crossing) plus no-op edge hooks rule sets override:
state_call_enter/exit (around MiniportXxxOffload), state_complete_returned (ProtocolXxxOffloadComplete
returned), io_enter/exit, indication_enter/exit, event_enter/exit, status_indication, offload_event_enter/exit
(NdisMOffloadEventIndicate), oid_enter/exit (NdisOidRequest). NetBufferListChain
hand-over at NdisInitiateOffload and hand-back at the completions: BoundaryChecks.chain_down / chains_back;
BufferedData at NdisMTerminateOffloadComplete: BoundaryChecks.buffered_data_up (R-TRM-16).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from chimney.ndis.blocklist import (
    STATUS_UNSET,
    MiniportOffloadBlockList,
    NdisObjectHeader,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    NodeRole,
    ProtocolOffloadBlockList,
    Slot,
    iter_tree,
    mbl_results_to_pbl,
    mbl_to_pbl,
    node_role,
    pbl_to_mbl,
    tree_shape_problems,
)
from chimney.ndis.buffers import NBL_STATUS_UNSET, NDIS_OWNER, NO_SNAPSHOT, NetBufferList, new_token
from chimney.ndis.driver import (
    ClientChimneyOffloadGenericCharacteristics,
    ClientChimneyOffloadTcpCharacteristics,
    IntermediateDriver,
    MiniportDriver,
    NdisTcpOffloadEventHandlers,
    ProtocolDriver,
    ProviderChimneyOffloadGenericCharacteristics,
    ProviderChimneyOffloadTcpCharacteristics,
    all_handlers_set,
)
from chimney.ndis.offload_state import (
    NDIS_TCP_CHIMNEY_OFFLOAD,
    IndicateOffloadEvent,
    OffloadStateType,
    TcpOffloadEventType,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import (
    CONFIGURATION_SETS,
    NDIS_ANSWERED_QUERIES,
    OID_PNP_SET_POWER,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    OID_TCP_TASK_OFFLOAD,
    NdisDevicePowerState,
    NdisOidRequest,
    NdisRequestType,
    NdisTcpConnectionOffload,
)
from chimney.ndis.ownership import (
    MAX_HISTORY_DEPTH,
    OwnershipTracker,
    OwnerToken,
    nb_snapshot_of,
    push_history,
)
from chimney.ndis.receive import ReceivePath
from chimney.ndis.status import INITIATE_NODE_STATUSES, OTHER_OP_NODE_STATUSES, NdisStatus
from chimney.ndis.verifier import COV_NBL_01, COV_NBL_02, COV_NBL_03, Mode, Verifier

NDIS_SEND_FLAGS_DISPATCH_LEVEL = 0x00000001
NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL = 0x00000001
NDIS_HALT_DEVICE_SURPRISE_REMOVED = 1
NDIS_HALT_DRIVER_UNLOADED = 2
NDIS_HALT_DEVICE_DISABLED = 3
NDIS_HALT_DEVICE_POWERED_DOWN = 4
NDIS_HALT_DEVICE_STOPPED = 5

# NDIS_CHIMNEY_OFFLOAD_TYPE values that exist but NDIS does not support (reserved).
RESERVED_CHIMNEY_TYPES = frozenset({2, 3})  # NdisIpsecChimneyOffload, NdisRdmaChimneyOffload

# The checks class an `Ndis` built without `checks=` uses while its verifier is on. None: the full
# verifier, `chimney.ndis.checks_chimney.ChimneyChecks` (resolved on first use: that module imports this
# one). Benchmarks that want only the crossing checks pass `checks=BoundaryChecks` explicitly.
DEFAULT_CHECKS: type[BoundaryChecks] | None = None

# The checked loops count the NBLs they move with `for n in _COUNT` (cheaper than n += 1 per NBL).
_SUCCESS = int(NdisStatus.SUCCESS)
_PENDING = int(NdisStatus.PENDING)
_COUNT = range(1, sys.maxsize)


class NdisUsageError(RuntimeError):
    """A call NDIS cannot route at all (unknown handle, unregistered driver, wrong object kind)."""


class AdapterState(Enum):
    INITIALIZING = "initializing"
    PAUSED = "paused"
    RESTARTING = "restarting"
    RUNNING = "running"
    PAUSING = "pausing"
    HALTED = "halted"


class BindingState(Enum):
    OPENING = "opening"
    RUNNING = "running"
    PAUSED = "paused"
    CLOSING = "closing"
    CLOSED = "closed"


# Enum members read off the class cost ~0.3 us each on 3.11; the per-send state test uses this.
_BINDING_RUNNING = BindingState.RUNNING


class Op(Enum):
    """The five state-manipulation operations (§3.2)."""

    INITIATE = "initiate"
    TERMINATE = "terminate"
    UPDATE = "update"
    INVALIDATE = "invalidate"
    QUERY = "query"


_OP_PROVIDER = {
    Op.INITIATE: "initiate_offload_handler",
    Op.TERMINATE: "terminate_offload_handler",
    Op.UPDATE: "update_offload_handler",
    Op.INVALIDATE: "invalidate_offload_handler",
    Op.QUERY: "query_offload_handler",
}
_OP_CLIENT = {
    Op.INITIATE: "initiate_offload_complete_handler",
    Op.TERMINATE: "terminate_offload_complete_handler",
    Op.UPDATE: "update_offload_complete_handler",
    Op.INVALIDATE: "invalidate_offload_complete_handler",
    Op.QUERY: "query_offload_complete_handler",
}
_IO_KIND = {
    "NdisOffloadTcpSend": "send",
    "NdisOffloadTcpReceive": "receive",
    "NdisOffloadTcpDisconnect": "disconnect",
    "NdisOffloadTcpForward": "forward",
}
_OP_NDIS_NAME = {
    Op.INITIATE: "NdisMInitiateOffloadComplete",
    Op.TERMINATE: "NdisMTerminateOffloadComplete",
    Op.UPDATE: "NdisMUpdateOffloadComplete",
    Op.INVALIDATE: "NdisMInvalidateOffloadComplete",
    Op.QUERY: "NdisMQueryOffloadStateComplete",
}


@dataclass(slots=True)
class NdisStatusIndication:
    """NDIS_STATUS_INDICATION as delivered to ProtocolStatusEx."""

    source_handle: Any
    status_code: int
    status_buffer: Any = None
    port_number: int = 0


class DriverHandle:
    """NdisDriverHandle / NdisProtocolHandle: one per registered driver edge; holds the optional
    chimney handler tables that edge registered in its SetOptions handler."""

    __slots__ = (
        "client_generic",
        "client_tcp",
        "driver",
        "in_set_options",
        "kind",
        "provider_generic",
        "provider_tcp",
    )

    def __init__(self, driver: Any, kind: str) -> None:
        self.driver = driver
        self.kind = kind  # "miniport" or "protocol"
        self.in_set_options = False
        self.provider_generic: ProviderChimneyOffloadGenericCharacteristics | None = None
        self.provider_tcp: ProviderChimneyOffloadTcpCharacteristics | None = None
        self.client_generic: ClientChimneyOffloadGenericCharacteristics | None = None
        self.client_tcp: ClientChimneyOffloadTcpCharacteristics | None = None

    @property
    def chimney_provider(self) -> bool:
        return self.provider_generic is not None and self.provider_tcp is not None

    @property
    def chimney_client(self) -> bool:
        return self.client_generic is not None and self.client_tcp is not None

    def __repr__(self) -> str:
        return f"<DriverHandle {self.kind} {self.driver.name}>"


class Adapter:
    """NdisMiniportHandle: one miniport adapter (physical, or an IM's virtual miniport)."""

    __slots__ = (
        "bindings",
        "binds_ever",
        "chimney_indicated",
        "chimney_refused",
        "context",
        "dh",
        "driver",
        "in_initialize",
        "lower_binding",
        "name",
        "ndis",
        "offload_caps",
        "offload_handler_types",
        "offload_params",
        "offloaded",
        "outstanding_roots",
        "owner",
        "rx_refs",
        "solo",
        "stamp",
        "state",
    )

    def __init__(self, ndis: Ndis, driver: MiniportDriver, dh: DriverHandle, name: str) -> None:
        self.ndis = ndis
        self.driver = driver
        self.dh = dh
        self.name = name
        self.owner = driver.name  # NBL owner name while the miniport holds NBLs
        self.context: Any = self
        self.state = AdapterState.INITIALIZING
        self.bindings: list[Binding] = []
        self.lower_binding: Binding | None = None  # set for IM virtual miniports
        # Completion routing: the first binding, and whether sends must carry a SourceHandle stamp
        # (always with the verifier on; with it off only once a second binding ever appeared).
        self.solo: Binding | None = None
        self.stamp = False
        self.binds_ever = 0
        self.in_initialize = False
        self.offload_caps: NdisTcpConnectionOffload | None = None
        self.offload_params: Any = None
        self.offload_handler_types: set[int] = set()
        # Receive path: NBL serial -> [nbl, protocols still holding it, holder bindings or None]
        self.rx_refs: dict[int, list[Any]] = {}
        # Verifier-only bookkeeping.
        self.chimney_indicated: dict[int, NetBufferList] = {}  # accepted indications, host holds (R-IND-14)
        self.chimney_refused: set[int] = set()  # refused indications (R-IND-07)
        self.outstanding_roots: dict[int, tuple[Op, MiniportOffloadBlockList]] = {}  # R-TREE-03
        self.offloaded: dict[int, Slot] = {}  # id(slot) -> slot of each offloaded object (R-PM-01)

    @property
    def chimney_capable(self) -> bool:
        return self.dh.chimney_provider

    def __repr__(self) -> str:
        return f"<Adapter {self.name} ({self.driver.name}) {self.state.value}>"



class Binding:
    """NdisBindingHandle: one open binding of a protocol (or IM protocol edge) to an adapter."""

    __slots__ = (
        "adapter",
        "context",
        "dh",
        "name",
        "ndis",
        "protocol",
        "sends_out",
        "state",
        "upper_adapter",
    )

    def __init__(self, ndis: Ndis, protocol: ProtocolDriver, dh: DriverHandle, adapter: Adapter) -> None:
        self.ndis = ndis
        self.protocol = protocol
        self.dh = dh
        self.adapter = adapter
        self.context: Any = self  # ProtocolBindingContext; the protocol may replace it in bind_adapter_ex
        self.state = BindingState.OPENING
        self.upper_adapter: Adapter | None = None  # the IM's virtual miniport above this binding
        self.name = f"{protocol.name}->{adapter.name}"
        self.sends_out = 0  # verifier only: NBLs sent and not yet completed

    @property
    def binding(self) -> Binding:
        return self

    def __repr__(self) -> str:
        return f"<Binding {self.name} {self.state.value}>"


# ------------------------------------------------------------------------------------------- checks


class BoundaryChecks:
    """Every contract check NDIS makes, one method per crossing. Only exists while the verifier is on;
    later rules go into the method of the crossing they belong to.

    The normal send path (NdisSendNetBufferLists / NdisMSendNetBufferListsComplete) calls `send`,
    `complete` and `delivered` through `nbl_send`, `nbl_complete` and `nbl_delivered`, bound once
    here: to the base bodies when every override of that method in the class hierarchy declares
    (in its class's `NORMAL_NBL_PASSTHROUGH`) that it only adds chimney-I/O checks and passes normal
    sends straight on, else to the override. That saves a Python call layer per crossing."""

    # Names of the methods (send / complete / delivered) this class overrides only for chimney I/O.
    NORMAL_NBL_PASSTHROUGH: tuple[str, ...] = ()

    def __init__(self, ndis: Ndis) -> None:
        self.nbl_send = self.send_nbls if self._passes_normal_nbls("send") else self.send
        self.nbl_complete = self.complete_nbls if self._passes_normal_nbls("complete") else self.complete
        # None: delivered() is not hooked, the core makes its bookkeeping inline.
        self.nbl_delivered = None if self._passes_normal_nbls("delivered") else self.delivered
        self.ndis = ndis
        self.v = ndis.verifier
        self.tracker = ndis.tracker
        self.hot = ndis.verifier.hot  # coverage counts of R-NBL-01/02/03 (folded into checks on read)
        # NetBufferListChain NBLs handed down at initiate (serial -> NBL), pruned as they come back.
        self.chain_nbls: dict[int, NetBufferList] = {}
        self._chain_cap = 4096  # prune completed entries past this size (amortised, off the send path)

    # -- send path (normal sends and chimney I/O requests) ----------------------------------------------
    #
    # Per NBL and crossing the checked path makes one pass that does the ownership check and move, the
    # history, the SourceHandle stamp/pop, R-NBL-01 and R-NBL-03 (see chimney.ndis.ownership for the
    # cost model). A chain that arrives as it left the last crossing (every NBL holds the head's owner
    # token) takes the first loop: one identity test per NBL proves owner, history and SourceHandle.
    # Anything else (a new chain, a mixed one, a bad NBL) continues NBL by NBL in the second loop,
    # which makes the full checks. No strings are built unless a check fails.

    @classmethod
    def _passes_normal_nbls(cls, name: str) -> bool:
        """True when no class below BoundaryChecks overrides `name` for normal NBL sends."""
        for c in cls.__mro__:
            if c is BoundaryChecks:
                return True
            if name in c.__dict__ and name not in c.__dict__.get("NORMAL_NBL_PASSTHROUGH", ()):
                return False
        return True

    def send(self, binding: Binding, head: NetBufferList | None, what: str) -> None:
        """R-NBL-02: the sender owns every NBL it passes; NDIS stamps SourceHandle and counts the NBLs.

        The NB structure (R-NBL-03) is snapshotted only where the creator sends (not at IM re-sends)."""
        self.send_nbls(binding, head, what)

    def send_nbls(self, binding: Binding, head: NetBufferList | None, what: str) -> None:
        """The body of `send` (NdisSendNetBufferLists calls it directly unless a subclass hooks send)."""
        if head is None:
            raise NdisUsageError(f"{what} with an empty chain")
        frm = binding.protocol.name
        to = binding.adapter.owner
        self.hot[COV_NBL_02] += 1
        t0 = head._owner
        tok = type(t0) is OwnerToken
        if tok:
            h0 = t0.history
            sh0 = t0.sh
        else:
            h0 = head._history
            sh0 = head._sh
        hop = (what, frm, to)
        stamp = (binding, sh0)
        t1 = new_token(OwnerToken)
        t1.name = to
        t1.history = (h0, hop, h0[2] + 1) if h0 is not None and h0[2] < MAX_HISTORY_DEPTH else push_history(h0, hop)
        t1.sh = stamp
        creator = binding.upper_adapter is None
        n = 0
        nbl: NetBufferList | None = head
        if tok and t0.name == frm:
            # Holders of t0 share owner, history and SourceHandle: one identity test and one store each.
            if creator:
                for n in _COUNT:  # noqa: B007 (n counts the NBLs moved)
                    nbl._owner = t1  # type: ignore[union-attr]
                    nb = nbl.first_net_buffer  # type: ignore[union-attr]
                    nbl.nb_snapshot = nb if nb is not None and nb.next is None else nb_snapshot_of(nb)  # type: ignore[union-attr]
                    nbl = nbl.next  # type: ignore[union-attr]
                    if nbl is None or nbl._owner is not t0:
                        break
            else:
                for n in _COUNT:  # noqa: B007
                    nbl._owner = t1  # type: ignore[union-attr]
                    nbl = nbl.next  # type: ignore[union-attr]
                    if nbl is None or nbl._owner is not t0:
                        break
        while nbl is not None:
            o = nbl._owner
            if o != frm:
                self._send_not_owned(head, nbl, frm, what)
            if type(o) is OwnerToken:
                h = o.history
                sh = o.sh
            else:
                h = nbl._history
                sh = nbl._sh
            if h is h0 and sh is sh0:
                nbl._owner = t1
            else:
                nbl._owner = to
                nbl._history = push_history(h, hop)
                nbl._sh = (binding, sh)
            if creator:
                nbl.nb_snapshot = nb_snapshot_of(nbl.first_net_buffer)
            n += 1
            nbl = nbl.next
        binding.sends_out += n

    def _send_not_owned(self, head: NetBufferList, bad: NetBufferList, frm: str, what: str) -> None:
        """R-NBL-02 broken at a send. When that raises, the NBLs before `bad` lose the SourceHandle stamp
        and snapshot this send gave them (they were never counted nor passed down)."""
        if self.v.mode is Mode.STRICT:
            nbl: NetBufferList | None = head
            while nbl is not None and nbl is not bad:
                sh = nbl.source_handle
                nbl.source_handle = sh[1]  # (the setter leaves a plain owner: no longer a token holder)
                nbl.nb_snapshot = NO_SNAPSHOT
                nbl = nbl.next
        self.tracker.not_owned(bad, frm, "R-NBL-02", what)

    def complete(self, adapter: Adapter, head: NetBufferList, what: str) -> list[tuple[Binding, NetBufferList, int]]:
        """One pass over a completed chain: R-NBL-01 (Status written), R-NBL-02 (the miniport owns it and
        NDIS sent it there: SourceHandle), pop SourceHandle, ownership back to the sender, R-NBL-03 where
        the sender created the NBLs; split by binding (`delivered` then runs per group). Bad NBLs are
        dropped (counted) when the verifier records instead of raising."""
        return self.complete_nbls(adapter, head, what)

    def complete_nbls(
        self, adapter: Adapter, head: NetBufferList, what: str
    ) -> list[tuple[Binding, NetBufferList, int]]:
        """The body of `complete` (NdisMSendNetBufferListsComplete calls it directly unless hooked)."""
        self.hot[COV_NBL_01] += 1
        owner = adapter.owner
        t0 = head._owner
        tok = type(t0) is OwnerToken
        if tok:
            h0 = t0.history
            sh0 = t0.sh
        else:
            h0 = head._history
            sh0 = head._sh
        if type(sh0) is not tuple or sh0[0].adapter is not adapter:
            return self._complete_slow(adapter, head, what, [], None, None, None, 0)
        b: Binding = sh0[0]
        prev0 = sh0[1]
        to = b.protocol.name
        hop = (what, owner, to)
        h1 = (h0, hop, h0[2] + 1) if h0 is not None and h0[2] < MAX_HISTORY_DEPTH else push_history(h0, hop)
        t1 = new_token(OwnerToken)
        t1.name = to
        t1.history = h1
        t1.sh = prev0
        unset = NBL_STATUS_UNSET
        creator = b.upper_adapter is None
        tracker = self.tracker
        no_snap = NO_SNAPSHOT
        n = 0
        nbl: NetBufferList | None = head
        if tok and t0.name == owner and head.status != unset:
            # Holders of t0 share SourceHandle sh0 (a target that writes it takes its NBL out of the
            # group); Status is still read per NBL: a target must write it (R-NBL-01).
            if creator:
                for n in _COUNT:  # noqa: B007
                    nbl._owner = t1  # type: ignore[union-attr]
                    snap = nbl.nb_snapshot  # type: ignore[union-attr]
                    nbl.nb_snapshot = no_snap  # type: ignore[union-attr]
                    nb = nbl.first_net_buffer  # type: ignore[union-attr]
                    if nb is not snap or nb.next is not None:  # R-NBL-03; one-NB shape: two compares
                        tracker.check_snapshot(nbl, snap, "R-NBL-03", what)  # type: ignore[arg-type]
                    nbl = nbl.next  # type: ignore[union-attr]
                    if nbl is None or nbl._owner is not t0 or nbl.status == unset:
                        break
            else:
                for n in _COUNT:  # noqa: B007
                    nbl._owner = t1  # type: ignore[union-attr]
                    nbl = nbl.next  # type: ignore[union-attr]
                    if nbl is None or nbl._owner is not t0 or nbl.status == unset:
                        break
            if nbl is None:
                return [(b, head, n)]
        prev: NetBufferList | None = None
        if n:
            prev = head
            for _ in range(n - 1):
                prev = prev.next  # type: ignore[union-attr]
        tuple_ = tuple
        while nbl is not None:  # NBL by NBL while they are good and from b
            o = nbl._owner
            if type(o) is OwnerToken:
                h = o.history
                sh = o.sh
            else:
                h = nbl._history
                sh = nbl._sh
            if type(sh) is not tuple_ or sh[0] is not b or o != owner or nbl.status == unset:
                break
            if h is h0 and sh is sh0:
                nbl._owner = t1
            else:
                nbl._owner = to
                nbl._history = push_history(h, hop)
                nbl._sh = sh[1]
            if creator:
                snap = nbl.nb_snapshot
                nbl.nb_snapshot = no_snap
                tracker.check_snapshot(nbl, snap, "R-NBL-03", what)
            n += 1
            prev = nbl
            nbl = nbl.next
        if nbl is None:
            return [(b, head, n)]
        if not n:  # nothing moved yet: the slow pass starts the first group itself
            return self._complete_slow(adapter, nbl, what, [], None, None, None, 0)
        return self._complete_slow(adapter, nbl, what, [], b, head, prev, n)

    def _complete_slow(
        self,
        adapter: Adapter,
        nbl: NetBufferList | None,
        what: str,
        groups: list[tuple[Binding, NetBufferList, int]],
        b: Binding | None,
        first: NetBufferList | None,
        prev: NetBufferList | None,
        n: int,
    ) -> list[tuple[Binding, NetBufferList, int]]:
        """The rest of a completion, NBL by NBL, continuing the group (b, first..prev, n) the fast path
        built: reports bad NBLs, moves and regroups the good ones."""
        v = self.v
        tracker = self.tracker
        owner = adapter.owner
        while nbl is not None:
            nxt = nbl.next
            if nbl.status == NBL_STATUS_UNSET:
                v.fail("R-NBL-01", f"{what}: Status not written before completion", nbl)
            sh = nbl.source_handle
            if nbl.owner != owner or type(sh) is not tuple or sh[0].adapter is not adapter:
                v.fail(
                    "R-NBL-02",
                    f"{what}: {adapter.name} completed {nbl!r} it does not hold (SourceHandle {sh!r})"
                    f"{tracker.history_text(nbl)}",
                    nbl,
                )
                self.ndis.counters["unroutable_completions"] = self.ndis.counters.get("unroutable_completions", 0) + 1
                nbl = nxt
                continue
            nb, nbl.source_handle = sh
            to = nb.protocol.name
            nbl.owner = to  # plain: this NBL's history and SourceHandle are its own now
            nbl.history = push_history(nbl.history, (what, owner, to))
            if nb.upper_adapter is None:
                snap = nbl.nb_snapshot
                nbl.nb_snapshot = NO_SNAPSHOT
                tracker.check_snapshot(nbl, snap, "R-NBL-03", what)
            if nb is not b:
                if prev is not None:
                    prev.next = None
                    groups.append((b, first, n))  # type: ignore[arg-type]
                b, first, n = nb, nbl, 0
            elif prev is not None:
                prev.next = nbl
            prev = nbl
            n += 1
            nbl = nxt
        if prev is not None:
            prev.next = None
            groups.append((b, first, n))  # type: ignore[arg-type]
        return groups

    def delivered(self, binding: Binding, head: NetBufferList, n: int, what: str) -> None:
        """Right before a completed group goes up to `binding`: its sends are no longer outstanding.
        complete() already moved ownership (R-NBL-02) and compared the NB lists (R-NBL-03) in its one
        pass; their coverage is counted here, once per group."""
        hot = self.hot
        hot[COV_NBL_02] += 1
        if binding.upper_adapter is None:
            hot[COV_NBL_03] += 1
        binding.sends_out -= n

    # -- edge hooks (no-op here; ChimneyChecks and other rule sets override them) ------------------------
    #
    # "enter" runs before the call crosses, "exit"/"returned" after the callee returned (also when it
    # raised). The token an enter hook returns is handed to its exit hook unchanged.

    def state_call_enter(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        """Before MiniportXxxOffload is called for `pbl` (blocked: NDIS fails the tree itself, inline)."""

    def state_call_exit(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList, blocked: bool) -> None:
        """MiniportXxxOffload (or NDIS's own inline failure of the tree) returned (R-OFF-01, R-TRM-06)."""

    def state_complete_returned(self, op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
        """ProtocolXxxOffloadComplete for `mbl` returned (R-OFF-09 for initiate)."""

    def io_enter(
        self, kind: str, handle: NdisOffloadHandle, nbl: NetBufferList, extra: tuple[int, ...]
    ) -> Any:
        """NdisOffloadTcpSend/Receive/Disconnect/Forward (`kind` send/receive/disconnect/forward), before
        NDIS stamps the NBLs and calls the target."""
        return None

    def io_exit(self, kind: str, handle: NdisOffloadHandle, token: Any) -> None:
        """The MiniportTcpOffloadXxx call of `io_enter` returned (R-SEND-11, R-TRM-05)."""

    def indication_enter(self, ref: NdisOffloadHandleRef, nbl: NetBufferList, status: int) -> Any:
        """NdisTcpOffloadReceiveHandler, before ProtocolTcpOffloadReceiveIndicate."""
        return None

    def indication_exit(self, ref: NdisOffloadHandleRef, token: Any, result: tuple[int, int] | None) -> None:
        """ProtocolTcpOffloadReceiveIndicate returned `result` (None: it raised) (R-TRM-10)."""

    def event_enter(self, ref: NdisOffloadHandleRef, event_type: int, info: int) -> Any:
        """NdisTcpOffloadEventHandler, before ProtocolTcpOffloadEvent (R-EVT-01)."""
        return None

    def event_exit(self, ref: NdisOffloadHandleRef, token: Any, completed: bool) -> None:
        """ProtocolTcpOffloadEvent returned (R-TRM-10); `completed` False: it raised."""

    def status_indication(self, adapter: Adapter, status: int) -> None:
        """NdisMIndicateStatusEx, before any ProtocolStatusEx (R-SEND-08/14 upload-all window)."""

    def offload_event_enter(self, adapter: Adapter, mbl: MiniportOffloadBlockList | None, code: int) -> Any:
        """NdisMOffloadEventIndicate, after the R-NBR checks, before any ProtocolIndicateOffloadEvent."""
        return None

    def offload_event_exit(self, adapter: Adapter, token: Any, completed: bool) -> None:
        """Every ProtocolIndicateOffloadEvent returned (`completed` False: one raised)."""

    def oid_enter(self, binding: Binding, request: NdisOidRequest) -> Any:
        """NdisOidRequest from `binding`'s protocol (an IM's lower edge too), before NDIS answers or routes it."""
        return None

    def oid_exit(self, binding: Binding, request: NdisOidRequest, token: Any, status: int | None) -> None:
        """NdisOidRequest returned `status` (PENDING included; None: it raised)."""

    # -- registration ----------------------------------------------------------------------------------

    def set_optional_handlers(self, dh: DriverHandle, chars: Any) -> bool:
        v = self.v
        provider = isinstance(
            chars, ProviderChimneyOffloadGenericCharacteristics | ProviderChimneyOffloadTcpCharacteristics
        )
        ok = v.check(
            dh.in_set_options,
            "R-INIT-03",
            f"NdisSetOptionalHandlers by {dh.driver.name} outside its SetOptions handler",
            chars,
        )
        edge_ok = (dh.kind == "miniport") == provider
        ok = (
            v.check(
                edge_ok,
                "R-INIT-03",
                f"{type(chars).__name__} registered from the {dh.kind} edge of {dh.driver.name}",
                chars,
            )
            and ok
        )
        missing = all_handlers_set(chars)
        if isinstance(chars, ProviderChimneyOffloadGenericCharacteristics):
            ok = v.check(not missing, "R-INIT-01", f"generic provider table lacks {missing}", chars) and ok
        elif isinstance(chars, ProviderChimneyOffloadTcpCharacteristics):
            ok = v.check(not missing, "R-INIT-02", f"TCP provider table lacks {missing}", chars) and ok
            ok = (
                v.check(
                    chars.offload_type == NDIS_TCP_CHIMNEY_OFFLOAD,
                    "R-INIT-02",
                    f"TCP provider table OffloadType {chars.offload_type} != NdisTcpChimneyOffload",
                    chars,
                )
                and ok
            )
        elif isinstance(dh.driver, IntermediateDriver):
            ok = v.check(not missing, "R-IM-01", f"IM client table lacks {missing}", chars) and ok
        if isinstance(chars, ClientChimneyOffloadTcpCharacteristics):
            ok = (
                v.check(
                    chars.offload_type == NDIS_TCP_CHIMNEY_OFFLOAD,
                    "R-INIT-03",
                    f"TCP client table OffloadType {chars.offload_type} != NdisTcpChimneyOffload",
                    chars,
                )
                and ok
            )
        return ok

    # -- state operations ---------------------------------------------------------------------------------

    def state_op(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        problems = tree_shape_problems(pbl)
        self.v.check(not problems, "R-TREE-01", f"{op.value} tree malformed: {problems}", pbl)
        if op is Op.INITIATE and not chimney_blocked(binding.adapter):
            for node in iter_tree(pbl):
                if node.net_buffer_list_chain is not None:
                    self.chain_down(binding, node.net_buffer_list_chain)

    def chain_down(self, binding: Binding, head: NetBufferList) -> None:
        """R-OFF-17..22, R-NBL-02: a NetBufferListChain goes to the target like an NdisOffloadTcpSend
        (SourceHandle stamp, ownership, outstanding count) so NdisTcpOffloadSendComplete routes it back.
        Idempotent: an NBL already stamped with `binding` / owned by the adapter is left as it is."""
        frm = binding.protocol.name
        to = binding.adapter.owner
        what = "NdisInitiateOffload NetBufferListChain"
        hop = (what, frm, to)
        self.v.count("R-NBL-02")
        if len(self.chain_nbls) > self._chain_cap:
            self._prune_chain_nbls()
            self._chain_cap = max(4096, 2 * len(self.chain_nbls))
        n: NetBufferList | None = head
        while n is not None:
            sh = n.source_handle
            if not (type(sh) is tuple and sh[0] is binding):
                n.source_handle = (binding, sh)
                binding.sends_out += 1
            self.chain_nbls[n.serial] = n
            if n.owner != to:
                if n.owner != frm:
                    self.tracker.not_owned(n, frm, "R-NBL-02", what)
                n.owner = to
                n.history = push_history(n.history, hop)
            n = n.next

    def chain_back(self, adapter: Adapter, route: Binding, head: NetBufferList, rule_id: str, what: str) -> None:
        """A NetBufferListChain handed back at a completion (failed initiate node: R-OFF-23; terminate:
        R-TRM-11/12) goes to the binding its SourceHandle names: unstamp, uncount, ownership to the host.
        Idempotent: NBLs a shim (or the target's own completion) already gave back are skipped."""
        owner = adapter.owner
        self.v.count(rule_id)
        n: NetBufferList | None = head
        while n is not None:
            sh = n.source_handle
            b = route
            self.chain_nbls.pop(n.serial, None)
            if type(sh) is tuple and sh[0].adapter is adapter:
                b = sh[0]
                b.sends_out -= 1
                n.source_handle = sh[1]
                n.nb_snapshot = NO_SNAPSHOT
            to = b.protocol.name
            cur = n.owner
            if cur == owner:
                n.owner = to
                n.history = push_history(n.history, (what, owner, to))
            elif cur != to:
                self.v.fail(rule_id, f"{what}: {adapter.name} handed back {n!r} it does not hold (owner {cur})", n)
            n = n.next

    def buffered_data_up(self, adapter: Adapter, route: Binding, node: MiniportOffloadBlockList) -> None:
        """R-TRM-16: a terminated TCP node's BufferedData passes to the host, which gives it back with
        NdisOffloadTcpReceiveReturn. Idempotent with a target that already handed it over itself; a
        recycled indication NBL used for it loses its refused mark (R-IND-07)."""
        head = _buffered_data(node)
        if head is None:
            return
        owner = adapter.owner
        to = route.protocol.name
        refused = adapter.chimney_refused
        hop = ("NdisMTerminateOffloadComplete BufferedData", owner, to)
        n: NetBufferList | None = head
        while n is not None:
            refused.discard(n.serial)
            if n.owner == owner:
                n.owner = to
                n.history = push_history(n.history, hop)
            n = n.next

    def state_complete(self, op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> bool:
        v = self.v
        what = _OP_NDIS_NAME[op]
        entry = adapter.outstanding_roots.get(id(mbl))
        if not v.check(
            entry is not None and entry[0] is op and entry[1] is mbl,
            "R-TREE-03",
            f"{what} on {adapter.name} with a root that is not an outstanding {op.value} tree",
            mbl,
        ):
            return False
        allowed = INITIATE_NODE_STATUSES if op is Op.INITIATE else OTHER_OP_NODE_STATUSES
        for node in iter_tree(mbl):
            pnode = node.ndis_reserved[0]
            if not v.check(node.status != STATUS_UNSET, "R-TREE-02", f"{what}: node Status never written", node):
                continue
            v.check(
                node.status in allowed,
                "R-TREE-15" if op is not Op.INITIATE else "R-TREE-02",
                f"{what}: node Status 0x{node.status:08X} not allowed for {op.value}",
                node,
            )
            if pnode is not None:
                v.check(
                    node.im_reserved is pnode.im_reserved
                    and node.protocol_reserved is pnode.protocol_reserved
                    and node.source_handle is pnode.source_handle,
                    "R-TREE-10",
                    f"{what}: ProtocolReserved/ImReserved/SourceHandle of a block list changed",
                    node,
                )
            if op is Op.INITIATE:
                role = pnode_role(node)
                slot = node.miniport_offload_context
                if role is NodeRole.PLACEHOLDER:
                    v.check(node.status == NdisStatus.SUCCESS, "R-TREE-05", f"{what}: placeholder not SUCCESS", node)
                elif role is NodeRole.NEW_OFFLOAD:
                    own_ok = node.status in (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)
                    if own_ok:
                        v.check(slot.value is not None, "R-TREE-07", f"{what}: offloaded node without context", node)
                    else:
                        v.check(slot.value is None, "R-TREE-08", f"{what}: failed node wrote a context", node)
        self.chains_back(op, adapter, mbl)
        return True

    def chains_back(self, op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
        """NetBufferListChain of failed initiate nodes (R-OFF-23, untouched) and of terminated nodes, and
        BufferedData of terminated TCP nodes (R-TRM-16), back to the host."""
        if op is not Op.INITIATE and op is not Op.TERMINATE:
            return
        route = mbl.ndis_reserved[1]
        if not (type(route) is tuple and route[0] is op):
            return  # core raises NdisUsageError for this root right after
        binding: Binding = route[1]
        what = _OP_NDIS_NAME[op]
        for node in iter_tree(mbl):
            head = node.net_buffer_list_chain
            if op is Op.INITIATE:
                if head is not None and node.status not in _OK_NODE_STATUSES:
                    self.chain_back(adapter, binding, head, "R-OFF-23", f"{what} (failed) NetBufferListChain")
            else:
                if head is not None:
                    self.chain_back(adapter, binding, head, "R-NBL-02", f"{what} NetBufferListChain")
                self.buffered_data_up(adapter, binding, node)

    # -- chimney I/O -----------------------------------------------------------------------------------------

    # Per-I/O checks below build their message only when the check fails (an f-string with an enum
    # repr costs more than the check itself).

    def io_return(self, status: int, rule_id: str, what: str, nbl: NetBufferList) -> None:
        if status == _PENDING:
            self.v.count(rule_id)
        else:
            self.v.fail(rule_id, f"{what} returned {status!r}, not PENDING", nbl)


    def disconnect_complete(self, nbl: NetBufferList) -> None:
        self.v.check(nbl.next is None, "R-DISC-01", "NdisTcpOffloadDisconnectComplete with more than one NBL", nbl)

    # -- chimney receive indications and returns -----------------------------------------------------

    def receive_indication(self, binding: Binding, nbl: NetBufferList, status: int) -> int:
        """Before ProtocolTcpOffloadReceiveIndicate: R-IND-02/03; the host owns the NBL during the call."""
        v = self.v
        binding.adapter.chimney_refused.discard(nbl.serial)  # R-IND-07: a re-indicated NBL starts afresh
        v.check(nbl.next is None, "R-IND-02", "indicated NBL has a Next NBL", nbl)
        if status == _SUCCESS:
            v.count("R-IND-03")
        else:
            v.fail("R-IND-03", f"indication Status {status!r}", nbl)
        nb = nbl.first_net_buffer
        v.check(nb is not None and nb.next is None, "R-INIT-16", "indicated NBL does not have exactly one NB", nbl)
        self.tracker.transfer(
            nbl, frm=binding.adapter.owner, to=binding.protocol.name, rule_id="R-NBL-02", op="NdisTcpOffloadReceiveHandler"
        )
        return nbl.data_length()

    def receive_indication_result(
        self, binding: Binding, nbl: NetBufferList, ret: int, consumed: int, indicated: int
    ) -> None:
        """After it: R-IND-04/05/06; a refused NBL goes back to the target (and must never be returned)."""
        v = self.v
        adapter = binding.adapter
        if ret == _SUCCESS:
            if consumed == indicated:
                v.count("R-IND-04")
            else:
                v.fail("R-IND-04", f"SUCCESS with BytesConsumed {consumed} of {indicated}", nbl)
            adapter.chimney_indicated[nbl.serial] = nbl
            adapter.chimney_refused.discard(nbl.serial)
            return
        if ret in (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, NdisStatus.NOT_ACCEPTED):
            v.check(consumed == 0, "R-IND-05", f"NOT_ACCEPTED with BytesConsumed {consumed}", nbl)
        elif ret == NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED:
            v.check(
                0 < consumed < indicated,
                "R-IND-06",
                f"PARTIALLY_ACCEPTED with BytesConsumed {consumed} of {indicated}",
                nbl,
            )
        else:
            v.fail("R-IND-04", f"receive indication returned {ret!r}", nbl)
        adapter.chimney_refused.add(nbl.serial)
        self.tracker.transfer(
            nbl,
            frm=binding.protocol.name,
            to=adapter.owner,
            rule_id="R-NBL-02",
            op="NdisTcpOffloadReceiveHandler (refused)",
        )

    def receive_return(self, binding: Binding, head: NetBufferList) -> None:
        """NdisOffloadTcpReceiveReturn: R-IND-07 (never for refused indications), R-NBL-02 (host owns it)."""
        v = self.v
        adapter = binding.adapter
        n: NetBufferList | None = head
        while n is not None:
            v.check(
                n.serial not in adapter.chimney_refused,
                "R-IND-07",
                "NdisOffloadTcpReceiveReturn of an NBL whose indication was refused",
                n,
            )
            adapter.chimney_indicated.pop(n.serial, None)
            n = n.next
        self.tracker.transfer(
            head, frm=binding.protocol.name, to=adapter.owner, rule_id="R-NBL-02", op="NdisOffloadTcpReceiveReturn"
        )

    def receive_return_status(self, status: int, head: NetBufferList) -> None:
        if status == _SUCCESS:
            self.v.count("R-IND-13")
        else:
            self.v.fail("R-IND-13", f"MiniportTcpOffloadReceiveReturn returned {status!r}, not SUCCESS", head)

    # -- events ----------------------------------------------------------------------------------------

    def tcp_event(self, event_type: int, info: int) -> None:
        if event_type == TcpOffloadEventType.TcpIndicateRetrieve:
            self.v.check(
                info in _UPLOAD_REASONS, "R-EVT-06", f"TcpIndicateRetrieve with reason {info}"
            )

    def offload_event(self, mbl: MiniportOffloadBlockList | None, code: int) -> None:
        v = self.v
        if code == IndicateOffloadEvent.NeighborReachabilityQuery:
            ok = (
                mbl is not None
                and mbl.header.type == OffloadStateType.NeighborOffloadState
                and mbl.next_block is None
                and mbl.dependent_block_list is None
                and mbl.status == NdisStatus.SUCCESS
                and len(mbl.state) == 3
            )
            v.check(ok, "R-NBR-05", "NeighborReachabilityQuery block list malformed", mbl)
        else:
            v.check(
                code != IndicateOffloadEvent.NeighborReachabilityInDoubt and mbl is None,
                "R-NBR-07",
                f"NdisMOffloadEventIndicate code {code} (reserved, or with a block list)",
                mbl,
            )

    # -- adapter life cycle, capabilities, OIDs -------------------------------------------------------------

    def get_offload_handlers(self, adapter: Adapter, chimney_type: int) -> None:
        v = self.v
        v.check(
            adapter.in_initialize,
            "R-INIT-04",
            f"NdisMGetOffloadHandlers by {adapter.name} outside MiniportInitializeEx",
        )
        v.check(
            chimney_type not in adapter.offload_handler_types,
            "R-INIT-04",
            f"NdisMGetOffloadHandlers called twice for chimney type {chimney_type}",
        )
        v.check(
            chimney_type == NDIS_TCP_CHIMNEY_OFFLOAD or chimney_type in RESERVED_CHIMNEY_TYPES,
            "R-INIT-04",
            f"NdisMGetOffloadHandlers with undefined chimney type {chimney_type}",
        )

    def capabilities(self, adapter: Adapter, caps: NdisTcpConnectionOffload, *, direct: bool) -> None:
        """R-INIT-07..09 on every advertisement; R-INIT-10: set directly only during initialization."""
        v = self.v
        if direct:
            v.check(
                adapter.in_initialize,
                "R-INIT-10",
                f"{adapter.name} changed chimney capabilities outside initialization",
                caps,
            )
        for rule_id, msg in caps.problems():
            v.fail(rule_id, msg, caps)

    def binding_quiet(self, binding: Binding, what: str) -> None:
        """Nothing may be outstanding on a binding that closes: R-IND-14 for chimney indications, the
        generic ownership rule (with the leak report) for received and sent NBLs."""
        v = self.v
        adapter = binding.adapter
        held_chimney = [n for n in adapter.chimney_indicated.values() if n.owner == binding.protocol.name]
        v.check(
            not held_chimney,
            "R-IND-14",
            f"{what} {binding.name} while {len(held_chimney)} chimney-indicated NBL(s) are not returned: "
            + ", ".join(repr(n) for n in held_chimney),
            *held_chimney,
        )
        held_rx = [e[0] for e in adapter.rx_refs.values() if e[2] is not None and binding in e[2]]
        v.check(
            not held_rx,
            "R-NBL-02",
            f"{what} {binding.name} while it holds {len(held_rx)} received NBL(s): "
            + ", ".join(repr(n) for n in held_rx),
            *held_rx,
        )
        held = self.offloaded_send_data(binding)
        v.check(
            binding.sends_out - held == 0,
            "R-NBL-02",
            f"{what} {binding.name} with {binding.sends_out - held} sent NBL(s) not completed\n"
            + self.tracker.leak_report(adapter.owner),
        )

    def _prune_chain_nbls(self) -> None:
        """Forget chain NBLs that came back (send-completed, or returned without a terminate)."""
        chain_nbls = self.chain_nbls
        for serial, n in list(chain_nbls.items()):
            sh = n.source_handle
            if type(sh) is not tuple or n.owner != sh[0].adapter.owner:
                del chain_nbls[serial]

    def offloaded_send_data(self, binding: Binding) -> int:
        """NetBufferListChain NBLs of `binding` the target still holds as send data of offloaded
        connections. Not counted as sends left over at unbind: they belong to the offloaded connection
        (its terminate gives them back), not to the binding's send path."""
        self._prune_chain_nbls()
        held = 0
        for n in self.chain_nbls.values():
            sh = n.source_handle
            while type(sh) is tuple:  # below IMs the binding's stamp sits deeper in the stack
                if sh[0] is binding:
                    held += 1
                    break
                sh = sh[1]
        return held

    def pause_complete(self, adapter: Adapter) -> None:
        for b in adapter.bindings:
            self.v.check(
                b.sends_out == 0,
                "R-NBL-02",
                f"{adapter.name} paused with {b.sends_out} send NBL(s) of {b.name} not completed",
            )

    def halt(self, adapter: Adapter) -> None:
        v = self.v
        out = list(adapter.chimney_indicated.values())
        v.check(
            not out,
            "R-IND-14",
            f"halt of {adapter.name} while {len(out)} chimney-indicated NBL(s) are still out\n"
            + self.tracker.leak_report(),
            *out,
        )
        rx = [e[0] for e in adapter.rx_refs.values()]
        v.check(not rx, "R-NBL-02", f"halt of {adapter.name} with {len(rx)} received NBL(s) not returned", *rx)

    def oid_request(self, adapter: Adapter, request: NdisOidRequest) -> None:
        if request.oid == OID_PNP_SET_POWER and request.type is NdisRequestType.SET:
            low_power = request.buffer is not None and request.buffer != NdisDevicePowerState.D0
            self.v.check(
                not (low_power and adapter.offloaded),
                "R-PM-01",
                f"OID_PNP_SET_POWER {request.buffer!r} on {adapter.name} with {len(adapter.offloaded)} object(s) "
                "still offloaded",
                request,
            )


    # -- NDIS 6 receive path (chimney.ndis.receive) ---------------------------------------------------

    def rx_indicate(self, adapter: Adapter, nbls: list[NetBufferList]) -> None:
        """The miniport (or an IM re-indicating what it received) owns what it indicates (R-NBL-02); one NB
        per indicated NBL (R-INIT-16)."""
        v = self.v
        lower = adapter.lower_binding
        for n in nbls:
            ok = n.owner == adapter.owner
            if not ok and lower is not None and n.owner == NDIS_OWNER:
                e = lower.adapter.rx_refs.get(n.serial)
                ok = e is not None and e[2] is not None and lower in e[2]
            v.check(ok, "R-NBL-02", f"NdisMIndicateReceiveNetBufferLists by {adapter.name} of an NBL it does not own", n)
            nb = n.first_net_buffer
            v.check(nb is not None and nb.next is None, "R-INIT-16", "indicated NBL does not have exactly one NB", n)

    def rx_resources_returned(self, binding: Binding, nbls: list[NetBufferList], original_owner: str) -> None:
        """After ProtocolReceiveNetBufferLists with NDIS_RECEIVE_FLAGS_RESOURCES: nothing was lent, so every
        NBL must still be where NDIS put it; it goes straight back to the miniport."""
        v = self.v
        name = binding.protocol.name
        for n in nbls:
            v.check(
                n.owner == name, "R-NBL-02", f"{name} passed on an NBL indicated with NDIS_RECEIVE_FLAGS_RESOURCES", n
            )
            n.owner = original_owner

    def rx_return(self, binding: Binding, nbl: NetBufferList, entry: list[Any] | None) -> bool:
        """NdisReturnNetBufferLists: only NBLs indicated to this binding and not yet returned (R-NBL-02).
        False = drop this NBL (RECORD mode)."""
        holders = entry[2] if entry is not None else None
        if holders is None or binding not in holders:
            self.v.fail(
                "R-NBL-02",
                f"{binding.protocol.name} returned {nbl!r} that was not indicated to it "
                "(never indicated, already returned, or indicated with RESOURCES)",
                nbl,
            )
            return False
        holders.discard(binding)
        if len(holders) == 1 and entry is not None and entry[1] > 1:
            nbl.owner = next(iter(holders)).protocol.name  # the one remaining holder owns it alone
        return True

_UPLOAD_REASONS = frozenset(int(r) for r in TcpUploadReason)
_OK_NODE_STATUSES = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)


def default_checks() -> type[BoundaryChecks]:
    """The checks class of an `Ndis` built without `checks=`: `DEFAULT_CHECKS`, else ChimneyChecks."""
    if DEFAULT_CHECKS is not None:
        return DEFAULT_CHECKS
    from chimney.ndis.checks_chimney import ChimneyChecks

    return ChimneyChecks


def chimney_blocked(adapter: Adapter) -> bool:
    """NDIS fails state operations on this adapter itself: no chimney handlers below (R-IM-13), or halted."""
    dh = adapter.dh
    return dh.provider_generic is None or dh.provider_tcp is None or adapter.state is AdapterState.HALTED


def _buffered_data(node: MiniportOffloadBlockList) -> NetBufferList | None:
    for s in node.state or ():
        if type(s) is TcpOffloadStateDelegated:
            return s.buffered_data  # type: ignore[no-any-return]
    return None


def _stamp_chains(binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
    """Verifier OFF on a stamped adapter: NetBufferListChain NBLs carry the binding like sends do."""
    for node in iter_tree(pbl):
        n = node.net_buffer_list_chain
        while n is not None:
            sh = n.source_handle
            if not (type(sh) is tuple and sh[0] is binding):
                n.source_handle = (binding, sh)
            n = n.next


def _unstamp_chains(op: Op, adapter: Adapter, mbl: MiniportOffloadBlockList) -> None:
    """Verifier OFF: what `BoundaryChecks.chains_back` does for routing (no ownership bookkeeping)."""
    for node in iter_tree(mbl):
        if op is Op.INITIATE and node.status in _OK_NODE_STATUSES:
            continue
        n = node.net_buffer_list_chain
        while n is not None:
            sh = n.source_handle
            if type(sh) is tuple and sh[0].adapter is adapter:
                n.source_handle = sh[1]
            n = n.next


def pnode_role(node: MiniportOffloadBlockList) -> NodeRole:
    """Role of an MBL node as the caller built it (the slot value may have been written since)."""
    pnode = node.ndis_reserved[0]
    if isinstance(pnode, ProtocolOffloadBlockList):
        return pnode.ndis_reserved[1] if pnode.ndis_reserved[1] is not None else node_role(node)
    return node_role(node)


# --------------------------------------------------------------------------------------------- Ndis


class Ndis(ReceivePath):
    """The NDIS library of one simulated system. All calls are synchronous, as in real NDIS; drivers
    schedule their own asynchronous completions on `scheduler`."""

    def __init__(
        self, scheduler: Any, verifier: Verifier | None = None, checks: type[BoundaryChecks] | None = None
    ) -> None:
        self.scheduler = scheduler
        self.verifier = verifier if verifier is not None else Verifier(Mode.STRICT)
        self.tracker = OwnershipTracker(self.verifier)
        self.drivers: dict[str, list[DriverHandle]] = {}
        self.adapters: list[Adapter] = []
        self.bindings: list[Binding] = []
        self.counters: dict[str, int] = {"paused_send_drops": 0, "chimney_blocked": 0}
        # Rule sets subclass BoundaryChecks and are passed here (one method per crossing); the default is
        # the full chimney verifier (the contract is checked in every test, not only where asked for).
        self._chk: BoundaryChecks | None = None
        if self.verifier.enabled:
            self._chk = (checks or default_checks())(self)

    # ================================================================ registration and configuration

    def _register(self, driver: Any, kind: str) -> DriverHandle:
        for dh in self.drivers.get(driver.name, []):
            if dh.kind == kind:
                if dh.driver is not driver:
                    raise NdisUsageError(f"a different driver is already registered as {driver.name!r}")
                return dh
        driver.ndis = self
        dh = DriverHandle(driver, kind)
        self.drivers.setdefault(driver.name, []).append(dh)
        dh.in_set_options = True
        try:
            if isinstance(driver, IntermediateDriver):
                status = (
                    driver.miniport_set_options(dh) if kind == "miniport" else driver.protocol_set_options(dh)
                )
            else:
                status = driver.set_options(dh)
        finally:
            dh.in_set_options = False
        if status != NdisStatus.SUCCESS:
            raise NdisUsageError(f"{kind} SetOptions of {driver.name} failed: {status!r}")
        return dh

    def register_miniport_driver(self, driver: MiniportDriver) -> DriverHandle:
        """NdisMRegisterMiniportDriver: calls MiniportSetOptions (where chimney handlers register)."""
        return self._register(driver, "miniport")

    def register_protocol_driver(self, driver: ProtocolDriver) -> DriverHandle:
        """NdisRegisterProtocolDriver: calls ProtocolSetOptions."""
        return self._register(driver, "protocol")

    def register_intermediate_driver(self, driver: IntermediateDriver) -> tuple[DriverHandle, DriverHandle]:
        """NdisIMRegisterDriver-equivalent: both edges, miniport first."""
        return self._register(driver, "miniport"), self._register(driver, "protocol")

    def _handle_of(self, driver: Any, kind: str) -> DriverHandle:
        for dh in self.drivers.get(driver.name, []):
            if dh.kind == kind and dh.driver is driver:
                return dh
        return self._register(driver, kind)

    def set_optional_handlers(self, driver_handle: DriverHandle, characteristics: Any) -> NdisStatus:
        """NdisSetOptionalHandlers for the four chimney characteristics (R-INIT-01..03)."""
        chk = self._chk
        if chk is not None:
            if not chk.set_optional_handlers(driver_handle, characteristics):
                return NdisStatus.FAILURE
        elif all_handlers_set(characteristics):
            return NdisStatus.FAILURE
        if isinstance(characteristics, ProviderChimneyOffloadGenericCharacteristics):
            driver_handle.provider_generic = characteristics
        elif isinstance(characteristics, ProviderChimneyOffloadTcpCharacteristics):
            driver_handle.provider_tcp = characteristics
        elif isinstance(characteristics, ClientChimneyOffloadGenericCharacteristics):
            driver_handle.client_generic = characteristics
        elif isinstance(characteristics, ClientChimneyOffloadTcpCharacteristics):
            driver_handle.client_tcp = characteristics
        else:
            raise NdisUsageError(f"unknown characteristics {characteristics!r}")
        return NdisStatus.SUCCESS

    def m_get_offload_handlers(
        self, miniport_handle: Adapter, chimney_type: int
    ) -> tuple[NdisStatus, NdisTcpOffloadEventHandlers | None]:
        """NdisMGetOffloadHandlers (R-INIT-04): from MiniportInitializeEx, once per supported type."""
        chk = self._chk
        if chk is not None:
            chk.get_offload_handlers(miniport_handle, chimney_type)
        if chimney_type != NDIS_TCP_CHIMNEY_OFFLOAD:
            return NdisStatus.NOT_SUPPORTED, None
        miniport_handle.offload_handler_types.add(chimney_type)
        table = NdisTcpOffloadEventHandlers(
            NdisObjectHeader(NDIS_TCP_CHIMNEY_OFFLOAD, 1, 6 * 8 + 4),
            self.tcp_offload_event_handler,
            self.tcp_offload_receive_handler,
            self.tcp_offload_send_complete,
            self.tcp_offload_receive_complete,
            self.tcp_offload_disconnect_complete,
            self.tcp_offload_forward_complete,
        )
        return NdisStatus.SUCCESS, table

    def m_set_miniport_attributes(
        self,
        miniport_handle: Adapter,
        *,
        adapter_context: Any = None,
        tcp_connection_offload: NdisTcpConnectionOffload | None = None,
    ) -> NdisStatus:
        """NdisMSetMiniportAttributes: adapter context and (offload attributes) chimney capabilities.

        Capabilities set outside MiniportInitializeEx break R-INIT-10 (they change only through
        OFFLOAD_PAUSE / OFFLOAD_RESUME status indications)."""
        if adapter_context is not None:
            miniport_handle.context = adapter_context
        if tcp_connection_offload is not None:
            chk = self._chk
            if chk is not None:
                chk.capabilities(miniport_handle, tcp_connection_offload, direct=True)
            miniport_handle.offload_caps = tcp_connection_offload
        return NdisStatus.SUCCESS

    # ================================================================ adapters and bindings

    def add_adapter(self, driver: MiniportDriver, name: str, params: dict[str, Any] | None = None) -> Adapter:
        """A NIC arrives: MiniportInitializeEx, then MiniportRestart (the adapter ends up running)."""
        dh = self._handle_of(driver, "miniport")
        adapter = Adapter(self, driver, dh, name)
        self._initialize(adapter, params)
        return adapter

    def _initialize(self, adapter: Adapter, params: dict[str, Any] | None) -> None:
        adapter.in_initialize = True
        try:
            status = adapter.driver.initialize_ex(adapter, dict(params or {}))
        finally:
            adapter.in_initialize = False
        if status != NdisStatus.SUCCESS:
            adapter.state = AdapterState.HALTED
            raise NdisUsageError(f"MiniportInitializeEx of {adapter.name} failed: {status!r}")
        adapter.state = AdapterState.PAUSED
        self.adapters.append(adapter)
        self.restart_adapter(adapter)

    def add_im(
        self,
        im: IntermediateDriver,
        lower: Adapter,
        name: str,
        params: dict[str, Any] | None = None,
    ) -> Adapter:
        """Bind the IM's protocol edge to `lower` and start its virtual miniport named `name` above it
        (NdisIMInitializeDeviceInstanceEx). Returns the virtual miniport upper protocols bind to."""
        self._handle_of(im, "miniport")
        lower_binding = self.bind(im, lower)
        vm = Adapter(self, im, self._handle_of(im, "miniport"), name)
        vm.lower_binding = lower_binding
        lower_binding.upper_adapter = vm
        self._initialize(vm, params)
        return vm

    def bind(self, protocol: ProtocolDriver, adapter: Adapter, params: dict[str, Any] | None = None) -> Binding:
        """ProtocolBindAdapterEx + NdisOpenAdapterEx: returns the binding handle (protocol -> adapter)."""
        if adapter.state is AdapterState.HALTED:
            raise NdisUsageError(f"cannot bind {protocol.name} to halted {adapter.name}")
        dh = self._handle_of(protocol, "protocol")
        binding = Binding(self, protocol, dh, adapter)
        p = dict(params or {})
        p.setdefault("adapter_name", adapter.name)
        p.setdefault("tcp_connection_offload", adapter.offload_caps)
        status = protocol.bind_adapter_ex(binding, p)
        if status != NdisStatus.SUCCESS:
            binding.state = BindingState.CLOSED
            raise NdisUsageError(f"ProtocolBindAdapterEx of {protocol.name} to {adapter.name} failed: {status!r}")
        binding.state = BindingState.RUNNING if adapter.state is AdapterState.RUNNING else BindingState.PAUSED
        adapter.bindings.append(binding)
        self.bindings.append(binding)
        adapter.binds_ever += 1
        if adapter.binds_ever == 1:
            adapter.solo = binding
        else:
            adapter.stamp = True
        return binding

    def set_binding_context(self, binding: Binding, context: Any) -> None:
        """The ProtocolBindingContext NDIS passes to the protocol's handlers for this binding."""
        binding.context = context

    def unbind(self, binding: Binding) -> None:
        """ProtocolUnbindAdapterEx + NdisCloseAdapterEx: nothing may still be outstanding on the binding."""
        if binding.state is BindingState.CLOSED:
            raise NdisUsageError(f"{binding!r} already closed")
        if self._chk is not None:
            self._chk.binding_quiet(binding, "unbind")
        binding.state = BindingState.CLOSING
        binding.protocol.unbind_adapter_ex(binding.context)
        binding.state = BindingState.CLOSED
        binding.adapter.bindings.remove(binding)
        self.bindings.remove(binding)

    def pause_adapter(self, adapter: Adapter) -> NdisStatus:
        """MiniportPause (bindings pause first). PENDING means the miniport calls m_pause_complete."""
        if adapter.state is not AdapterState.RUNNING:
            raise NdisUsageError(f"pause of {adapter!r}")
        for b in adapter.bindings:
            b.state = BindingState.PAUSED
        adapter.state = AdapterState.PAUSING
        status = adapter.driver.pause(adapter.context)
        if status == NdisStatus.SUCCESS:
            self.m_pause_complete(adapter)
        return status

    def m_pause_complete(self, miniport_handle: Adapter) -> None:
        """NdisMPauseComplete."""
        if self._chk is not None:
            self._chk.pause_complete(miniport_handle)
        miniport_handle.state = AdapterState.PAUSED

    def restart_adapter(self, adapter: Adapter) -> NdisStatus:
        """MiniportRestart. PENDING means the miniport calls m_restart_complete."""
        if adapter.state is not AdapterState.PAUSED:
            raise NdisUsageError(f"restart of {adapter!r}")
        adapter.state = AdapterState.RESTARTING
        status = adapter.driver.restart(adapter.context)
        if status == NdisStatus.SUCCESS:
            self.m_restart_complete(adapter)
        return status

    def m_restart_complete(self, miniport_handle: Adapter) -> None:
        """NdisMRestartComplete."""
        miniport_handle.state = AdapterState.RUNNING
        for b in miniport_handle.bindings:
            if b.state is BindingState.PAUSED:
                b.state = BindingState.RUNNING

    def halt_adapter(self, adapter: Adapter, halt_action: int = NDIS_HALT_DEVICE_DISABLED) -> None:
        """Unbind every protocol, then MiniportHaltEx. Indicated NBLs still out break R-IND-14; other
        NBLs still lent out are reported with the ownership leak report (R-NBL-02)."""
        if adapter.state is AdapterState.HALTED:
            raise NdisUsageError(f"{adapter!r} already halted")
        for b in list(adapter.bindings):
            if b.upper_adapter is not None and b.upper_adapter.state is not AdapterState.HALTED:
                self.halt_adapter(b.upper_adapter, halt_action)
            if b.state is not BindingState.CLOSED:
                self.unbind(b)
        if self._chk is not None:
            self._chk.halt(adapter)
        adapter.driver.halt_ex(adapter.context, halt_action)
        adapter.state = AdapterState.HALTED
        if adapter in self.adapters:
            self.adapters.remove(adapter)
        lb = adapter.lower_binding
        if lb is not None and lb.state is not BindingState.CLOSED:
            self.unbind(lb)

    def leak_report(self) -> str:
        """Everything still lent out anywhere (pool-allocated NBLs by owner, receive refs, indications)."""
        lines = [self.tracker.leak_report()]
        for a in self.adapters:
            if a.rx_refs:
                lines.append(f"{a.name}: {len(a.rx_refs)} received NBL(s) not returned")
            if a.chimney_indicated:
                lines.append(f"{a.name}: {len(a.chimney_indicated)} chimney-indicated NBL(s) not returned")
            for b in a.bindings:
                if b.sends_out:
                    lines.append(f"{b.name}: {b.sends_out} sent NBL(s) not completed")
        return "\n".join(lines)

    # ================================================================ normal send path

    def send_net_buffer_lists(
        self, binding: Binding, nbl_chain: NetBufferList, port: int = 0, flags: int = 0
    ) -> None:
        """NdisSendNetBufferLists: hand the chain to the miniport below the binding.

        NDIS pushes the binding onto each NBL's SourceHandle (a (binding, previous) pair) so completions
        find their way back through any number of IMs re-sending the same NBLs. With the verifier OFF an
        adapter that only ever had one binding skips the stamping: all its completions go to that binding."""
        if binding.state is not _BINDING_RUNNING:
            self._fail_sends(binding, nbl_chain, flags)
            return
        adapter = binding.adapter
        chk = self._chk
        if chk is not None:
            chk.nbl_send(binding, nbl_chain, "NdisSendNetBufferLists")
        elif adapter.stamp:
            nbl: NetBufferList | None = nbl_chain
            while nbl is not None:
                nbl.source_handle = (binding, nbl.source_handle)
                nbl = nbl.next
        adapter.driver.send_net_buffer_lists(adapter.context, nbl_chain, port, flags)

    def _fail_sends(self, binding: Binding, nbl_chain: NetBufferList, flags: int) -> None:
        """A send on a paused/closing binding: NDIS completes it at once with NDIS_STATUS_PAUSED."""
        nbl: NetBufferList | None = nbl_chain
        while nbl is not None:
            nbl.status = NdisStatus.PAUSED
            self.counters["paused_send_drops"] += 1
            nbl = nbl.next
        binding.protocol.send_net_buffer_lists_complete(binding.context, nbl_chain, flags)

    def m_send_net_buffer_lists_complete(
        self, miniport_handle: Adapter, nbl_chain: NetBufferList, flags: int = 0
    ) -> None:
        """NdisMSendNetBufferListsComplete: split the chain by SourceHandle and complete each part to its
        binding's ProtocolSendNetBufferListsComplete."""
        chk = self._chk
        if chk is not None:
            what = "NdisMSendNetBufferListsComplete"
            delivered = chk.nbl_delivered
            for b, head, n in chk.nbl_complete(miniport_handle, nbl_chain, what):
                if delivered is None:  # BoundaryChecks.delivered, inline
                    hot = chk.hot
                    hot[COV_NBL_02] += 1
                    if b.upper_adapter is None:
                        hot[COV_NBL_03] += 1
                    b.sends_out -= n
                else:
                    delivered(b, head, n, what)
                b.protocol.send_net_buffer_lists_complete(b.context, head, flags)
            return
        if not miniport_handle.stamp:
            solo = miniport_handle.solo
            if solo is None:
                raise NdisUsageError(f"{miniport_handle.name} completed sends but nobody ever bound to it")
            solo.protocol.send_net_buffer_lists_complete(solo.context, nbl_chain, flags)
            return
        for b, head in self._split(miniport_handle, nbl_chain):
            b.protocol.send_net_buffer_lists_complete(b.context, head, flags)

    def _split(self, adapter: Adapter, head: NetBufferList | None) -> list[tuple[Binding, NetBufferList]]:
        """Verifier OFF, stamped adapter: pop SourceHandle and group consecutive NBLs by binding. NBLs
        without a stamp were sent before a second binding appeared: they belong to the first binding."""
        groups: list[tuple[Binding, NetBufferList]] = []
        solo = adapter.solo
        b: Binding | None = None
        first: NetBufferList | None = None
        prev: NetBufferList | None = None
        nbl = head
        while nbl is not None:
            sh = nbl.source_handle
            if type(sh) is tuple and sh[0].adapter is adapter:
                nb, nbl.source_handle = sh
            elif solo is not None:
                nb = solo
            else:
                raise NdisUsageError(f"{adapter.name} completed {nbl!r}, which NDIS never sent to it")
            if nb is not b:
                if prev is not None:
                    prev.next = None
                    groups.append((b, first))  # type: ignore[arg-type]
                b, first = nb, nbl
            prev = nbl
            nbl = nbl.next
        if prev is not None:
            groups.append((b, first))  # type: ignore[arg-type]
        return groups

    # ================================================================ status indications and OIDs

    def m_indicate_status_ex(self, miniport_handle: Adapter, status: int, buffer: Any = None, port: int = 0) -> None:
        """NdisMIndicateStatusEx: every binding's ProtocolStatusEx. OFFLOAD_RESUME and
        TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES carry new capabilities, which NDIS records."""
        if self._chk is not None:
            self._chk.status_indication(miniport_handle, status)
        if status in (NdisStatus.OFFLOAD_RESUME, NdisStatus.TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES) and isinstance(
            buffer, NdisTcpConnectionOffload
        ):
            if self._chk is not None:
                self._chk.capabilities(miniport_handle, buffer, direct=False)
            miniport_handle.offload_caps = buffer
        ind = NdisStatusIndication(miniport_handle, status, buffer, port)
        for b in list(miniport_handle.bindings):
            b.protocol.status_ex(b.context, ind)

    def oid_request(self, binding: Binding, request: NdisOidRequest) -> int:
        """NdisOidRequest. NDIS answers the connection-offload config/capability queries itself; other
        requests go to the miniport. A PENDING request completes through m_oid_request_complete ->
        ProtocolOidRequestComplete; a synchronous status is returned (and stored in request.status)."""
        chk = self._chk
        if chk is None:
            return self._oid_request(binding, request)
        token = chk.oid_enter(binding, request)
        status: int | None = None
        try:
            status = self._oid_request(binding, request)
        finally:
            chk.oid_exit(binding, request, token, status)
        return status

    def _oid_request(self, binding: Binding, request: NdisOidRequest) -> int:
        adapter = binding.adapter
        oid = request.oid
        if request.type is NdisRequestType.QUERY and (
            oid in NDIS_ANSWERED_QUERIES or oid == OID_TCP_CONNECTION_OFFLOAD_PARAMETERS
        ):
            return self._answer_oid(adapter, request)
        if request.type is NdisRequestType.QUERY and oid == OID_TCP_TASK_OFFLOAD and not adapter.chimney_capable:
            # R-IM-13: no chimney handlers at this adapter (IM or NIC): NDIS itself says no chimney.
            request.status = NdisStatus.NOT_SUPPORTED
            return request.status
        if request.type is NdisRequestType.SET and oid in NDIS_ANSWERED_QUERIES:
            request.status = NdisStatus.NOT_SUPPORTED
            return request.status
        if self._chk is not None:
            self._chk.oid_request(adapter, request)
        request.ndis_reserved.append(binding)
        status = adapter.driver.oid_request(adapter.context, request)
        if status != NdisStatus.PENDING:
            request.ndis_reserved.pop()
            self._oid_done(adapter, request, status)
        return status

    def _answer_oid(self, adapter: Adapter, request: NdisOidRequest) -> int:
        if not adapter.chimney_capable:
            # R-IM-13: no chimney handlers below this point means no chimney, whatever is advertised.
            value = None
        elif request.oid == OID_TCP_CONNECTION_OFFLOAD_PARAMETERS:
            value = adapter.offload_params
        else:
            value = adapter.offload_caps
        if value is None:
            request.status = NdisStatus.NOT_SUPPORTED
        else:
            request.buffer = value
            request.bytes_written = 1
            request.status = NdisStatus.SUCCESS
        return request.status

    def _oid_done(self, adapter: Adapter, request: NdisOidRequest, status: int) -> None:
        request.status = status
        if status == NdisStatus.SUCCESS and request.type is NdisRequestType.SET and request.oid in CONFIGURATION_SETS:
            adapter.offload_params = request.buffer

    def m_oid_request_complete(self, miniport_handle: Adapter, request: NdisOidRequest, status: int) -> None:
        """NdisMOidRequestComplete: back to the binding that issued the pending request."""
        if not request.ndis_reserved:
            raise NdisUsageError(f"{request!r} completed by {miniport_handle.name} but was never pending there")
        binding = request.ndis_reserved.pop()
        if binding.adapter is not miniport_handle:
            raise NdisUsageError(f"{request!r} completed by {miniport_handle.name}, issued to {binding.adapter.name}")
        self._oid_done(miniport_handle, request, status)
        binding.protocol.oid_request_complete(binding.context, request, status)

    # ================================================================ chimney state operations (§3.2)

    def _offload_handle_ref(self, binding: Binding) -> Callable[[NdisOffloadHandle], NdisOffloadHandleRef]:
        def make(h: NdisOffloadHandle) -> NdisOffloadHandleRef:
            ref = h.ndis_reserved[0]
            if ref is None or ref.binding is not binding:
                ref = NdisOffloadHandleRef(binding, h)
                h.ndis_reserved[0] = ref
            return ref

        return make

    def _state_op(self, op: Op, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        adapter = binding.adapter
        if binding.dh.client_generic is None:
            raise NdisUsageError(f"{binding.protocol.name} registered no chimney client handlers")
        chk = self._chk
        if chk is not None:
            chk.state_op(op, binding, pbl)
            for p in iter_tree(pbl):
                p.ndis_reserved[1] = node_role(p)  # the role as built, before the target writes slots
        mbl = pbl_to_mbl(pbl, self._offload_handle_ref(binding))
        assert mbl is not None
        for m in iter_tree(mbl):
            m.status = STATUS_UNSET
        mbl.ndis_reserved[1] = (op, binding)
        generic = adapter.dh.provider_generic
        blocked = generic is None or adapter.dh.provider_tcp is None or adapter.state is AdapterState.HALTED
        if chk is None and adapter.stamp and op is Op.INITIATE and not blocked:
            _stamp_chains(binding, pbl)
        if chk is None:
            if blocked:
                self._fail_tree(op, binding, mbl)
            else:
                getattr(generic, _OP_PROVIDER[op])(adapter.context, mbl)  # type: ignore[union-attr]
            return
        chk.state_call_enter(op, binding, pbl, blocked)
        try:
            if blocked:
                self._fail_tree(op, binding, mbl)
            else:
                adapter.outstanding_roots[id(mbl)] = (op, mbl)
                getattr(generic, _OP_PROVIDER[op])(adapter.context, mbl)  # type: ignore[union-attr]
        finally:
            chk.state_call_exit(op, binding, pbl, blocked)

    def _fail_tree(self, op: Op, binding: Binding, mbl: MiniportOffloadBlockList) -> None:
        """No chimney below (R-IM-13): NDIS fails the whole tree itself and completes it inline."""
        self.counters["chimney_blocked"] += 1
        for m in iter_tree(mbl):
            m.status = NdisStatus.FAILURE
        if self._chk is not None:
            # Nothing was handed down; this only undoes what a caller-side shim may have stamped.
            self._chk.chains_back(op, binding.adapter, mbl)
        self._deliver_state_complete(op, binding, mbl)

    def _state_complete(self, op: Op, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        chk = self._chk
        if chk is not None:
            try:
                self._state_complete_checked(op, chk, miniport_handle, mbl)
            finally:
                chk.state_complete_returned(op, miniport_handle, mbl)
            return
        route = mbl.ndis_reserved[1]
        if not (type(route) is tuple and route[0] is op):
            raise NdisUsageError(f"{_OP_NDIS_NAME[op]}: {mbl!r} is not the root of a {op.value} tree NDIS passed down")
        binding: Binding = route[1]
        if miniport_handle.stamp and (op is Op.INITIATE or op is Op.TERMINATE):
            _unstamp_chains(op, miniport_handle, mbl)
        self._deliver_state_complete(op, binding, mbl)

    def _state_complete_checked(
        self, op: Op, chk: BoundaryChecks, miniport_handle: Adapter, mbl: MiniportOffloadBlockList
    ) -> None:
        if not chk.state_complete(op, miniport_handle, mbl):
            return
        del miniport_handle.outstanding_roots[id(mbl)]
        route = mbl.ndis_reserved[1]
        if not (type(route) is tuple and route[0] is op):
            raise NdisUsageError(f"{_OP_NDIS_NAME[op]}: {mbl!r} is not the root of a {op.value} tree NDIS passed down")
        binding: Binding = route[1]
        self._track_offloaded(op, miniport_handle, binding, mbl)
        self._deliver_state_complete(op, binding, mbl)

    def _track_offloaded(self, op: Op, adapter: Adapter, binding: Binding, mbl: MiniportOffloadBlockList) -> None:
        for node in iter_tree(mbl):
            slot = node.miniport_offload_context
            if slot is None:
                continue
            if op is Op.INITIATE and pnode_role(node) is NodeRole.NEW_OFFLOAD and slot.value is not None:
                adapter.offloaded[id(slot)] = slot
            elif op is Op.TERMINATE and node.status == NdisStatus.SUCCESS:
                adapter.offloaded.pop(id(slot), None)

    def _deliver_state_complete(self, op: Op, binding: Binding, mbl: MiniportOffloadBlockList) -> None:
        mbl.ndis_reserved[1] = None
        pbl = mbl_results_to_pbl(mbl)
        for p in iter_tree(pbl):
            p.ndis_reserved[1] = None
        handler = getattr(binding.dh.client_generic, _OP_CLIENT[op])
        handler(binding.context, pbl)

    def initiate_offload(self, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        """NdisInitiateOffload -> MiniportInitiateOffload(ctx, MBL)."""
        self._state_op(Op.INITIATE, binding, pbl)

    def terminate_offload(self, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        """NdisTerminateOffload -> MiniportTerminateOffload."""
        self._state_op(Op.TERMINATE, binding, pbl)

    def update_offload(self, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        """NdisUpdateOffload -> MiniportUpdateOffload."""
        self._state_op(Op.UPDATE, binding, pbl)

    def invalidate_offload(self, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        """NdisInvalidateOffload -> MiniportInvalidateOffload."""
        self._state_op(Op.INVALIDATE, binding, pbl)

    def query_offload_state(self, binding: Binding, pbl: ProtocolOffloadBlockList) -> None:
        """NdisQueryOffloadState (a.k.a. NdisQueryOffload) -> MiniportQueryOffload."""
        self._state_op(Op.QUERY, binding, pbl)

    query_offload = query_offload_state

    def m_initiate_offload_complete(self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        """NdisMInitiateOffloadComplete -> ProtocolInitiateOffloadComplete (R-TREE-02/03/05/07/08/10)."""
        self._state_complete(Op.INITIATE, miniport_handle, mbl)

    def m_terminate_offload_complete(self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        """NdisMTerminateOffloadComplete -> ProtocolTerminateOffloadComplete (R-TREE-15 too)."""
        self._state_complete(Op.TERMINATE, miniport_handle, mbl)

    def m_update_offload_complete(self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        self._state_complete(Op.UPDATE, miniport_handle, mbl)

    def m_invalidate_offload_complete(self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        self._state_complete(Op.INVALIDATE, miniport_handle, mbl)

    def m_query_offload_state_complete(self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList) -> None:
        self._state_complete(Op.QUERY, miniport_handle, mbl)

    m_query_offload_complete = m_query_offload_state_complete

    # ================================================================ chimney I/O (§3.3)

    def _io(
        self, what: str, rule_id: str, slot_name: str, offload_handle: NdisOffloadHandle, nbl: NetBufferList, *extra: int
    ) -> int:
        ref = offload_handle.ndis_reserved[0]
        if ref is None:
            raise NdisUsageError(f"{what}: {offload_handle!r} was never offloaded through NDIS")
        binding: Binding = ref.binding
        adapter = binding.adapter
        slot = offload_handle.miniport_offload_context
        tcp = adapter.dh.provider_tcp
        if slot is None or tcp is None:
            self._io_refused(what, offload_handle, adapter)
        chk = self._chk
        if chk is None:
            if adapter.stamp:
                n: NetBufferList | None = nbl
                while n is not None:
                    n.source_handle = (binding, n.source_handle)
                    n = n.next
            return getattr(tcp, slot_name)(adapter.context, slot.value, nbl, *extra)  # type: ignore[no-any-return]
        kind = _IO_KIND[what]
        token = chk.io_enter(kind, offload_handle, nbl, extra)
        try:
            chk.send(binding, nbl, what)
            status = getattr(tcp, slot_name)(adapter.context, slot.value, nbl, *extra)
            chk.io_return(status, rule_id, what, nbl)
        finally:
            chk.io_exit(kind, offload_handle, token)
        return status  # type: ignore[no-any-return]

    def _io_refused(self, what: str, offload_handle: NdisOffloadHandle, adapter: Adapter) -> None:
        """I/O on a handle no chimney target can take (R-IM-13: NDIS failed its initiate itself because
        nothing below registered chimney handlers; or a handle without a MiniportOffloadContext slot):
        refused with a clear error before anything is stamped. A handle whose initiate the target failed
        still goes down: the provider refuses it (target: REQUEST_ABORTED, IM: ImUsageError)."""
        reason = f"{adapter.name} has no chimney handlers" if adapter.dh.provider_tcp is None else "no context slot"
        raise NdisUsageError(f"{what} on {offload_handle!r}: {reason} (its offload never reached a target)")

    def offload_tcp_send(self, offload_handle: NdisOffloadHandle, nbl: NetBufferList) -> int:
        """NdisOffloadTcpSend -> MiniportTcpOffloadSend(ctx, MiniportOffloadContext, NBL); PENDING only (R-SEND-01)."""
        return self._io("NdisOffloadTcpSend", "R-SEND-01", "tcp_offload_send_handler", offload_handle, nbl)

    def offload_tcp_receive(self, offload_handle: NdisOffloadHandle, nbl: NetBufferList) -> int:
        """NdisOffloadTcpReceive -> MiniportTcpOffloadReceive; PENDING only (R-RECV-01)."""
        return self._io("NdisOffloadTcpReceive", "R-RECV-01", "tcp_offload_receive_handler", offload_handle, nbl)

    def offload_tcp_disconnect(self, offload_handle: NdisOffloadHandle, nbl: NetBufferList, flags: int) -> int:
        """NdisOffloadTcpDisconnect -> MiniportTcpOffloadDisconnect(..., Flags); PENDING only (R-DISC-01)."""
        return self._io(
            "NdisOffloadTcpDisconnect", "R-DISC-01", "tcp_offload_disconnect_handler", offload_handle, nbl, flags
        )

    def offload_tcp_forward(self, offload_handle: NdisOffloadHandle, nbl: NetBufferList) -> int:
        """NdisOffloadTcpForward -> MiniportTcpOffloadForward; PENDING only (R-FWD-01)."""
        return self._io("NdisOffloadTcpForward", "R-FWD-01", "tcp_offload_forward_handler", offload_handle, nbl)

    def offload_tcp_receive_return(self, binding: Binding, nbl: NetBufferList) -> int:
        """NdisOffloadTcpReceiveReturn(NdisBindingHandle, NBL) -> MiniportTcpOffloadReceiveReturn, which must
        return SUCCESS synchronously (R-IND-13). Returning a refused indication breaks R-IND-07."""
        adapter = binding.adapter
        tcp = adapter.dh.provider_tcp
        if tcp is None:
            raise NdisUsageError(f"NdisOffloadTcpReceiveReturn on {binding!r}: {adapter.name} has no chimney handlers")
        chk = self._chk
        if chk is not None:
            chk.receive_return(binding, nbl)
        status = tcp.tcp_offload_receive_return_handler(adapter.context, nbl)
        if chk is not None:
            chk.receive_return_status(status, nbl)
        return status

    def _io_complete(self, what: str, slot_name: str, miniport_handle: Adapter, nbl_chain: NetBufferList) -> None:
        chk = self._chk
        if chk is not None:
            for b, head, n in chk.complete(miniport_handle, nbl_chain, what):
                chk.delivered(b, head, n, what)
                getattr(b.dh.client_tcp, slot_name)(b.context, head)
            return
        if not miniport_handle.stamp:
            solo = miniport_handle.solo
            if solo is None:
                raise NdisUsageError(f"{what} from {miniport_handle.name}, which nobody ever bound to")
            getattr(solo.dh.client_tcp, slot_name)(solo.context, nbl_chain)
            return
        for b, head in self._split(miniport_handle, nbl_chain):
            getattr(b.dh.client_tcp, slot_name)(b.context, head)

    def tcp_offload_send_complete(self, miniport_handle: Adapter, nbl_chain: NetBufferList) -> None:
        """NdisTcpOffloadSendComplete -> ProtocolTcpOffloadSendComplete (R-NBL-01/02/03)."""
        self._io_complete("NdisTcpOffloadSendComplete", "tcp_offload_send_complete_handler", miniport_handle, nbl_chain)

    def tcp_offload_receive_complete(self, miniport_handle: Adapter, nbl_chain: NetBufferList) -> None:
        """NdisTcpOffloadReceiveComplete -> ProtocolTcpOffloadReceiveComplete."""
        self._io_complete(
            "NdisTcpOffloadReceiveComplete", "tcp_offload_receive_complete_handler", miniport_handle, nbl_chain
        )

    def tcp_offload_disconnect_complete(self, miniport_handle: Adapter, nbl: NetBufferList) -> None:
        """NdisTcpOffloadDisconnectComplete: exactly one NBL (R-DISC-01)."""
        if self._chk is not None:
            self._chk.disconnect_complete(nbl)
        self._io_complete(
            "NdisTcpOffloadDisconnectComplete", "tcp_offload_disconnect_complete_handler", miniport_handle, nbl
        )

    def tcp_offload_forward_complete(self, miniport_handle: Adapter, nbl_chain: NetBufferList) -> None:
        """NdisTcpOffloadForwardComplete -> ProtocolTcpOffloadForwardComplete."""
        self._io_complete(
            "NdisTcpOffloadForwardComplete", "tcp_offload_forward_complete_handler", miniport_handle, nbl_chain
        )

    # ================================================================ chimney indications (§3.3, §3.4)

    def tcp_offload_receive_handler(
        self, ndis_offload_handle: NdisOffloadHandleRef, nbl: NetBufferList, status: int
    ) -> tuple[int, int]:
        """NdisTcpOffloadReceiveHandler -> ProtocolTcpOffloadReceiveIndicate; returns (status, BytesConsumed).

        R-IND-02 single NBL, R-IND-03 Status SUCCESS, R-IND-04/05/06 result consistency; ownership moves
        to the host only when it accepted everything (R-IND-04)."""
        if not isinstance(ndis_offload_handle, NdisOffloadHandleRef):
            self.verifier.fail("R-TREE-14", f"NdisTcpOffloadReceiveHandler with {ndis_offload_handle!r}", nbl)
            raise NdisUsageError(f"NdisTcpOffloadReceiveHandler: {ndis_offload_handle!r} is not an NdisOffloadHandle")
        binding: Binding = ndis_offload_handle.binding
        chk = self._chk
        handler = binding.dh.client_tcp.tcp_offload_receive_indicate_handler  # type: ignore[union-attr]
        if chk is None:
            return handler(ndis_offload_handle.upper, nbl, status)  # type: ignore[no-any-return]
        token = chk.indication_enter(ndis_offload_handle, nbl, status)
        result: tuple[int, int] | None = None
        try:
            indicated = chk.receive_indication(binding, nbl, status)
            result = handler(ndis_offload_handle.upper, nbl, status)
        finally:
            chk.indication_exit(ndis_offload_handle, token, result)
        ret, consumed = result  # type: ignore[misc]
        chk.receive_indication_result(binding, nbl, ret, consumed, indicated)
        return ret, consumed

    def tcp_offload_event_handler(
        self, ndis_offload_handle: NdisOffloadHandleRef, event_type: int, event_specific_information: int = 0
    ) -> None:
        """NdisTcpOffloadEventHandler -> ProtocolTcpOffloadEvent(OffloadContext, EventType, Info)."""
        if not isinstance(ndis_offload_handle, NdisOffloadHandleRef):
            self.verifier.fail("R-TREE-14", f"NdisTcpOffloadEventHandler with {ndis_offload_handle!r}")
            raise NdisUsageError(f"NdisTcpOffloadEventHandler: {ndis_offload_handle!r} is not an NdisOffloadHandle")
        binding: Binding = ndis_offload_handle.binding
        handler = binding.dh.client_tcp.tcp_offload_event_handler  # type: ignore[union-attr]
        chk = self._chk
        if chk is None:
            handler(ndis_offload_handle.upper, event_type, event_specific_information)
            return
        token = chk.event_enter(ndis_offload_handle, event_type, event_specific_information)
        completed = False
        try:
            chk.tcp_event(event_type, event_specific_information)
            handler(ndis_offload_handle.upper, event_type, event_specific_information)
            completed = True
        finally:
            chk.event_exit(ndis_offload_handle, token, completed)

    def m_offload_event_indicate(
        self, miniport_handle: Adapter, mbl: MiniportOffloadBlockList | None, indication_code: int
    ) -> None:
        """NdisMOffloadEventIndicate -> ProtocolIndicateOffloadEvent(ctx, PBL, code). The PBL overlays the
        target's MBL (the host writes the new HRD into the shared CACHED struct before returning)."""
        targets: list[Binding]
        if mbl is not None and isinstance(mbl.ndis_offload_handle, NdisOffloadHandleRef):
            targets = [mbl.ndis_offload_handle.binding]
        else:
            targets = [b for b in miniport_handle.bindings if b.dh.client_generic is not None]
        chk = self._chk
        token = None
        if chk is not None:
            chk.offload_event(mbl, indication_code)
            token = chk.offload_event_enter(miniport_handle, mbl, indication_code)

        def resolve(m: MiniportOffloadBlockList) -> NdisOffloadHandle | None:
            h = m.ndis_offload_handle
            return h.upper if isinstance(h, NdisOffloadHandleRef) else None

        completed = False
        try:
            pbl = mbl_to_pbl(mbl, resolve)
            for b in targets:
                b.dh.client_generic.indicate_offload_event_handler(b.context, pbl, indication_code)  # type: ignore[union-attr]
            completed = True
        finally:
            if chk is not None:
                chk.offload_event_exit(miniport_handle, token, completed)
