"""Deliberately broken offload targets for `chimney verify`: each subclasses the built-in `OffloadTarget` and
breaks exactly one contract behaviour, so the battery's verdict (and the rule id it names) can be checked.

    chimney verify examples.broken_targets:OutOfOrderSendCompletion      # R-SEND-03
    chimney verify examples/broken_targets.py:SynchronousInitiateCompletion   # R-OFF-01
"""

from __future__ import annotations

import itertools
from typing import Any

from chimney.ndis.blocklist import MiniportOffloadBlockList
from chimney.ndis.buffers import NetBufferList
from chimney.ndis.offload_state import TcpConnectionState, TcpOffloadEventType, TcpOffloadStateDelegated
from chimney.ndis.status import NdisStatus
from chimney.sim.scheduler import NS_PER_MS
from chimney.target import OffloadTarget
from chimney.target.context import Phase, TcpCtx

_FIN_RECEIVED = frozenset(
    {TcpConnectionState.CloseWait, TcpConnectionState.Closing, TcpConnectionState.LastAck, TcpConnectionState.TimeWait}
)


class OutOfOrderSendCompletion(OffloadTarget):
    """Completes acknowledged send NBLs newest first, one NdisTcpOffloadSendComplete each (breaks R-SEND-03)."""

    def _complete_acked(self, ctx: TcpCtx) -> None:
        una = ctx.conn.snd_una
        q = ctx.send_q
        done: list[NetBufferList] = []
        while q and q[0].end <= una:
            e = q.popleft()
            self._finish_send(e.nbl, NdisStatus.SUCCESS, e.nbytes)
            done.append(e.nbl)
        for nbl in reversed(done):
            nbl.next = None
            self.h_send_complete(self.adapter, nbl)


class SynchronousInitiateCompletion(OffloadTarget):
    """Walks the tree and calls NdisMInitiateOffloadComplete inside MiniportInitiateOffload (breaks R-OFF-01)."""

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._initiating += 1
        self._process_initiate(mbl)


class IndicatesBeforeInitiateCompletes(OffloadTarget):
    """Treats new connections as live at once and indicates what they receive, but completes the initiate
    2 ms later (breaks R-OFF-09: no receive indication before NdisMInitiateOffloadComplete returned)."""

    def _process_initiate(self, mbl: MiniportOffloadBlockList) -> None:
        new: list[TcpCtx] = []
        self._walk(mbl, None, mbl, new)
        for ctx in new:
            if ctx.phase is Phase.OFFLOADING:
                ctx.phase = Phase.OFFLOADED
        self._initiating -= 1
        self.scheduler.call_later(2 * NS_PER_MS, self._late_complete, mbl, label="late initiate completion")

    def _late_complete(self, mbl: MiniportOffloadBlockList) -> None:
        assert self.ndis is not None
        self.ndis.m_initiate_offload_complete(self.adapter, mbl)


class LeaksReturnedIndications(OffloadTarget):
    """Drops indication NBLs the host returns instead of recycling or freeing them: the chimney pool never
    empties and the NBLs are still live after halt (leak report; R-IND-13 itself is kept: SUCCESS)."""

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        n: NetBufferList | None = nbl
        while n is not None:
            nxt = n.next
            ctx = n.miniport_reserved[0]
            if isinstance(ctx, TcpCtx):
                ctx.ind_out -= 1
            n = nxt
        return NdisStatus.SUCCESS


class ReordersSendsAtTerminate(OffloadTarget):
    """Returns the outstanding send NBLs of a terminated connection in reverse order (breaks R-TRM-12)."""

    def _terminate_tcp(self, node: MiniportOffloadBlockList, ctx: TcpCtx) -> int:
        st = super()._terminate_tcp(node, ctx)
        nbls: list[NetBufferList] = []
        n = node.net_buffer_list_chain
        while n is not None:
            nbls.append(n)
            n = n.next
        if len(nbls) >= 2:
            nbls.reverse()
            for a, b in itertools.pairwise(nbls):
                a.next = b
            nbls[-1].next = None
            node.net_buffer_list_chain = nbls[0]
            for s in node.state:
                if isinstance(s, TcpOffloadStateDelegated):
                    s.send_data_head, s.send_data_tail = nbls[0], nbls[-1]
        return st


class PartialSendReportedSuccess(OffloadTarget):
    """Completes every send NBL with SUCCESS as soon as part of it is acknowledged, reporting only the acked
    bytes in TcpOffloadBytesTransferred (breaks R-SEND-05: SUCCESS only when all bytes are acknowledged)."""

    def _pump(self, ctx: TcpCtx) -> None:
        super()._pump(ctx)
        q = ctx.send_q
        if ctx.phase is not Phase.OFFLOADED or not q:
            return
        una = ctx.conn.snd_una
        e = q[0]
        start = e.end - e.nbytes
        if start < una < e.end:
            q.popleft()
            self._finish_send(e.nbl, NdisStatus.SUCCESS, una - start)
            self.h_send_complete(self.adapter, e.nbl)


class DisconnectBeforeDataConsumed(OffloadTarget):
    """Indicates TcpIndicateDisconnect as soon as the peer's FIN arrives, even with received data the host
    refused still buffered (breaks R-EVT-01)."""

    def _pump(self, ctx: TcpCtx) -> None:
        super()._pump(ctx)
        conn = ctx.conn
        if (ctx.phase is Phase.OFFLOADED and not ctx.disconnect_indicated and not ctx.aborted
                and conn.state in _FIN_RECEIVED and conn.readable):
            ctx.disconnect_indicated = True
            self.h_event(ctx.handle, TcpOffloadEventType.TcpIndicateDisconnect, 0)

