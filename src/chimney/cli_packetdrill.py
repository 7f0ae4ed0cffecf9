"""`chimney packetdrill`: run packetdrill scripts against the stack in simulated time.

Registered by the lead in `chimney.cli` (`app.command("packetdrill")(packetdrill)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chimney.packetdrill.harness import PROFILES
from chimney.packetdrill.junit import write_junit
from chimney.packetdrill.report import format_suite, run_suite


def packetdrill(
    scripts: Annotated[list[Path], typer.Argument(help="Script files (.pkt) or directories searched for *.pkt.")],
    mode: Annotated[str, typer.Option(help="host, offload or both (both also reports outbound differences: those a script states "
                                  "with @host/@offload lines, e.g. the R-TMR-04 ACK flushed at offload, as expected).")] = "host",
    seed: Annotated[int, typer.Option(help="Seed of the simulation (ISNs, ephemeral ports).")] = 1,
    tolerance_usecs: Annotated[int | None, typer.Option(
        "--tolerance-usecs", "--tolerance_usecs", help="Timing tolerance (default 4000; a script's own wins).")] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write JUnit XML to this file.")] = None,
    profile: Annotated[str | None, typer.Option(
        help="Stack defaults: rfc (ours) or linux (linux_profile()); default the script's --profile or rfc.")] = None,
) -> None:
    """Run packetdrill scripts; prints pass/fail/unsupported per script and `N passed, N failed, N unsupported`."""
    if mode not in ("host", "offload", "both"):
        raise typer.BadParameter(f"mode must be host, offload or both, not {mode!r}")
    if profile is not None and profile not in PROFILES:
        raise typer.BadParameter(f"profile must be one of {', '.join(PROFILES)}")
    suite = run_suite(scripts, mode=mode, seed=seed, tolerance_usecs=tolerance_usecs, profile=profile)
    typer.echo(format_suite(suite))
    if junit is not None:
        write_junit(suite, junit)
    if not suite.ok:
        raise typer.Exit(1)


__all__ = ["packetdrill"]
