"""Conformance kit for offload targets: a scenario battery run against a user's miniport class with the host
stack and the contract verifier (RECORD mode, ChimneyChecks) as counterpart; backs `chimney verify`/`rules`.
"""

from chimney.conformance.harness import ConformanceChecks, TargetFactory, build_pair, load_target
from chimney.conformance.runner import RuleResult, ScenarioResult, VerifyReport, run_battery
from chimney.conformance.scenarios import SCENARIOS, Bench, Scenario

__all__ = [
    "SCENARIOS",
    "Bench",
    "ConformanceChecks",
    "RuleResult",
    "Scenario",
    "ScenarioResult",
    "TargetFactory",
    "VerifyReport",
    "build_pair",
    "load_target",
    "run_battery",
]
