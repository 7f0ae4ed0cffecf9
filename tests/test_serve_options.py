"""`chimney serve` options: the offload policy spelling and the app spec, refused clearly when wrong; the
TAP host's binding through pass-through IMs and the monitor (`--ims N --monitor`), and `serve` with them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chimney.filters.passthrough import PassThroughChimneyIm
from chimney.host import apps
from chimney.host.apps import bulk_digest
from chimney.host.chimney import HostChimneyChecks
from chimney.host.policy import OffloadPolicy, PolicyMode
from chimney.host.stack import HostStack
from chimney.links.impair import Impairments
from chimney.links.netns import kernel_supports_netns, unique_name
from chimney.links.p2p import Link
from chimney.ndis.offload_state import OffloadStateType
from chimney.ndis.verifier import Mode, Verifier
from chimney.serve import (
    MAX_IMS,
    ServeOptions,
    TapImChecks,
    build_tap_offload_host,
    parse_app,
    parse_policy,
    serve,
)
from chimney.sim.scheduler import NS_PER_MS, NS_PER_S, SimScheduler
from chimney.sim.tasks import spawn
from chimney.trace import read_capture


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


# -- IMs in the binding (`chimney serve --ims N --monitor`) --------------------------------------------------

WIRE = Impairments(rate_bps=100_000_000, delay_ns=200_000, queue_limit_frames=300)


def test_ims_and_monitor_options_are_checked_before_anything_is_built(tmp_path: Path) -> None:
    ServeOptions(ims=3, monitor=True, pcap=tmp_path / "x.pcapng").check()
    for bad in (-1, MAX_IMS + 1):
        with pytest.raises(ValueError, match="--ims must be between 0"):
            ServeOptions(ims=bad).check()
    with pytest.raises(ValueError, match="is not a directory"):
        ServeOptions(pcap=tmp_path / "missing" / "x.pcap").check()
    sched = SimScheduler(1)
    link = Link(sched, "ab", mac_a=bytes.fromhex("02000000000a"), mac_b=bytes.fromhex("02000000000b"))
    with pytest.raises(ValueError, match="ims must be between 0"):
        build_tap_offload_host(sched, link.a, "198.18.0.1/24", policy=OffloadPolicy.never(), ims=MAX_IMS + 1)


@pytest.mark.parametrize(("ims", "monitor"), [(0, False), (1, True), (3, False), (2, True)])
def test_tap_host_binds_through_the_ims_and_offloads_through_them(ims: int, monitor: bool) -> None:
    """The TAP host's wiring on an emulated port: `ims` pass-through IMs bottom-up, then the monitor right
    below the host, the host bound to the topmost virtual miniport; a connection offloaded through them
    all moves a seeded stream both ways intact; IM checks (R-IM-*) and the STRICT verifier stay silent and
    nothing is left behind after the adapter (with the IMs above it) halts."""
    sched = SimScheduler(5)
    link = Link(sched, "ab", WIRE, WIRE, mac_a=bytes.fromhex("02000000000a"), mac_b=bytes.fromhex("02000000000b"))
    node = build_tap_offload_host(sched, link.a, "198.18.0.1/24", policy=OffloadPolicy.established(),
                                  verifier=Verifier(Mode.STRICT), ims=ims, monitor=monitor)
    assert len(node.ims) == ims + monitor
    assert all(type(im) is PassThroughChimneyIm for im in node.ims[:ims])
    assert (node.monitor is not None) == monitor and (not monitor or node.ims[-1] is node.monitor)
    assert isinstance(node.ndis._chk, TapImChecks if node.ims else HostChimneyChecks)
    top = node.binding.binding.adapter
    assert top.driver is (node.ims[-1] if node.ims else node.target)
    peer = HostStack(sched, "B")
    peer.attach(link.b, addresses=["198.18.0.2/24"])
    srv = apps.bulk_server(peer, 5001, 200_000, 7)
    fut = spawn(sched, apps.bulk_client(node.host, "198.18.0.2", 5001, 200_000, 11))
    sched.run_until(sched.now + 30 * NS_PER_S, predicate=lambda: fut.done() and bool(srv.results))
    r = fut.result()
    assert (r.received, r.received_sha256) == (200_000, bulk_digest(200_000, 7)) and not r.errors
    assert srv.results[0].received_sha256 == bulk_digest(200_000, 11)
    assert sum(1 for h in node.manager.history if h[1] == "offload") == 1
    if node.monitor is not None:
        totals = node.monitor.totals()
        assert totals["MiniportInitiateOffload"] == 3 and totals["MiniportTcpOffloadSend"] >= 1
        assert totals["ProtocolTcpOffloadReceiveIndicate"] >= 1
    m = node.manager
    sched.run_until(sched.now + 5 * NS_PER_S, predicate=lambda: not m.paths and not m.busy())
    assert not m.paths
    assert node.im_audit() == []
    # The connection's entry is gone from every IM (the neighbor and path stay offloaded meanwhile).
    assert all(e.type != OffloadStateType.TcpOffloadState for im in node.ims for e in im.entries.values())
    node.ndis.halt_adapter(node.ndis.adapters[0])
    assert node.leak_report() == "no live NBLs (all owners)"
    assert node.verifier.violations == []


_ok, _why = kernel_supports_netns()


@pytest.mark.netns
@pytest.mark.skipif(not _ok, reason=_why)
@pytest.mark.timeout(60)
def test_serve_with_an_im_and_the_monitor_serves_a_linux_client_and_captures_it(tmp_path: Path) -> None:
    """`chimney serve --app echo --ims 1 --monitor --pcap F --duration 3`, as the CLI runs it: a Linux client in
    the namespace serve creates gets its bytes echoed through the offloaded connection; the summary shows
    the offload, the monitor's counts, the capture, no violation and no leak."""
    ns = unique_name("chimney-srv")
    pcap = tmp_path / "serve.pcapng"
    opts = ServeOptions(app="echo", policy="always", port=7007, netns=ns, duration_s=3.0, ims=1, monitor=True,
                        pcap=pcap)
    client = ("import socket, time; c = socket.create_connection(('198.18.0.2', 7007), timeout=5); "
              "time.sleep(0.3); c.sendall(b'x' * 50000); c.shutdown(socket.SHUT_WR); n = 0\n"
              "while (d := c.recv(65536)): n += len(d)\n"
              "print(n)")
    result: dict[str, str] = {}

    def linux_client() -> None:
        for _ in range(100):  # bounded: serve creates the namespace and brings the TAP up first
            if Path(f"/var/run/netns/{ns}").exists() and any("serving echo" in x for x in lines):
                break
            time.sleep(0.05)
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", client], capture_output=True,
                           text=True, timeout=15)
        result["out"], result["err"] = p.stdout.strip(), p.stderr[-500:]

    lines: list[str] = []
    t = threading.Thread(target=linux_client)
    t.start()
    try:
        summary = serve(opts, lines.append)
    finally:
        t.join(20)
    assert result.get("out") == "50000", (result, lines)
    assert summary.connections == 1 and summary.offloads == 1, (summary, lines)
    assert summary.ims == 1 and summary.monitor_totals["MiniportInitiateOffload"] == 3
    assert summary.monitor_totals["MiniportTcpOffloadSend"] >= 1
    assert summary.verifier_violations == 0 and summary.im_problems == [] and summary.leaks == "", summary
    assert any("binding: host stack -> monitoring IM -> pass-through IM x1 -> target" in x for x in lines), lines
    assert summary.captured_frames > 0 and pcap.exists()
    frames = [r.data for r in read_capture(pcap)]
    assert len(frames) == summary.captured_frames
    assert sum(1 for f in frames if len(f) > 47 and f[12:14] == b"\x08\x00" and f[23] == 6 and f[47] & 0x02) == 2
