"""The contract verifier: checks made at the NDIS boundary, each naming a rule of the catalogue.

Modes: STRICT raises `ContractViolation` at the first broken rule, RECORD collects violations and
lets the run go on, OFF skips the checks (benchmarks). Every driver model reports through one of these.
"""

from __future__ import annotations

from collections import Counter
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


# Hot-path coverage: the per-crossing NBL rules count into a plain list (an indexed int add costs a
# fraction of a Counter update on 3.11); `Verifier.checks` folds them in whenever it is read.
HOT_RULES = ("R-NBL-01", "R-NBL-02", "R-NBL-03")
COV_NBL_01, COV_NBL_02, COV_NBL_03 = range(3)


class Verifier:
    """Collects the outcome of every contract check. One per simulated system (`Ndis` owns one).

    `checks` (rule id -> times checked, for coverage) is always complete when read: hot paths count
    into `hot` (indexed like HOT_RULES) or through `count()`, and reading `checks` folds those in."""

    __slots__ = ("_checks", "_pending", "hot", "mode", "violations")

    def __init__(
        self,
        mode: Mode = Mode.STRICT,
        violations: list[ContractViolation] | None = None,
        checks: Counter[str] | None = None,
    ) -> None:
        self.mode = mode
        self.violations: list[ContractViolation] = [] if violations is None else violations
        self._checks: Counter[str] = Counter() if checks is None else checks
        self._pending: dict[str, int] = {}  # plain dict: its += is specialised, a Counter's is not
        self.hot: list[int] = [0] * len(HOT_RULES)

    def __repr__(self) -> str:
        return f"Verifier(mode={self.mode}, violations={self.violations!r}, checks={self.checks!r})"

    @property
    def checks(self) -> Counter[str]:
        """Rule id -> times checked (coverage), including the counts still pending on hot paths."""
        checks = self._checks
        hot = self.hot
        for i, n in enumerate(hot):
            if n:
                checks[HOT_RULES[i]] += n
                hot[i] = 0
        pending = self._pending
        if pending:
            for rule_id, n in pending.items():
                checks[rule_id] += n
            pending.clear()
        return checks

    @checks.setter
    def checks(self, value: Counter[str]) -> None:
        self.hot[:] = [0] * len(HOT_RULES)
        self._pending.clear()
        self._checks = value

    @property
    def enabled(self) -> bool:
        return self.mode is not MODE_OFF

    def count(self, rule_id: str) -> None:
        """Record one check of `rule_id` (coverage) without a verdict; cheap enough for per-chain use."""
        pending = self._pending
        try:
            pending[rule_id] += 1
        except KeyError:
            pending[rule_id] = 1

    def check(self, ok: bool, rule_id: str, message: str, *objects: Any) -> bool:
        """Record that `rule_id` was checked; report a violation when `ok` is false."""
        if self.mode is MODE_OFF:
            return ok
        self.count(rule_id)
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
