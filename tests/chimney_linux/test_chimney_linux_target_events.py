"""TCP chimney against a Linux client when the target, not the host, starts the upload: a target retrieve
(TcpIndicateRetrieve with a mandatory reason, R-OFF-27 / R-EVT-06) and a hardware reset
(NDIS_STATUS_UPLOAD_ALL) in the middle of a transfer. The connection carries on in the host engine, is
offloaded again afterwards, and not one byte is lost; Linux never notices."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chimney_linux_rig import SOAK, assert_intact_and_uninterrupted, build_rig, exchange, linux_rtx_bound

from chimney.host.policy import OffloadPolicy
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.ndis.offload_state import TcpUploadReason
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 100_000_000 if SOAK else 16 << 20
SEED = 71
STEP_NS = 300 * NS_PER_MS
POLL_NS = 20 * NS_PER_MS


@requires_netns
@pytest.mark.timeout(1800 if SOAK else 120)
def test_target_retrieve_and_hardware_reset_mid_transfer_lose_nothing() -> None:
    with TapTopology.unique("chimney-tgt") as topo, RealTimeScheduler() as sched:
        rig = build_rig(topo, sched, OffloadPolicy.explicit())
        m, target = rig.manager, rig.node.target
        log: list[str] = []

        refused: dict[str, int] = {"after_retrieve": 0, "during_reset": 0}

        def script(tcb: Tcb) -> None:
            def still_moving() -> None:
                assert not tcb.peer_closed, "Linux finished sending before the script ended: raise NBYTES"

            def retrieve() -> None:
                still_moving()
                assert m.is_offloaded(tcb), "not offloaded when the target asks for it back"
                target.request_upload(rig.target_ctx(tcb), TcpUploadReason.UploadRequested)
                log.append("retrieve")
                sched.call_later(POLL_NS, offload_again, "after_retrieve", reset)

            def offload_again(phase: str, then: Callable[[], None] | None) -> None:
                # The host refuses while the connection, its path or its neighbor still has a hand-over in
                # flight (R-OFF-11: the upload also tears down the path and neighbor, R-TRM-04), and while an
                # UPLOAD_ALL is not finished: retry until it takes the connection.
                still_moving()
                n = m.offload(tcb)
                if n == 0:
                    refused[phase] += 1
                    sched.call_later(POLL_NS, offload_again, phase, then, label="script: offload again")
                    return
                log.append(f"offload:{n}")
                if then is not None:
                    sched.call_later(STEP_NS, then, label="script: next step")

            def reset() -> None:
                still_moving()
                assert m.is_offloaded(tcb), m.paths.get(tcb)
                target.hardware_reset()
                log.append("reset")
                assert m.upload_all_active and m.offload(tcb) == 0  # UPLOAD_ALL: no new offload until all back
                sched.call_later(POLL_NS, offload_again, "during_reset", None, label="script: offload after reset")

            assert m.offload(tcb) == 1
            sched.call_later(STEP_NS, retrieve, label="script: target retrieve")

        ex = exchange(rig, linux_role="client", nbytes=NBYTES, seed=SEED, timeout_s=1500.0 if SOAK else 90.0,
                      on_connected=script)
        # The whole script ran while data was still moving.
        assert log == ["retrieve", "offload:1", "reset", "offload:1"], log
        assert_intact_and_uninterrupted(rig, ex, NBYTES, SEED)
        offs, ups = rig.hand_overs(ex.tcb)
        assert len(offs) == 3, offs
        assert ups[:2] == ["retrieve:UploadRequested:Established", "upload_all:Established"], ups
        # The third offload lasted to the close: the target gives a connection back on entering TIME-WAIT
        # (R-TMR-03) or the host takes it back once closed; nothing else brought it back.
        assert all(u.rsplit(":", 1)[1] in ("TimeWait", "Closed", "LastAck", "Closing") for u in ups[2:]), ups
        assert target.counters["hw_resets"] == 1 and m.stats["status_upload_all"] == 1
        # Every retrieve the target made (ours, plus a TIME-WAIT one) was honoured: mandatory reasons (R-EVT-07).
        assert m.stats["retrieves"] == target.counters["retrieves"] >= 1 and m.stats["retrieves_ignored"] == 0
        assert not m.upload_all_active  # every object came back, so offloading was allowed again
        assert rig.node.verifier.violations == []
        assert ex.linux["total_retrans"] <= linux_rtx_bound(len(offs) + len(ups)), (ex.linux, offs, ups)
        assert rig.wind_down() == ""
        print(f"\ntarget events: {NBYTES} B each way in {ex.seconds:.1f} s; offload refused (20 ms polls) {refused}")
