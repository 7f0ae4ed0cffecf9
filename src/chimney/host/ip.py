"""The host stack's framing and path layers: frame input dispatch, ARP/ND, IPv4/IPv6 routing, ICMP.

`HostIp` owns interfaces, one neighbor cache per interface, the route table, PMTU cache and the shared
path objects; transports register per IP protocol and receive parsed frames.

Offloaded receive: a port with a virtio_net_hdr (`TapPort.vnet_offloads` not None) delivers
`(frame, VnetHdr | None)`; `input_frame(iface, frame, hdr)` then skips the TCP/UDP checksum when the
header vouches for it (NEEDS_CSUM / DATA_VALID, interface `rx_csum_offload`) and takes GSO super-frames
longer than the MTU when the interface has `rx_gso`; anything else is verified or dropped and counted
in `drops` (reasons `vnet_*`). Batching: a port that reports the end of each receive drain
(`set_drain_end`) lets `drain_listeners` (the TCP transport) send one ACK per drain, not one per frame.
A plain TAP that sums slabs of frames at once (`set_csum_receiver`) delivers through
`input_frame_csum(iface, frame, csum)`: the TCP checksum is checked against that complete sum.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from chimney.host.interface import Interface
from chimney.host.neighbor import Neighbor, NeighborCache, NeighborConfig
from chimney.host.route import Path, PathMtuCache, RouteTable
from chimney.links.base import Port
from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VnetHdr,
)
from chimney.net.arp import ARP_REPLY, ARP_REQUEST
from chimney.net.drops import Drop, DropCounters, DropReason
from chimney.net.ethernet import BROADCAST
from chimney.net.frame import Frame, encode_arp_frame, encode_ipv4_frame, encode_ipv6_frame, parse_frame
from chimney.net.icmp import (
    CODE_FRAG_NEEDED,
    ERROR_TYPES,
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REQUEST,
    build_icmp_echo_reply,
)
from chimney.net.icmpv6 import (
    ICMP6_DEST_UNREACH,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAM_PROBLEM,
    ICMP6_TIME_EXCEEDED,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    build_icmpv6_echo,
    build_neighbor_advert,
    build_neighbor_solicit,
    multicast_mac,
    solicited_node_multicast,
)
from chimney.net.ipv4 import IPPROTO_ICMP
from chimney.net.ipv6 import NH_ICMPV6
from chimney.net.tcp import ACK, PSH, TcpOptions, TcpSegment
from chimney.sim.scheduler import Scheduler

ALL_NODES_V6 = ipaddress.ip_address("ff02::1").packed
_CSUM_VOUCHED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_GSO_TCP = {4: VIRTIO_NET_HDR_GSO_TCPV4, 6: VIRTIO_NET_HDR_GSO_TCPV6}
_VLAN_ROOM = 4
_ICMP6_ERRORS = frozenset((ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM))


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about a packet we sent, as transports see it (RFC 1122 4.2.3.9, RFC 4443)."""

    family: int
    type: int
    code: int
    mtu: int  # next-hop MTU for frag-needed / packet-too-big, else 0
    proto: int  # protocol of the quoted packet
    local: bytes  # quoted source (us)
    remote: bytes
    local_port: int
    remote_port: int
    seq: int  # quoted TCP sequence number (0 if not TCP)

    @property
    def is_pmtu(self) -> bool:
        if self.family == 4:
            return self.type == ICMP_DEST_UNREACH and self.code == CODE_FRAG_NEEDED
        return self.type == ICMP6_PACKET_TOO_BIG


ProtocolHandler = Callable[[Frame, Interface], None]
ErrorListener = Callable[[IcmpError], None]


_IP_HDR_MASK = (1 << 160) - 1  # an option-less IPv4 header, as an integer


def _hint_hole(hlen: int, start: int, end: int) -> int:
    """Bits of bytes [start, end) within a big-endian integer of `hlen` header bytes."""
    return ((1 << ((end - start) * 8)) - 1) << ((hlen - end) * 8)


#: Ethernet + option-less IPv4 + TCP with NOP NOP TS: the headers of nearly every segment of a flow.
_TS_HDR_LEN = 14 + 20 + 32
#: What varies between a flow's segments (IP total length, ID, checksum; TCP seq, ack, flags, window,
#: checksum, TS value and echo): everything else must equal the learned headers bit for bit.
_TS_HDR_MASK = ((1 << (_TS_HDR_LEN * 8)) - 1) ^ _hint_hole(_TS_HDR_LEN, 16, 20) ^ _hint_hole(_TS_HDR_LEN, 24, 26) \
    ^ _hint_hole(_TS_HDR_LEN, 38, 46) ^ _hint_hole(_TS_HDR_LEN, 47, 52) ^ _hint_hole(_TS_HDR_LEN, 58, 66)
#: The varying fields, picked out in one call: total length, seq, ack, flags, window, TS value, TS echo.
_TS_HDR_VAR = struct.Struct("!16xH20xIIxBH8xII")
_TS_ORDER = (1, 1, 8)
_IP_SHIFT = (_TS_HDR_LEN - 34) * 8


class HostIp:
    """Framing + path layers of one host. Sans-I/O except through interfaces' transmit callables."""

    def __init__(self, scheduler: Scheduler, name: str = "host", neighbor_config: NeighborConfig | None = None) -> None:
        self.scheduler = scheduler
        self.name = name
        self.interfaces: dict[str, Interface] = {}
        self.neighbors: dict[str, NeighborCache] = {}
        self.routes = RouteTable()
        self.pmtu = PathMtuCache()
        self.paths: dict[tuple[bytes, bytes], Path] = {}
        self.protocols: dict[int, ProtocolHandler] = {}
        self.error_listeners: list[ErrorListener] = []
        self.neighbor_listeners: list[Callable[[str, Neighbor, bytes | None], None]] = []
        self.drain_listeners: list[Callable[[], None]] = []
        # Header prediction for `input_frame_csum`: the TCP transport's GRO continuation and the
        # headers of the last IPv4/TCP data frame handed to it (see _RxHint).
        self.tcp_gro: Callable[[int, memoryview], bool] | None = None
        self._rx_hint: tuple[Any, ...] | None = None
        # The same for frames with offload metadata (vnet TAP: GSO super-frames, ACKs with vouched
        # checksums): learned headers per received virtio_net_hdr object, and the transport's entry for
        # a segment of a known connection (`tcp_predicted(key, seg, iface)`, False: parse as usual).
        self.tcp_predicted: Callable[[tuple[bytes, int, bytes, int], TcpSegment, Interface], bool] | None = None
        self._vnet_hints: dict[int, tuple[Any, ...]] = {}
        self.parse_drops = DropCounters()
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._neighbor_config = neighbor_config
        self._ip_id = 0  # the host uses the lower half of the IPv4 ID space (R-SEND-12)

    # -- configuration ----------------------------------------------------------------------------

    def add_interface(
        self, name: str, mac: bytes, *, mtu: int = 1500, vlan_id: int = 0, vlan_prio: int = 0, port: Port | None = None
    ) -> Interface:
        if name in self.interfaces:
            raise ValueError(f"{self.name}: interface {name} exists")
        iface = Interface(name, mac, mtu, vlan_id, vlan_prio)
        iface.multicast_macs.add(multicast_mac(ALL_NODES_V6))
        self.interfaces[name] = iface
        self.neighbors[name] = NeighborCache(
            self.scheduler,
            lambda n, unicast, iface=iface: self._solicit(iface, n, unicast),
            self._neighbor_config,
            on_change=lambda n, old, name=name: self._neighbor_changed(name, n, old),
        )
        if port is not None:
            self.attach_port(iface, port)
        return iface

    def attach_port(self, iface: Interface, port: Port) -> None:
        iface.transmit = port.send
        if port.mtu < iface.mtu:
            iface.mtu = port.mtu
        vnet = getattr(port, "vnet_offloads", None)
        if vnet is not None:
            # A vnet-header TAP: frames arrive with their offload header, and may leave with one.
            iface.transmit_vnet = port.send_vnet  # type: ignore[attr-defined]
            iface.rx_csum_offload, iface.rx_gso = vnet
            port.set_vnet_receiver(  # type: ignore[attr-defined]
                lambda frame, hdr, iface=iface: self.input_frame(iface, frame, hdr), views=True
            )
        else:
            port.set_receiver(lambda frame, iface=iface: self.input_frame(iface, frame))
            set_csum = getattr(port, "set_csum_receiver", None)
            if set_csum is not None:
                # A TAP sums whole slabs of frames in one go; we then check TCP against that sum.
                set_csum(partial(self.input_frame_csum, iface))
        set_drain_end = getattr(port, "set_drain_end", None)
        if set_drain_end is not None:
            set_drain_end(self.drain_end)
            iface.rx_batched = True

    def drain_end(self) -> None:
        """The port delivered its last frame of this wake-up: transports flush what they batched."""
        for cb in self.drain_listeners:
            cb()

    def add_address(self, ifname: str, cidr: str, *, announce: bool = True) -> None:
        """Configure an address and its connected route; announce it (gratuitous ARP / unsolicited NA)."""
        iface = self.interfaces[ifname]
        addr = ipaddress.ip_interface(cidr)
        if addr.version == 4:
            iface.ipv4.append(addr)  # type: ignore[arg-type]
        else:
            iface.ipv6.append(addr)  # type: ignore[arg-type]
            iface.multicast_macs.add(multicast_mac(solicited_node_multicast(addr.ip.packed)))
        self.routes.add(str(addr.network), ifname)
        if announce:
            self.announce(ifname, addr.ip.packed)

    def announce(self, ifname: str, ip: bytes) -> None:
        iface = self.interfaces[ifname]
        if len(ip) == 4:
            frame = encode_arp_frame(ARP_REQUEST, iface.mac, ip, ip, vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
        else:
            na = build_neighbor_advert(ip, ALL_NODES_V6, ip, iface.mac, solicited=False, override=True)
            frame = encode_ipv6_frame(
                iface.mac, multicast_mac(ALL_NODES_V6), ip, ALL_NODES_V6, NH_ICMPV6, na, hop_limit=255,
                vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio,
            )
        self.counters["gratuitous_sent"] += 1
        iface.send(frame, "gratuitous announcement")

    def is_local(self, ip: bytes) -> bool:
        return any(i.has_address(ip) for i in self.interfaces.values())

    # -- paths (the chimney's path state objects) ---------------------------------------------------

    def path(self, src: bytes | None, dst: bytes) -> Path | None:
        """The shared path object for (src, dst); None when there is no route."""
        hop = self.routes.next_hop(dst)
        if hop is None:
            return None
        route, next_hop = hop
        iface = self.interfaces[route.interface]
        if src is None:
            src = iface.source_for(dst)
            if src is None:
                return None
        key = (src, dst)
        p = self.paths.get(key)
        link_mtu = min(iface.mtu, route.mtu or iface.mtu)
        mtu = self.pmtu.get(dst, link_mtu, self.scheduler.now)
        if p is None:
            p = self.paths[key] = Path(src, dst, route.interface, next_hop, mtu)
        else:
            # a route change may move the path to another next hop or interface
            p.mtu = mtu
            p.next_hop = next_hop
            p.interface = route.interface
        return p

    def neighbor_for(self, path: Path) -> Neighbor:
        """The path's next-hop neighbor, resolution started if the cache had no entry yet."""
        cache = self.neighbors[path.interface]
        n = cache.get(path.next_hop)
        if n is None:
            cache.resolve(path.next_hop, lambda mac: None)  # starts ARP/ND; nothing queued to send
            n = cache.get(path.next_hop)
            assert n is not None
        return n

    # -- output -----------------------------------------------------------------------------------

    def next_ip_id(self) -> int:
        self._ip_id = (self._ip_id + 1) & 0x7FFF
        return self._ip_id

    def next_ip_ids(self, count: int) -> int:
        """The first of `count` consecutive IPv4 IDs (a TSO super-frame's segments), all in the host's
        half of the ID space (R-SEND-12): a run that would cross 0x7FFF starts again at 1."""
        first = (self._ip_id + 1) & 0x7FFF
        if first == 0 or first + count - 1 > 0x7FFF:
            first = 1
        self._ip_id = first + count - 1
        return first

    def resolve_and_send(self, path: Path, build: Callable[[bytes], bytes], meta: str | None = None) -> bool:
        """Resolve the path's next hop and transmit `build(next_hop_mac)`; queued while resolving."""
        iface = self.interfaces[path.interface]
        return self.neighbors[path.interface].resolve(
            path.next_hop, lambda mac: iface.send(build(mac), meta)
        )

    def send_ip(self, dst: bytes, proto: int, payload: bytes, *, src: bytes | None = None, ttl: int = 64,
                tos: int = 0, meta: str | None = None) -> bool:
        """Send one IP datagram (control plane: ICMP and the like). False when unroutable or dropped."""
        p = self.path(src, dst)
        if p is None:
            self.drops["no_route"] += 1
            return False
        iface = self.interfaces[p.interface]
        if len(dst) == 4:
            ident = self.next_ip_id()

            def build(mac: bytes) -> bytes:
                return encode_ipv4_frame(iface.mac, mac, p.source, dst, proto, payload, ttl=ttl, tos=tos,
                                         ident=ident, vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
        else:

            def build(mac: bytes) -> bytes:
                return encode_ipv6_frame(iface.mac, mac, p.source, dst, proto, payload, hop_limit=ttl, tclass=tos,
                                         vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)

        self.counters["ip_out"] += 1
        return self.resolve_and_send(p, build, meta)

    # -- input ------------------------------------------------------------------------------------

    def input_frame(self, iface: Interface, frame: bytes | memoryview, hdr: VnetHdr | None = None) -> None:
        """One received frame; `hdr` is its virtio_net_hdr when the link has one and it is not all zero."""
        if hdr is None:
            f = parse_frame(frame)
        else:
            h = self._vnet_hints.get(id(hdr))
            if h is not None and h[0] is hdr and h[1] is iface and self._vnet_predicted(h, frame):
                return
            f = self._parse_vnet(iface, frame, hdr)
            if f is None:
                return
            if type(f) is Frame and f.tcp is not None and self.tcp_predicted is not None:
                self._learn_vnet_hint(iface, frame, hdr, f)
        if type(f) is Drop:
            self.parse_drops.add(f)
            return
        self._input_parsed(iface, f)  # type: ignore[arg-type]

    def _learn_vnet_hint(self, iface: Interface, frame: bytes | memoryview, hdr: VnetHdr, f: Frame) -> None:
        """Remember the headers of an offloaded IPv4/TCP frame that `_input_parsed` hands to TCP unchanged
        (untagged, to our MAC and address, no IP options, timestamps only), so the flow's next frames
        with the same virtio_net_hdr skip parsing (`_vnet_predicted`)."""
        seg = f.tcp
        o = seg.options if seg is not None else None
        if (
            seg is None or f.ip_version != 4 or f.ip_header_len != 20 or f.l2_len != 14 or f.vlan_id is not None
            or o is None or o.order != _TS_ORDER or len(frame) < _TS_HDR_LEN or len(seg.payload) + _TS_HDR_LEN != len(frame)
            or f.eth_dst != iface.mac or iface.vlan_id != 0 or not iface.has_address(f.ip_dst)  # type: ignore[arg-type]
            or not hdr.flags & _CSUM_VOUCHED
        ):
            return
        handler = self.protocols.get(6)
        if getattr(handler, "__self__", None) is not getattr(self.tcp_predicted, "__self__", None):
            return  # TCP goes through someone else first (a filter): every frame must reach it
        hints = self._vnet_hints
        if len(hints) >= 16:
            hints.clear()  # headers come and go with flows; the active ones are learned again at once
        ref = int.from_bytes(frame[:_TS_HDR_LEN], "big") & _TS_HDR_MASK
        key = (f.ip_dst, seg.dst_port, f.ip_src, seg.src_port)
        # The interface settings and the TCP handler the ordinary path judged this frame by: a frame is
        # predicted only while they still hold (a VLAN, MAC, address or handler change ends it).
        hints[id(hdr)] = (hdr, iface, ref, key, seg.src_port, seg.dst_port, bool(hdr.gso_type & 0x7F),
                          iface.mac, handler)

    def _vnet_predicted(self, h: tuple[Any, ...], frame: bytes | memoryview) -> bool:
        """Header prediction for a frame with offload metadata: the headers equal the learned ones but for
        the fields that vary, the IPv4 header checksum is right (the offload vouches for TCP's only), the
        lengths agree, the flags are ACK (+PSH). The segment goes straight to the transport; False: the
        caller parses the frame as usual (nothing was counted or delivered)."""
        if len(frame) < _TS_HDR_LEN:
            return False
        x = int.from_bytes(frame[:_TS_HDR_LEN], "big")
        if x & _TS_HDR_MASK != h[2] or ((x >> _IP_SHIFT) & _IP_HDR_MASK) % 0xFFFF:
            return False
        iface = h[1]
        gso = h[6]
        if not iface.rx_csum_offload or (gso and not iface.rx_gso):
            return False  # offloads turned off since the headers were learned
        if (iface.vlan_id or iface.mac != h[7] or self.protocols.get(6) is not h[8]
                or not iface.has_address(h[3][0])):
            return False  # the interface or the TCP handler changed: let the ordinary path judge
        total, seq, ack, flags, win, tsv, tse = _TS_HDR_VAR.unpack_from(frame)
        if total + 14 != len(frame) or flags & ~PSH != ACK or (not gso and len(frame) > iface.mtu + 14 + _VLAN_ROOM):
            return False
        seg = TcpSegment(h[4], h[5], seq, ack, flags, win, frame[_TS_HDR_LEN:],
                         TcpOptions(None, None, False, (), tsv, tse, (), _TS_ORDER))
        if not self.tcp_predicted(h[3], seg, iface):  # type: ignore[misc]
            return False
        c = self.counters
        c["ip_in"] += 1
        c["predicted_in"] += 1
        c["csum_offloaded_in"] += 1
        if gso:
            c["gso_frames_in"] += 1
        return True

    def input_frame_csum(self, iface: Interface, frame: memoryview, csum: int) -> None:
        """One received frame with `csum`, the raw one's-complement sum of `frame[14:]` mod 0xFFFF
        (CHECKSUM_COMPLETE, from the port): the TCP checksum is checked against it instead of summing
        the payload again. Anything but untagged, unpadded IPv4/TCP is verified the ordinary way.

        Header prediction (what Linux GRO does on raw headers): a frame as long as the last TCP data
        frame handed on, whose Ethernet, IPv4 and TCP headers equal that frame's except the IP ID, the
        checksums and the sequence number, both checksums right, is given straight to the transport's
        GRO run (`tcp_gro`) without being parsed; if the transport declines, it is parsed as usual."""
        h = self._rx_hint
        if h is not None and h[0] == len(frame) and h[1] is iface:
            hlen = h[8]
            # All header bytes at once as one integer: masked compare, then the fields picked out.
            x = int.from_bytes(frame[:hlen], "big")
            sh = h[11]
            if (x & h[9] == h[10] and not (h[7] + csum) % 0xFFFF
                    and not ((x >> sh) & _IP_HDR_MASK) % 0xFFFF):
                gro = self.tcp_gro
                if gro is not None and gro((x >> (sh - 64)) & 0xFFFFFFFF, frame[hlen:]):
                    self.counters["ip_in"] += 1
                    return
        f = parse_frame(frame, verify_checksums=False)
        if type(f) is Drop:
            self.parse_drops.add(f)
            return
        assert isinstance(f, Frame)
        ip = f.ip_packet
        if f.ip_version == 4 and ip is not None:
            hl = f.ip_header_len
            if int.from_bytes(ip[:hl], "big") % 0xFFFF:
                self.parse_drops.add(Drop(DropReason.BAD_IPV4_CHECKSUM, "IPv4 header checksum"))
                return
            if f.tcp is not None and f.l2_len == 14 and len(ip) + 14 == len(frame):
                # A valid IPv4 header sums to 0 (mod 0xFFFF), so `csum` is the TCP segment's own sum.
                tn = len(ip) - hl  # type: ignore[operator]
                pseudo = int.from_bytes(f.ip_src + f.ip_dst, "big") + 6 + tn  # type: ignore[operator]
                if (pseudo + csum) % 0xFFFF:
                    self.parse_drops.add(Drop(DropReason.BAD_TCP_CHECKSUM, f"checksum (complete sum {csum:#06x})"))
                    return
                if f.vlan_id is None and f.eth_dst == iface.mac and iface.vlan_id == 0 and iface.has_address(f.ip_dst):  # type: ignore[arg-type]
                    # `_input_parsed`'s TCP case, inlined: this is the per-segment path.
                    seg = f.tcp
                    # Learned from plain ACK data frames only: a PSH frame ends a GRO run, and the
                    # frames after it look like the ones before.
                    if hl == 20 and seg.payload and seg.flags == 0x10:
                        e = len(frame) - len(seg.payload)
                        # Bits compared: all but the IP ID, both checksums and the sequence number.
                        mask = ((1 << (e * 8)) - 1) ^ _hint_hole(e, 18, 20) ^ _hint_hole(e, 24, 26) \
                            ^ _hint_hole(e, 38, 42) ^ _hint_hole(e, 50, 52)
                        ref = int.from_bytes(frame[:e], "big") & mask
                        old = self._rx_hint
                        # The same headers again keep the hint as it is (no new tuple per GRO run).
                        if old is None or old[10] != ref or old[0] != len(frame) or old[1] is not iface:
                            self._rx_hint = (len(frame), iface, None, None, None, None, None, pseudo, e, mask,
                                             ref, (e - 34) * 8)
                    self.counters["ip_in"] += 1
                    handler = self.protocols.get(6)
                    if handler is not None:
                        handler(f, iface)
                        return
                self._input_parsed(iface, f)
                return
        if ip is not None:
            f = parse_frame(frame)  # UDP, ICMP, IPv6, tagged or padded frames: verify in full
            if type(f) is Drop:
                self.parse_drops.add(f)
                return
        self._input_parsed(iface, f)  # type: ignore[arg-type]

    def _input_parsed(self, iface: Interface, f: Frame) -> None:
        # 802.1Q per interface: a tagged interface accepts only its VLAN; an untagged one only
        # untagged or priority-tagged (VID 0) frames.
        vid = f.vlan_id or 0
        if vid != iface.vlan_id:
            self.drops["vlan_mismatch"] += 1
            return
        dst = f.eth_dst
        if dst != iface.mac and dst != BROADCAST and dst not in iface.multicast_macs:
            self.drops["not_our_mac"] += 1
            return
        if f.tcp is not None and iface.has_address(f.ip_dst):  # type: ignore[arg-type]
            # The per-segment case: unicast TCP to us (a parsed TCP header means not a fragment).
            self.counters["ip_in"] += 1
            handler = self.protocols.get(6)
            if handler is None:
                self.drops["no_protocol"] += 1
                return
            handler(f, iface)
            return
        if f.arp is not None:
            self._input_arp(iface, f)
            return
        if f.ip_dst is None or (not iface.has_address(f.ip_dst) and not self._is_our_multicast(iface, f.ip_dst)):
            self.drops["not_our_address"] += 1
            return
        if f.is_fragment:
            # Reassembly is not implemented; the contract only needs fragments recognised (R-RX-06).
            self.drops["fragment"] += 1
            return
        self.counters["ip_in"] += 1
        proto = f.l4_proto
        if f.icmp is not None:
            self._input_icmp(iface, f)
        elif f.icmp6 is not None:
            self._input_icmp6(iface, f)
        else:
            handler = self.protocols.get(proto) if proto is not None else None
            if handler is None:
                self.drops["no_protocol"] += 1
                return
            handler(f, iface)

    def _parse_vnet(self, iface: Interface, frame: bytes | memoryview, hdr: VnetHdr) -> Frame | Drop | None:
        """Parse a frame that came with offload metadata; None when it was dropped (counted here)."""
        flags = hdr.flags
        gso = hdr.gso_type & 0x7F
        if gso:
            if not iface.rx_gso:
                self.drops["vnet_gso_not_enabled"] += 1
                return None
        elif len(frame) > iface.mtu + 14 + _VLAN_ROOM:
            self.drops["vnet_oversize"] += 1
            return None
        vouched = flags & _CSUM_VOUCHED
        if vouched and not iface.rx_csum_offload:
            if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                # The checksum field holds only the pseudo-header sum: unverifiable without the offload.
                self.drops["vnet_csum_offload_not_enabled"] += 1
                return None
            vouched = 0  # DATA_VALID without the capability: verify anyway
        f = parse_frame(frame, verify_checksums=not vouched)
        if type(f) is Drop:
            return f
        assert isinstance(f, Frame)
        if vouched and f.ip_version == 4:
            # The offload vouches for the transport checksum only; the IPv4 header is still ours to check.
            ip = f.ip_packet
            assert ip is not None and f.ip_header_len is not None
            if int.from_bytes(ip[: f.ip_header_len], "big") % 0xFFFF:
                return Drop(DropReason.BAD_IPV4_CHECKSUM, "IPv4 header checksum (offloaded frame)")
        if gso:
            if f.tcp is None or _GSO_TCP.get(f.ip_version or 0) != gso:
                self.drops["vnet_gso_not_tcp"] += 1
                return None
            self.counters["gso_frames_in"] += 1
        if vouched:
            self.counters["csum_offloaded_in"] += 1
        return f

    def _is_our_multicast(self, iface: Interface, ip: bytes) -> bool:
        if len(ip) != 16 or ip[0] != 0xFF:
            return False
        return ip == ALL_NODES_V6 or any(solicited_node_multicast(a) == ip for a in iface.addresses(6))

    def _input_arp(self, iface: Interface, f: Frame) -> None:
        a = f.arp
        assert a is not None
        cache = self.neighbors[iface.name]
        ours = iface.has_address(a.target_ip)
        self.counters["arp_in"] += 1
        if a.sender_ip == a.target_ip or not ours:
            # gratuitous ARP or a conversation between others: only refresh an entry we already have (RFC 826)
            if cache.get(a.sender_ip) is not None and a.sender_ip != b"\x00\x00\x00\x00":
                cache.learn(a.sender_ip, a.sender_mac, solicited=False)
            return
        if a.op == ARP_REQUEST:
            cache.learn(a.sender_ip, a.sender_mac, solicited=False)
            reply = encode_arp_frame(ARP_REPLY, iface.mac, a.target_ip, a.sender_ip, target_mac=a.sender_mac,
                                     vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
            self.counters["arp_replies"] += 1
            iface.send(reply, "ARP reply")
        elif a.op == ARP_REPLY:
            cache.learn(a.sender_ip, a.sender_mac, solicited=True)

    def _input_icmp(self, iface: Interface, f: Frame) -> None:
        m = f.icmp
        assert m is not None and f.ip_src is not None and f.ip_dst is not None
        self.counters["icmp_in"] += 1
        if m.type == ICMP_ECHO_REQUEST:
            self.counters["echo_replies"] += 1
            self.send_ip(f.ip_src, IPPROTO_ICMP, build_icmp_echo_reply(m), src=f.ip_dst, meta="ICMP echo reply")
        elif m.type in ERROR_TYPES and m.quote is not None:
            self._deliver_error(
                IcmpError(4, m.type, m.code, m.mtu, m.quoted_proto, m.quoted_src, m.quoted_dst,
                          m.quoted_sport, m.quoted_dport, m.quoted_seq)
            )

    def _input_icmp6(self, iface: Interface, f: Frame) -> None:
        m = f.icmp6
        assert m is not None and f.ip_src is not None and f.ip_dst is not None
        self.counters["icmp_in"] += 1
        cache = self.neighbors[iface.name]
        t = m.type
        if t == ND_NEIGHBOR_SOLICIT:
            if f.ttl != 255 or not iface.has_address(m.target):
                self.drops["nd_invalid"] += 1  # RFC 4861 7.1.1: hop limit must be 255
                return
            unspecified = f.ip_src == bytes(16)
            if m.source_lladdr is not None and not unspecified:
                cache.learn(f.ip_src, m.source_lladdr, solicited=False)
            dst = ALL_NODES_V6 if unspecified else f.ip_src
            na = build_neighbor_advert(m.target, dst, m.target, iface.mac, solicited=not unspecified, override=True)
            dmac = multicast_mac(ALL_NODES_V6) if unspecified else (m.source_lladdr or f.eth_src)
            frame = encode_ipv6_frame(iface.mac, dmac, m.target, dst, NH_ICMPV6, na, hop_limit=255,
                                      vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
            self.counters["na_sent"] += 1
            iface.send(frame, "neighbor advertisement")
        elif t == ND_NEIGHBOR_ADVERT:
            if f.ttl != 255:
                self.drops["nd_invalid"] += 1
                return
            mac = m.target_lladdr or f.eth_src
            cache.learn(m.target, mac, solicited=m.solicited, override=m.override)
        elif t == ICMP6_ECHO_REQUEST:
            self.counters["echo_replies"] += 1
            reply = build_icmpv6_echo(f.ip_dst, f.ip_src, m.ident, m.seq, bytes(m.data[4:]), reply=True)
            self.send_ip(f.ip_src, NH_ICMPV6, reply, src=f.ip_dst, meta="ICMPv6 echo reply")
        elif t == ICMP6_ECHO_REPLY:
            self.counters["echo_reply_in"] += 1
        elif t in _ICMP6_ERRORS and m.quote is not None:
            self._deliver_error(
                IcmpError(6, t, m.code, m.mtu, m.quoted_next_header, m.quoted_src, m.quoted_dst,
                          m.quoted_sport, m.quoted_dport, m.quoted_seq)
            )

    def _deliver_error(self, err: IcmpError) -> None:
        if not self.is_local(err.local):
            self.drops["icmp_error_not_ours"] += 1
            return
        self.counters["icmp_errors"] += 1
        if err.is_pmtu:
            p = self.paths.get((err.local, err.remote))
            current = p.mtu if p is not None else self._link_mtu(err.remote)
            new = self.pmtu.learn(err.remote, err.mtu, current, self.scheduler.now)
            if new is not None and p is not None:
                p.mtu = new
        for cb in self.error_listeners:
            cb(err)

    def _link_mtu(self, dst: bytes) -> int:
        hop = self.routes.next_hop(dst)
        return self.interfaces[hop[0].interface].mtu if hop else 1500

    # -- neighbor plumbing --------------------------------------------------------------------------

    def _solicit(self, iface: Interface, n: Neighbor, unicast: bool) -> None:
        src = iface.source_for(n.ip)
        if src is None:
            return
        if n.family == 4:
            dst_mac = n.mac if unicast and n.mac else None
            frame = encode_arp_frame(ARP_REQUEST, iface.mac, src, n.ip, eth_dst=dst_mac,
                                     vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
        else:
            if unicast and n.mac:
                dst_ip, dst_mac = n.ip, n.mac
            else:
                dst_ip = solicited_node_multicast(n.ip)
                dst_mac = multicast_mac(dst_ip)
            ns = build_neighbor_solicit(src, dst_ip, n.ip, iface.mac)
            frame = encode_ipv6_frame(iface.mac, dst_mac, src, dst_ip, NH_ICMPV6, ns, hop_limit=255,
                                      vlan_id=iface.vlan_id, vlan_prio=iface.vlan_prio)
        self.counters["solicits_sent"] += 1
        iface.send(frame, "neighbor solicitation")

    def _neighbor_changed(self, ifname: str, n: Neighbor, old: bytes | None) -> None:
        for cb in self.neighbor_listeners:
            cb(ifname, n, old)
