"""`chimney netns ...`: set up, inspect and tear down a persistent namespace + TAP for manual runs.
Owns the typer sub-app `app` (up/down/status/exec); the library side is `chimney.links.netns`.

A TAP disappears with the last fd that holds it, so `up` marks it persistent (TUNSETPERSIST) and
exits; the process running our stack later attaches with `TapDevice(tap, netns=name)` and `down`
removes both the TAP and the namespace.
"""

from __future__ import annotations

import shlex
import subprocess

import typer

from chimney.links.netns import (
    DEFAULT_LINUX_ADDR,
    DEFAULT_NS,
    DEFAULT_TAP,
    ImpairmentUnsupported,
    NetNamespace,
    NetnsError,
    check_address,
    configure_linux_side,
    kernel_supports_netns,
    set_netem,
)
from chimney.links.tap import TapDevice

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Namespace + TAP test bed for the real wire")

_NAME = typer.Option(DEFAULT_NS, "--name", "-n", help="network namespace name")
_TAP = typer.Option(DEFAULT_TAP, "--tap", help="TAP interface name inside the namespace")
_CMD = typer.Argument(..., help="command to run inside (put it after --)")


def _fail(msg: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


@app.command()
def up(
    name: str = _NAME,
    tap: str = _TAP,
    addr: str = typer.Option(DEFAULT_LINUX_ADDR, "--addr", help="Linux-side IPv4 address/prefix"),
    addr6: str | None = typer.Option(None, "--addr6", help="Linux-side IPv6 address/prefix (2001:2::/48 only)"),
    mtu: int = typer.Option(1500, "--mtu"),
    netem: str | None = typer.Option(None, "--netem", help='tc netem arguments, e.g. "loss 1% delay 5ms"'),
) -> None:
    """Create namespace NAME with a persistent TAP configured as the Linux end."""
    ok, why = kernel_supports_netns()
    if not ok:
        raise _fail(why)
    try:
        check_address(addr)
        if addr6:
            check_address(addr6)
    except ValueError as e:
        raise _fail(str(e)) from e
    ns = NetNamespace(name, keep=True)
    if ns.exists:
        raise _fail(f"namespace {name!r} already exists (run `chimney netns down --name {name}` first)")
    try:
        ns.create()
        TapDevice(tap, netns=name, persist=True, mtu=mtu).close()
        configure_linux_side(ns, tap, addr, addr6)
        if netem:
            set_netem(ns, tap, netem)
    except (OSError, NetnsError, ValueError) as e:
        # Half-built setups are worse than none: undo everything before reporting.
        try:
            ns.delete()
        except NetnsError as e2:
            typer.echo(f"warning: cleanup failed: {e2}", err=True)
        hint = " (netem unavailable; run without --netem)" if isinstance(e, ImpairmentUnsupported) else ""
        raise _fail(f"{e}{hint}") from e
    typer.echo(f"namespace {name}: {tap} {addr}{' ' + addr6 if addr6 else ''} up (persistent TAP)")


@app.command()
def down(name: str = _NAME, tap: str = _TAP) -> None:
    """Remove the persistent TAP and the namespace."""
    ns = NetNamespace(name)
    if not ns.exists:
        typer.echo(f"namespace {name} does not exist")
        return
    try:
        ns.ip("link", "del", tap, check=False)
        ns.delete()
    except NetnsError as e:
        raise _fail(str(e)) from e
    typer.echo(f"namespace {name} removed")


@app.command()
def status(name: str = _NAME, tap: str = _TAP) -> None:
    """Show the namespace's interfaces, addresses and the TAP's qdisc."""
    ns = NetNamespace(name)
    if not ns.exists:
        typer.echo(f"namespace {name}: absent")
        raise typer.Exit(1)
    typer.echo(f"namespace {name}: present")
    try:
        typer.echo(ns.ip("-br", "addr").stdout.rstrip())
        typer.echo(ns.ip("-d", "link", "show", "dev", tap, check=False).stdout.rstrip())
        typer.echo(ns.tc("qdisc", "show", "dev", tap, check=False).stdout.rstrip())
    except NetnsError as e:
        raise _fail(str(e)) from e


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    cmd: list[str] = _CMD,
    name: str = _NAME,
    timeout: float = typer.Option(60.0, "--timeout", help="kill the command after this many seconds"),
) -> None:
    """Run CMD inside the namespace and exit with its status."""
    ns = NetNamespace(name)
    if not ns.exists:
        raise _fail(f"namespace {name} does not exist")
    try:
        cp = subprocess.run(["ip", "netns", "exec", name, *cmd], timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise _fail(f"{shlex.join(cmd)} timed out after {timeout} s", 124) from e
    except FileNotFoundError as e:
        raise _fail(str(e), 127) from e
    raise typer.Exit(cp.returncode)
