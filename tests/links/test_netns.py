"""Namespace test beds: creation, commands inside, impairments, and teardown that always happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from typer.testing import CliRunner

from chimney.cli_netns import app
from chimney.links.base import DropCause
from chimney.links.impair import Impairments
from chimney.links.netns import (
    ImpairmentUnsupported,
    NetNamespace,
    NetnsError,
    TapTopology,
    VethTopology,
    check_address,
    drive,
    kernel_supports_netem,
    kernel_supports_netns,
    list_namespaces,
    netem_args,
    ping_result,
    unique_name,
)
from chimney.links.tap import TapDevice, TapPort
from chimney.sim import NS_PER_MS
from chimney.sim.realtime import RealTimeScheduler


@pytest.fixture
def needs_kernel() -> None:
    ok, why = kernel_supports_netns()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def sched() -> Iterator[RealTimeScheduler]:
    with RealTimeScheduler() as s:
        yield s


def _answer_arp_and_echo(port: TapPort, our_ip: str, our_mac: bytes) -> None:
    mac = ":".join(f"{b:02x}" for b in our_mac)

    def on_frame(frame: bytes) -> None:
        eth = Ether(frame)
        if ARP in eth and eth[ARP].op == 1 and eth[ARP].pdst == our_ip:
            port.send(bytes(Ether(dst=eth.src, src=mac) / ARP(op=2, hwsrc=mac, psrc=our_ip, hwdst=eth.src, pdst=eth[ARP].psrc)))
        elif ICMP in eth and eth[ICMP].type == 8 and eth[IP].dst == our_ip:
            port.send(
                bytes(
                    Ether(dst=eth.src, src=mac)
                    / IP(src=our_ip, dst=eth[IP].src)
                    / ICMP(type=0, id=eth[ICMP].id, seq=eth[ICMP].seq)
                    / bytes(eth[ICMP].payload)
                )
            )

    port.set_receiver(on_frame)


def _ping_over(topo: TapTopology, sched: RealTimeScheduler, count: int, timeout_s: float = 0.5) -> int:
    p = topo.ns.ping_popen(topo.our_ip, count=count, timeout_s=timeout_s, interval_s=0.05)
    assert drive(sched, lambda: p.poll() is not None, timeout_s=count * (timeout_s + 0.1) + 5)
    return ping_result(p)


# -- pure checks (no kernel needed) ---------------------------------------------------------------


@pytest.mark.parametrize("addr", ["10.0.0.1/24", "192.168.1.1", "198.20.0.1/24", "fd00::1/64", "2001:db8::1"])
def test_addresses_outside_the_benchmarking_ranges_are_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="benchmarking range"):
        check_address(addr)


def test_topology_refuses_a_foreign_address_before_touching_the_kernel() -> None:
    with pytest.raises(ValueError):
        TapTopology(unique_name(), linux_addr="10.1.1.1/24")


def test_netem_arguments_from_keywords_and_raw_spec() -> None:
    assert netem_args("loss 1%") == ["loss", "1%"]
    assert netem_args(loss=5, delay_ms=10, jitter_ms=2, reorder=25, rate="10mbit") == [
        "delay", "10ms", "2ms", "loss", "5%", "reorder", "25%", "rate", "10mbit"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="delay"):
        netem_args(reorder=10)
    with pytest.raises(ValueError, match="range"):
        netem_args(loss=150)
    with pytest.raises(ValueError, match="empty"):
        netem_args()


def test_unique_names_carry_pid_and_differ() -> None:
    a, b = unique_name(), unique_name()
    assert a != b and f"-{os.getpid()}-" in a


# -- namespaces ----------------------------------------------------------------------------------


@pytest.mark.netns
def test_namespace_runs_commands_sets_sysctls_and_disappears(needs_kernel: None) -> None:
    ns = NetNamespace.unique()
    with ns:
        assert ns.exists
        assert "lo" in ns.exec(["ip", "-br", "link"]).stdout
        assert ns.exec("echo $((6*7))").stdout.strip() == "42"
        ns.sysctl("net.ipv4.ip_forward", 1)
        assert ns.get_sysctl("net.ipv4.ip_forward") == "1"
        with pytest.raises(NetnsError, match=r"failed \(3\)"):
            ns.exec("exit 3")
        assert ns.exec("exit 3", check=False).returncode == 3
    assert not ns.exists
    assert ns.name not in list(list_namespaces())


@pytest.mark.netns
def test_an_existing_namespace_is_not_silently_adopted(needs_kernel: None) -> None:
    with NetNamespace.unique() as ns:
        with pytest.raises(NetnsError, match="already exists"):
            NetNamespace(ns.name).create()
        assert ns.exists


@pytest.mark.netns
def test_processes_started_inside_are_killed_at_teardown(needs_kernel: None) -> None:
    with NetNamespace.unique() as ns:
        p = ns.popen([sys.executable, "-c", "import time; time.sleep(60)"])
        assert p.poll() is None
    assert p.wait(timeout=5) != 0


@pytest.mark.netns
def test_topology_teardown_leaves_nothing_behind_when_the_body_raises(needs_kernel: None) -> None:
    topo = TapTopology.unique()
    with pytest.raises(RuntimeError, match="boom"), topo:
        assert topo.ns.exists and topo.tap is not None
        assert topo.tap_name in topo.ns.ip("link", "show").stdout
        raise RuntimeError("boom")
    assert not topo.ns.exists
    assert topo.tap is not None and topo.tap.closed


@pytest.mark.netns
def test_sigterm_in_the_body_unwinds_through_teardown_and_restores_the_handler(needs_kernel: None) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    topo = TapTopology.unique()
    with pytest.raises(SystemExit) as info, topo:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    assert info.value.code == 128 + signal.SIGTERM
    assert not topo.ns.exists
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.netns
def test_ctrl_c_in_the_body_still_tears_everything_down(needs_kernel: None) -> None:
    veth = VethTopology.unique()
    with pytest.raises(KeyboardInterrupt), veth:
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):
            pass
    assert not veth.a.exists and not veth.b.exists


@pytest.mark.netns
def test_ipv6_benchmark_prefix_is_configured_when_asked(needs_kernel: None) -> None:
    with TapTopology.unique(linux_addr6="2001:2::1/64") as topo:
        out = topo.ns.ip("-6", "addr", "show", "dev", topo.tap_name).stdout
        assert "2001:2::1/64" in out
    with TapTopology.unique() as topo:
        assert topo.ns.get_sysctl(f"net.ipv6.conf.{topo.tap_name}.disable_ipv6") == "1"


# -- impairments ----------------------------------------------------------------------------------


@pytest.mark.netns
def test_netem_total_loss_stops_pings_and_clearing_restores_them(
    needs_kernel: None, sched: RealTimeScheduler
) -> None:
    ok, why = kernel_supports_netem()
    if not ok:
        pytest.skip(why)
    with TapTopology.unique() as topo:
        _answer_arp_and_echo(topo.port(sched), topo.our_ip, topo.our_mac)
        assert _ping_over(topo, sched, 2) == 2
        topo.set_netem(loss=100)
        assert "netem" in topo.qdisc()
        assert _ping_over(topo, sched, 2) == 0
        topo.clear_netem()
        assert _ping_over(topo, sched, 2) == 2


@pytest.mark.netns
def test_netem_on_a_kernel_without_it_raises_a_clear_error(needs_kernel: None) -> None:
    ok, _ = kernel_supports_netem()
    if ok:
        pytest.skip("this kernel has netem; the refusal path cannot be exercised")
    with TapTopology.unique() as topo, pytest.raises(ImpairmentUnsupported, match="NETEM"):
        topo.set_netem("loss 1%")


@pytest.mark.netns
def test_rate_limit_with_tbf_applies_and_clears(needs_kernel: None, sched: RealTimeScheduler) -> None:
    with TapTopology.unique() as topo:
        _answer_arp_and_echo(topo.port(sched), topo.our_ip, topo.our_mac)
        topo.set_rate("1mbit")
        assert "tbf" in topo.qdisc() and "rate 1Mbit" in topo.qdisc()
        assert _ping_over(topo, sched, 2) == 2
        topo.clear_netem()
        assert "tbf" not in topo.qdisc()


# -- veth reference ----------------------------------------------------------------------------------


@pytest.mark.netns
def test_veth_pair_joins_two_linux_namespaces(needs_kernel: None) -> None:
    veth = VethTopology.unique()
    with veth:
        assert veth.a.ping(veth.ip_b, count=2, timeout_s=1.0, interval_s=0.05) == 2
        assert veth.b.ping(veth.ip_a, count=1, timeout_s=1.0) == 1
        assert "veth-a" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not veth.a.exists and not veth.b.exists


# -- CLI ----------------------------------------------------------------------------------------


@pytest.mark.netns
def test_cli_up_exec_status_down_with_a_persistent_tap(needs_kernel: None, sched: RealTimeScheduler) -> None:
    runner = CliRunner()
    name = unique_name("chimney-cli")
    try:
        r = runner.invoke(app, ["up", "--name", name])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["status", "--name", name])
        assert r.exit_code == 0 and "198.18.0.1/24" in r.output and "persist on" in r.output
        r = runner.invoke(app, ["up", "--name", name])
        assert r.exit_code == 1  # refuses to build over an existing setup
        r = runner.invoke(app, ["exec", "--name", name, "--", "sh", "-c", "ip link show chimney0 && exit 7"])
        assert r.exit_code == 7  # ran inside (the TAP is visible there) and passed the status through
        # A later process attaches to the persistent TAP and is reachable through it.
        ns = NetNamespace(name, exist_ok=True, keep=True)
        with TapDevice("chimney0", netns=name) as dev:
            port = TapPort(dev, sched)
            _answer_arp_and_echo(port, "198.18.0.2", bytes.fromhex("02c612000002"))
            p = ns.ping_popen("198.18.0.2", count=1, timeout_s=1.0)
            assert drive(sched, lambda: p.poll() is not None, timeout_s=6)
            assert ping_result(p) == 1
            port.close()
    finally:
        r = runner.invoke(app, ["down", "--name", name])
    assert r.exit_code == 0 and name not in list(list_namespaces())
    r = runner.invoke(app, ["status", "--name", name])
    assert r.exit_code == 1 and "absent" in r.output


@pytest.mark.netns
def test_cli_refuses_addresses_outside_the_benchmarking_range(needs_kernel: None) -> None:
    r = CliRunner().invoke(app, ["up", "--name", unique_name("chimney-cli"), "--addr", "10.9.9.1/24"])
    assert r.exit_code == 1 and "benchmarking range" in r.output


@pytest.mark.netns
def test_cli_up_that_fails_halfway_leaves_nothing_behind(needs_kernel: None) -> None:
    name = unique_name("chimney-cli")
    # An MTU the kernel refuses makes the TAP step fail after the namespace exists.
    r = CliRunner().invoke(app, ["up", "--name", name, "--mtu", "70000"])
    assert r.exit_code == 1 and "error" in r.output
    assert name not in list(list_namespaces())


@pytest.mark.netns
def test_port_side_impairments_stand_in_for_netem(needs_kernel: None, sched: RealTimeScheduler) -> None:
    """Total inbound loss on our port stops Linux's pings, clearing restores them; an outbound
    delay shows up in the round trip. Works on kernels built without netem."""
    with TapTopology.unique() as topo:
        port = topo.port(sched)
        _answer_arp_and_echo(port, topo.our_ip, topo.our_mac)
        assert _ping_over(topo, sched, 2) == 2
        port.set_impairments(inbound=Impairments(loss=1.0))
        assert _ping_over(topo, sched, 2) == 0
        assert port.impairment_counters()["in"].dropped[DropCause.LOSS] >= 2
        port.set_impairments()
        assert _ping_over(topo, sched, 2) == 2
        port.set_impairments(outbound=Impairments(delay_ns=300 * NS_PER_MS))
        t0 = time.monotonic()
        assert _ping_over(topo, sched, 1, timeout_s=1.0) == 1
        assert time.monotonic() - t0 >= 0.3
        assert port.impairment_counters()["out"].delivered >= 1
