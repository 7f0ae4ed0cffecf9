"""Provoking tests for the IM rules: deliberately broken pass-through IMs, each caught by ImChecks with
the rule id it breaks (R-IM-02..12), plus the several-upper-interfaces IM of R-IM-11 working correctly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from filter_doubles import Conn, HopIm, Host, Stack, chain, make_nbls, nbls_of, offloaded, target_obj

from chimney.filters.checks import im_checks
from chimney.filters.passthrough import CallEntry, PassThroughChimneyIm
from chimney.ndis.blocklist import ProtocolOffloadBlockList, iter_tree
from chimney.ndis.buffers import NetBufferList, nbl_from_bytes
from chimney.ndis.core import Op
from chimney.ndis.offload_state import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    OffloadStateType,
    TcpOffloadEventType,
)
from chimney.ndis.oid import OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, OID_TCP_TASK_OFFLOAD, NdisOidRequest
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation

S = NdisStatus
T = OffloadStateType


def broken_top(cls: type[PassThroughChimneyIm], depth: int = 2) -> Callable[[int, list[Any]], Any]:
    """IM factory: pass-through IMs with the broken one at the top of the stack."""
    return lambda i, log: cls(f"im{i}") if i == depth - 1 else HopIm(f"im{i}", log)


def violation(fn: Callable[[], Any]) -> str:
    with pytest.raises(ContractViolation) as e:
        fn()
    return e.value.rule_id


def copy_of(nbl: NetBufferList, owner: str) -> NetBufferList:
    nb = nbl.first_net_buffer
    assert nb is not None
    return nbl_from_bytes(bytearray(nb.copy_data()), owner)


# ----------------------------------------------------------------------------------- state operations


class ForgetsImReserved(PassThroughChimneyIm):
    def _state_up(self, op: Op, pbl: ProtocolOffloadBlockList) -> None:
        ce = pbl.im_reserved[0]
        ce.nodes = [(m, p, e, "junk", b, sh) for m, p, e, _a, b, sh in ce.nodes]
        super()._state_up(op, pbl)


class ForgetsSourceHandle(PassThroughChimneyIm):
    def _state_up(self, op: Op, pbl: ProtocolOffloadBlockList) -> None:
        ce = pbl.im_reserved[0]
        ce.nodes = [(m, p, e, a, b, p.source_handle) for m, p, e, a, b, _sh in ce.nodes]
        super()._state_up(op, pbl)


@pytest.mark.parametrize("cls", [ForgetsImReserved, ForgetsSourceHandle])
def test_r_im_06_completion_without_restoring_imreserved_or_sourcehandle(cls: type[PassThroughChimneyIm]) -> None:
    s = Stack(2, im_factory=broken_top(cls))
    s.ndis.initiate_offload(s.binding, Conn().tree())
    assert violation(s.run) == "R-IM-06"


class NoCallEntry(PassThroughChimneyIm):
    def _issue_down(self, ce: CallEntry) -> None:
        for _m, p, _e, a, b, _sh in ce.nodes:
            p.im_reserved[0], p.im_reserved[1] = a, b  # forgets to leave its call entry in ImReserved
        super()._issue_down(ce)


class WrongOperation(PassThroughChimneyIm):
    def _issue_down(self, ce: CallEntry) -> None:
        assert self.ndis is not None
        self.ndis.update_offload(self._lower(ce.vm), ce.pbl)


class FreshTree(PassThroughChimneyIm):
    def _issue_down(self, ce: CallEntry) -> None:
        for p in iter_tree(ce.pbl):
            p.im_reserved = [None, None]  # builds a new block list instead of overlaying the one it got
        super()._issue_down(ce)


class PassesUpperHandle(PassThroughChimneyIm):
    def _issue_down(self, ce: CallEntry) -> None:
        for m, p, *_ in ce.nodes:
            if p.offload_handle is not None:
                p.offload_handle = m.ndis_offload_handle.upper  # not its own NDIS_OFFLOAD_HANDLE
        super()._issue_down(ce)


@pytest.mark.parametrize(
    ("cls", "rule"),
    [(NoCallEntry, "R-IM-05"), (WrongOperation, "R-IM-05"), (FreshTree, "R-IM-05"), (PassesUpperHandle, "R-IM-04")],
)
def test_r_im_04_05_state_operation_propagated_wrongly(cls: type[PassThroughChimneyIm], rule: str) -> None:
    s = Stack(2, im_factory=broken_top(cls))
    assert violation(lambda: s.ndis.initiate_offload(s.binding, Conn().tree())) == rule


class LosesEntry(PassThroughChimneyIm):
    def _issue_down(self, ce: CallEntry) -> None:
        if ce.op is Op.QUERY:
            for _m, p, *_ in ce.nodes:
                p.offload_handle = type(p.offload_handle)("stale")  # a handle that is not the entry's
        super()._issue_down(ce)


def test_r_im_04_query_with_a_handle_that_is_not_the_offload_entrys() -> None:
    s, c = offloaded(2, im_factory=broken_top(LosesEntry))
    pbl = ProtocolOffloadBlockList(T.TcpOffloadDelegatedState, c.th, ["delegated"])
    assert violation(lambda: s.ndis.query_offload_state(s.binding, pbl)) == "R-IM-04"


# ----------------------------------------------------------------------------------- I/O


class CopiesSends(PassThroughChimneyIm):
    def tcp_offload_send(self, ctx: Any, entry: Any, nbl: NetBufferList) -> Any:
        assert self.ndis is not None
        return self.ndis.offload_tcp_send(entry.own, copy_of(nbl, self.name))


class ChangesFlags(PassThroughChimneyIm):
    def tcp_offload_disconnect(self, ctx: Any, entry: Any, nbl: NetBufferList, flags: int) -> Any:
        return super().tcp_offload_disconnect(ctx, entry, nbl, TCP_DISCONNECT_ABORTIVE_CLOSE)


class SwallowsReceives(PassThroughChimneyIm):
    def tcp_offload_receive(self, ctx: Any, entry: Any, nbl: NetBufferList) -> Any:
        return S.PENDING  # neither propagated nor completed


class SendsAsForward(PassThroughChimneyIm):
    def tcp_offload_send(self, ctx: Any, entry: Any, nbl: NetBufferList) -> Any:
        assert self.ndis is not None
        return self.ndis.offload_tcp_forward(entry.own, nbl)


@pytest.mark.parametrize(
    ("cls", "call"),
    [
        (CopiesSends, lambda s, c, n: s.ndis.offload_tcp_send(c.th, n)),
        (ChangesFlags, lambda s, c, n: s.ndis.offload_tcp_disconnect(c.th, n, TCP_DISCONNECT_GRACEFUL_CLOSE)),
        (SwallowsReceives, lambda s, c, n: s.ndis.offload_tcp_receive(c.th, n)),
        (SendsAsForward, lambda s, c, n: s.ndis.offload_tcp_send(c.th, n)),
    ],
    ids=["copied-nbl", "changed-flags", "not-propagated", "other-function"],
)
def test_r_im_07_io_must_be_reissued_identically(cls: type[PassThroughChimneyIm], call: Any) -> None:
    s, c = offloaded(2, im_factory=broken_top(cls))
    nbl = make_nbls("tcpip", 1)[0]
    assert violation(lambda: call(s, c, nbl)) == "R-IM-07"


class CopiesCompletions(PassThroughChimneyIm):
    def tcp_offload_send_complete(self, bc: Any, nbl: NetBufferList) -> None:
        copies = [copy_of(n, self.name) for n in nbls_of(nbl)]
        for cp in copies:
            cp.status = S.SUCCESS
        super().tcp_offload_send_complete(bc, chain(*copies))


class CompletesWithWrongFunction(PassThroughChimneyIm):
    def tcp_offload_forward_complete(self, bc: Any, nbl: NetBufferList) -> None:
        super().tcp_offload_send_complete(bc, nbl)


class DropsCompletions(PassThroughChimneyIm):
    def tcp_offload_send_complete(self, bc: Any, nbl: NetBufferList) -> None:
        return None


@pytest.mark.parametrize(
    ("cls", "call"),
    [
        (CopiesCompletions, lambda s, c, n: s.ndis.offload_tcp_send(c.th, n)),
        (CompletesWithWrongFunction, lambda s, c, n: s.ndis.offload_tcp_forward(c.th, n)),
    ],
    ids=["copied-nbl", "wrong-function"],
)
def test_r_im_08_completion_must_be_reissued_identically(cls: type[PassThroughChimneyIm], call: Any) -> None:
    s, c = offloaded(2, im_factory=broken_top(cls))
    call(s, c, make_nbls("tcpip", 1)[0])
    assert violation(s.run) == "R-IM-08"


def test_r_im_08_completion_never_passed_up_is_found_by_the_audit() -> None:
    s, c = offloaded(2, im_factory=broken_top(DropsCompletions))
    s.ndis.offload_tcp_send(c.th, make_nbls("tcpip", 1)[0])
    s.run()
    chk = im_checks(s.ndis)
    assert chk is not None
    assert violation(chk.audit) == "R-IM-08"


class WrongUploadStatuses(PassThroughChimneyIm):
    def _complete_send_itself(self, vm: Any, nbl: NetBufferList) -> None:
        for n in nbls_of(nbl):
            n.status = S.REQUEST_UPLOAD  # every NBL, not only the first
        assert self.ndis is not None
        self.ndis.tcp_offload_send_complete(vm, nbl)


def test_r_im_12_self_completed_send_with_wrong_statuses() -> None:
    s, c = offloaded(2, im_factory=broken_top(WrongUploadStatuses))
    s.ims[-1].fail_next_allocations()
    assert violation(lambda: s.ndis.offload_tcp_send(c.th, chain(*make_nbls("tcpip", 2)))) == "R-IM-12"


# ----------------------------------------------------------------------------------- returns and indications


class DefersReturns(PassThroughChimneyIm):
    def tcp_offload_receive_return(self, ctx: Any, nbl: NetBufferList) -> Any:
        assert self.ndis is not None
        self.ndis.scheduler.call_soon(super().tcp_offload_receive_return, ctx, nbl)
        return S.SUCCESS


class ReturnsCopies(PassThroughChimneyIm):
    def tcp_offload_receive_return(self, ctx: Any, nbl: NetBufferList) -> Any:
        return super().tcp_offload_receive_return(ctx, copy_of(nbl, self.name))


@pytest.mark.parametrize("cls", [DefersReturns, ReturnsCopies], ids=["deferred", "copied"])
def test_r_im_09_receive_return_synchronous_and_identical(cls: type[PassThroughChimneyIm]) -> None:
    s, c = offloaded(2, im_factory=broken_top(cls))
    (ret, _), nbl = s.target.indicate(target_obj(c.th), b"data")
    assert ret == S.SUCCESS
    assert violation(lambda: s.ndis.offload_tcp_receive_return(s.binding, nbl)) == "R-IM-09"


class ClaimsEverythingConsumed(PassThroughChimneyIm):
    def tcp_offload_receive_indicate(self, oc: Any, nbl: NetBufferList, status: int) -> tuple[int, int]:
        super().tcp_offload_receive_indicate(oc, nbl, status)
        return S.SUCCESS, nbl.data_length()


class SwallowsEvents(PassThroughChimneyIm):
    def tcp_offload_event(self, oc: Any, event_type: int, info: int) -> None:
        return None


class IndicatesOnWrongConnection(PassThroughChimneyIm):
    def tcp_offload_event(self, oc: Any, event_type: int, info: int) -> None:
        other = next(e for e in self.entries.values() if e is not oc.owner)
        assert self.ndis is not None
        self.ndis.tcp_offload_event_handler(other.upper_ref, event_type, info)


def test_r_im_10_upper_result_must_be_returned_downward() -> None:
    s, c = offloaded(2, im_factory=broken_top(ClaimsEverythingConsumed))
    s.host.indicate_result = (S.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    assert violation(lambda: s.target.indicate(target_obj(c.th), b"x" * 10)) == "R-IM-10"


@pytest.mark.parametrize("cls", [SwallowsEvents, IndicatesOnWrongConnection], ids=["swallowed", "wrong-handle"])
def test_r_im_10_tcp_event_reissued_with_the_upper_handle(cls: type[PassThroughChimneyIm]) -> None:
    s, c = offloaded(2, im_factory=broken_top(cls))
    obj = target_obj(c.th)
    assert violation(lambda: s.target.event(obj, TcpOffloadEventType.TcpIndicateAbort)) == "R-IM-10"


# ----------------------------------------------------------------------------------- OIDs


class AnswersTaskOffloadItself(PassThroughChimneyIm):
    def oid_request(self, ctx: Any, request: NdisOidRequest) -> Any:
        if request.oid == OID_TCP_TASK_OFFLOAD:
            return S.NOT_SUPPORTED
        return super().oid_request(ctx, request)


class KeepsSets(PassThroughChimneyIm):
    def oid_request(self, ctx: Any, request: NdisOidRequest) -> Any:
        return S.SUCCESS


def test_r_im_02_chimney_im_answering_the_task_offload_query_itself() -> None:
    s = Stack(2, im_factory=broken_top(AnswersTaskOffloadItself))
    req = NdisOidRequest.query(OID_TCP_TASK_OFFLOAD)
    assert violation(lambda: s.ndis.oid_request(s.binding, req)) == "R-IM-02"


def test_r_im_03_sets_swallowed() -> None:
    s = Stack(2, im_factory=broken_top(KeepsSets))
    req = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, None)
    assert violation(lambda: s.ndis.oid_request(s.binding, req)) == "R-IM-03"


# ----------------------------------------------------------------------------------- R-IM-11


class MuxStack:
    """host bound to two virtual miniports of one MUX IM whose chimney traffic shares one lower binding."""

    def __init__(self, im_cls: type[PassThroughChimneyIm] = PassThroughChimneyIm) -> None:
        s = Stack(0)
        self.s = s
        self.im = im_cls("mux", shared_lower=True)
        self.vm1 = s.ndis.add_im(self.im, s.nic, "mux-vm1")
        self.vm2 = s.ndis.add_im(self.im, s.nic, "mux-vm2")
        self.host = Host("tcpip2")
        self.b1 = s.ndis.bind(self.host, self.vm1)
        self.b2 = s.ndis.bind(self.host, self.vm2)
        self.c1, self.c2 = Conn("one"), Conn("two")
        for b, c in ((self.b1, self.c1), (self.b2, self.c2)):
            s.ndis.initiate_offload(b, c.tree())
        s.run()
        assert [pbl.status for _, pbl in self.host.state_completions] == [S.SUCCESS, S.SUCCESS]


class RoutesByBinding(PassThroughChimneyIm):
    def tcp_offload_disconnect_complete(self, bc: Any, nbl: NetBufferList) -> None:
        nbl.context.pop()
        assert self.ndis is not None
        self.ndis.tcp_offload_disconnect_complete(bc.upper_adapter, nbl)  # ignores the NBL context


def test_r_im_11_disconnect_completions_routed_by_nbl_context() -> None:
    m = MuxStack()
    s = m.s
    # Both connections went down the one lower binding (the target saw a single IM binding's handles).
    assert target_obj(m.c1.th).ndis_handle.binding is target_obj(m.c2.th).ndis_handle.binding
    s.target.auto = False
    f1, f2 = make_nbls("tcpip2", 2, 0)
    s.ndis.offload_tcp_disconnect(m.c1.th, f1, TCP_DISCONNECT_GRACEFUL_CLOSE)
    s.ndis.offload_tcp_disconnect(m.c2.th, f2, TCP_DISCONNECT_GRACEFUL_CLOSE)
    s.target.complete_io(order=lambda todo: list(reversed(todo)))  # completed in the other order
    assert [(k, ctx, n) for k, ctx, n in m.host.io_completions] == [("disconnect", m.b2, f2), ("disconnect", m.b1, f1)]
    assert f1.context == [] and f2.context == []
    # Sends from both interfaces batched into one completion are split back per interface.
    a, b = make_nbls("tcpip2", 2)
    s.ndis.offload_tcp_send(m.c1.th, a)
    s.ndis.offload_tcp_send(m.c2.th, b)
    s.target.complete_io()
    assert [(ctx, n) for k, ctx, n in m.host.io_completions if k == "send"] == [(m.b1, a), (m.b2, b)]
    assert s.verifier.violations == []


def test_r_im_11_completion_sent_to_the_wrong_upper_interface() -> None:
    m = MuxStack(RoutesByBinding)
    s = m.s
    f2 = make_nbls("tcpip2", 1, 0)[0]
    s.ndis.offload_tcp_disconnect(m.c2.th, f2, TCP_DISCONNECT_GRACEFUL_CLOSE)  # came from vm2 ...
    assert violation(s.run) == "R-IM-11"  # ... but the IM completes it on vm1, its primary binding's VM
