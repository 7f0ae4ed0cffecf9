"""Property: whatever the NBL sizes, loss pattern, host refusals and the moment of the upload, a connection
offloaded to the target and taken back resumes with both byte streams intact (R-OFF-17..22, R-TRM-11..16)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from target_harness import MS, Rig, nbls_of, pattern, sha

from chimney.links.impair import Impairments
from chimney.ndis.status import NdisStatus


@settings(max_examples=12, deadline=None)
@given(
    up_sizes=st.lists(st.integers(1, 40_000), min_size=1, max_size=12),
    down=st.integers(0, 150_000),
    loss=st.sampled_from([0.0, 0.01, 0.05]),
    upload_at_ms=st.integers(0, 40),
    refuse_at_ms=st.one_of(st.none(), st.integers(0, 30)),
    seed=st.integers(0, 1000),
)
def test_offload_and_upload_at_any_point_keeps_streams_intact(
    up_sizes: list[int], down: int, loss: float, upload_at_ms: int, refuse_at_ms: int | None, seed: int
) -> None:
    def imp() -> Impairments:
        return Impairments(rate_bps=200_000_000, delay_ns=1 * MS, loss=loss)

    rig = Rig(to_peer=imp(), to_target=imp(), seed=seed)
    rig.connect()
    pre = pattern(5000, seed)
    rig.host.conn.send(pre, rig.sched.now)  # type: ignore[union-attr]
    rig.host.pump()
    rig.run(2)  # some of it still in flight at the offload
    rig.offload()
    up = b"".join(pattern(n, seed + i) for i, n in enumerate(up_sizes))
    nbls = []
    off = 0
    for n in up_sizes:
        nbls += rig.send(up[off : off + n])
        off += n
    down_data = pattern(down, seed + 99)
    rig.peer.send_stream(down_data)
    if refuse_at_ms is not None and refuse_at_ms < upload_at_ms:
        rig.run(refuse_at_ms)
        rig.host.policy = lambda n: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
        rig.run(upload_at_ms - refuse_at_ms)
    else:
        rig.run(upload_at_ms)
    tree = rig.terminate()
    t = tree.dependent_block_list.dependent_block_list  # type: ignore[union-attr]
    completed = [n for n, st_, _ in rig.host.send_done if st_ == NdisStatus.SUCCESS and n in nbls]
    returned = nbls_of(t.net_buffer_list_chain)
    assert [n for n in nbls if n in completed or n in returned] == nbls  # each NBL accounted for, once
    assert completed + returned == [n for n in nbls if n in completed] + returned
    rig.resume(tree)
    total_up = pre + up
    rig.run(until=lambda: len(rig.peer.received) >= len(total_up) and len(rig.host.received) >= len(down_data))
    assert sha(rig.peer.received) == sha(total_up)
    assert sha(rig.host.received) == sha(down_data)
