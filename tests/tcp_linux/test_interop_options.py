"""Option negotiation against Linux: with the namespace's tcp_sack / tcp_timestamps / tcp_window_scaling
sysctls on or off, our connection's negotiated SACK/timestamps/window-scale match Linux's TCP_INFO view
(RFC 2018, RFC 7323 — an option is used only when both SYNs carry it), and the data still flows intact."""

from __future__ import annotations

import pytest
from linux_interop import assert_intact_and_clean, exchange, linux_options, our_stack

from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.sim.realtime import RealTimeScheduler

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)

NBYTES = 512 << 10

# (sack, timestamps, window_scaling) on the Linux side; ours all on (linux_profile()).
COMBOS = [(1, 1, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0)]


def _combo_id(c: tuple[int, int, int]) -> str:
    return "-".join(f"{name}{'on' if v else 'off'}" for name, v in zip(("sack", "ts", "ws"), c))


@requires_netns
@pytest.mark.timeout(60)
@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
@pytest.mark.parametrize("linux_role", ["client", "server"], ids=["linux_client", "linux_server"])
def test_negotiated_options_follow_linux_sysctls(linux_role: str, combo: tuple[int, int, int]) -> None:
    sack, ts, ws = combo
    with TapTopology.unique() as topo:
        topo.ns.sysctl("net.ipv4.tcp_sack", sack)
        topo.ns.sysctl("net.ipv4.tcp_timestamps", ts)
        topo.ns.sysctl("net.ipv4.tcp_window_scaling", ws)
        sched = RealTimeScheduler()
        stack, port = our_stack(topo, sched)
        ex = exchange(topo, stack, port, linux_role=linux_role, nbytes=NBYTES, seed=23, timeout_s=30.0)
        conn = ex.tcb.conn
        assert (conn.sack_ok, conn.ts_ok, conn.ws_ok) == (bool(sack), bool(ts), bool(ws))
        assert linux_options(ex.linux) == (bool(sack), bool(ts), bool(ws))
        if ws:
            # Each end shifts by what the other advertised (RFC 7323 2.3).
            assert (ex.linux["snd_wscale"], ex.linux["rcv_wscale"]) == (conn.rcv_wscale, conn.snd_wscale)
        else:
            assert conn.snd_wscale == 0
        assert_intact_and_clean(ex, NBYTES, 23)
