"""Test doubles for the ChimneyChecks tests: a scriptable chimney target (it misbehaves only when a test
makes it), a host protocol that records what NDIS delivers, and a Rig that offloads neighbor/path/TCP."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from chimney.ndis.blocklist import (
    MiniportOffloadBlockList,
    NdisOffloadHandle,
    NdisOffloadHandleRef,
    NodeRole,
    ProtocolOffloadBlockList,
    iter_tree,
    node_role,
)
from chimney.ndis.buffers import NblInfo, NetBufferList, nbl_from_bytes
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import Adapter, Binding, DriverHandle, Ndis
from chimney.ndis.driver import MiniportDriver, ProtocolDriver
from chimney.ndis.offload_state import (
    NDIS_TCP_CHIMNEY_OFFLOAD,
    NeighborOffloadStateCached,
    NeighborOffloadStateConst,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    PathOffloadStateCached,
    PathOffloadStateConst,
    PathOffloadStateDelegated,
    TcpConnectionState,
    TcpOffloadStateCached,
    TcpOffloadStateConst,
    TcpOffloadStateDelegated,
)
from chimney.ndis.oid import NdisTcpConnectionOffload
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import SimScheduler

T = OffloadStateType
BYTES = NblInfo.TcpOffloadBytesTransferred


class StrictChimneyChecks(ChimneyChecks):
    """Advisory (SHOULD) rules enforced too, so tests can provoke them."""

    ADVISORY = frozenset()


def chain(nbls: list[NetBufferList]) -> NetBufferList | None:
    for a, b in itertools.pairwise(nbls):
        a.next = b
    if nbls:
        nbls[-1].next = None
    return nbls[0] if nbls else None


def nbls_of(head: NetBufferList | None) -> list[NetBufferList]:
    out = []
    while head is not None:
        out.append(head)
        head = head.next
    return out


class Target(MiniportDriver):
    """A chimney target whose every completion/indication is made explicitly by the test."""

    def __init__(self, name: str = "nic") -> None:
        super().__init__(name)
        self.adapter: Adapter | None = None
        self.state_calls: list[tuple[str, MiniportOffloadBlockList]] = []
        self.io_calls: list[tuple[str, Any, NetBufferList]] = []
        self.on_state: Callable[[str, MiniportOffloadBlockList], None] | None = None  # runs inside the handler
        self.on_send: Callable[[NetBufferList], None] | None = None
        self.on_receive: Callable[[NetBufferList], None] | None = None
        self.pool = object()  # the chimney indication pool
        self.normal_pool = object()
        self.returned_rx: list[NetBufferList] = []

    @property
    def n(self) -> Ndis:
        assert self.ndis is not None
        return self.ndis

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_provider_handlers(driver_handle)

    def initialize_ex(self, miniport_handle: Adapter, params: dict[str, Any]) -> NdisStatus:
        self.adapter = miniport_handle
        caps = NdisTcpConnectionOffload(tcp_connection_offload_capacity=64)
        self.n.m_set_miniport_attributes(miniport_handle, tcp_connection_offload=caps)
        status, _ = self.n.m_get_offload_handlers(miniport_handle, NDIS_TCP_CHIMNEY_OFFLOAD)
        assert status == NdisStatus.SUCCESS
        return NdisStatus.SUCCESS

    def _state(self, op: str, mbl: MiniportOffloadBlockList) -> None:
        self.state_calls.append((op, mbl))
        if self.on_state is not None:
            self.on_state(op, mbl)

    def initiate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state("initiate", mbl)

    def terminate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state("terminate", mbl)

    def update_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state("update", mbl)

    def invalidate_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state("invalidate", mbl)

    def query_offload(self, adapter_context: Any, mbl: MiniportOffloadBlockList) -> None:
        self._state("query", mbl)

    def tcp_offload_send(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("send", offload_context, nbl))
        if self.on_send is not None:
            self.on_send(nbl)
        return NdisStatus.PENDING

    def tcp_offload_receive(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("receive", offload_context, nbl))
        if self.on_receive is not None:
            self.on_receive(nbl)
        return NdisStatus.PENDING

    def tcp_offload_disconnect(
        self, adapter_context: Any, offload_context: Any, nbl: NetBufferList, flags: int
    ) -> NdisStatus:
        self.io_calls.append(("disconnect", offload_context, nbl))
        return NdisStatus.PENDING

    def tcp_offload_forward(self, adapter_context: Any, offload_context: Any, nbl: NetBufferList) -> NdisStatus:
        self.io_calls.append(("forward", offload_context, nbl))
        return NdisStatus.PENDING

    def tcp_offload_receive_return(self, adapter_context: Any, nbl: NetBufferList) -> NdisStatus:
        return NdisStatus.SUCCESS

    def return_net_buffer_lists(self, adapter_context: Any, nbl: NetBufferList, flags: int) -> None:
        self.returned_rx.extend(nbls_of(nbl))


    # -- target-side actions the tests script ------------------------------------------------------

    def pop(self, op: str) -> MiniportOffloadBlockList:
        for i, (o, mbl) in enumerate(self.state_calls):
            if o == op:
                del self.state_calls[i]
                return mbl
        raise AssertionError(f"no pending {op}")

    @staticmethod
    def offload_all(mbl: MiniportOffloadBlockList) -> None:
        for node in iter_tree(mbl):
            if node_role(node) is NodeRole.NEW_OFFLOAD:
                node.miniport_offload_context.value = {"handle": node.ndis_offload_handle}
            node.status = NdisStatus.SUCCESS

    def ack(self, nbl: NetBufferList, nbytes: int | None = None, status: int = NdisStatus.SUCCESS) -> NetBufferList:
        """Mark `nbytes` (default: all) acknowledged the way R-SEND-04 asks: advance + bytes + Status."""
        nb = nbl.first_net_buffer
        assert nb is not None
        k = nb.data_length if nbytes is None else nbytes
        nb.advance(k)
        nbl.info[BYTES] = k
        nbl.status = status
        return nbl

    def send_complete(self, nbls: list[NetBufferList]) -> None:
        assert self.adapter is not None
        self.n.tcp_offload_send_complete(self.adapter, chain(nbls))  # type: ignore[arg-type]

    def io_complete(self, kind: str, nbl: NetBufferList, status: int = NdisStatus.SUCCESS, nbytes: int = 0) -> None:
        assert self.adapter is not None
        nbl.status = status
        nbl.info[BYTES] = nbytes
        nbl.next = None
        getattr(self.n, f"tcp_offload_{kind}_complete")(self.adapter, nbl)

    def indicate(self, ref: NdisOffloadHandleRef, data: bytes = b"x" * 10, pool: Any = None) -> tuple[int, int]:
        nbl = nbl_from_bytes(data, self.name)
        nbl.pool = self.pool if pool is None else pool
        return self.n.tcp_offload_receive_handler(ref, nbl, NdisStatus.SUCCESS)

    def event(self, ref: NdisOffloadHandleRef, event_type: int, info: int = 0) -> None:
        self.n.tcp_offload_event_handler(ref, event_type, info)


class Host(ProtocolDriver):
    """Records completions and indications; refuses indications when `indicate_result` is set."""

    def __init__(self, name: str = "tcpip") -> None:
        super().__init__(name)
        self.binding: Binding | None = None
        self.state_completions: list[tuple[str, ProtocolOffloadBlockList]] = []
        self.io_completions: list[tuple[str, NetBufferList]] = []
        self.events: list[tuple[int, int]] = []
        self.indications: list[NetBufferList] = []
        self.indicate_result: tuple[int, int] | None = None
        self.on_indicate: Callable[[NetBufferList], None] | None = None
        self.on_state_complete: Callable[[str, ProtocolOffloadBlockList], None] | None = None

    def set_options(self, driver_handle: DriverHandle) -> NdisStatus:
        return self.register_client_handlers(driver_handle)

    def bind_adapter_ex(self, binding: Binding, params: dict[str, Any]) -> NdisStatus:
        self.binding = binding
        return NdisStatus.SUCCESS

    def _done(self, op: str, pbl: ProtocolOffloadBlockList) -> None:
        self.state_completions.append((op, pbl))
        if self.on_state_complete is not None:
            self.on_state_complete(op, pbl)

    def initiate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._done("initiate", pbl)

    def terminate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._done("terminate", pbl)

    def update_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._done("update", pbl)

    def invalidate_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._done("invalidate", pbl)

    def query_offload_complete(self, binding_context: Any, pbl: ProtocolOffloadBlockList) -> None:
        self._done("query", pbl)

    def tcp_offload_send_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("send", n) for n in nbls_of(nbl))

    def tcp_offload_receive_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("receive", n) for n in nbls_of(nbl))

    def tcp_offload_disconnect_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("disconnect", n) for n in nbls_of(nbl))

    def tcp_offload_forward_complete(self, binding_context: Any, nbl: NetBufferList) -> None:
        self.io_completions.extend(("forward", n) for n in nbls_of(nbl))

    def tcp_offload_event(self, offload_context: Any, event_type: int, event_specific_information: int) -> None:
        self.events.append((event_type, event_specific_information))

    def tcp_offload_receive_indicate(self, offload_context: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        self.indications.append(nbl)
        if self.on_indicate is not None:
            self.on_indicate(nbl)
        if self.indicate_result is None:
            return NdisStatus.SUCCESS, nbl.data_length()
        return self.indicate_result


class Conn:
    """Host handles and state of one neighbor -> path -> TCP offload."""

    def __init__(
        self,
        *,
        sends: int = 2,
        size: int = 100,
        state: TcpConnectionState = TcpConnectionState.Established,
        ts_time: int = 5000,
        sent: int = 0,
    ) -> None:
        self.nh = NdisOffloadHandle("neighbor")
        self.ph = NdisOffloadHandle("path")
        self.th = NdisOffloadHandle("tcp")
        self.send_data = [nbl_from_bytes(bytes([i]) * size, "tcpip") for i in range(sends)]
        self.cached = TcpOffloadStateCached()
        self.dlg = TcpOffloadStateDelegated(state=state, snd_una=1000, snd_nxt=1000 + sent, snd_max=1000 + sent)
        self.dlg.ts_time = ts_time
        self.tcp_node: ProtocolOffloadBlockList | None = None

    def tree(self, *, tcp_only: bool = False) -> ProtocolOffloadBlockList:
        tcp = ProtocolOffloadBlockList(
            T.TcpOffloadState, self.th, [TcpOffloadStateConst(), self.cached, self.dlg]
        )
        head = chain(self.send_data)
        tcp.net_buffer_list_chain = head
        self.dlg.send_data_head = head
        self.dlg.send_data_tail = self.send_data[-1] if self.send_data else None
        self.tcp_node = tcp
        if tcp_only:
            return tcp
        root = ProtocolOffloadBlockList(
            T.NeighborOffloadState,
            self.nh,
            [NeighborOffloadStateConst(), NeighborOffloadStateCached(), NeighborOffloadStateDelegated()],
        )
        path = root.add_dependent(
            ProtocolOffloadBlockList(
                T.Ip4OffloadState, self.ph, [PathOffloadStateConst(), PathOffloadStateCached(), PathOffloadStateDelegated()]
            )
        )
        path.add_dependent(tcp)
        return root

    def terminate_tree(self) -> ProtocolOffloadBlockList:
        dlg = TcpOffloadStateDelegated()
        self.term_dlg = dlg
        return ProtocolOffloadBlockList(T.TcpOffloadState, self.th, [TcpOffloadStateConst(), self.cached, dlg])

    @property
    def ref(self) -> NdisOffloadHandleRef:
        ref = self.th.ndis_reserved[0]
        assert isinstance(ref, NdisOffloadHandleRef)
        return ref


class Rig:
    """host -> NDIS (with ChimneyChecks, STRICT) -> target."""

    def __init__(self, checks: type[ChimneyChecks] = StrictChimneyChecks, mode: Mode = Mode.STRICT) -> None:
        self.sched = SimScheduler(1)
        self.verifier = Verifier(mode)
        self.ndis = Ndis(self.sched, self.verifier, checks=checks)
        self.target = Target()
        self.adapter = self.ndis.add_adapter(self.target, "nic0")
        self.host = Host()
        self.binding = self.ndis.bind(self.host, self.adapter)
        chk = self.ndis._chk
        assert isinstance(chk, ChimneyChecks)
        self.checks = chk

    def start_offload(self, conn: Conn, **kw: Any) -> MiniportOffloadBlockList:
        self.ndis.initiate_offload(self.binding, conn.tree(**kw))
        return self.target.pop("initiate")

    def offload(self, conn: Conn | None = None, **kw: Any) -> Conn:
        conn = conn if conn is not None else Conn()
        mbl = self.start_offload(conn, **kw)
        self.target.offload_all(mbl)
        self.ndis.m_initiate_offload_complete(self.adapter, mbl)
        return conn

    def send(self, conn: Conn, n: int = 1, size: int = 50) -> list[NetBufferList]:
        nbls = [nbl_from_bytes(b"s" * size, "tcpip") for _ in range(n)]
        self.ndis.offload_tcp_send(conn.th, chain(nbls))  # type: ignore[arg-type]
        return nbls

    def post(self, conn: Conn, kind: str = "receive", size: int = 100, *extra: int) -> NetBufferList:
        nbl = nbl_from_bytes(bytes(size), "tcpip")
        getattr(self.ndis, f"offload_tcp_{kind}")(conn.th, nbl, *extra)
        return nbl

    def start_terminate(self, conn: Conn) -> MiniportOffloadBlockList:
        self.ndis.terminate_offload(self.binding, conn.terminate_tree())
        return self.target.pop("terminate")

    def finish_terminate(
        self,
        conn: Conn,
        mbl: MiniportOffloadBlockList,
        returned: list[NetBufferList] | None = None,
        **dlg_fields: Any,
    ) -> None:
        """Complete a terminate the correct way unless the test overrides the returned state."""
        dlg = _dlg_of(mbl)
        nbls = list(returned or [])
        head = chain(nbls)
        mbl.net_buffer_list_chain = head
        dlg.send_data_head = head
        dlg.send_data_tail = nbls[-1] if nbls else None
        total = sum(n.data_length() for n in nbls)
        dlg.snd_una = 2000
        dlg.snd_nxt = dlg.snd_max = 2000 + total
        dlg.ts_time = (conn.dlg.ts_time + 10) & 0xFFFFFFFF
        dlg.retransmit.timeout_delta = 0xFFFFFFFF if dlg.snd_una == dlg.snd_max else 30
        for k, val in dlg_fields.items():
            setattr(dlg, k, val)
        mbl.status = NdisStatus.SUCCESS
        self.ndis.m_terminate_offload_complete(self.adapter, mbl)

    def terminate(self, conn: Conn, returned: list[NetBufferList] | None = None, **dlg_fields: Any) -> None:
        self.finish_terminate(conn, self.start_terminate(conn), returned, **dlg_fields)

    def rule_ids(self) -> list[str]:
        return self.verifier.rule_ids()


def _dlg_of(mbl: MiniportOffloadBlockList) -> TcpOffloadStateDelegated:
    for s in mbl.state:
        if isinstance(s, TcpOffloadStateDelegated):
            return s
    raise AssertionError("no delegated state")
