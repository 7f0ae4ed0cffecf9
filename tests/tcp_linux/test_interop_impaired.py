"""Our TCP against Linux's through an impaired TAP: 1% loss, 10 ms delay and 5% reordering in both
directions (applied by the TapPort itself; this kernel has no netem), both roles, all bytes intact."""

from __future__ import annotations

import pytest
from linux_interop import SOAK, assert_intact_and_clean, exchange, our_stack

from chimney.links.base import DropCause
from chimney.links.impair import Impairments
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.sim.realtime import RealTimeScheduler

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 50_000_000 if SOAK else 3 << 19  # 1.5 MiB each way by default
# netem "delay 10ms reorder 5%" sends 5% of frames 10 ms early; holding 5% back by 10 ms is the
# same displacement seen from the other side.
IMPAIRED = Impairments(loss=0.01, delay_ns=10_000_000, reorder=0.05, reorder_delay_ns=10_000_000)


@requires_netns
@pytest.mark.timeout(1800 if SOAK else 120)
@pytest.mark.parametrize("linux_role", ["client", "server"], ids=["linux_client-our_server", "our_client-linux_server"])
def test_lossy_reordering_path_delivers_every_byte_both_ways(linux_role: str) -> None:
    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        stack, port = our_stack(topo, sched)
        port.set_impairments(inbound=IMPAIRED, outbound=IMPAIRED)
        ex = exchange(topo, stack, port, linux_role=linux_role, nbytes=NBYTES, seed=31,
                      timeout_s=1500.0 if SOAK else 60.0)
        imp = port.impairment_counters()
        # The impairment really happened in both directions, and both ends had to repair it.
        for d in ("in", "out"):
            assert imp[d].dropped[DropCause.LOSS] > 0 and imp[d].reordered > 0, (d, imp[d])
        assert ex.tcb.conn.stats.retransmitted_segments > 0
        assert ex.linux["total_retrans"] > 0
        # A duplicate ACK held back past our CLOSED may draw a RST from the closed port; none before.
        assert_intact_and_clean(ex, NBYTES, 31, stale_rst_ok=True)
        if SOAK:
            mbit = NBYTES * 8 / ex.seconds / 1e6
            print(f"\nimpaired soak {linux_role}: {NBYTES} B each way in {ex.seconds:.1f} s = {mbit:.1f} Mbit/s; "
                  f"our rtx {ex.tcb.conn.stats.retransmitted_segments}, Linux rtx {ex.linux['total_retrans']}")
