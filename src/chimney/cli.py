"""The `chimney` command line: the demo, scenarios, benchmarks and tools.

Each subcommand is a thin shell over library functions, so everything it shows is scriptable too.
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tcp-chimney: NDIS TCP Chimney Offload in Python")


@app.callback()
def _root() -> None:
    """tcp-chimney command line."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
