"""Host invariants of the chimney, checked where the host makes its NDIS calls (R-INIT-17, R-UPD-04, R-FWD-03,
R-NBR-08): each provoked by a misbehaving host double (or a direct call) that must raise ContractViolation
with the rule id, and kept by the real host in an end-to-end transfer; plus the host's answer to a target
that asks for a half-closed connection discretionarily (R-EVT-08). Verifier STRICT unless said otherwise.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_chimney_ops_update import (
    PORT,
    WIRE,
    check_bulk,
    check_clean,
    frames_at_b,
    offloaded_bulk,
    pair_with,
    run_for,
    run_until,
    start_bulk,
    target_ctx,
)

from chimney.host.chimney import ChimneyPath, OffloadManager, OffloadPair, Phase, build_offload_pair
from chimney.host.ndis_binding import NdisHostBinding
from chimney.host.policy import OffloadPolicy
from chimney.host.stack import HostStack
from chimney.ndis.blocklist import ProtocolOffloadBlockList, iter_dependents, iter_tree
from chimney.ndis.buffers import Mdl, NetBuffer, NetBufferList
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.offload_state import (
    Layer,
    NeighborOffloadStateCached,
    NeighborOffloadStateDelegated,
    OffloadStateType,
    TcpConnectionState,
    TcpUploadReason,
)
from chimney.ndis.verifier import ContractViolation, Mode, Verifier
from chimney.sim.scheduler import SimScheduler

B = bytes([198, 18, 0, 2])


def conn_of(p: OffloadPair) -> Any:
    (tcb,) = [t for t in p.host_a.tcp.connections() if t.remote_port == PORT]
    return tcb


def frames_from_b(p: OffloadPair) -> list[bytes]:
    """Every frame host A's IP layer receives from now on (copies)."""
    seen: list[bytes] = []
    ip = p.host_a.ip
    real = ip.input_frame

    def tap(iface: Any, frame: Any, *rest: Any) -> None:
        seen.append(bytes(frame))
        real(iface, frame, *rest)

    ip.input_frame = tap  # type: ignore[method-assign]
    return seen


def tcp_from_b(frames: list[bytes], tcb: Any) -> bytes:
    """The last IPv4 TCP frame of the connection `tcb` that host B sent."""
    port = tcb.local_port.to_bytes(2, "big")
    for f in reversed(frames):
        if f[12:14] == b"\x08\x00" and f[23] == 6 and f[26:30] == B and f[14 + 20 + 2:14 + 20 + 4] == port:
            return f
    raise AssertionError("no TCP frame from B seen")


# ------------------------------------------------------------------------------------------------ R-INIT-17


def second_host_on_the_same_nic(p: OffloadPair) -> NdisHostBinding:
    """Host C binds a second protocol instance to host A's adapter (a second TCP/IP stack on one NIC)."""
    c = HostStack(p.host_a.scheduler, "C")
    hb = NdisHostBinding(c)
    assert p.binding.binding is not None
    hb.attach(p.ndis, p.binding.binding.adapter, mac=bytes.fromhex("02000000000c"), addresses=["198.18.0.3/24"])
    return hb


def test_r_init_17_a_second_protocol_on_the_nic_leaves_tcp_offload_to_the_first() -> None:
    """R-INIT-17: the second stack finds the NIC's TCP offload enabled by the first and does not enable it:
    it sees the capabilities, sets no parameters and offloads nothing; the first keeps offloading."""
    p = pair_with()
    hb = second_host_on_the_same_nic(p)
    assert hb.caps is not None and hb.offload_conflict is p.binding
    assert not hb.offload_enabled and not hb.params_accepted and not hb.chimney_ready
    assert p.binding.offload_enabled and p.binding.chimney_ready
    assert p.ndis.verifier.violations == []
    fut, _tcb = offloaded_bulk(p, 300_000)
    run_until(p, fut.done)
    check_bulk(fut, 300_000)


def test_r_init_17_enabling_tcp_offload_while_another_protocol_holds_it_raises() -> None:
    """R-INIT-17 provoked: the second stack sets the offload parameters anyway (a host bug)."""
    p = pair_with()
    hb = second_host_on_the_same_nic(p)
    with pytest.raises(ContractViolation) as e:
        hb.enable_offload()
    assert e.value.rule_id == "R-INIT-17"


def test_r_init_17_after_the_holder_unbinds_the_other_protocol_takes_the_offload_on_its_own() -> None:
    """R-INIT-17: once the first protocol closed its binding, the NIC's offload is free: the protocol that
    stood back for it negotiates again by itself (no call by hand) and enables it; the unbind also closed
    the first protocol's OffloadManager."""
    sched = SimScheduler(2)
    p = build_offload_pair(sched, 2, WIRE, policy=OffloadPolicy.explicit())
    hb = second_host_on_the_same_nic(p)
    mc = OffloadManager(hb.stack, hb, OffloadPolicy.explicit())
    assert not hb.offload_enabled and not hb.chimney_ready and hb.offload_conflict is p.binding
    assert p.binding.binding is not None
    p.ndis.unbind(p.binding.binding)
    assert not p.binding.offload_enabled and p.manager.closed
    assert not hb.offload_enabled  # after the unbind, not inside ProtocolUnbindAdapterEx
    run_for(p, 1)
    assert hb.offload_enabled and hb.params_accepted and hb.offload_conflict is None and hb.chimney_ready
    assert p.ndis.verifier.checks["R-INIT-17"] >= 2 and p.ndis.verifier.violations == []
    assert not mc.closed


def test_r_init_17_of_two_protocols_waiting_for_the_nic_only_one_takes_the_offload() -> None:
    """R-INIT-17 after the holder's unbind: two protocols stood back; the first to negotiate enables the
    offload, the other then finds it held by that one (never two holders)."""
    p = build_offload_pair(SimScheduler(3), 3, WIRE, policy=OffloadPolicy.explicit())
    hc = second_host_on_the_same_nic(p)
    d = HostStack(p.host_a.scheduler, "D")
    hd = NdisHostBinding(d)
    assert p.binding.binding is not None
    hd.attach(p.ndis, p.binding.binding.adapter, mac=bytes.fromhex("02000000000d"), addresses=["198.18.0.4/24"])
    assert hc.offload_conflict is p.binding and hd.offload_conflict is p.binding
    p.ndis.unbind(p.binding.binding)
    run_for(p, 1)
    assert [hc.offload_enabled, hd.offload_enabled] == [True, False]
    assert hd.offload_conflict is hc and not hd.chimney_ready
    assert p.ndis.verifier.violations == []


def test_unbind_closes_the_offload_manager_listeners_and_timers() -> None:
    """ProtocolUnbindAdapterEx closes the binding's OffloadManager: it leaves the neighbor cache, route
    table and PMTU cache listener lists and its PMTU aging and policy scan timers stop, so the old manager
    can no longer issue updates or invalidates nor offload."""
    from chimney.host.policy import PolicyMode
    from chimney.net.icmp import build_icmp_frag_needed

    p = pair_with()
    m = p.manager
    fut, _tcb = offloaded_bulk(p, 600_000)
    seen = frames_at_b(p)
    run_for(p, 3)
    big = next(f for f in seen if len(f) > 1200)
    p.host_b.ip.send_ip(bytes([198, 18, 0, 1]), 1, build_icmp_frag_needed(1100, big[14:]))
    run_until(p, lambda: m.stats["pmtu_updates"] == 1, 1)
    run_until(p, fut.done)
    check_bulk(fut, 600_000)
    m.upload(list(m.paths))
    run_until(p, lambda: not m.busy() and not m.paths and not m.path_objs and not m.neighbor_objs
              and not p.binding.tx_outstanding, 5)
    assert m._pmtu_timer is not None  # the learned PMTU ages out in 10 minutes
    m.policy.mode = PolicyMode.ESTABLISHED
    m.wake()
    assert m._scan_timer is not None
    ip = p.host_a.ip
    iface = p.binding.iface
    assert iface is not None and p.binding.binding is not None
    assert m._pmtu_changed in ip.pmtu.listeners and m._route_event in ip.routes.listeners
    p.ndis.unbind(p.binding.binding)
    assert m._pmtu_changed not in ip.pmtu.listeners and m._route_event not in ip.routes.listeners
    assert m._neighbor_event not in ip.neighbors[iface.name].listeners
    assert m._pmtu_timer is None and m._scan_timer is None and m.closed
    m.wake()
    assert m._scan_timer is None


# ------------------------------------------------------------------------------------------------ R-NBR-08


class SkewedNrdManager(OffloadManager):
    """Host double: offloads neighbors with NicReachabilityDelta one tick off the HostReachabilityDelta."""

    def _object_node(self, obj: Any) -> ProtocolOffloadBlockList:
        node = super()._object_node(obj)
        for s in node.state:
            if isinstance(s, NeighborOffloadStateDelegated):
                s.nic_reachability_delta += 1
        return node


def test_r_nbr_08_the_host_offloads_neighbors_with_hrd_equal_to_nrd() -> None:
    """R-NBR-08: the neighbor node of the initiate tree carries HRD == NRD (checked at the call)."""
    p = pair_with()
    trees: list[list[Any]] = []
    real = p.ndis.initiate_offload

    def record(bh: Any, pbl: Any) -> None:
        trees.append([(n.layer, list(n.state)) for n in iter_tree(pbl)])
        real(bh, pbl)

    p.ndis.initiate_offload = record  # type: ignore[method-assign]
    fut, _tcb = offloaded_bulk(p, 300_000)
    (nbr_state,) = [st for t in trees for layer, st in t if layer is Layer.NEIGHBOR and st]
    cached = next(s for s in nbr_state if isinstance(s, NeighborOffloadStateCached))
    dlg = next(s for s in nbr_state if isinstance(s, NeighborOffloadStateDelegated))
    assert cached.host_reachability_delta == dlg.nic_reachability_delta
    assert p.ndis.verifier.checks["R-NBR-08"] == 1
    run_until(p, fut.done)
    check_bulk(fut, 300_000)


def test_r_nbr_08_offloading_a_neighbor_with_nrd_different_from_hrd_raises() -> None:
    p = build_offload_pair(SimScheduler(1), 1, WIRE, policy=OffloadPolicy.explicit(), manager_class=SkewedNrdManager)
    start_bulk(p, 300_000)
    run_for(p, 20)
    with pytest.raises(ContractViolation) as e:
        p.manager.offload(conn_of(p))
    assert e.value.rule_id == "R-NBR-08"
    assert p.ndis.verifier.checks.get("R-OFF-01", 0) == 0  # the tree never reached NDIS


# ------------------------------------------------------------------------------------------------ R-UPD-04


class TcpRelinkingManager(OffloadManager):
    """Host double: its route-change re-link also 're-links' each connection to its path (a TCP node under
    each path node of the update tree), which the contract forbids."""

    def _start_op(self, what: str, root: ProtocolOffloadBlockList, objs: list[Any], extra: Any) -> None:
        if what == "update" and extra is not None:
            for pnode in iter_dependents(root):
                pobj = pnode.offload_handle.owner
                for cp in self._dependents(pobj):
                    pnode.add_dependent(ProtocolOffloadBlockList(OffloadStateType.TcpOffloadCachedState, cp.handle,
                                                                 [copy.deepcopy(cp.cached)]))
        super()._start_op(what, root, objs, extra)


def via_gateway_pair(manager_class: type[OffloadManager] = OffloadManager) -> tuple[OffloadPair, Any]:
    """Host B's second address 198.18.1.2, first reached on-link (its own neighbor entry)."""
    p = build_offload_pair(SimScheduler(1), 1, WIRE, policy=OffloadPolicy.explicit(), manager_class=manager_class)
    p.host_b.ip.add_address("eth0", "198.18.1.2/24")
    route = p.host_a.ip.routes.add("198.18.1.2/32", "eth0")
    return p, route


def test_r_upd_04_a_route_replace_relinks_the_path_only_without_a_route_changed_call() -> None:
    """R-UPD-03/04: `ip route replace` to a gateway is told to the manager by the route table itself; the
    update tree is the new neighbor with the path under it, no TCP node; the connection stays offloaded."""
    p, route = via_gateway_pair()
    fut, tcb = offloaded_bulk(p, 2_000_000, dst="198.18.1.2")
    m = p.manager
    old = tcb.path.path_obj.parent
    trees: list[list[tuple[Any, int]]] = []
    real = p.ndis.update_offload

    def record(bh: Any, pbl: Any) -> None:
        trees.append([(n.layer, len(list(iter_dependents(n)))) for n in iter_tree(pbl)])
        real(bh, pbl)

    p.ndis.update_offload = record  # type: ignore[method-assign]
    p.host_a.ip.routes.replace(route, gateway="198.18.0.2")
    run_for(p, 5)
    assert trees == [[(Layer.NEIGHBOR, 1), (Layer.PATH, 0)]]
    assert p.ndis.verifier.checks["R-UPD-04"] >= 1
    assert m.stats["relinks"] == 1 and m.is_offloaded(tcb) and m.stats["uploads_done"] == 0
    assert tcb.path.path_obj.parent is not old and tcb.path.path_obj.parent.key[1] == B
    run_until(p, fut.done)
    check_bulk(fut, 2_000_000)
    check_clean(p)


def test_r_upd_04_an_update_tree_relinking_a_tcp_node_raises() -> None:
    p, route = via_gateway_pair(TcpRelinkingManager)
    offloaded_bulk(p, 2_000_000, dst="198.18.1.2")
    p.host_a.ip.routes.replace(route, gateway="198.18.0.2")
    with pytest.raises(ContractViolation) as e:
        run_for(p, 5)
    assert e.value.rule_id == "R-UPD-04"


# ------------------------------------------------------------------------------------------------ R-FWD-03


class EagerForwardPath(ChimneyPath):
    """Host double: forwards every segment it receives at once, even while the offload or the upload of
    the connection is in progress."""

    def input(self, seg: Any, frame: Any) -> None:
        m = self.manager
        nbl = NetBufferList(NetBuffer(Mdl(bytes(frame.l4)), 0, len(frame.l4)), m.binding.name)
        nbl.protocol_reserved[0] = self
        m.forward(self, nbl)


class EagerForwardManager(OffloadManager):
    path_class = EagerForwardPath


def test_r_fwd_03_a_segment_received_during_the_offload_is_forwarded_only_after_it() -> None:
    """R-FWD-03: a segment of the connection reaching the host while its offload is in progress is held
    and given to the target with NdisOffloadTcpForward once the initiate completed."""
    p = pair_with()
    fut = start_bulk(p, 1_500_000)
    seen = frames_from_b(p)
    run_for(p, 20)
    tcb = conn_of(p)
    m = p.manager
    assert m.offload(tcb) == 1 and tcb.path.phase is Phase.OFFLOADING
    iface = p.binding.iface
    p.host_a.ip.input_frame(iface, tcp_from_b(seen, tcb))  # e.g. still in the host's receive path
    assert len(tcb.path.held_segs) == 1 and m.stats["forwarded"] == 0
    run_for(p, 2)
    assert m.is_offloaded(tcb) and m.stats["forwarded"] == 1 and not tcb.path.held_segs
    assert p.ndis.verifier.checks["R-FWD-03"] == 1
    run_until(p, fut.done)
    check_bulk(fut, 1_500_000)
    check_clean(p)


def test_r_fwd_03_a_segment_received_during_the_upload_is_fed_to_the_host_engine_not_forwarded() -> None:
    """R-FWD-03: a segment reaching the host while the connection is being terminated is kept and fed to
    the resumed host engine after the upload, never forwarded to the target."""
    p = pair_with()
    fut = start_bulk(p, 1_500_000)
    seen = frames_from_b(p)
    run_for(p, 20)
    tcb = conn_of(p)
    frame = tcp_from_b(seen, tcb)  # an old duplicate by the time it is fed
    m = p.manager
    m.offload(tcb)
    run_for(p, 2)
    assert m.upload(tcb) == 1 and tcb.path.phase is Phase.TERMINATING
    p.host_a.ip.input_frame(p.binding.iface, frame)
    run_until(p, lambda: tcb.path.kind == "host", 1)
    assert m.stats["forwarded"] == 0 and m.stats["held_segments_fed"] == 1
    run_until(p, fut.done)
    check_bulk(fut, 1_500_000)
    check_clean(p)


@pytest.mark.parametrize("phase", ["offloading", "terminating"])
def test_r_fwd_03_forwarding_while_the_offload_or_upload_is_in_progress_raises(phase: str) -> None:
    p = build_offload_pair(SimScheduler(1), 1, WIRE, policy=OffloadPolicy.explicit(),
                           manager_class=EagerForwardManager)
    fut = start_bulk(p, 1_500_000)
    seen = frames_from_b(p)
    run_for(p, 20)
    tcb = conn_of(p)
    frame = tcp_from_b(seen, tcb)
    m = p.manager
    m.offload(tcb)
    if phase == "terminating":
        run_for(p, 2)
        assert m.is_offloaded(tcb)
        m.upload(tcb)
    assert tcb.path.phase.value == phase
    with pytest.raises(ContractViolation) as e:
        p.host_a.ip.input_frame(p.binding.iface, frame)
    assert e.value.rule_id == "R-FWD-03"
    assert not fut.done()


# ------------------------------------------------------------------------------------------------ R-EVT-08


def test_r_evt_08_discretionary_retrieve_of_a_half_closed_connection_is_reported_and_not_acted_on() -> None:
    """R-EVT-08: the target (provoked here) asks with an optional reason for a connection in FIN_WAIT; the
    verifier reports the target, and the host, even with a policy that honours optional reasons, leaves
    the connection offloaded to finish its close."""
    p = build_offload_pair(SimScheduler(1), 1, WIRE, policy=OffloadPolicy.explicit(),
                           verifier=Verifier(Mode.RECORD), checks=ChimneyChecks)
    p.manager.policy.honour_optional_uploads = True
    fut = start_bulk(p, 200_000)  # less than the chimney send backlog: A shuts down right after the offload
    run_for(p, 5)
    tcb = conn_of(p)
    p.manager.offload(tcb)
    run_until(p, lambda: tcb.path.tcp_state in (TcpConnectionState.FinWait1, TcpConnectionState.FinWait2), 1)
    p.target.h_event(target_ctx(p, tcb).handle, 3, int(TcpUploadReason.LowActivity))
    assert [v.rule_id for v in p.ndis.verifier.violations] == ["R-EVT-08"]
    run_for(p, 2)
    m = p.manager
    assert m.stats["retrieves_half_closed"] == 1 and m.stats["terminates"] == 0
    assert m.is_offloaded(tcb) or m.history[-1][3].startswith("closed")
    run_until(p, fut.done)
    check_bulk(fut, 200_000)
    check_clean(p)
    assert [v.rule_id for v in p.ndis.verifier.violations] == ["R-EVT-08"]
