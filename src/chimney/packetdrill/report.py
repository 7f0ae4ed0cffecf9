"""Running script files and reporting: per-script pass/fail/unsupported lines, the first mismatch,
why an offload run kept a connection on the host ("stayed on host: <reason>") or never offloaded one
("never offloaded: <reason>"), the summary line `N passed, N failed, N unsupported`, and the
host-vs-offload outbound diff (differences the script states with `@host`/`@offload` lines, such as the
R-TMR-04 ACK flushed at offload, are reported as expected, not as mismatches).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chimney.packetdrill.interp import Runner, ScriptResult
from chimney.packetdrill.parser import ParseError, parse_file


@dataclass
class SuiteResult:
    results: list[ScriptResult] = field(default_factory=list)
    mode_diffs: dict[str, list[str]] = field(default_factory=dict)  # script -> differing outbound lines
    # script -> outbound lines only one mode sends, as the script expects (`@host` / `@offload`), with why
    expected_diffs: dict[str, list[str]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count("fail") == 0

    def summary(self) -> str:
        s = f"{self.count('pass')} passed, {self.count('fail')} failed, {self.count('unsupported')} unsupported"
        kept = sum(1 for r in self.results if r.stayed_on_host)
        never = sum(1 for r in self.results if r.never_offloaded)
        extra = [f"{kept} offload runs stayed on host"] if kept else []
        extra += [f"{never} offload runs never offloaded a connection"] if never else []
        extra += [f"{len(self.expected_diffs)} expected mode differences"] if self.expected_diffs else []
        return s + (f" ({'; '.join(extra)})" if extra else "")


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories searched recursively for *.pkt (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.pkt")))
        else:
            out.append(p)
    return out


def run_file(path: str | Path, *, mode: str = "host", seed: int = 1, tolerance_usecs: int | None = None,
             profile: str | None = None) -> ScriptResult:
    try:
        script = parse_file(str(path))
    except ParseError as e:
        return ScriptResult(str(path), mode, "fail", str(e), e.line)
    except OSError as e:
        return ScriptResult(str(path), mode, "fail", f"cannot read script: {e}")
    try:
        runner = Runner(script, mode=mode, seed=seed, tolerance_usecs=tolerance_usecs, profile=profile)
    except ValueError as e:
        return ScriptResult(str(path), mode, "fail", f"bad script option: {e}")
    return runner.run()


def run_suite(paths: Iterable[str | Path], *, mode: str = "host", seed: int = 1,
              tolerance_usecs: int | None = None, profile: str | None = None) -> SuiteResult:
    """`mode` "host", "offload" or "both" (each script runs in both modes; outbound differences noted)."""
    modes = ["host", "offload"] if mode == "both" else [mode]
    suite = SuiteResult()
    for path in expand(paths):
        per_mode = [run_file(path, mode=m, seed=seed, tolerance_usecs=tolerance_usecs, profile=profile)
                    for m in modes]
        suite.results.extend(per_mode)
        if len(per_mode) == 2 and all(r.status != "unsupported" for r in per_mode):
            host, off = per_mode
            diff = outbound_diff(_common(host), _common(off))
            if diff:
                suite.mode_diffs[str(path)] = diff
            expected = [f"host: {why}" for why in host.mode_only.values()]
            expected += [f"offload: {why}" for why in off.mode_only.values()]
            if expected:
                suite.expected_diffs[str(path)] = expected
    return suite


def _common(r: ScriptResult) -> list[str]:
    """The outbound lines both modes are expected to send (those matched by `@mode` lines left out)."""
    return [line for i, line in enumerate(r.outbound) if i not in r.mode_only]


def outbound_diff(a: list[str], b: list[str]) -> list[str]:
    """Outbound segments that differ between two runs (index, host line, offload line)."""
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "(none)"
        y = b[i] if i < len(b) else "(none)"
        if x != y:
            out.append(f"#{i + 1}: host {x} | offload {y}")
    return out


def format_result(r: ScriptResult, verbose: bool = False) -> str:
    tag = {"pass": "PASS", "fail": "FAIL", "unsupported": "UNSUPPORTED"}[r.status]
    lines = [f"{tag:<11} {r.path} [{r.mode}]" + (f"  {r.message}" if r.status == "unsupported" else "")]
    lines.extend(f"    stayed on host: {why}" for why in dict.fromkeys(r.stayed_on_host))
    lines.extend(f"    never offloaded: {why}" for why in r.never_offloaded)
    if r.status == "fail":
        lines.extend("    " + m for m in r.message.split("\n"))
    if verbose:
        lines.extend(f"    note: {n}" for n in r.notes)
    return "\n".join(lines)


def format_suite(s: SuiteResult, verbose: bool = False) -> str:
    out = [format_result(r, verbose) for r in s.results]
    for path, why in s.expected_diffs.items():
        out.append(f"EXPECTED DIFF {path}")
        out.extend("    " + w for w in why)
    for path, diff in s.mode_diffs.items():
        out.append(f"MODE DIFF   {path}")
        out.extend("    " + d for d in diff)
    out.append(s.summary())
    return "\n".join(out)


__all__ = ["SuiteResult", "expand", "format_result", "format_suite", "outbound_diff", "run_file", "run_suite"]
