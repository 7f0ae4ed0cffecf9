"""The contract verifier: checks made at the NDIS boundary, each naming a rule of the catalogue.

Modes: STRICT raises `ContractViolation` at the first broken rule, RECORD collects violations and
lets the run go on, OFF skips the checks (benchmarks). Every driver model reports through one of these.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from chimney.ndis.rules import Rule, rule


class Mode(Enum):
    STRICT = "strict"
    RECORD = "record"
    OFF = "off"


# Module constants: reading an Enum member off its class costs ~0.3 µs on 3.11, too much per NBL.
MODE_OFF = Mode.OFF
MODE_STRICT = Mode.STRICT


class ContractViolation(Exception):
    """A broken chimney/NDIS contract rule, with the objects involved and a readable explanation."""

    def __init__(self, rule_id: str, message: str, objects: tuple[Any, ...] = ()) -> None:
        self.rule: Rule = rule(rule_id)
        self.rule_id = rule_id
        self.message = message
        self.objects = objects
        super().__init__(self.describe())

    def describe(self) -> str:
        objs = "".join(f"\n  - {o!r}" for o in self.objects)
        return f"{self.rule_id} [{self.rule.level}] {self.message}\n  rule: {self.rule.text}{objs}"


@dataclass
class Verifier:
    """Collects the outcome of every contract check. One per simulated system (`Ndis` owns one)."""

    mode: Mode = Mode.STRICT
    violations: list[ContractViolation] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)  # rule id -> times checked (coverage)

    @property
    def enabled(self) -> bool:
        return self.mode is not MODE_OFF

    def check(self, ok: bool, rule_id: str, message: str, *objects: Any) -> bool:
        """Record that `rule_id` was checked; report a violation when `ok` is false."""
        if self.mode is MODE_OFF:
            return ok
        self.checks[rule_id] += 1
        if not ok:
            self.fail(rule_id, message, *objects)
        return ok

    def fail(self, rule_id: str, message: str, *objects: Any) -> None:
        if self.mode is MODE_OFF:
            return
        v = ContractViolation(rule_id, message, objects)
        self.violations.append(v)
        if self.mode is MODE_STRICT:
            raise v

    def rule_ids(self) -> list[str]:
        return [v.rule_id for v in self.violations]
