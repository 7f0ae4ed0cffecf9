"""ChimneyChecks through a pass-through IM: each NDIS edge has its own phase machine (the IM's own
offload handles below it), and send data stamped at both edges comes back clean (R-OFF-22, R-TRM-11/12)."""

from __future__ import annotations

from chimney_checks_kit import Conn, Host, StrictChimneyChecks, Target, chain
from test_core_doubles import PassThroughIm

from chimney.ndis.blocklist import NdisOffloadHandleRef
from chimney.ndis.buffers import nbl_from_bytes
from chimney.ndis.core import Ndis
from chimney.ndis.offload_state import TcpOffloadStateDelegated
from chimney.ndis.status import NdisStatus
from chimney.ndis.verifier import ContractViolation, Mode, Verifier
from chimney.sim.scheduler import SimScheduler


def im_stack() -> tuple[Ndis, Target, Host, Conn]:
    ndis = Ndis(SimScheduler(1), Verifier(Mode.STRICT), checks=StrictChimneyChecks)
    target = Target()
    nic = ndis.add_adapter(target, "nic0")
    vm = ndis.add_im(PassThroughIm("im0"), nic, "im0-vm")
    host = Host()
    binding = ndis.bind(host, vm)
    conn = Conn()
    ndis.initiate_offload(binding, conn.tree())
    mbl = target.pop("initiate")
    target.offload_all(mbl)
    ndis.m_initiate_offload_complete(nic, mbl)
    return ndis, target, host, conn


def test_offload_send_indicate_terminate_through_an_im_is_clean_at_both_edges() -> None:
    ndis, target, host, conn = im_stack()
    chk = ndis._chk
    assert isinstance(chk, StrictChimneyChecks)
    assert chk.phases() == {"offloaded": 6}  # neighbor, path, TCP above and below the IM
    late = nbl_from_bytes(b"s" * 50, "tcpip")
    ndis.offload_tcp_send(conn.th, late)
    target.send_complete([target.ack(conn.send_data[0])])
    tcp_mbl_ref = target_ref(chk)
    target.indicate(tcp_mbl_ref)
    ndis.terminate_offload(host.binding, conn.terminate_tree())  # type: ignore[arg-type]
    mbl = target.pop("terminate")
    back = [conn.send_data[1], late]
    dlg = next(s for s in mbl.state if isinstance(s, TcpOffloadStateDelegated))
    mbl.net_buffer_list_chain = chain(back)
    dlg.send_data_head, dlg.send_data_tail = back[0], back[1]
    dlg.snd_una = dlg.snd_nxt = dlg.snd_max = 9
    dlg.ts_time = conn.dlg.ts_time + 5
    mbl.status = NdisStatus.SUCCESS
    ndis.m_terminate_offload_complete(target.adapter, mbl)  # type: ignore[arg-type]
    assert ndis.verifier.rule_ids() == []
    assert chk.phases() == {"offloaded": 4, "terminated": 2}
    assert [n.owner for n in back] == ["tcpip", "tcpip"] and [n.source_handle for n in back] == [None, None]
    assert all(b.sends_out == 0 for b in ndis.bindings)


def test_reordered_return_is_caught_at_the_target_edge_below_the_im() -> None:
    ndis, target, host, conn = im_stack()
    ndis.terminate_offload(host.binding, conn.terminate_tree())  # type: ignore[arg-type]
    mbl = target.pop("terminate")
    back = [conn.send_data[1], conn.send_data[0]]
    mbl.net_buffer_list_chain = chain(back)
    mbl.status = NdisStatus.SUCCESS
    try:
        ndis.m_terminate_offload_complete(target.adapter, mbl)  # type: ignore[arg-type]
    except ContractViolation as e:
        assert e.rule_id == "R-TRM-12"
        assert e.objects[0] is conn.send_data[1]
    else:
        raise AssertionError("reordered NetBufferListChain not reported")


def target_ref(chk: StrictChimneyChecks) -> NdisOffloadHandleRef:
    """The NdisOffloadHandle the target stored for the TCP connection (the IM's handle below it)."""
    for obj in chk.objects.values():
        if obj.layer is not None and obj.layer.name == "TCP" and isinstance(obj.context, dict):
            ref = obj.context["handle"]
            assert isinstance(ref, NdisOffloadHandleRef)
            return ref
    raise AssertionError("no target-level TCP object")
