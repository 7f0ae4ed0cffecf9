"""TCP chimney against a real Linux server: our client's connection is offloaded by the "always" policy right
after establishment, moves all its data through the target, and comes back to the host at close."""

from __future__ import annotations

import pytest
from chimney_linux_rig import SOAK, assert_intact_and_uninterrupted, build_rig, exchange, linux_rtx_bound

from chimney.host.policy import OffloadPolicy
from chimney.host.tcp import Tcb
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 100_000_000 if SOAK else 8 << 20
SEED = 51


@requires_netns
@pytest.mark.timeout(1800 if SOAK else 120)
def test_our_client_offloaded_at_establishment_to_linux_server_is_intact_and_closes_clean() -> None:
    """Policy "always": the connection is offloaded right after the handshake, stays on
    the target for the whole transfer (no upload before our close), the target sends and indicates the
    data, and it is back in the host once closed; Linux sees one connection ending in a clean EOF."""
    with TapTopology.unique("chimney-always") as topo, RealTimeScheduler() as sched:
        rig = build_rig(topo, sched, OffloadPolicy.established())
        seen: dict[str, int] = {}

        def connected(tcb: Tcb) -> None:
            seen["connected_at"] = sched.now

        ex = exchange(rig, linux_role="server", nbytes=NBYTES, seed=SEED, timeout_s=1500.0 if SOAK else 90.0,
                      on_connected=connected)
        assert_intact_and_uninterrupted(rig, ex, NBYTES, SEED)
        m = rig.manager
        events = [(t, kind, d) for t, kind, tcb, d in m.history if tcb is ex.tcb]
        assert events and events[0][1] == "offload", events
        # Real time on a busy 2-core box: the first scan (1 ms) plus the initiate round trip measured
        # 4-90 ms; 250 ms still means "at establishment" against a multi-second transfer.
        assert events[0][0] - seen["connected_at"] < 250 * NS_PER_MS, (events[0], seen)
        # Offloaded once, uploaded once (at close): nothing brought it back while data was moving.
        assert [k for _t, k, _d in events] == ["offload", "upload"], events
        tc = rig.node.target.counters
        ip4 = rig.node.target.ip_stats[0]
        # Nearly all of our stream left in the target's own segments (the host may have sent the first
        # window before the offload completed). out_octets count whole IP datagrams: take off IP + TCP +
        # timestamp option per segment (an upper bound on headers for data segments).
        assert ip4.out_octets - 52 * ip4.out_requests >= NBYTES * 0.9 and tc["send_completed"] > 0, (ip4, tc)
        # The upload came with the close: the target hands the connection back on entering TIME-WAIT
        # (R-TMR-03, "retrieve:UploadRequested:TimeWait") or the host takes it back once it is closed.
        assert events[1][2].rsplit(":", 1)[1] in ("TimeWait", "Closed", "LastAck", "Closing"), events
        assert tc["ind_calls"] > 0 and m.stats["ind_bytes"] >= NBYTES * 0.9, (tc, m.stats)
        assert ex.linux["total_retrans"] <= linux_rtx_bound(len(events)), (ex.linux, events)
        assert rig.node.verifier.violations == []
        assert rig.wind_down() == ""
