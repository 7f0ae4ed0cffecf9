"""Streams stay intact through loss, duplication, reordering and corruption on the emulated link
(both directions at once, sha256 on both ends), over seeds chosen by hypothesis."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from chimney.host.apps import bulk_client, bulk_digest, bulk_server
from chimney.host.stack import connected_pair
from chimney.links.impair import Impairments
from chimney.sim import NS_PER_S, SimScheduler
from chimney.sim.tasks import run_task


def lossy(loss: float, dup: float, reorder: float, corrupt: float) -> Impairments:
    return Impairments(rate_bps=200_000_000, delay_ns=200_000, loss=loss, duplicate=dup, reorder=reorder,
                       reorder_delay_ns=300_000, corrupt=corrupt)


@settings(max_examples=10, deadline=None)
@example(seed=1, loss=0.03, dup=0.02, reorder=0.05, corrupt=0.01)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from([0.0, 0.01, 0.03]),
    dup=st.sampled_from([0.0, 0.02]),
    reorder=st.sampled_from([0.0, 0.05]),
    corrupt=st.sampled_from([0.0, 0.01]),
)
def test_bulk_exchange_survives_an_impaired_link(seed: int, loss: float, dup: float, reorder: float,
                                                 corrupt: float) -> None:
    s = SimScheduler(seed=seed)
    imp = lossy(loss, dup, reorder, corrupt)
    a, b, link = connected_pair(s, imp, imp)
    n_up, n_down = 300_000, 200_000
    server = bulk_server(b, 9000, n_down, seed=seed + 1)
    res = run_task(s, bulk_client(a, "198.18.0.2", 9000, n_up, seed=seed), until=s.now + 600 * NS_PER_S)
    s.run_until(s.now + 5 * NS_PER_S, predicate=lambda: bool(server.results))
    assert res.received == n_down and res.received_sha256 == bulk_digest(n_down, seed + 1)
    (srv_res,) = server.results
    assert srv_res.received == n_up and srv_res.received_sha256 == bulk_digest(n_up, seed)
    assert res.sent_sha256 == srv_res.received_sha256
    drops = link.a_to_b.counters.dropped_total + link.b_to_a.counters.dropped_total
    if loss:
        assert drops > 0  # the scenario really lost frames
