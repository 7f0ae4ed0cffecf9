"""The `chimney` command line: the demo, benchmarks and tools.

Each subcommand is a thin shell over library functions, so everything it shows is scriptable too.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from chimney.cli_netns import app as netns_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tcp-chimney: NDIS TCP Chimney Offload in Python")
app.add_typer(netns_app, name="netns", help="Create and remove the network namespace + TAP used with a Linux peer.")

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@app.callback()
def _root() -> None:
    """tcp-chimney command line."""


@app.command()
def demo(
    seed: int = typer.Option(1, help="Seed of the deterministic simulation; the same seed gives the same run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Run the receive-path scenarios (NDIS 5.x packet return, NDIS 6 NBL return) under the verifier."""
    from chimney.demo import run_receive_paths

    report = run_receive_paths(seed)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_receive_report(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _print_receive_report(report: dict[str, Any]) -> None:
    console = Console(width=None if sys.stdout.isatty() else 170)
    rows = report["ndis5_matrix"]
    t = Table(title=f"NDIS 5.x receive/return matrix (seed {report['seed']})", show_lines=False)
    keys = [
        "miniport", "status", "protocols", "packets indicated", "indicated RESOURCES", "kept by protocols",
        "via MiniportReturnPacket", "reclaimed (RESOURCES)", "descriptors recycled", "leaked", "duplicates",
        "violations",
    ]
    for k in keys:
        t.add_column(k, justify="left" if k in ("miniport", "status") else "right", overflow="fold")
    for r in rows:
        t.add_row(*(str(r[k]) for k in keys))
    console.print(t)
    t6 = Table(title="NDIS 6 receive path (NdisMIndicateReceiveNetBufferLists / MiniportReturnNetBufferLists)")
    keys6 = ["flags", "protocols", "nbls indicated", "indicated RESOURCES", "returned to miniport", "recycled",
             "pool allocations", "leaked", "duplicates", "lost frames", "violations"]
    for k in keys6:
        t6.add_column(k, justify="left" if k == "flags" else "right", no_wrap=k == "flags")
    for r in report["ndis6"]:
        t6.add_row(*(str(r[k]) for k in keys6))
    console.print(t6)
    verdict = "[green]all descriptors returned exactly once, no leaks, no violations[/]" if report["ok"] else (
        "[red]FAILED[/]")
    console.print(f"{verdict}  ({report['violations']} violations, {report['leaks']} leaks)")


@app.command()
def bench(
    name: str = typer.Argument(..., help="Benchmark name: a file bench/bench_<name>.py (e.g. codec, nbl_roundtrip, tap)."),
    quick: bool = typer.Option(False, help="Shorter run (noisier figures)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result dictionary as JSON."),
) -> None:
    """Run a benchmark from bench/ and print its figures and ratios."""
    mod = _load_bench(name)
    result = mod.run(quick)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))


@app.command("benchmarks")
def list_benchmarks() -> None:
    """List the benchmarks `chimney bench NAME` can run."""
    for p in sorted(BENCH_DIR.glob("bench_*.py")):
        typer.echo(p.stem.removeprefix("bench_"))


def _load_bench(name: str) -> ModuleType:
    path = BENCH_DIR / f"bench_{name}.py"
    if not path.exists():
        raise typer.BadParameter(f"no benchmark {name!r} (looked for {path}); see `chimney benchmarks`")
    spec = importlib.util.spec_from_file_location(f"chimney_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    if not hasattr(mod, "run"):
        raise typer.BadParameter(f"{path} has no run(quick) function")
    return mod


def main() -> None:
    app()


if __name__ == "__main__":
    main()
