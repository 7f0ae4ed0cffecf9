"""R-IM-13 end to end: an IM that relays the chimney capability advertisement but registers no chimney
handlers blocks chimney for itself and everything below it, also under a chimney-capable IM above it."""

from __future__ import annotations

from typing import Any

import pytest
from filter_doubles import Conn, HopIm, Stack, chain, make_nbls

from chimney.filters.blocking import NonChimneyIm
from chimney.filters.passthrough import ImUsageError
from chimney.ndis.blocklist import iter_tree
from chimney.ndis.oid import (
    OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG,
    OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES,
    NdisOidRequest,
    NdisTcpConnectionOffload,
)
from chimney.ndis.status import NdisStatus

S = NdisStatus


def non_chimney_at(position: int) -> Any:
    return lambda i, log: NonChimneyIm(f"legacy{i}") if i == position else HopIm(f"im{i}", log)


def test_r_im_13_registers_no_handlers_yet_relays_the_advertisement() -> None:
    s = Stack(1, im_factory=non_chimney_at(0))
    im = s.ims[0]
    assert all(not dh.chimney_provider and not dh.chimney_client for dh in s.ndis.drivers[im.name])
    assert s.top.offload_caps is s.target.caps  # relayed ...
    assert not s.top.chimney_capable  # ... but no handlers behind it


@pytest.mark.parametrize("oid", [OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES, OID_TCP_CONNECTION_OFFLOAD_CURRENT_CONFIG])
@pytest.mark.parametrize("stack", [(1, 0), (2, 0), (3, 1)], ids=["alone", "under-chimney-im", "middle"])
def test_r_im_13_host_sees_no_chimney_capability(oid: int, stack: tuple[int, int]) -> None:
    depth, position = stack
    s = Stack(depth, im_factory=non_chimney_at(position))
    req = NdisOidRequest.query(oid)
    assert s.ndis.oid_request(s.binding, req) == S.NOT_SUPPORTED
    assert s.top.offload_caps is None or not s.top.chimney_capable
    assert s.verifier.violations == []


@pytest.mark.parametrize("stack", [(1, 0), (2, 0), (3, 1)], ids=["alone", "under-chimney-im", "middle"])
def test_r_im_13_initiate_through_it_fails_every_node_and_never_reaches_the_target(stack: tuple[int, int]) -> None:
    depth, position = stack
    s = Stack(depth, im_factory=non_chimney_at(position))
    c = Conn()
    pbl = c.tree(second_tcp=True)
    s.ndis.initiate_offload(s.binding, pbl)
    s.run()
    assert s.host.state_completions == [("initiate", pbl)]
    assert all(n.status == S.FAILURE for n in iter_tree(pbl))
    assert all(h.miniport_offload_context.value is None for h in (c.nh, c.ph, c.th, c.th2))
    assert s.target.state_calls == [] and s.target.objects == {}
    assert s.ndis.counters["chimney_blocked"] == 1
    # Chimney-capable IMs above it hold no offload entries and no call entries afterwards.
    for im in s.ims:
        if not isinstance(im, NonChimneyIm):
            assert im.entries == {} and im.call_entries == {}
    if depth > 1:
        # I/O on the never-offloaded handle: the chimney IM on top refuses it with a clear error.
        with pytest.raises(ImUsageError):
            s.ndis.offload_tcp_send(c.th, make_nbls("tcpip", 1)[0])
    assert s.verifier.violations == []


def test_r_im_13_normal_path_still_passes_through_a_non_chimney_im() -> None:
    s = Stack(2, im_factory=non_chimney_at(0))
    out = make_nbls("tcpip", 3)
    s.ndis.send_net_buffer_lists(s.binding, chain(*out))
    s.run()
    assert s.target.sent == out and s.host.send_completed == out
    rx = make_nbls("nic", 1)
    s.ndis.m_indicate_receive_net_buffer_lists(s.nic, chain(*rx))
    assert s.host.received == rx and s.target.returned == rx
    s.target.status(S.OFFLOAD_PAUSE)
    assert [i.status_code for i in s.host.statuses] == [S.OFFLOAD_PAUSE]
    assert s.verifier.violations == []


def test_r_im_13_resume_capabilities_are_not_relayed_past_a_non_chimney_im() -> None:
    s = Stack(2, im_factory=non_chimney_at(0))
    s.target.status(S.OFFLOAD_RESUME, NdisTcpConnectionOffload(tcp_connection_offload_capacity=4))
    assert [i.status_code for i in s.host.statuses] == [S.OFFLOAD_RESUME]
    assert s.host.statuses[0].status_buffer is None  # the chimney IM above carries no capability it cannot use
    req = NdisOidRequest.query(OID_TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES)
    assert s.ndis.oid_request(s.binding, req) == S.NOT_SUPPORTED
    assert s.verifier.violations == []
