"""What `chimney demo` runs and reports: composed from the scenario modules of each layer.

Returns plain dictionaries so the CLI can print tables or JSON and tests can assert on them.
"""

from __future__ import annotations

from typing import Any

from chimney.ndis.ndis5.scenarios import run_matrix
from chimney.ndis.scenarios6 import run_ndis6_matrix


def run_receive_paths(seed: int) -> dict[str, Any]:
    """NDIS 5.x packet-return matrix and NDIS 6 NBL-return scenarios, both under the verifier."""
    n5 = run_matrix(seed)
    n6 = run_ndis6_matrix(seed)
    violations = sum(r.violations for r in n5) + sum(r.violations for r in n6)
    leaks = sum(r.leaked for r in n5) + sum(r.leaked for r in n6)
    return {
        "seed": seed,
        "ndis5_matrix": [r.as_row() for r in n5],
        "ndis6": [r.as_row() for r in n6],
        "violations": violations,
        "leaks": leaks,
        "ok": all(r.ok for r in n5) and all(r.ok for r in n6),
    }
