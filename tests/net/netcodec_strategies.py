"""Hypothesis strategies shared by the chimney.net tests (TCP segments, options, link/IP parameters)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from chimney.net.tcp import TcpOptions, TcpSegment

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP4_A = bytes([198, 18, 0, 1])
IP4_B = bytes([198, 19, 255, 2])
# 198.18.0.0/15 mapped into IPv6 (documentation prefix) for the IPv6 variants
IP6_A = bytes.fromhex("20010db8000000000000000000000001")
IP6_B = bytes.fromhex("20010db80000000000000000c6120002")

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
u16 = st.integers(min_value=0, max_value=0xFFFF)
# kinds scapy neither knows nor we: kept verbatim in TcpOptions.unknown
UNKNOWN_KINDS = [k for k in range(6, 254) if k not in (8, 14, 15, 19, 25, 28, 29, 34)]


@st.composite
def scapy_option_lists(draw: Any) -> tuple[list[tuple[Any, Any]], TcpOptions]:
    """A scapy TCP option list (<= 40 bytes encoded) and the TcpOptions we must parse from it."""
    opts: list[tuple[Any, Any]] = []
    exp = TcpOptions()
    unknown: list[tuple[int, bytes]] = []
    budget = 40
    kinds = draw(st.permutations(["MSS", "WScale", "SAckOK", "Timestamp", "SAck", "unk", "unk2", "NOP"]))
    for kind in kinds:
        if not draw(st.booleans()):
            continue
        if kind == "MSS" and budget >= 4:
            v = draw(u16)
            opts.append(("MSS", v))
            exp.mss = v
            budget -= 4
        elif kind == "WScale" and budget >= 3:
            v = draw(st.integers(0, 14))
            opts.append(("WScale", v))
            exp.wscale = v
            budget -= 3
        elif kind == "SAckOK" and budget >= 2:
            opts.append(("SAckOK", b""))
            exp.sack_permitted = True
            budget -= 2
        elif kind == "Timestamp" and budget >= 10:
            a, b = draw(u32), draw(u32)
            opts.append(("Timestamp", (a, b)))
            exp.ts_val, exp.ts_ecr = a, b
            budget -= 10
        elif kind == "SAck" and budget >= 10:
            nblocks = draw(st.integers(1, min(4, (budget - 2) // 8)))
            edges = [draw(u32) for _ in range(2 * nblocks)]
            opts.append(("SAck", tuple(edges)))
            exp.sack_blocks = tuple(zip(edges[0::2], edges[1::2]))
            budget -= 2 + 8 * nblocks
        elif kind in ("unk", "unk2") and budget >= 2:
            k = draw(st.sampled_from(UNKNOWN_KINDS))
            data = draw(st.binary(max_size=min(budget - 2, 12)))
            opts.append((k, data))
            unknown.append((k, data))
            budget -= 2 + len(data)
        elif kind == "NOP" and budget >= 1:
            opts.append(("NOP", None))
            budget -= 1
    exp.unknown = tuple(unknown)
    return opts, exp


@st.composite
def tcp_options(draw: Any) -> TcpOptions | None:
    """TcpOptions our encoder can fit in 40 bytes (its layout: MSS 4, TS 12, WS 4, SACK 4+8n, unknowns)."""
    if draw(st.booleans()):
        return None
    o = TcpOptions()
    used = 0
    if draw(st.booleans()):
        o.mss = draw(u16)
        used += 4
    if draw(st.booleans()):
        o.ts_val, o.ts_ecr = draw(u32), draw(u32)
        used += 12
    o.sack_permitted = draw(st.booleans())
    if o.sack_permitted and o.ts_val is None:
        used += 4
    if draw(st.booleans()):
        o.wscale = draw(st.integers(0, 14))
        used += 4
    room = (40 - used - 4) // 8
    if room >= 1 and draw(st.booleans()):
        n = draw(st.integers(1, min(4, room)))
        o.sack_blocks = tuple((draw(u32), draw(u32)) for _ in range(n))
        used += 4 + 8 * n
    unknown = []
    while 40 - used >= 2 and draw(st.booleans()):
        data = draw(st.binary(max_size=min(40 - used - 2, 10)))
        unknown.append((draw(st.sampled_from(UNKNOWN_KINDS)), data))
        used += 2 + len(data)
    o.unknown = tuple(unknown)
    return o


@st.composite
def tcp_segments(draw: Any, max_payload: int = 1500) -> TcpSegment:
    payload = draw(st.binary(max_size=max_payload))
    return TcpSegment(
        draw(u16), draw(u16), draw(u32), draw(u32), draw(st.integers(0, 255)), draw(u16), payload,
        draw(tcp_options()), draw(u16),
    )


vlan_params = st.one_of(
    st.just((0, 0)),  # R-VLAN-05: no tag
    st.tuples(st.just(0), st.integers(1, 7)),  # priority tag, VID 0
    st.tuples(st.integers(1, 4094), st.integers(0, 7)),
)
