"""Capability changes through NDIS_STATUS_OFFLOAD_PAUSE / NDIS_STATUS_OFFLOAD_RESUME (R-INIT-10): offloaded
connections keep running during the pause, initiates arriving meanwhile are accepted (R-OFF-26) and
queued until the resume (R-OFF-29), and the resume carries the new NDIS_TCP_CONNECTION_OFFLOAD."""

from __future__ import annotations

import pytest
from target_harness import Rig, pattern

from chimney.ndis.oid import NdisTcpConnectionOffload
from chimney.ndis.status import NdisStatus
from chimney.target import TargetLimits


def test_pause_queues_initiate_until_resume_with_new_capabilities_r_init_10_r_off_26_29() -> None:
    rig = Rig()
    rig.connect()
    rig.target.pause_offload()
    assert [s.status_code for s in rig.host.status] == [NdisStatus.OFFLOAD_PAUSE]
    tree = rig.offload_tree()
    rig.ndis.initiate_offload(rig.binding, tree)  # accepted while paused (R-OFF-26)
    rig.run(50)
    assert rig.host.completions["initiate"] == []  # queued, not processed (R-OFF-29)
    rig.target.resume_offload(TargetLimits(max_tcp=7))
    resume = rig.host.status[-1]
    assert resume.status_code == NdisStatus.OFFLOAD_RESUME
    assert isinstance(resume.status_buffer, NdisTcpConnectionOffload)
    assert resume.status_buffer.tcp_connection_offload_capacity == 7
    assert rig.adapter.offload_caps.tcp_connection_offload_capacity == 7  # NDIS recorded the new capabilities
    rig.run(until=lambda: bool(rig.host.completions["initiate"]))
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    assert t.status == NdisStatus.SUCCESS
    data = pattern(5000, 3)
    rig.send(data)
    rig.run(until=lambda: len(rig.peer.received) >= len(data))
    assert bytes(rig.peer.received) == data  # the queued offload went live after the resume


def test_offloaded_connection_keeps_running_during_pause() -> None:
    rig = Rig()
    rig.connect()
    rig.offload()
    rig.target.pause_offload()
    rig.target.pause_offload()  # idempotent: one indication
    data = pattern(20_000, 4)
    rig.send(data, pieces=2)
    rig.run(until=lambda: len(rig.host.send_done) == 2)
    assert bytes(rig.peer.received) == data
    assert all(st == NdisStatus.SUCCESS for _, st, _ in rig.host.send_done)
    assert [s.status_code for s in rig.host.status].count(NdisStatus.OFFLOAD_PAUSE) == 1
    rig.target.resume_offload()


def test_resume_without_pause_is_refused_r_init_10() -> None:
    rig = Rig()
    with pytest.raises(RuntimeError, match="R-INIT-10"):
        rig.target.resume_offload(TargetLimits(max_tcp=1))
