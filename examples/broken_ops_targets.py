"""Deliberately broken offload targets for the state-operation scenarios of `chimney verify`: each subclasses
the built-in `OffloadTarget` and breaks one query / update / invalidate / statistics / timer rule.

    chimney verify examples/broken_ops_targets.py:SynchronousQueryCompletion     # R-QRY-01
    chimney verify examples.broken_ops_targets:SendsAfterInvalidate               # R-INV-03
"""

from __future__ import annotations

import copy
from typing import Any

from chimney.ndis.blocklist import MiniportOffloadBlockList, iter_tree
from chimney.ndis.offload_state import (
    TcpCachedFlags,
    TcpOffloadStateCached,
    TcpOffloadStateDelegated,
    TcpUploadReason,
)
from chimney.ndis.oid import IpOffloadStats, TcpOffloadStats
from chimney.ndis.pool import NblPool
from chimney.ndis.status import NdisStatus
from chimney.target import OffloadTarget
from chimney.target.context import NeighborCtx, PathCtx, Phase, TcpCtx


def _tcp_ctxs(mbl: MiniportOffloadBlockList) -> list[TcpCtx]:
    out = []
    for node in iter_tree(mbl):
        slot = node.miniport_offload_context
        ctx = slot.value if slot is not None else None
        if isinstance(ctx, TcpCtx):
            out.append(ctx)
    return out


class SynchronousQueryCompletion(OffloadTarget):
    """Fills the tree and calls NdisMQueryOffloadStateComplete inside MiniportQueryOffload (breaks R-QRY-01)."""

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._process_query(mbl)


class _QueryRewriter(OffloadTarget):
    """Lets the built-in target fill a query, then changes each queried TCP delegated state in `rewrite`
    just before NdisMQueryOffloadStateComplete (the shared mechanism of the query-breaking targets below)."""

    def rewrite(self, s: TcpOffloadStateDelegated, ctx: TcpCtx | None) -> None:
        raise NotImplementedError

    def _process_query(self, mbl: MiniportOffloadBlockList) -> None:
        orig = self.ndis.m_query_offload_state_complete  # type: ignore[union-attr]

        def complete(adapter: Any, tree: MiniportOffloadBlockList) -> None:
            for node in iter_tree(tree):
                slot = node.miniport_offload_context
                ctx = slot.value if slot is not None else None
                for s in node.state:
                    if isinstance(s, TcpOffloadStateDelegated):
                        self.rewrite(s, ctx if isinstance(ctx, TcpCtx) else None)
            orig(adapter, tree)

        self.ndis.m_query_offload_state_complete = complete  # type: ignore[union-attr]
        try:
            super()._process_query(mbl)
        finally:
            self.ndis.m_query_offload_state_complete = orig  # type: ignore[union-attr]


class BacklogSizeLeftEmpty(_QueryRewriter):
    """Leaves SendBacklogSize unset in queried delegated state instead of a size or 0xFFFFFFFF (breaks
    R-QRY-05)."""

    def rewrite(self, s: TcpOffloadStateDelegated, ctx: TcpCtx | None) -> None:
        s.send_backlog_size = None


class UnscaledQueriedRtt(_QueryRewriter):
    """Reports SRtt and RttVar in plain ticks at a query, not x8 / x4 (breaks R-QRY-07)."""

    def rewrite(self, s: TcpOffloadStateDelegated, ctx: TcpCtx | None) -> None:
        s.srtt //= 8
        s.rtt_var //= 4


class BacklogFollowsPostedBytes(_QueryRewriter):
    """Reports the bytes the host has posted as the optimum send backlog (breaks R-EVT-09: the value must
    not depend on what is currently posted)."""

    def rewrite(self, s: TcpOffloadStateDelegated, ctx: TcpCtx | None) -> None:
        if ctx is not None:
            s.send_backlog_size = sum(e.nbytes for e in ctx.send_q)


class SelfTuningReceiveWindow(OffloadTarget):
    """Grows InitialRcvWnd by itself while data arrives ("auto-tuning") (breaks R-UPD-07: cached variables
    change only by an update)."""

    def _pump(self, ctx: TcpCtx) -> None:
        super()._pump(ctx)
        if ctx.phase is Phase.OFFLOADED and ctx.cached.initial_rcv_wnd < 1 << 22:
            ctx.cached.initial_rcv_wnd *= 2


class SynchronousUpdateCompletion(OffloadTarget):
    """Applies the update and calls NdisMUpdateOffloadComplete inside MiniportUpdateOffload (breaks R-UPD-01)."""

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._process_update(mbl)


class IgnoresKeepAliveRestart(OffloadTarget):
    """Keeps the running keepalive timer when an update carries TCP_FLAG_KEEP_ALIVE_RESTART (breaks R-UPD-09)."""

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        kept = {}
        for node in iter_tree(mbl):
            c = next((s for s in node.state if isinstance(s, TcpOffloadStateCached)), None)
            slot = node.miniport_offload_context
            ctx = slot.value if slot is not None else None
            if (c is not None and isinstance(ctx, TcpCtx) and c.flags & TcpCachedFlags.KEEP_ALIVE_RESTART
                    and ctx.conn.cfg.keepalive):
                kept[ctx] = ctx.conn._ka_deadline
        super()._process_update(mbl)
        for ctx, deadline in kept.items():
            ctx.conn._ka_deadline = deadline
            self._arm_timer(ctx)


class IgnoresMaxRtRestart(OffloadTarget):
    """Keeps counting TotalRT across an update with TCP_FLAG_MAX_RT_RESTART (breaks R-UPD-10)."""

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        kept = {ctx: ctx.conn._rtx_first for ctx in _tcp_ctxs(mbl)}
        super()._process_update(mbl)
        for ctx, first in kept.items():
            ctx.conn._rtx_first = first


class KeepAliveCountNotReset(OffloadTarget):
    """Applies a new KaProbeCount with TCP_FLAG_MAX_RT_RESTART but keeps counting the probes already sent
    (breaks R-UPD-11)."""

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        probes = {ctx: ctx.conn._ka_probes for ctx in _tcp_ctxs(mbl)}
        super()._process_update(mbl)
        for ctx, n in probes.items():
            ctx.conn._ka_probes = n


class KeepAliveNeverDisabled(OffloadTarget):
    """Leaves keepalive running when an update clears TCP_FLAG_KEEP_ALIVE_ENABLED (breaks R-UPD-12)."""

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        was_on = {ctx: ctx.conn.cfg.keepalive for ctx in _tcp_ctxs(mbl)}
        super()._process_update(mbl)
        now = self.scheduler.now
        for ctx, on in was_on.items():
            conn = ctx.conn
            if on and not conn.cfg.keepalive:
                conn.cfg = conn.cfg.replace(keepalive=True)
                conn._ka_deadline = now + conn.cfg.keepalive_idle_ns
                self._arm_timer(ctx)


class SixteenBitTimers(OffloadTarget):
    """Keeps timer deadlines in 16-bit tick counters: a long KaTimeout wraps (breaks R-TMR-02)."""

    def _process_update(self, mbl: MiniportOffloadBlockList) -> None:
        super()._process_update(mbl)
        now = self.scheduler.now
        tick = self.tick_ns
        for ctx in _tcp_ctxs(mbl):
            d = ctx.conn._ka_deadline
            if d is not None:
                ctx.conn._ka_deadline = now + (((d - now) // tick) & 0xFFFF) * tick
                self._arm_timer(ctx)


class IgnoresTicksPerSecond(OffloadTarget):
    """Runs on a fixed 1000 ticks per second whatever OID_TCP_CONNECTION_OFFLOAD_PARAMETERS says, so the
    host's tick values are misread (breaks R-INIT-14)."""

    def oid_request(self, adapter_context: Any, request: Any) -> Any:
        st = super().oid_request(adapter_context, request)
        if self.params is request.buffer:
            self.params = copy.copy(self.params)
            self.params.ticks_per_second = 1000
        return st


class SendsAfterInvalidate(OffloadTarget):
    """Asks for the upload of connections over an invalidated neighbor but keeps sending their data until
    the terminate (breaks R-INV-03)."""

    def _process_invalidate(self, mbl: MiniportOffloadBlockList) -> None:
        super()._process_invalidate(mbl)
        for ctx in list(self.neighbors) + list(self.paths) + list(self.tcps.values()):
            ctx.valid = True


class FreesInvalidatedState(OffloadTarget):
    """Frees invalidated connections at once (state and send data gone) instead of keeping them until the
    host terminates them (breaks R-INV-05)."""

    def _process_invalidate(self, mbl: MiniportOffloadBlockList) -> None:
        super()._process_invalidate(mbl)
        for ctx in list(self.tcps.values()):
            if not (ctx.valid and ctx.path.valid and ctx.path.neighbor.valid):
                self._cancel_timer(ctx)
                ctx.conn.detach()
                self._free(ctx)


class HardwareFailureWithoutAbort(OffloadTarget):
    """On corrupt hardware indicates TcpIndicateRetrieve(HardwareFailure) but never TcpIndicateAbort (breaks
    R-QRY-09 / R-INV-06)."""

    def _hw_failure_events(self) -> None:
        for ctx in list(self.tcps.values()):
            if ctx.phase is not Phase.OFFLOADED or ctx in self._hw_notified:
                continue
            self._hw_notified.add(ctx)
            ctx.aborted = True
            self._retrieve(ctx, TcpUploadReason.HardwareFailure)


class NeverConfirmsReachability(OffloadTarget):
    """Does not move NRT forward when a connection makes progress (breaks R-NBR-03): every send past
    NceStaleTicks asks the host."""

    def _on_frame(self, frame: bytes) -> None:
        saved = {nb: nb.nrt for nb in self.neighbors}
        super()._on_frame(frame)
        for nb, nrt in saved.items():
            nb.nrt = nrt


class SkipsStalenessWithoutProgress(OffloadTarget):
    """Runs the staleness test only while some connection on the neighbor makes progress (breaks R-NBR-09)."""

    def _reachability_check(self, nb: NeighborCtx) -> None:
        conns = [t for p in nb.children if isinstance(p, PathCtx) for t in p.children]
        if conns and all(t.conn.snd_una != t.conn.snd_max for t in conns):
            return
        super()._reachability_check(nb)


class _SaturatingTcpStats(TcpOffloadStats):
    __slots__ = ()

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, min(getattr(self, name) + n, (1 << self._bits[name]) - 1))


class _SaturatingIpStats(IpOffloadStats):
    __slots__ = ()

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, min(getattr(self, name) + n, (1 << self._bits[name]) - 1))


class SaturatingStatsCounters(OffloadTarget):
    """Statistics counters stop at their maximum instead of wrapping to zero (breaks R-STAT-05)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tcp_stats = (_SaturatingTcpStats(), _SaturatingTcpStats())
        self.ip_stats = (_SaturatingIpStats(), _SaturatingIpStats())


class _NoResetEstablished(TcpOffloadStats):
    __slots__ = ()

    def add(self, name: str, n: int = 1) -> None:
        if name != "reset_established":
            super().add(name, n)


class UncountedEstablishedResets(OffloadTarget):
    """Never counts ResetEstablished (breaks R-STAT-09)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tcp_stats = (_NoResetEstablished(), _NoResetEstablished())


class UncountedRetransmissions(OffloadTarget):
    """Counts every segment as an OutSegment and none as retransmitted (breaks R-STAT-08)."""

    def _transmit(self, ctx: TcpCtx, segs: list[Any]) -> None:
        ctx.tx_high = None
        super()._transmit(ctx, segs)
        ctx.tx_high = None


class UndescaledDelegatedRtt(OffloadTarget):
    """Takes the offered SRtt / RttVar as plain ticks instead of x8 / x4 (breaks R-OFF-25 and R-TMR-22: the
    RTO comes out about eight times too long)."""

    def _create_tcp(self, node: MiniportOffloadBlockList, parent: Any) -> tuple[TcpCtx | None, int]:
        ctx, code = super()._create_tcp(node, parent)
        if ctx is not None:
            c = ctx.conn
            c.srtt *= 8
            c.rttvar *= 4
            c.rto = min(c.srtt + max(4 * c.rttvar, c.cfg.clock_granularity_ns), c.cfg.rto_max_ns)
        return ctx, code


class StaleTsRecentAtTerminate(OffloadTarget):
    """Returns the TsRecent it was offloaded with at terminate instead of the current one (breaks R-TS-06)."""

    def _create_tcp(self, node: MiniportOffloadBlockList, parent: Any) -> tuple[TcpCtx | None, int]:
        ctx, code = super()._create_tcp(node, parent)
        if ctx is not None:
            dlg = next(s for s in node.state if isinstance(s, TcpOffloadStateDelegated))
            self.__dict__.setdefault("_first_ts_recent", {})[ctx.key] = dlg.ts_recent
        return ctx, code

    def _terminate_tcp(self, node: MiniportOffloadBlockList, ctx: TcpCtx) -> int:
        st = super()._terminate_tcp(node, ctx)
        first = self.__dict__.get("_first_ts_recent", {}).get(ctx.key)
        for s in node.state:
            if isinstance(s, TcpOffloadStateDelegated) and first is not None:
                s.ts_recent = first
        return st


class TouchesRefusedHandlers(OffloadTarget):
    """Reads the handler table even when NdisMGetOffloadHandlers failed (breaks R-INIT-05)."""

    def initialize_ex(self, miniport_handle: Any, params: dict[str, Any]) -> Any:
        assert self.ndis is not None
        get = self.ndis.m_get_offload_handlers

        def careless(handle: Any, chimney_type: int) -> Any:
            status, table = get(handle, chimney_type)
            _ = table.header  # looked at before the status
            return status, table

        self.ndis.m_get_offload_handlers = careless  # type: ignore[method-assign]
        try:
            return super().initialize_ex(miniport_handle, params)
        finally:
            self.ndis.m_get_offload_handlers = get  # type: ignore[method-assign]


class UsesRefusedHandlersLater(OffloadTarget):
    """When NdisMGetOffloadHandlers fails it keeps the returned table without looking at it, runs as a plain NIC
    and reaches for the table's event handler on the next media disconnect (breaks R-INIT-05 later, not
    during MiniportInitializeEx)."""

    def initialize_ex(self, miniport_handle: Any, params: dict[str, Any]) -> Any:
        assert self.ndis is not None
        get = self.ndis.m_get_offload_handlers
        kept: list[Any] = []

        def keep(handle: Any, chimney_type: int) -> Any:
            status, table = get(handle, chimney_type)
            if status != NdisStatus.SUCCESS:
                kept.append(table)
            return status, table

        self.ndis.m_get_offload_handlers = keep  # type: ignore[method-assign]
        try:
            st = super().initialize_ex(miniport_handle, params)
        finally:
            self.ndis.m_get_offload_handlers = get  # type: ignore[method-assign]
        if st == NdisStatus.SUCCESS or not kept:
            return st
        self._kept = kept[0]  # "for when chimney comes back": the bug
        self.rx_pool = NblPool(f"{self.name}/receive", self.name, with_net_buffer=True, tracker=self.ndis.tracker)
        self.adapter = miniport_handle
        self.nic.port.set_receiver(self._on_frame)
        self.nic.port.set_link_listener(self._on_link)
        return NdisStatus.SUCCESS

    def _on_link(self, up: bool) -> None:
        kept = getattr(self, "_kept", None)
        if kept is not None and not up:
            _ = kept.ndis_tcp_offload_event_handler
        super()._on_link(up)


__all__ = [
    "BacklogFollowsPostedBytes",
    "BacklogSizeLeftEmpty",
    "FreesInvalidatedState",
    "HardwareFailureWithoutAbort",
    "IgnoresKeepAliveRestart",
    "IgnoresMaxRtRestart",
    "IgnoresTicksPerSecond",
    "KeepAliveCountNotReset",
    "KeepAliveNeverDisabled",
    "NeverConfirmsReachability",
    "SaturatingStatsCounters",
    "SelfTuningReceiveWindow",
    "SendsAfterInvalidate",
    "SixteenBitTimers",
    "SkipsStalenessWithoutProgress",
    "StaleTsRecentAtTerminate",
    "SynchronousQueryCompletion",
    "SynchronousUpdateCompletion",
    "TouchesRefusedHandlers",
    "UncountedEstablishedResets",
    "UncountedRetransmissions",
    "UndescaledDelegatedRtt",
    "UnscaledQueriedRtt",
    "UsesRefusedHandlersLater",
]
