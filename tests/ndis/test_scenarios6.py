"""The NDIS 6 receive scenarios behind `chimney demo`: clean runs are clean, broken protocols are caught."""

from __future__ import annotations

from typing import Any

import pytest

from chimney.ndis import scenarios6
from chimney.ndis.buffers import NetBufferList
from chimney.ndis.scenarios6 import MODES, run_ndis6_matrix, run_ndis6_scenario


def test_every_row_returns_every_nbl_once_without_leaks_or_violations() -> None:
    rows = run_ndis6_matrix(seed=3)
    assert len(rows) == 9
    assert all(r.ok for r in rows), [r.as_row() for r in rows if not r.ok]
    low = [r for r in rows if r.mode == "RESOURCES when low"]
    assert all(r.resources_frames > 0 for r in low)  # the ring really ran low and kept its NBLs
    assert all(r.recycled == r.returned for r in rows)


def test_same_seed_same_rows() -> None:
    assert [r.as_row() for r in run_ndis6_matrix(5)] == [r.as_row() for r in run_ndis6_matrix(5)]


def test_a_protocol_that_never_returns_an_nbl_shows_up_as_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    original = scenarios6.HoldingProtocol._give_back
    kept: list[NetBufferList] = []

    def forgetful(self: Any, binding_context: Any, nbl: NetBufferList) -> None:
        if not kept:
            kept.append(nbl)  # swallow the first chain it was meant to return
            self.held -= 1
            return
        original(self, binding_context, nbl)

    monkeypatch.setattr(scenarios6.HoldingProtocol, "_give_back", forgetful)
    r = run_ndis6_scenario(1, "protocols hold", seed=1)
    assert not r.ok and r.leaked >= 1


def test_modes_cover_lend_hold_and_resources() -> None:
    assert set(MODES) == {"returned at once", "protocols hold", "RESOURCES when low"}
