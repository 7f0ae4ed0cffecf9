"""Binding through 0, 1 and 3 pass-through IMs; the normal send path with ownership at every hop
(R-NBL-01/02/03); pause/unbind/halt preconditions; OID routing and NDIS-answered OIDs."""

from __future__ import annotations

import itertools

import pytest
from test_core_doubles import RecordingMiniport, RecordingProtocol, Stack, chain, make_nbls, nbls_of

from chimney.ndis.core import AdapterState, BindingState, NdisUsageError
from chimney.ndis.oid import (
    OID_IP4_OFFLOAD_STATS,
    OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG,
    OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES,
    OID_TCP_CONNECTION_OFFLOAD_PARAMETERS,
    NdisOidRequest,
    NdisTcpConnectionOffloadParameters,
)
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_bind_through_pass_through_ims(depth: int) -> None:
    s = Stack(depth)
    assert len(s.ndis.adapters) == depth + 1
    assert s.binding.adapter is s.top
    assert s.top.state is AdapterState.RUNNING and s.binding.state is BindingState.RUNNING
    # Each IM's virtual miniport sits on a binding of that IM to the adapter below.
    below = s.adapter
    for im in s.ims:
        vm = next(a for a in s.ndis.adapters if a.driver is im)
        assert vm.lower_binding is not None and vm.lower_binding.adapter is below
        assert vm.lower_binding.upper_adapter is vm
        below = vm


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_send_and_complete_route_through_ims_with_ownership_at_each_hop(depth: int) -> None:
    s = Stack(depth)
    nbls = make_nbls("tcpip", 4)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    assert s.mp.sent == nbls
    assert all(n.owner == "nic" for n in nbls)
    for im in s.ims:  # every IM re-issued the identical NBL pointers
        assert im.seen_sends == nbls
    hops = [h for h in s.ndis.tracker.history(nbls[0]) if h[0] == "NdisSendNetBufferLists"]
    path = ["tcpip", *[im.name for im in reversed(s.ims)], "nic"]
    assert [(f, t) for _, f, t in hops] == list(itertools.pairwise(path))

    s.mp.complete_sends(s.adapter)
    assert s.proto.send_completed == nbls
    assert all(n.owner == "tcpip" and n.status == NdisStatus.SUCCESS for n in nbls)
    assert all(n.source_handle is None for n in nbls)  # every IM hop popped its SourceHandle entry
    assert s.binding.sends_out == 0
    assert s.verifier.violations == []


def test_completion_of_a_mixed_chain_splits_by_source_handle() -> None:
    s = Stack(1, protocols=2)
    a = make_nbls("tcpip", 3)
    b = make_nbls("tcpip1", 2)
    s.ndis.send_net_buffer_lists(s.bindings[0], chain(*a))
    s.ndis.send_net_buffer_lists(s.bindings[1], chain(*b))
    mixed = [a[0], b[0], a[1], a[2], b[1]]
    s.mp.complete_sends(s.adapter, mixed)
    assert s.protos[0].send_completed == a
    assert s.protos[1].send_completed == b


def test_r_nbl_02_double_completion() -> None:
    s = Stack(1)
    nbls = make_nbls("tcpip", 2)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    s.mp.complete_sends(s.adapter, list(nbls))
    with pytest.raises(ContractViolation) as e:
        s.mp.complete_sends(s.adapter, [nbls[0]])
    assert e.value.rule_id == "R-NBL-02"


def test_r_nbl_02_sending_an_nbl_the_protocol_does_not_own() -> None:
    s = Stack(0)
    nbls = make_nbls("someone-else", 1)
    with pytest.raises(ContractViolation) as e:
        s.ndis.send_net_buffer_lists(s.binding, nbls[0])
    assert e.value.rule_id == "R-NBL-02"


def test_r_nbl_02_resending_an_nbl_still_at_the_miniport() -> None:
    s = Stack(0)
    nbls = make_nbls("tcpip", 1)
    s.ndis.send_net_buffer_lists(s.binding, nbls[0])
    with pytest.raises(ContractViolation) as e:
        s.ndis.send_net_buffer_lists(s.binding, nbls[0])
    assert e.value.rule_id == "R-NBL-02"


def test_r_nbl_01_completion_without_status() -> None:
    s = Stack(0)
    n = make_nbls("tcpip", 1)[0]
    s.ndis.send_net_buffer_lists(s.binding, n)
    s.mp.sent.clear()
    with pytest.raises(ContractViolation) as e:
        s.ndis.m_send_net_buffer_lists_complete(s.adapter, n)
    assert e.value.rule_id == "R-NBL-01"


def test_r_nbl_03_miniport_moved_a_net_buffer_between_nbls() -> None:
    s = Stack(0)
    a, b = make_nbls("tcpip", 2)
    s.ndis.send_net_buffer_lists(s.binding, chain(a, b))
    b.first_net_buffer, a.first_net_buffer = a.first_net_buffer, b.first_net_buffer
    with pytest.raises(ContractViolation) as e:
        s.mp.complete_sends(s.adapter)
    assert e.value.rule_id == "R-NBL-03"


def test_record_mode_drops_unroutable_completion_and_delivers_the_rest() -> None:
    s = Stack(0, mode=Mode.RECORD)
    good = make_nbls("tcpip", 1)[0]
    stray = make_nbls("nic", 1)[0]  # owned by the miniport but never sent through NDIS
    s.ndis.send_net_buffer_lists(s.binding, good)
    good.status = stray.status = NdisStatus.SUCCESS
    s.ndis.m_send_net_buffer_lists_complete(s.adapter, chain(good, stray))
    assert s.proto.send_completed == [good]
    assert s.verifier.rule_ids() == ["R-NBL-02"]
    assert s.ndis.counters["unroutable_completions"] == 1


def test_verifier_off_routes_without_bookkeeping() -> None:
    s = Stack(3, mode=Mode.OFF)
    nbls = make_nbls("tcpip", 16)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    s.mp.complete_sends(s.adapter)
    assert s.proto.send_completed == nbls
    assert all(n.owner == "tcpip" for n in nbls)  # OFF never touched the owner field
    assert sum(s.verifier.checks.values()) == 0


def test_send_on_paused_adapter_is_completed_with_paused() -> None:
    s = Stack(0)
    assert s.ndis.pause_adapter(s.adapter) == NdisStatus.SUCCESS
    assert s.adapter.state is AdapterState.PAUSED and s.binding.state is BindingState.PAUSED
    n = make_nbls("tcpip", 1)[0]
    s.ndis.send_net_buffer_lists(s.binding, n)
    assert s.proto.send_completed == [n] and n.status == NdisStatus.PAUSED and s.mp.sent == []
    s.ndis.restart_adapter(s.adapter)
    assert s.binding.state is BindingState.RUNNING


def test_pause_completing_with_sends_outstanding_is_flagged() -> None:
    s = Stack(0)
    s.ndis.send_net_buffer_lists(s.binding, make_nbls("tcpip", 1)[0])
    with pytest.raises(ContractViolation) as e:
        s.ndis.pause_adapter(s.adapter)
    assert e.value.rule_id == "R-NBL-02"


def test_unbind_with_sends_outstanding_reports_the_leak() -> None:
    s = Stack(0)
    s.ndis.send_net_buffer_lists(s.binding, make_nbls("tcpip", 2)[0])
    with pytest.raises(ContractViolation) as e:
        s.ndis.unbind(s.binding)
    assert e.value.rule_id == "R-NBL-02"
    assert "not completed" in e.value.message


def test_unbind_and_halt_when_quiet() -> None:
    s = Stack(2)
    nbls = make_nbls("tcpip", 2)
    s.ndis.send_net_buffer_lists(s.binding, chain(*nbls))
    s.mp.complete_sends(s.adapter)
    s.ndis.halt_adapter(s.adapter)
    assert s.mp.halted and s.adapter.state is AdapterState.HALTED
    assert s.ndis.adapters == [] and s.ndis.bindings == []
    assert s.binding.state is BindingState.CLOSED
    with pytest.raises(NdisUsageError):
        s.ndis.bind(RecordingProtocol("late"), s.adapter)


# ------------------------------------------------------------------------------------------------ OIDs


@pytest.mark.parametrize("depth", [0, 2])
def test_ndis_answers_connection_offload_queries_from_attributes(depth: int) -> None:
    s = Stack(depth)
    for oid in (OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG, OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES):
        req = NdisOidRequest.query(oid)
        assert s.ndis.oid_request(s.binding, req) == NdisStatus.SUCCESS
        assert req.buffer is s.mp.caps
    assert s.mp.oids == []  # never reached the miniport


def test_im_without_chimney_handlers_blocks_chimney_below_it() -> None:
    """R-IM-13: the IM relays the capability advertisement but registered no chimney handlers."""
    s = Stack(1, im_chimney=False)
    req = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG)
    assert s.ndis.oid_request(s.binding, req) == NdisStatus.NOT_SUPPORTED


@pytest.mark.parametrize("depth", [0, 3])
def test_parameters_set_reaches_the_miniport_and_ndis_answers_the_query(depth: int) -> None:
    s = Stack(depth)
    params = NdisTcpConnectionOffloadParameters(ticks_per_second=100)
    req = NdisOidRequest.set(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS, params)
    assert s.ndis.oid_request(s.binding, req) == NdisStatus.SUCCESS
    assert s.mp.oids == [req] and req.status == NdisStatus.SUCCESS
    q = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_PARAMETERS)
    assert s.ndis.oid_request(s.binding, q) == NdisStatus.SUCCESS and q.buffer is params


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_pending_oid_completes_back_through_every_im(depth: int) -> None:
    s = Stack(depth)
    s.mp.oid_status = NdisStatus.PENDING
    req = NdisOidRequest.query(OID_IP4_OFFLOAD_STATS)
    assert s.ndis.oid_request(s.binding, req) == NdisStatus.PENDING
    assert s.proto.oid_completions == []
    s.ndis.m_oid_request_complete(s.adapter, req, NdisStatus.SUCCESS)
    assert s.proto.oid_completions == [(req, NdisStatus.SUCCESS)]
    assert req.ndis_reserved == []


def test_oid_completed_by_the_wrong_miniport_is_refused() -> None:
    s = Stack(1)
    s.mp.oid_status = NdisStatus.PENDING
    req = NdisOidRequest.query(OID_IP4_OFFLOAD_STATS)
    s.ndis.oid_request(s.binding, req)
    with pytest.raises(NdisUsageError):
        s.ndis.m_oid_request_complete(s.top, req, NdisStatus.SUCCESS)


def test_status_indication_is_relayed_through_ims() -> None:
    s = Stack(2)
    s.ndis.m_indicate_status_ex(s.adapter, NdisStatus.UPLOAD_ALL)
    assert [i.status_code for i in s.proto.statuses] == [NdisStatus.UPLOAD_ALL]


def test_chain_helper_sanity() -> None:
    nbls = make_nbls("x", 3)
    assert nbls_of(chain(*nbls)) == nbls
    s = Stack(0)
    assert isinstance(s.mp, RecordingMiniport)


def test_later_rules_plug_into_boundary_checks() -> None:
    """A subclass of BoundaryChecks adds a rule at the send crossing; Ndis uses it via `checks=`."""
    from chimney.ndis.core import BoundaryChecks, Ndis
    from chimney.ndis.verifier import Verifier
    from chimney.sim.scheduler import SimScheduler

    seen: list[int] = []

    class MoreChecks(BoundaryChecks):
        def send(self, binding, head, what):  # type: ignore[no-untyped-def]
            seen.append(len(nbls_of(head)))
            super().send(binding, head, what)

    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT), checks=MoreChecks)
    mp = RecordingMiniport()
    binding = ndis.bind(RecordingProtocol(), ndis.add_adapter(mp, "nic0"))
    ndis.send_net_buffer_lists(binding, chain(*make_nbls("tcpip", 3)))
    assert seen == [3] and len(mp.sent) == 3


def test_verifier_off_with_two_bindings_splits_by_source_handle() -> None:
    s = Stack(1, mode=Mode.OFF, protocols=2)
    a = make_nbls("tcpip", 2)
    b = make_nbls("tcpip1", 2)
    s.ndis.send_net_buffer_lists(s.bindings[0], chain(*a))
    s.ndis.send_net_buffer_lists(s.bindings[1], chain(*b))
    s.mp.complete_sends(s.adapter, [b[0], a[0], a[1], b[1]])
    assert s.protos[0].send_completed == a and s.protos[1].send_completed == b


def test_verifier_off_sends_before_a_second_binding_still_complete_to_the_first() -> None:
    s = Stack(0, mode=Mode.OFF)
    early = make_nbls("tcpip", 2)
    s.ndis.send_net_buffer_lists(s.binding, chain(*early))  # single binding: no SourceHandle stamp
    late_proto = RecordingProtocol("late")
    late_binding = s.ndis.bind(late_proto, s.adapter)
    late = make_nbls("late", 1)
    s.ndis.send_net_buffer_lists(late_binding, late[0])
    s.mp.complete_sends(s.adapter, [early[0], late[0], early[1]])
    assert s.proto.send_completed == early and late_proto.send_completed == late


def test_miniport_completes_asynchronously_through_the_scheduler_via_its_handler_table() -> None:
    """The miniport schedules its own completion on the simulated clock (NDIS calls are synchronous);
    the handler table it copied at init points at the NDIS entry points (R-INIT-06)."""
    s = Stack(1)
    n = make_nbls("tcpip", 1)[0]
    s.ndis.send_net_buffer_lists(s.binding, n)

    def complete() -> None:
        n.status = NdisStatus.SUCCESS
        s.mp.sent.remove(n)
        s.ndis.m_send_net_buffer_lists_complete(s.adapter, n)

    s.ndis.scheduler.call_later(5_000, complete)
    assert s.proto.send_completed == []
    s.sched.run_until()
    assert s.proto.send_completed == [n] and s.sched.now == 5_000
    assert s.mp.handlers.ndis_tcp_offload_send_complete == s.ndis.tcp_offload_send_complete


def test_ndis_without_checks_runs_the_full_chimney_verifier_and_lighter_checks_are_a_choice() -> None:
    """The contract verifier is on in every test: `Ndis(...)` alone gets ChimneyChecks; a benchmark can ask
    for the crossing checks only (`checks=BoundaryChecks`); with the verifier off there is no checks object."""
    import chimney.ndis.core as core
    from chimney.ndis.checks_chimney import ChimneyChecks
    from chimney.ndis.verifier import Verifier
    from chimney.sim.scheduler import SimScheduler

    assert type(core.Ndis(SimScheduler(1))._chk) is ChimneyChecks
    assert type(core.Ndis(SimScheduler(1), Verifier(Mode.RECORD))._chk) is ChimneyChecks
    assert type(core.Ndis(SimScheduler(1), checks=core.BoundaryChecks)._chk) is core.BoundaryChecks
    assert core.Ndis(SimScheduler(1), Verifier(Mode.OFF))._chk is None
    assert core.default_checks() is ChimneyChecks
