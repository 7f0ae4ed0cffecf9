"""TCP chimney against Linux through an impaired TAP (1% loss, 5 ms delay, 5% reordering in both directions,
applied by the TapPort: this kernel has no netem) while our side keeps offloading and uploading the
connection: every byte arrives both ways and Linux's connection is never interrupted."""

from __future__ import annotations

import pytest
from chimney_linux_rig import SOAK, Churn, assert_intact_and_uninterrupted, build_rig, exchange

from chimney.host.policy import OffloadPolicy
from chimney.host.tcp import Tcb
from chimney.links.base import DropCause
from chimney.links.impair import Impairments
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.sim.realtime import RealTimeScheduler
from chimney.sim.scheduler import NS_PER_MS

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 50_000_000 if SOAK else 3 << 20
SEED = 61
IMPAIRED = Impairments(loss=0.01, delay_ns=5 * NS_PER_MS, reorder=0.05, reorder_delay_ns=5 * NS_PER_MS)


@requires_netns
@pytest.mark.timeout(1800 if SOAK else 120)
@pytest.mark.parametrize("linux_role", ["client", "server"], ids=["linux_client-our_server", "our_client-linux_server"])
def test_lossy_reordering_path_with_offload_churn_delivers_every_byte(linux_role: str) -> None:
    with TapTopology.unique("chimney-lossy") as topo, RealTimeScheduler() as sched:
        rig = build_rig(topo, sched, OffloadPolicy.explicit())
        rig.port.set_impairments(inbound=IMPAIRED, outbound=IMPAIRED)

        def start_churn(tcb: Tcb) -> Churn:
            assert rig.manager.offload(tcb) == 1
            return Churn(rig.manager, tcb, 200 * NS_PER_MS)

        ex = exchange(rig, linux_role=linux_role, nbytes=NBYTES, seed=SEED, timeout_s=1500.0 if SOAK else 90.0,
                      on_connected=start_churn)
        imp = rig.port.impairment_counters()
        # The impairment really happened both ways, and both ends had to repair it.
        for d in ("in", "out"):
            assert imp[d].dropped[DropCause.LOSS] > 0 and imp[d].reordered > 0, (d, imp[d])
        assert ex.linux["total_retrans"] > 0
        # A duplicate ACK held back past our CLOSED may draw a RST from the closed port; none before.
        assert_intact_and_uninterrupted(rig, ex, NBYTES, SEED, stale_rst_ok=True)
        offs, ups = rig.hand_overs(ex.tcb)
        assert len(offs) >= 2 and len(ups) >= 2, (offs, ups)
        assert rig.node.verifier.violations == []
        assert rig.wind_down() == ""
        print(f"\nimpaired churn {linux_role}: {NBYTES} B each way in {ex.seconds:.1f} s, {len(offs)} offloads, "
              f"{len(ups)} uploads, Linux rtx {ex.linux['total_retrans']}, host rtx "
              f"{ex.tcb.conn.stats.retransmitted_segments}")
