"""Whole-frame codec: `parse_frame` (Ethernet -> ARP/IPv4/IPv6 -> TCP/UDP/ICMP/ICMPv6) and frame builders.
Owns the per-frame hot path of the host stack, the offload target and the links.

Receive::

    r = parse_frame(buf, verify_checksums=True)   # bytes | bytearray | memoryview
    if type(r) is Drop: counters.add(r)           # r.reason: DropReason, r.detail: str (Drop is falsy)
    else: r.tcp (TcpSegment, payload a memoryview into buf), r.ip_src, r.ip_packet, ...
    # non-TCP upper objects: r.udp / r.icmp / r.icmp6 / r.arp (properties over r.other)

The returned views pin `buf`: do not resize a bytearray while a Frame from it is alive.

`parse_frame` never raises on malformed input: every problem is a `Drop` with a `DropReason`.
IP fragments are recognised (`is_fragment`, `mf`, `frag_offset`) but not reassembled: their upper layer
is not parsed (`tcp`/`udp`/... stay None, `l4` is the raw view). Unknown IP protocols are a drop.

Transmit (hot path, one builder per connection/direction, headers into a preallocated buffer)::

    b = TcpFrameBuilder(eth_src, eth_dst, ip_src, ip_dst, vlan_id=0, vlan_prio=0)
    hlen = b.build(hdr_buf, seg, ip_id=7, offload_csum=False)  # wire frame = hdr_buf[:hlen] + seg.payload
    # offload_csum=True: TCP checksum field holds only the folded pseudo-header sum (CHECKSUM_PARTIAL);
    # b.csum_start / b.csum_offset are the vnet-header values for the "hardware" to finish it.

Control-plane builders return bytes: `encode_tcp_frame`, `encode_ipv4_frame`, `encode_ipv6_frame`,
`encode_arp_frame`; the ICMP/ICMPv6 message builders live in `icmp`/`icmpv6`.
"""

from __future__ import annotations

import struct

from chimney.net.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, arp_bytes, parse_arp
from chimney.net.checksum import checksum, fold, raw_sum
from chimney.net.drops import Drop, DropReason
from chimney.net.ethernet import (
    BROADCAST,
    ETH_HLEN,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IPV4,
    ETH_P_IPV6,
    encode_ethernet,
    eth_header_len,
)
from chimney.net.icmp import IcmpMessage, parse_icmp
from chimney.net.icmpv6 import Icmp6Message, parse_icmpv6
from chimney.net.ipv4 import IPPROTO_ICMP, check_ipv4_options, write_ipv4_header
from chimney.net.ipv6 import NH_ICMPV6, NH_NONE, Ipv6Header, parse_ipv6, write_ipv6_header
from chimney.net.tcp import (
    TCP_CSUM_OFFSET,
    TCP_HLEN,
    TcpOptions,
    TcpSegment,
    parse_tcp,
    parse_tcp_options,
    write_tcp_header,
)
from chimney.net.udp import UdpHeader, parse_udp

L3_IPV4 = "ipv4"
L3_IPV6 = "ipv6"
L3_ARP = "arp"
IPPROTO_TCP = 6
IPPROTO_UDP = 17

_ETH = struct.Struct("!6s6sH")
_TCI_TYPE = struct.Struct("!HH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
_U16x2 = struct.Struct("!HH")
_TS_BLOCK = struct.Struct("!III")
_TS_BLOCK_HEAD = 0x0101080A
_TS_ORDER = (1, 1, 8)


class Frame:
    """One parsed frame. Addresses are bytes (6 / 4 / 16); views point into the caller's buffer.

    Stored fields: eth_dst, eth_src, vlan_id, vlan_prio (None when untagged), ethertype, l2_len, l3
    (L3_IPV4/L3_IPV6/L3_ARP), ip_version, ip_src, ip_dst, ttl, tos, ip_id, ip_total_len, ip_header_len,
    flow_label (IPv6), l4_proto, ip_packet, l4, tcp. IP fields are None for ARP.
    Derived (properties): df, mf, frag_offset (8-octet units), is_fragment, has_ip_options, hop_limit,
    udp, icmp, icmp6, arp.

    For IPv6: `ttl` is the hop limit, `tos` the traffic class, `ip_id`/`mf`/`frag_offset` come from a
    fragment header (0/False without), `df` is True unless a fragment header is present, `has_ip_options`
    means "had extension headers", `ip_total_len` is 40 + payload length, `ip_header_len` includes the
    extension headers. `ip_packet` is the whole IP packet (Ethernet padding trimmed), `l4` the upper-layer
    bytes. Fragments are not reassembled: their upper layer is not parsed.
    """

    __slots__ = (
        "eth_dst",
        "eth_src",
        "ethertype",
        "flow_label",
        "frag_field",
        "ip_dst",
        "ip_header_len",
        "ip_id",
        "ip_packet",
        "ip_src",
        "ip_total_len",
        "ip_version",
        "l2_len",
        "l3",
        "l4",
        "l4_proto",
        "other",
        "tcp",
        "tos",
        "ttl",
        "vlan_id",
        "vlan_prio",
    )

    eth_dst: bytes
    eth_src: bytes
    vlan_id: int | None
    vlan_prio: int | None
    ethertype: int
    l2_len: int
    l3: str
    ip_version: int | None
    ip_src: bytes | None
    ip_dst: bytes | None
    ttl: int | None
    tos: int | None
    ip_id: int | None
    frag_field: int  # IPv4 flags+offset layout (DF 0x4000, MF 0x2000, offset 0x1FFF); synthesised for IPv6
    ip_total_len: int | None
    ip_header_len: int | None
    flow_label: int | None
    l4_proto: int | None
    ip_packet: memoryview | None
    l4: memoryview | None
    tcp: TcpSegment | None
    other: UdpHeader | IcmpMessage | Icmp6Message | ArpPacket | None  # the non-TCP upper object

    @property
    def df(self) -> bool:
        return (self.frag_field & 0x4000) != 0

    @property
    def mf(self) -> bool:
        return (self.frag_field & 0x2000) != 0

    @property
    def frag_offset(self) -> int:
        return self.frag_field & 0x1FFF

    @property
    def is_fragment(self) -> bool:
        return (self.frag_field & 0x3FFF) != 0

    @property
    def has_ip_options(self) -> bool:
        hl = self.ip_header_len
        return hl is not None and hl > (20 if self.ip_version == 4 else 40)

    @property
    def hop_limit(self) -> int | None:
        return self.ttl

    @property
    def udp(self) -> UdpHeader | None:
        o = self.other
        return o if type(o) is UdpHeader else None

    @property
    def icmp(self) -> IcmpMessage | None:
        o = self.other
        return o if type(o) is IcmpMessage else None

    @property
    def icmp6(self) -> Icmp6Message | None:
        o = self.other
        return o if type(o) is Icmp6Message else None

    @property
    def arp(self) -> ArpPacket | None:
        o = self.other
        return o if type(o) is ArpPacket else None

    def __repr__(self) -> str:
        upper = self.tcp or self.other
        vlan = f" vlan {self.vlan_id}/{self.vlan_prio}" if self.vlan_id is not None else ""
        return f"<Frame {self.l3}{vlan} proto {self.l4_proto} {upper!r}>"


_new_frame = Frame.__new__


def parse_frame(buf: bytes | bytearray | memoryview, *, verify_checksums: bool = True) -> Frame | Drop:
    """Parse a whole Ethernet frame. Never raises on malformed input: returns a `Drop` instead.

    The Ethernet -> IPv4 -> TCP path is inlined: it is the per-segment receive path.
    """
    try:
        mv = buf if type(buf) is memoryview else memoryview(buf)
        n = len(mv)
        if n < ETH_HLEN:
            return Drop(DropReason.TRUNCATED_ETHERNET, f"{n} bytes")
        dst, src, et = _ETH.unpack_from(mv)
        off = ETH_HLEN
        vid = prio = None
        if et == ETH_P_8021Q:
            if n < 18:
                return Drop(DropReason.TRUNCATED_VLAN, f"{n} bytes")
            tci, et = _TCI_TYPE.unpack_from(mv, ETH_HLEN)
            vid = tci & 0x0FFF
            prio = tci >> 13
            off = 18
        if et != ETH_P_IPV4:
            if et == ETH_P_IPV6:
                return _parse_v6(mv, off, dst, src, vid, prio, et, verify_checksums)
            if et == ETH_P_ARP:
                a = parse_arp(mv[off:])
                if type(a) is Drop:
                    return a
                f = _blank(dst, src, vid, prio, et, off, L3_ARP)
                f.other = a  # type: ignore[assignment]
                return f
            return Drop(DropReason.UNKNOWN_ETHERTYPE, f"ethertype {et:#06x}")

        avail = n - off
        if avail < 20:
            return Drop(DropReason.TRUNCATED_IPV4, f"{avail} bytes")
        vihl, tos, total, ident, frag, ttl, proto, csum, isrc, idst = _IP4.unpack_from(mv, off)
        hl = (vihl & 0xF) << 2
        if vihl >> 4 != 4:
            return Drop(DropReason.BAD_IP_VERSION, f"version {vihl >> 4} in IPv4 ethertype")
        if hl < 20:
            return Drop(DropReason.BAD_IHL, f"IHL {hl >> 2}")
        if total < hl:
            return Drop(DropReason.BAD_IP_TOTAL_LEN, f"total length {total} < header {hl}")
        if total > avail:
            return Drop(DropReason.IP_TRUNCATED, f"total length {total} > {avail} bytes present")
        end = off + total
        l4off = off + hl
        if verify_checksums and int.from_bytes(mv[off:l4off], "big") % 0xFFFF:
            return Drop(DropReason.BAD_IPV4_CHECKSUM, f"header checksum {csum:#06x}")
        if hl > 20:
            err = check_ipv4_options(mv[off + 20 : l4off])
            if err is not None:
                return Drop(DropReason.BAD_IPV4_OPTIONS, err)
        f = _new_frame(Frame)
        f.eth_dst = dst
        f.eth_src = src
        f.vlan_id = vid
        f.vlan_prio = prio
        f.ethertype = et
        f.l2_len = off
        f.l3 = L3_IPV4
        f.ip_version = 4
        f.ip_src = isrc
        f.ip_dst = idst
        f.ttl = ttl
        f.tos = tos
        f.ip_id = ident
        f.frag_field = frag
        f.ip_total_len = total
        f.ip_header_len = hl
        f.flow_label = None
        f.l4_proto = proto
        f.ip_packet = mv[off:end]
        f.l4 = l4 = mv[l4off:end]
        f.tcp = None
        f.other = None
        if frag & 0x3FFF:  # MF or offset: a fragment, never reassembled here
            return f
        if proto == IPPROTO_TCP:
            tn = total - hl
            if tn < TCP_HLEN:
                return Drop(DropReason.TRUNCATED_TCP, f"{tn} bytes")
            sport, dport, seq, ack, doff, flags, win, tcsum, urg = _TCP.unpack_from(mv, l4off)
            thl = (doff >> 4) << 2
            if thl < TCP_HLEN or thl > tn:
                return Drop(DropReason.BAD_TCP_DATA_OFFSET, f"data offset {thl >> 2} words, segment {tn} bytes")
            if verify_checksums and (int.from_bytes(isrc + idst, "big") + IPPROTO_TCP + tn + raw_sum(l4)) % 0xFFFF:
                return Drop(DropReason.BAD_TCP_CHECKSUM, f"checksum {tcsum:#06x}")
            if thl == TCP_HLEN:
                f.tcp = TcpSegment(sport, dport, seq, ack, flags, win, l4[TCP_HLEN:], None, urg)
                return f
            if thl == 32:
                head, tsv, tse = _TS_BLOCK.unpack_from(mv, l4off + TCP_HLEN)
                if head == _TS_BLOCK_HEAD:  # NOP NOP TS: the options of nearly every data segment
                    f.tcp = TcpSegment(
                        sport, dport, seq, ack, flags, win, l4[32:],
                        TcpOptions(None, None, False, (), tsv, tse, (), _TS_ORDER), urg,
                    )
                    return f
            opts = parse_tcp_options(l4[TCP_HLEN:thl])
            if type(opts) is Drop:
                return opts
            f.tcp = TcpSegment(sport, dport, seq, ack, flags, win, l4[thl:], opts, urg)  # type: ignore[arg-type]
            return f
        if proto == IPPROTO_UDP:
            u = parse_udp(l4, isrc, idst, verify_checksums)
        elif proto == IPPROTO_ICMP:
            u = parse_icmp(l4, verify_checksums)  # type: ignore[assignment]
        else:
            return Drop(DropReason.UNKNOWN_IP_PROTOCOL, f"IPv4 protocol {proto}")
        if type(u) is Drop:
            return u
        f.other = u  # type: ignore[assignment]
        return f
    except Exception as exc:  # a parser bug must not take the receive path down; tests assert none occur
        return Drop(DropReason.PARSER_ERROR, f"{type(exc).__name__}: {exc}")


def _blank(dst: bytes, src: bytes, vid: int | None, prio: int | None, et: int, l2: int, l3: str) -> Frame:
    f = _new_frame(Frame)
    f.eth_dst = dst
    f.eth_src = src
    f.vlan_id = vid
    f.vlan_prio = prio
    f.ethertype = et
    f.l2_len = l2
    f.l3 = l3
    f.ip_version = None
    f.ip_src = None
    f.ip_dst = None
    f.ttl = None
    f.tos = None
    f.ip_id = None
    f.frag_field = 0
    f.ip_total_len = None
    f.ip_header_len = None
    f.flow_label = None
    f.l4_proto = None
    f.ip_packet = None
    f.l4 = None
    f.tcp = None
    f.other = None
    return f


def _parse_v6(
    mv: memoryview, off: int, dst: bytes, src: bytes, vid: int | None, prio: int | None, et: int, verify: bool
) -> Frame | Drop:
    h = parse_ipv6(mv[off:])
    if type(h) is Drop:
        return h
    assert isinstance(h, Ipv6Header)
    f = _blank(dst, src, vid, prio, et, off, L3_IPV6)
    f.ip_version = 6
    f.ip_src = h.src
    f.ip_dst = h.dst
    f.ttl = h.hop_limit
    f.tos = h.tclass
    f.flow_label = h.flow_label
    f.ip_id = h.ident
    # IPv6 routers never fragment (only the source may): report DF unless a fragment header is present.
    f.frag_field = (0 if h.has_frag_header else 0x4000) | (0x2000 if h.mf else 0) | h.frag_offset
    f.ip_total_len = 40 + h.payload_len
    f.ip_header_len = h.l4_offset
    f.l4_proto = nh = h.l4_proto
    f.ip_packet = h.packet
    f.l4 = l4 = h.payload
    if h.mf or h.frag_offset or nh == NH_NONE:
        return f
    if nh == IPPROTO_TCP:
        seg = parse_tcp(l4, h.src, h.pseudo_dst, verify)
        if type(seg) is Drop:
            return seg
        f.tcp = seg  # type: ignore[assignment]
        return f
    if nh == IPPROTO_UDP:
        u = parse_udp(l4, h.src, h.pseudo_dst, verify)
    elif nh == NH_ICMPV6:
        u = parse_icmpv6(l4, h.src, h.pseudo_dst, verify)  # type: ignore[assignment]
    else:
        return Drop(DropReason.IPV6_UNKNOWN_EXT_HEADER, f"next header {nh} is neither a known extension nor upper layer")
    if type(u) is Drop:
        return u
    f.other = u  # type: ignore[assignment]
    return f


# --------------------------------------------------------------------------------------------- build


class TcpFrameBuilder:
    """Writes Ethernet(+802.1Q)+IPv4/IPv6+TCP headers for one connection direction.

    The Ethernet+IP header template and the constant parts of the IPv4 header sum and of the TCP
    pseudo-header sum are computed once. `build` copies the template, patches lengths/ID, writes the
    TCP header and computes the TCP checksum over the payload view without copying it. The payload is
    not written: the frame on the wire is `buf[:hlen]` followed by `seg.payload`. `build_frame`
    returns the whole frame as bytes (tests, control plane).

    R-VLAN-05 decides the tag from (vlan_id, vlan_prio); CFI is always 0. For IPv6 `ttl` is the hop
    limit and `tos` the traffic class. `csum_start`/`csum_offset` (vnet header; NDIS calls the former
    TcpHeaderOffset in NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO) are fixed per builder.
    """

    __slots__ = (
        "_ip4_base",
        "_l2",
        "_pseudo",
        "_tcp_off",
        "_template",
        "_v6",
        "csum_offset",
        "csum_start",
        "eth_dst",
        "eth_src",
        "ip_dst",
        "ip_src",
        "vlan_id",
        "vlan_prio",
    )

    @property
    def l2_len(self) -> int:
        """Bytes of Ethernet (+ 802.1Q) header in front of the IP header of every frame this builds."""
        return self._l2

    def __init__(
        self,
        eth_src: bytes,
        eth_dst: bytes,
        ip_src: bytes,
        ip_dst: bytes,
        *,
        vlan_id: int = 0,
        vlan_prio: int = 0,
        ttl: int = 64,
        tos: int = 0,
        df: bool = True,
        flow_label: int = 0,
    ) -> None:
        if len(ip_src) != len(ip_dst) or len(ip_src) not in (4, 16):
            raise ValueError("ip_src/ip_dst must both be 4 (IPv4) or 16 (IPv6) bytes")
        self.eth_src = eth_src
        self.eth_dst = eth_dst
        self.ip_src = ip_src
        self.ip_dst = ip_dst
        self.vlan_id = vlan_id
        self.vlan_prio = vlan_prio
        self._v6 = v6 = len(ip_src) == 16
        eth = encode_ethernet(eth_dst, eth_src, ETH_P_IPV6 if v6 else ETH_P_IPV4, vlan_id, vlan_prio)
        self._l2 = l2 = len(eth)
        tmpl = bytearray(l2 + (40 if v6 else 20))
        tmpl[:l2] = eth
        if v6:
            write_ipv6_header(tmpl, l2, ip_src, ip_dst, IPPROTO_TCP, 0, hop_limit=ttl, tclass=tos, flow_label=flow_label)
            self._ip4_base = 0
        else:
            write_ipv4_header(tmpl, l2, ip_src, ip_dst, IPPROTO_TCP, 0, ttl=ttl, tos=tos, ident=0, df=df)
            struct.pack_into("!HH", tmpl, l2 + 2, 0, 0)
            struct.pack_into("!H", tmpl, l2 + 10, 0)
            self._ip4_base = int.from_bytes(tmpl[l2 : l2 + 20], "big")
        self._template = bytes(tmpl)
        self._tcp_off = len(tmpl)
        self._pseudo = int.from_bytes(ip_src, "big") + int.from_bytes(ip_dst, "big") + IPPROTO_TCP
        self.csum_start = len(tmpl)  # vnet header: checksum coverage starts at the TCP header
        self.csum_offset = TCP_CSUM_OFFSET

    @property
    def header_room(self) -> int:
        """Largest header `build` can write (TCP options at their 40-byte maximum)."""
        return self._tcp_off + 60

    def build(
        self, buf: bytearray | memoryview, seg: TcpSegment, *, ip_id: int = 0, offload_csum: bool = False
    ) -> int:
        """Write all headers for `seg` at buf[0:]; returns the header length.

        offload_csum=False: full TCP checksum. offload_csum=True: the field holds the folded pseudo-header
        sum (Linux CHECKSUM_PARTIAL); checksumming from `csum_start` to the end of the frame and storing
        the complement at `csum_start + csum_offset` completes it.
        """
        t = self._tcp_off
        buf[:t] = self._template
        thl = write_tcp_header(buf, t, seg)
        payload = seg.payload
        tcp_len = thl + len(payload)
        l2 = self._l2
        if self._v6:
            _U16.pack_into(buf, l2 + 4, tcp_len)
        else:
            total = 20 + tcp_len
            _U16x2.pack_into(buf, l2 + 2, total, ip_id)
            r = (self._ip4_base + total + ip_id) % 0xFFFF
            _U16.pack_into(buf, l2 + 10, 0xFFFF - r if r else 0)  # never all-zero: version nibble
        if offload_csum:
            _U16.pack_into(buf, t + TCP_CSUM_OFFSET, fold(self._pseudo + tcp_len))
        else:
            # The header length is a multiple of 4, so the payload starts word-aligned: plain sum.
            r = (self._pseudo + tcp_len + int.from_bytes(buf[t : t + thl], "big") + raw_sum(payload)) % 0xFFFF
            _U16.pack_into(buf, t + TCP_CSUM_OFFSET, 0xFFFF - r if r else 0)
        return t + thl

    def build_frame(self, seg: TcpSegment, *, ip_id: int = 0, offload_csum: bool = False) -> bytes:
        buf = bytearray(self.header_room)
        hlen = self.build(buf, seg, ip_id=ip_id, offload_csum=offload_csum)
        return bytes(buf[:hlen]) + bytes(seg.payload)


def encode_tcp_frame(
    seg: TcpSegment,
    *,
    eth_src: bytes,
    eth_dst: bytes,
    ip_src: bytes,
    ip_dst: bytes,
    vlan_id: int = 0,
    vlan_prio: int = 0,
    ttl: int = 64,
    tos: int = 0,
    ip_id: int = 0,
    df: bool = True,
    flow_label: int = 0,
    offload_csum: bool = False,
) -> bytes:
    """A whole TCP frame as bytes (IPv4 or IPv6 by address length)."""
    b = TcpFrameBuilder(
        eth_src, eth_dst, ip_src, ip_dst, vlan_id=vlan_id, vlan_prio=vlan_prio, ttl=ttl, tos=tos, df=df,
        flow_label=flow_label,
    )
    return b.build_frame(seg, ip_id=ip_id, offload_csum=offload_csum)


def strip_ipv4_options(frame: bytes | bytearray | memoryview) -> bytes:
    """The same IPv4 TCP frame with its IP options removed (IHL 5, total length and header checksum
    rewritten); any other frame comes back unchanged. For tests and example targets, not the data path."""
    f = parse_frame(frame, verify_checksums=False)
    if type(f) is Drop or f.tcp is None or not f.has_ip_options or f.ip_version != 4:  # type: ignore[union-attr]
        return bytes(frame)
    l2, hl = f.l2_len, f.ip_header_len or 20  # type: ignore[union-attr]
    ip = bytearray(frame[l2:])
    del ip[20:hl]
    ip[0] = (ip[0] & 0xF0) | 5
    ip[2:4] = (int.from_bytes(ip[2:4], "big") - (hl - 20)).to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = checksum(bytes(ip[:20])).to_bytes(2, "big")
    return bytes(frame[:l2]) + bytes(ip)


def encode_ipv4_frame(
    eth_src: bytes,
    eth_dst: bytes,
    ip_src: bytes,
    ip_dst: bytes,
    proto: int,
    l4: bytes,
    *,
    vlan_id: int = 0,
    vlan_prio: int = 0,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    df: bool = True,
) -> bytes:
    """Ethernet(+tag) + 20-byte IPv4 header + `l4` (e.g. an ICMP message from `icmp.build_*`)."""
    eth = encode_ethernet(eth_dst, eth_src, ETH_P_IPV4, vlan_id, vlan_prio)
    ip = bytearray(20)
    write_ipv4_header(ip, 0, ip_src, ip_dst, proto, len(l4), ttl=ttl, tos=tos, ident=ident, df=df)
    return eth + bytes(ip) + bytes(l4)


def encode_ipv6_frame(
    eth_src: bytes,
    eth_dst: bytes,
    ip_src: bytes,
    ip_dst: bytes,
    next_header: int,
    l4: bytes,
    *,
    vlan_id: int = 0,
    vlan_prio: int = 0,
    hop_limit: int = 64,
    tclass: int = 0,
    flow_label: int = 0,
) -> bytes:
    """Ethernet(+tag) + 40-byte IPv6 header + `l4` (e.g. an ICMPv6 message from `icmpv6.build_*`)."""
    eth = encode_ethernet(eth_dst, eth_src, ETH_P_IPV6, vlan_id, vlan_prio)
    ip = bytearray(40)
    write_ipv6_header(ip, 0, ip_src, ip_dst, next_header, len(l4), hop_limit=hop_limit, tclass=tclass,
                      flow_label=flow_label)
    return eth + bytes(ip) + bytes(l4)


def encode_arp_frame(
    op: int,
    sender_mac: bytes,
    sender_ip: bytes,
    target_ip: bytes,
    *,
    target_mac: bytes | None = None,
    eth_dst: bytes | None = None,
    vlan_id: int = 0,
    vlan_prio: int = 0,
) -> bytes:
    """ARP request (broadcast, zero target MAC) or reply (unicast to `target_mac`) frame."""
    if op == ARP_REQUEST:
        tmac = target_mac if target_mac is not None else b"\x00" * 6
        dst = eth_dst if eth_dst is not None else BROADCAST
    elif op == ARP_REPLY:
        if target_mac is None:
            raise ValueError("an ARP reply needs target_mac")
        tmac = target_mac
        dst = eth_dst if eth_dst is not None else target_mac
    else:
        raise ValueError(f"ARP opcode {op}")
    eth = encode_ethernet(dst, sender_mac, ETH_P_ARP, vlan_id, vlan_prio)
    return eth + arp_bytes(op, sender_mac, sender_ip, tmac, target_ip)


__all__ = [
    "L3_ARP",
    "L3_IPV4",
    "L3_IPV6",
    "Frame",
    "TcpFrameBuilder",
    "encode_arp_frame",
    "encode_ipv4_frame",
    "encode_ipv6_frame",
    "encode_tcp_frame",
    "eth_header_len",
    "parse_frame",
]
