"""`chimney serve` option parsing: the offload policy spelling and the app spec, refused clearly when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimney.host.policy import PolicyMode
from chimney.serve import parse_app, parse_policy
from chimney.sim.scheduler import NS_PER_MS


def test_policy_spellings_map_to_the_manager_policies() -> None:
    assert parse_policy("never").mode is PolicyMode.NEVER
    assert parse_policy("always").mode is PolicyMode.ESTABLISHED
    p = parse_policy("after-bytes:65536")
    assert p.mode is PolicyMode.AFTER_BYTES and p.after_bytes == 65536
    p = parse_policy("After-MS:250")
    assert p.mode is PolicyMode.AFTER_TIME and p.after_ns == 250 * NS_PER_MS


@pytest.mark.parametrize("bad", ["sometimes", "after-bytes", "after-bytes:", "after-bytes:-1", "after-ms:1.5",
                                 "after-kb:3", ""])
def test_bad_policies_are_refused_with_the_accepted_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=r"never, always, after-bytes:N or after-ms:N|non-negative integer"):
        parse_policy(bad)


def test_app_specs(tmp_path: Path) -> None:
    assert parse_app("echo") == ("echo", None)
    assert parse_app("discard") == ("discard", None)
    assert parse_app("http") == ("http", None)
    assert parse_app(f"http:{tmp_path}") == ("http", tmp_path)
    for bad in ("ftp", "echo:/tmp", f"http:{tmp_path / 'missing'}"):
        with pytest.raises(ValueError):
            parse_app(bad)
