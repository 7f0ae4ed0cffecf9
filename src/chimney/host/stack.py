"""`HostStack`: one simulated (or real-time) host = framing/path layers (`HostIp`) + TCP transport +
sockets factory, with `ip`-command-like conveniences to build it in a line or two.
"""

from __future__ import annotations

import ipaddress

from chimney.host.interface import Interface
from chimney.host.ip import HostIp
from chimney.host.neighbor import NeighborConfig
from chimney.host.route import Route
from chimney.host.socket import Socket
from chimney.host.tcp import Tcb, TcpTransport
from chimney.links.base import Port
from chimney.links.impair import Impairments
from chimney.links.p2p import Link
from chimney.sim.scheduler import NS_PER_MS, Scheduler
from chimney.tcp import TcpConfig


class HostStack:
    """A host: `stack.ip` (HostIp), `stack.tcp` (TcpTransport), `stack.socket()`.

        a = HostStack(sched, "A")
        a.attach(link.a, addresses=["198.18.0.1/24"])
        a.route_add("default", via="198.18.0.254")
    """

    def __init__(
        self,
        scheduler: Scheduler,
        name: str = "host",
        *,
        tcp_config: TcpConfig | None = None,
        neighbor_config: NeighborConfig | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.name = name
        self.ip = HostIp(scheduler, name, neighbor_config)
        self.tcp = TcpTransport(self.ip, tcp_config)

    def __repr__(self) -> str:
        return f"<HostStack {self.name} {len(self.ip.interfaces)} if, {len(self.tcp.conns)} conns>"

    # -- interfaces and addresses -------------------------------------------------------------------

    def add_interface(
        self, name: str, mac: bytes, *, mtu: int = 1500, vlan_id: int = 0, vlan_prio: int = 0, port: Port | None = None
    ) -> Interface:
        return self.ip.add_interface(name, mac, mtu=mtu, vlan_id=vlan_id, vlan_prio=vlan_prio, port=port)

    def attach(
        self,
        port: Port,
        *,
        mac: bytes | None = None,
        addresses: list[str] | tuple[str, ...] = (),
        name: str | None = None,
        mtu: int | None = None,
        vlan_id: int = 0,
        vlan_prio: int = 0,
        tso: bool = False,
    ) -> Interface:
        """Add an interface on `port` (named eth0, eth1... unless given), MAC from the port or derived
        from the host and interface names, MTU the port's unless smaller is asked, then addresses.
        `tso`: send TSO super-segments (needs a port with offload headers, e.g. a vnet-header TAP);
        receive offloads follow what the port negotiated."""
        if name is None:
            name = f"eth{len(self.ip.interfaces)}"
        if mac is None:
            mac = getattr(port, "mac", None) or _local_mac(f"{self.name}/{name}")
        iface = self.ip.add_interface(name, mac, mtu=mtu if mtu is not None else port.mtu, vlan_id=vlan_id,
                                      vlan_prio=vlan_prio, port=port)
        if tso:
            iface.set_offloads(tso=True)
        for cidr in addresses:
            self.ip.add_address(name, cidr)
        return iface

    def add_address(self, cidr_or_ifname: str, cidr: str | None = None) -> None:
        """`add_address("198.18.0.2/24")` on the only interface, or `add_address("eth1", "...")`."""
        if cidr is None:
            if len(self.ip.interfaces) != 1:
                raise ValueError("several interfaces: say which, add_address(ifname, cidr)")
            ifname, cidr = next(iter(self.ip.interfaces)), cidr_or_ifname
        else:
            ifname = cidr_or_ifname
        self.ip.add_address(ifname, cidr)

    def route_add(
        self, prefix: str, *, via: str | None = None, dev: str | None = None, metric: int = 0, mtu: int | None = None
    ) -> Route:
        """`ip route add PREFIX [via GW] [dev IF] [metric N] [mtu M]`; "default" is 0.0.0.0/0 (::/0 with
        an IPv6 gateway). Without `dev`, the interface whose subnet holds the gateway."""
        if prefix == "default":
            prefix = "::/0" if via is not None and ":" in via else "0.0.0.0/0"
        if dev is None:
            if via is None:
                raise ValueError("route needs via= or dev=")
            gw = ipaddress.ip_address(via)
            dev = next(
                (n for n, i in self.ip.interfaces.items() if any(gw in a.network for a in (i.ipv4 if gw.version == 4 else i.ipv6))),
                None,
            )
            if dev is None:
                raise ValueError(f"gateway {via} is on no connected subnet")
        return self.ip.routes.add(prefix, dev, gateway=via, metric=metric, mtu=mtu)

    # -- sockets ------------------------------------------------------------------------------------

    def socket(self) -> Socket:
        return Socket(self.tcp)

    def listen(self, port: int, backlog: int = 128, *, address: str = "") -> Socket:
        """A listening socket on `port` (all local addresses unless `address`)."""
        s = Socket(self.tcp)
        s.bind((address, port))
        s.listen(backlog)
        return s

    def connections(self) -> list[Tcb]:
        return list(self.tcp.conns.values())


def connected_pair(
    scheduler: Scheduler,
    a_to_b: Impairments | None = None,
    b_to_a: Impairments | None = None,
    *,
    tcp_config: TcpConfig | None = None,
    ipv6: bool = False,
    settle_ns: int = 10 * NS_PER_MS,
) -> tuple[HostStack, HostStack, Link]:
    """Hosts A (198.18.0.1, 2001:2::1) and B (198.18.0.2, 2001:2::2) on one emulated `Link`
    (a_to_b is A's sending direction); runs `settle_ns` so the gratuitous announcements are done."""
    link = Link(scheduler, "ab", a_to_b, b_to_a, mac_a=bytes.fromhex("02000000000a"),
                mac_b=bytes.fromhex("02000000000b"))
    a = HostStack(scheduler, "A", tcp_config=tcp_config)
    b = HostStack(scheduler, "B", tcp_config=tcp_config)
    a.attach(link.a, addresses=["198.18.0.1/24"] + (["2001:2::1/64"] if ipv6 else []))
    b.attach(link.b, addresses=["198.18.0.2/24"] + (["2001:2::2/64"] if ipv6 else []))
    if settle_ns:
        scheduler.run_until(scheduler.now + settle_ns)
    return a, b, link


def _local_mac(seed: str) -> bytes:
    """A locally administered unicast MAC derived from a name (deterministic across runs)."""
    import hashlib

    h = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    h[0] = (h[0] & 0xFC) | 0x02
    return bytes(h)


__all__ = ["HostStack", "connected_pair"]
