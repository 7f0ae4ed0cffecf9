"""The NDIS 5 receive/return scenario matrix: miniport kind x status mode x bound protocols.

Owns `run_matrix(seed)`, the seeded runs behind the tests and `chimney demo`, and their row format.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from chimney.ndis.ndis5.protocols import (
    CopyingProtocol,
    LookaheadProtocol,
    RecordingProtocol,
    RetainingProtocol,
    make_frame,
)
from chimney.ndis.ndis5.rings import RING_CLASSES
from chimney.ndis.ndis5.wrapper import MiniportKind, Ndis5
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_US, SimScheduler

KINDS = (MiniportKind.SERIALIZED, MiniportKind.DESERIALIZED, MiniportKind.CONNECTION_ORIENTED)
MODES = ("SUCCESS", "PENDING", "RESOURCES")
PROTOCOL_COUNTS = (1, 2, 3)


@dataclass(frozen=True)
class ScenarioConfig:
    """How a row is driven: ring geometry, traffic and how long protocols hold packets."""

    ring_size: int
    low_water: int
    bursts: int
    burst_max: int
    burst_gap_ns: int
    hold_ns: tuple[int, int]


CONFIGS: dict[str, ScenarioConfig] = {
    # nobody keeps anything: the ring never runs low
    "SUCCESS": ScenarioConfig(16, 0, 24, 4, 100 * NS_PER_US, (0, 0)),
    # protocols keep packets for a while; the ring is big enough never to need RESOURCES
    "PENDING": ScenarioConfig(64, 0, 24, 4, 100 * NS_PER_US, (20 * NS_PER_US, 400 * NS_PER_US)),
    # protocols hold long, the ring is small: below the low-water mark it indicates RESOURCES
    "RESOURCES": ScenarioConfig(8, 4, 24, 4, 100 * NS_PER_US, (300 * NS_PER_US, 2_000 * NS_PER_US)),
}


@dataclass
class ScenarioResult:
    kind: MiniportKind
    mode: str
    protocols: int
    frames_offered: int = 0
    frames_dropped: int = 0
    indications: int = 0
    packets_indicated: int = 0
    resources_indicated: int = 0
    lent: int = 0  # packets some protocol kept (SUCCESS + promise > 0)
    returned_via_return_packet: int = 0
    returned_at_indicate: int = 0
    reclaimed_resources: int = 0
    returned_after_reclaim: int = 0
    leaked: int = 0
    duplicates: int = 0
    violations: int = 0
    violation_rules: list[str] = field(default_factory=list)
    recycled: int = 0
    lengths_restored: int = 0
    pool_allocations: int = 0
    ring_size: int = 0
    deliveries: int = 0
    missing: int = 0
    corrupt: int = 0
    ndis_return_packets_calls: int = 0
    end_time_ns: int = 0

    @property
    def ok(self) -> bool:
        """Every descriptor came back exactly once, by the path its status called for."""
        accounted = self.returned_via_return_packet + self.returned_at_indicate + self.reclaimed_resources
        return (
            self.leaked == 0
            and self.duplicates == 0
            and self.returned_after_reclaim == 0
            and self.violations == 0
            and self.missing == 0
            and self.corrupt == 0
            and accounted == self.packets_indicated
            and self.recycled == self.packets_indicated
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "miniport": self.kind.value,
            "status": self.mode,
            "protocols": self.protocols,
            "frames offered": self.frames_offered,
            "frames dropped": self.frames_dropped,
            "packets indicated": self.packets_indicated,
            "indicated RESOURCES": self.resources_indicated,
            "kept by protocols": self.lent,
            "via MiniportReturnPacket": self.returned_via_return_packet,
            "back at indicate return": self.returned_at_indicate,
            "reclaimed (RESOURCES)": self.reclaimed_resources,
            "descriptors recycled": self.recycled,
            "pool allocations": self.pool_allocations,
            "leaked": self.leaked,
            "duplicates": self.duplicates,
            "violations": self.violations,
            "corrupt frames": self.corrupt,
            "ok": self.ok,
        }


def _protocols_for(mode: str, kind: MiniportKind, count: int, sched: SimScheduler, label: str) -> list[RecordingProtocol]:
    cfg = CONFIGS[mode]
    out: list[RecordingProtocol] = []
    for i in range(count):
        name = f"{label}/p{i}"
        if mode == "SUCCESS":
            # the last of several connectionless protocols takes the lookahead path (§3.7)
            if i == count - 1 and count > 1 and kind is not MiniportKind.CONNECTION_ORIENTED:
                out.append(LookaheadProtocol(name))
            else:
                out.append(CopyingProtocol(name))
        elif mode == "PENDING":
            if i == 0:
                out.append(RetainingProtocol(name, sched.rng(name), 1.0, cfg.hold_ns, max_promise=2))
            elif i % 2 == 1:
                out.append(RetainingProtocol(name, sched.rng(name), 0.5, cfg.hold_ns, max_promise=1))
            else:
                out.append(CopyingProtocol(name))
        else:
            out.append(RetainingProtocol(name, sched.rng(name), 1.0, cfg.hold_ns, max_promise=2))
    return out


def run_scenario(kind: MiniportKind, mode: str, protocols: int, seed: int) -> ScenarioResult:
    """One row: a ring miniport of `kind`, `protocols` bound protocols, seeded bursts of frames."""
    cfg = CONFIGS[mode]
    label = f"{kind.value}/{mode}/{protocols}"
    sched = SimScheduler(seed)
    verifier = Verifier(Mode.RECORD)
    ndis = Ndis5(sched, verifier)
    ring = RING_CLASSES[kind](f"nic[{label}]", size=cfg.ring_size, low_water=cfg.low_water)
    handle = ndis.m_register_miniport(ring)
    protos = _protocols_for(mode, kind, protocols, sched, label)
    for p in protos:
        b = ndis.open_adapter(p, handle)
        if kind is MiniportKind.CONNECTION_ORIENTED:
            ndis.co_create_vc(b)
    traffic = sched.rng(f"{label}/traffic")
    expected: dict[int, int] = {}
    seq = 0
    for k in range(cfg.bursts):
        burst = []
        for _ in range(traffic.randint(1, cfg.burst_max)):
            frame = make_frame(seq, traffic.randint(46, 1500), traffic)
            expected[seq] = zlib.crc32(frame)
            burst.append(frame)
            seq += 1
        sched.call_at(k * cfg.burst_gap_ns + traffic.randint(0, cfg.burst_gap_ns // 2), ring.receive_frames, burst)
    sched.run_until()

    c = ring.counters
    r = ScenarioResult(kind, mode, protocols)
    r.frames_offered = seq
    r.frames_dropped = c.frames_dropped
    r.indications = c.indications
    r.packets_indicated = c.packets_indicated
    r.resources_indicated = c.resources_indications
    r.lent = handle.kept
    r.returned_via_return_packet = c.returned_via_return_packet
    r.returned_at_indicate = c.returned_at_indicate
    r.reclaimed_resources = c.reclaimed_resources
    r.returned_after_reclaim = c.returned_after_reclaim
    r.leaked = ring.outstanding() + handle.outstanding
    r.duplicates = c.duplicates + verifier.rule_ids().count("R-N5-09")
    r.violations = len(verifier.violations)
    r.violation_rules = sorted(set(verifier.rule_ids()))
    r.recycled = c.recycled
    r.lengths_restored = c.lengths_restored
    r.pool_allocations = c.pool_allocations
    r.ring_size = ring.size
    r.ndis_return_packets_calls = ndis.ndis_return_packets_calls
    r.end_time_ns = sched.now
    deliveries = 0
    for p in protos:
        deliveries += len(p.seen)
        r.corrupt += sum(1 for s, crc in p.seen.items() if expected.get(s) != crc) + p.repeats
    r.deliveries = deliveries
    # connectionless: every protocol sees every indicated frame; CO: each frame reaches one VC client
    want = r.packets_indicated if kind is MiniportKind.CONNECTION_ORIENTED else r.packets_indicated * protocols
    r.missing = want - deliveries
    return r


def run_matrix(seed: int) -> list[ScenarioResult]:
    """All 27 rows: {serialized, deserialized, CO} x {SUCCESS, PENDING, RESOURCES} x {1, 2, 3} protocols."""
    return [
        run_scenario(kind, mode, n, seed)
        for kind in KINDS
        for mode in MODES
        for n in PROTOCOL_COUNTS
    ]


def render_text(results: list[ScenarioResult]) -> str:
    """The matrix as a plain-text table (for `chimney demo` and logs)."""
    cols = [
        ("miniport", 19),
        ("status", 9),
        ("protocols", 9),
        ("packets indicated", 9),
        ("indicated RESOURCES", 9),
        ("kept by protocols", 9),
        ("via MiniportReturnPacket", 9),
        ("back at indicate return", 9),
        ("reclaimed (RESOURCES)", 9),
        ("descriptors recycled", 9),
        ("leaked", 6),
        ("duplicates", 6),
        ("violations", 6),
        ("ok", 5),
    ]
    short = {
        "packets indicated": "indic",
        "indicated RESOURCES": "ind-RES",
        "kept by protocols": "kept",
        "via MiniportReturnPacket": "ret-pkt",
        "back at indicate return": "at-ind",
        "reclaimed (RESOURCES)": "reclaim",
        "descriptors recycled": "recycled",
        "duplicates": "dups",
        "violations": "viol",
        "protocols": "protos",
    }
    lines = [" ".join(short.get(name, name).ljust(w) for name, w in cols).rstrip()]
    for r in results:
        row = r.as_row()
        lines.append(" ".join(str(row[name]).ljust(w) for name, w in cols).rstrip())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(render_text(run_matrix(int(sys.argv[1]) if len(sys.argv) > 1 else 0)), end="")
