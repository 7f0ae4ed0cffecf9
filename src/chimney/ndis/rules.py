"""The rule catalogue of the chimney contract (R-AREA-nn), loaded from the digest's rule list.

The verifier, the tests and `chimney rules` refer to rules by id; this module is the one source.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    area: str
    level: str  # MUST, MUST NOT, SHOULD, SHOULD NOT, MAY
    side: str  # "target" or "host" (HOST-INVARIANT)
    text: str
    source: str

    @property
    def mandatory(self) -> bool:
        return self.level in ("MUST", "MUST NOT")


@cache
def catalogue() -> dict[str, Rule]:
    text = resources.files("chimney.ndis").joinpath("rules.tsv").read_text(encoding="utf-8")
    rules: dict[str, Rule] = {}
    for line in text.splitlines()[1:]:
        rid, area, level, side, body, source = line.split("\t")
        rules[rid] = Rule(rid, area, level, side, body, source)
    return rules


def rule(rule_id: str) -> Rule:
    try:
        return catalogue()[rule_id]
    except KeyError:
        raise KeyError(f"unknown contract rule {rule_id!r}") from None
