"""Shared pytest configuration: hypothesis profiles and the verifier fixture every test can use."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from chimney.ndis.verifier import Mode, Verifier

settings.register_profile(
    "default", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def verifier() -> Verifier:
    """A strict verifier: any contract violation raises ContractViolation with its rule id."""
    return Verifier(Mode.STRICT)
