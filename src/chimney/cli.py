"""The `chimney` command line: the demo, benchmarks and tools.

Each subcommand is a thin shell over library functions, so everything it shows is scriptable too.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich import box
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
    pcap: Annotated[Path | None, typer.Option("--pcap", help="Write the wire as pcapng, one comment per frame.")] = None,
    receive_paths: bool = typer.Option(
        False, "--receive-paths", help="Run the NDIS 5.x / NDIS 6 receive-path scenarios instead."),
) -> None:
    """Two simulated hosts on a lossy link: connections offloaded to the target mid-transfer, uploaded (by
    the host, at the target's request, by a hardware reset), offloaded again and closed, all under the
    NDIS contract verifier. Exit status 1 on a sha256 mismatch, a violation or a leak."""
    if receive_paths:
        from chimney.demo import run_receive_paths

        report = run_receive_paths(seed)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_receive_report(report)
        if not report["ok"]:
            raise typer.Exit(1)
        return
    from chimney.demo import run_offload_demo

    t0 = time.perf_counter()
    try:
        report = run_offload_demo(seed, pcap)
    except OSError as e:  # e.g. the capture file cannot be written
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    wall = time.perf_counter() - t0
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_offload_report(report, wall)
    if not report["ok"]:
        raise typer.Exit(1)


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120)


def _print_offload_report(r: dict[str, Any], wall_s: float) -> None:
    console = _console()
    w = r["wire"]
    console.print(
        f"[bold]tcp-chimney offload demo[/] (seed {r['seed']}): host A (offload target under NDIS) serves "
        f"{r['connections']} connections from host B over {w['rate_mbps']:g} Mbit/s, {w['delay_us']:g} µs, "
        f"{w['loss'] * 100:g}% loss each way"
    )
    t = Table(title="Transfers (application bytes, sha256 checked at both ends)")
    for c in ("conn", "A->B bytes", "sha256 A->B", "B->A bytes", "sha256 B->A", "match"):
        t.add_column(c, justify="right" if "bytes" in c or c == "conn" else "left")
    for c in r["per_connection"]:
        t.add_row(str(c["conn"]), f"{c['bytes_a_to_b']:,}", c["sha256_a_to_b"][:16] + "…", f"{c['bytes_b_to_a']:,}",
                  c["sha256_b_to_a"][:16] + "…", "[green]yes[/]" if c["sha256_match"] else "[red]NO[/]")
    t.add_row("all", f"{r['bytes_a_to_b']:,}", "", f"{r['bytes_b_to_a']:,}", "",
              "[green]yes[/]" if r["sha256_match"] else "[red]NO[/]", end_section=True)
    console.print(t)

    t = Table(title="Timeline (simulated ms)")
    for c in ("t ms", "conn", "event", "detail"):
        t.add_column(c, justify="right" if c in ("t ms", "conn") else "left")
    rows = [(e["t_ms"], 1, str(e["conn"]), e["event"], e["detail"]) for e in r["events"]]
    rows += [(a["t_ms"], 0, str(a["conn"] or "all"), f"[yellow]{a['action']}[/]", a["how"]) for a in r["scripted"]]
    for t_ms, _, conn, ev, detail in sorted(rows, key=lambda x: (x[0], x[1])):
        t.add_row(f"{t_ms:.3f}", conn, ev, detail)
    console.print(t)

    t = Table(title=f"Offloads ({r['offloads']}) and uploads ({r['uploads']}) by cause")
    t.add_column("kind")
    t.add_column("cause")
    t.add_column("count", justify="right")
    for cause, n in r["offloads_by_cause"].items():
        t.add_row("offload", cause, str(n))
    for name, n in r["initiate_results"].items():
        if name != "SUCCESS":
            t.add_row("offload refused", f"initiate node status {name} (connection stays in the host)", str(n))
    for cause, n in r["uploads_by_cause"].items():
        t.add_row("upload", cause, str(n))
    console.print(t)

    n = r["nbls"]
    t = Table(title="Chimney NBLs")
    t.add_column("what")
    t.add_column("count", justify="right")
    for label, key in (
        ("send NBLs posted (NdisOffloadTcpSend)", "send_posted"),
        ("  completed SUCCESS (NdisTcpOffloadSendComplete)", "send_completed"),
        ("  completed UPLOAD_IN_PROGRESS (re-sent by the host)", "send_completed_upload_in_progress"),
        ("  completed out of order", "send_completed_out_of_order"),
        ("receive NBLs indicated (NdisTcpOffloadReceiveHandler)", "indicated"),
        ("  refused by the host", "indications_refused"),
        ("  returned (NdisOffloadTcpReceiveReturn)", "returned"),
        ("  held by the host at the end", "held_by_host_at_end"),
        ("indication NBLs allocated from the pool", "allocated"),
        ("indication NBLs recycled (reused)", "recycled"),
    ):
        t.add_row(label, f"{n[key]:,}")
    console.print(t)

    t = Table(title="Goodput per phase (simulated time; both directions, per connection)")
    for c in ("phase", "bytes delivered", "connection-ms", "Mbit/s per connection"):
        t.add_column(c, justify="left" if c == "phase" else "right")
    for ph, g in r["goodput"].items():
        if g["bytes"] or g["conn_ms"]:
            t.add_row(ph, f"{g['bytes']:,}", str(g["conn_ms"]), f"{g['mbps_per_conn']:.1f}")
    console.print(t)
    ns = r.get("netstat")
    if ns:
        t = Table(title=f"netstat of host A at {ns['t_ms']:.3f} ms (offloaded rows: the target's live values, "
                        "NdisQueryOffloadState)", box=box.SIMPLE_HEAD, pad_edge=False)
        for c in ("local", "remote", "state", "from", "SndUna", "SndNxt", "RcvNxt", "cwnd", "SRtt ms"):
            t.add_column(c, justify="right" if c[0].isupper() or c == "cwnd" else "left", no_wrap=True)
        for row in ns["rows"]:
            t.add_row(row["local"], row["remote"], row["state"], row["source"],
                      str(row["snd_una"]), str(row["snd_nxt"]), str(row["rcv_nxt"]), f"{row['cwnd']:,}",
                      "-" if row["srtt_ms"] is None else f"{row['srtt_ms']:.2f}")
        console.print(t)
    drops = "; ".join(
        f"{d.replace('_to_', '->').upper()} " + (", ".join(f"{n} {c}" for c, n in causes.items()) or "none")
        for d, causes in r["link_drops"].items()
    )
    console.print(
        f"transfer {r['transfer_ms']:.1f} ms simulated, {r['aggregate_mbps']:.1f} Mbit/s both ways; "
        f"frames dropped on the link: {drops}; {wall_s:.1f} s wall clock"
    )
    if "pcap" in r:
        console.print(f"pcapng: {r['pcap']['path']} ({r['pcap']['packets']} frames, comments per frame)")
    ok = r["ok"]
    verdict = "[green]OK[/]" if ok else "[red]FAILED[/]"
    console.print(
        f"{verdict}: sha256 {'match' if r['sha256_match'] else 'MISMATCH'}, "
        f"{r['verifier_violations']} verifier violations, {r['nbl_leaks']} NBL leaks"
    )
    for v in r["violation_rules"]:
        console.print(f"  [red]{v}[/]")
    if r["offloaded_at_end"]:
        console.print(f"[red]{r['offloaded_at_end']} connection(s) never handed back by the target:[/]")
        for line in r["offloaded_at_end_detail"]:
            console.print(f"  {line}")
    if r["leak_report"]:
        console.print(r["leak_report"])


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
def serve(
    app_spec: str = typer.Option("http", "--app", help="echo | discard | http | http:DIR (files of DIR, and /bytes/N)."),
    offload: str = typer.Option("always", "--offload", help="Offload policy: never | always | after-bytes:N | after-ms:N."),
    port: int | None = typer.Option(None, "--port", help="TCP port (default: echo 7, discard 9, http 80)."),
    netns: str = typer.Option("chimney", "--netns", help="Name of the network namespace created for Linux."),
    tap: str = typer.Option("chimney0", "--tap", help="TAP interface name inside the namespace."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after S seconds (default: until Ctrl-C)."),
    linux_addr: str = typer.Option("198.18.0.1/24", "--linux-addr", help="Linux side address/prefix (198.18.0.0/15)."),
    our_addr: str = typer.Option("198.18.0.2", "--our-addr", help="Our stack's address (198.18.0.0/15)."),
    ims: int = typer.Option(0, "--ims", help="Pass-through chimney IMs between the host and the target."),
    monitor: bool = typer.Option(False, "--monitor", help="A monitoring IM on top of them (summary at exit)."),
    pcap: Annotated[Path | None, typer.Option("--pcap", help="Capture the TAP side (FILE.pcap or pcapng).")] = None,
    as_json: bool = typer.Option(False, "--json", help="End with the summary as one JSON line."),
) -> None:
    """Serve an app from our host stack with the offload target on a real wire: a TAP facing Linux in a
    namespace created for the purpose (removed on exit). Prints every offload and upload as it happens."""
    from chimney.links.netns import NetnsError, check_address, kernel_supports_netns
    from chimney.serve import ServeOptions, parse_app, parse_policy
    from chimney.serve import serve as run_serve

    try:
        name, root = parse_app(app_spec)
        parse_policy(offload)
        check_address(linux_addr)
        check_address(our_addr)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    ok, why = kernel_supports_netns()
    if not ok:
        typer.echo(f"error: {why}", err=True)
        raise typer.Exit(2)
    opts = ServeOptions(app=name, root=root, policy=offload, port=port, netns=netns, tap=tap, duration_s=duration,
                        linux_addr=linux_addr, our_addr=our_addr, ims=ims, monitor=monitor, pcap=pcap)
    try:
        opts.check()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e

    def emit(line: str) -> None:
        print(line, flush=True)  # line by line even into a pipe: the events are the point

    try:
        summary = run_serve(opts, emit)
    except (NetnsError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    d = summary.as_dict()
    emit(f"{d['connections']} connection(s), {d['offloads']} offload(s), {d['uploads']} upload(s); the target sent "
         f"{d['offloaded_segments_out']} offloaded segments ({d['offloaded_payload_out']:,} payload bytes) of "
         f"{d['target_tx_frames']} frames; {d['verifier_violations']} verifier violations; "
         f"NBL leaks: {d['leaks'] or 'none'}")
    for v in d["violation_rules"]:
        emit(f"  {v}")
    for problem in d["im_problems"]:
        emit(f"  IM: {problem}")
    if as_json:
        emit(json.dumps(d, sort_keys=True))
    if d["verifier_violations"] or d["leaks"] or d["im_problems"]:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Benchmark name: a file bench/bench_<name>.py (see `chimney benchmarks`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result dictionary of run() as JSON."),
    quick: bool = typer.Option(False, "--quick", help="Shorter run (noisier figures)."),
) -> None:
    """Run a benchmark from bench/: it prints its figures and the ratios to its same-run reference.

    Extra arguments are passed to the benchmark script (e.g. `chimney bench offload -- 8`)."""
    path = BENCH_DIR / f"bench_{name}.py"
    if not path.exists():
        raise typer.BadParameter(f"no benchmark {name!r} (looked for {path}); see `chimney benchmarks`")
    if as_json:
        mod = _load_bench(name)
        typer.echo(json.dumps(mod.run(quick), indent=2, default=str))
        return
    import subprocess

    argv = [sys.executable, str(path), *(["--quick"] if quick else []), *ctx.args]
    raise typer.Exit(subprocess.call(argv))


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


def _register_packetdrill() -> None:
    """`chimney packetdrill`, when its module imports cleanly (the rest of the CLI works either way)."""
    try:
        from chimney.cli_packetdrill import packetdrill
    except Exception:  # a broken optional command must not take the CLI down
        return
    app.command("packetdrill")(packetdrill)


_register_packetdrill()


def _register_conformance() -> None:
    """`chimney verify` (conformance battery for any offload target) and `chimney rules` (coverage)."""
    from chimney.cli_verify import rules, verify

    app.command(help="Run the conformance battery against an offload target (MODULE:CLASS or FILE.py:CLASS).")(verify)
    app.command(help="Print the contract rule catalogue with where each rule is enforced or tested.")(rules)


_register_conformance()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
