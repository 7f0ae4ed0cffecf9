"""Receive header prediction (HostIp.input_frame_csum -> HostTcp.gro_extend) against the ordinary path.
A predicted run keeps only payloads; whatever ends or interrupts it, the engine must see the same."""

from __future__ import annotations

import pytest
from test_host_vnet import _acks, _complete_sum, _gro_frames, _pair


def _ttl_changed(frame: bytes) -> bytes:
    """The same frame with another IPv4 TTL (header checksum fixed): prediction misses, GRO still merges."""
    f = bytearray(frame)
    f[22] -= 1
    f[24:26] = b"\0\0"
    s = sum(int.from_bytes(f[i : i + 2], "big") for i in range(14, 34, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    f[24:26] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(f)


def _run(frames_kw: dict[str, int], predicted: bool, ttl_at: int | None) -> tuple[bytes, list[int], int, int, bytes]:
    p = _pair()
    p.ifb.rx_batched = True
    data, frames = _gro_frames(p, 24, **frames_kw)  # type: ignore[arg-type]
    if ttl_at is not None:
        frames[ttl_at] = _ttl_changed(frames[ttl_at])
    for f in frames:
        if predicted:
            p.b.ip.input_frame_csum(p.ifb, memoryview(f), _complete_sum(f))
        else:
            p.b.ip.input_frame(p.ifb, f)
    p.b.ip.drain_end()
    c = p.b.tcp.counters
    return p.drain_server(), _acks(p.b_out), c.gro_merged, c.segs_in, data


@pytest.mark.parametrize(
    ("frames_kw", "ttl_at"),
    [({}, None), ({"psh_at": 9}, None), ({"ts_change_at": 9}, None), ({}, 7), ({"psh_at": 23}, 12)],
    ids=["one-run", "psh-mid-run", "timestamp-tick", "unpredicted-but-mergeable", "psh-last-and-ttl"],
)
def test_a_predicted_run_reaches_the_engine_exactly_as_the_parsed_one(frames_kw: dict[str, int],
                                                                       ttl_at: int | None) -> None:
    got, acks, merged, segs, data = _run(frames_kw, True, ttl_at)
    ref = _run(frames_kw, False, ttl_at)
    assert got == data == ref[0]
    assert acks == ref[1]
    assert merged == ref[2] and merged > 0
    assert segs == ref[3]
