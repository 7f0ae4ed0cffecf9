"""The real wire: TapDevice/TapPort against Linux in a namespace created per test.

Linux (inside the namespace, 198.18.0.1) talks to frames we build with scapy on the TapPort side
(198.18.0.2), which proves both directions of the TAP before any host stack is attached.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from chimney.links.base import DropCause
from chimney.links.impair import Impairments
from chimney.links.netns import NetNamespace, TapTopology, drive, kernel_supports_netns, ping_result
from chimney.links.tap import TUN_F_CSUM, TapDevice, TapPort
from chimney.links.vnet import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VnetHdr,
    complete_checksum,
    ones_complement_sum,
)
from chimney.sim import SimScheduler
from chimney.sim.realtime import RealTimeScheduler

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _needs_kernel() -> None:
    ok, why = kernel_supports_netns()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def sched() -> Iterator[RealTimeScheduler]:
    with RealTimeScheduler() as s:
        yield s


@pytest.fixture
def topo() -> Iterator[TapTopology]:
    with TapTopology.unique() as t:
        yield t


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


class ScapyResponder:
    """Our side of the wire, hand-built: answers ARP for our address and ICMP echo requests."""

    def __init__(self, topo: TapTopology, port: TapPort, answer: bool = True) -> None:
        self.topo, self.port, self.answer = topo, port, answer
        self.mac = _mac(topo.our_mac)
        self.arp_requests = 0
        self.echo_requests = 0
        port.set_receiver(self.on_frame)

    def on_frame(self, frame: bytes) -> None:
        eth = Ether(frame)
        if ARP in eth and eth[ARP].op == 1 and eth[ARP].pdst == self.topo.our_ip:
            self.arp_requests += 1
            if self.answer:
                reply = Ether(dst=eth.src, src=self.mac) / ARP(
                    op=2, hwsrc=self.mac, psrc=self.topo.our_ip, hwdst=eth.src, pdst=eth[ARP].psrc
                )
                self.port.send(bytes(reply))
        elif ICMP in eth and eth[ICMP].type == 8 and eth[IP].dst == self.topo.our_ip:
            self.echo_requests += 1
            if self.answer:
                reply = (
                    Ether(dst=eth.src, src=self.mac)
                    / IP(src=self.topo.our_ip, dst=eth[IP].src)
                    / ICMP(type=0, id=eth[ICMP].id, seq=eth[ICMP].seq)
                    / bytes(eth[ICMP].payload)
                )
                self.port.send(bytes(reply), meta="scapy echo reply")


def _ping(topo: TapTopology, sched: RealTimeScheduler, count: int = 3) -> int:
    p = topo.ns.ping_popen(topo.our_ip, count=count, timeout_s=1.0, interval_s=0.1)
    assert drive(sched, lambda: p.poll() is not None, timeout_s=count * 1.2 + 5)
    return ping_result(p)


def _rx_packets(ns: NetNamespace, ifname: str) -> int:
    info = json.loads(ns.ip("-s", "-j", "link", "show", "dev", ifname).stdout)
    return int(info[0]["stats64"]["rx"]["packets"])


def test_tap_opens_inside_the_namespace_and_vanishes_on_close() -> None:
    with NetNamespace.unique() as ns:
        dev = TapDevice("chtest0", netns=ns.name, mtu=1400)
        assert dev.name == "chtest0" and dev.mtu == 1400
        assert "chtest0" in ns.ip("link", "show").stdout
        assert "mtu 1400" in ns.ip("link", "show", "dev", "chtest0").stdout
        assert len(dev.mac) == 6 and dev.ifindex > 0
        assert dev.read() is None  # interface down: nothing waits, non-blocking read says so
        dev.close()
        assert dev.closed
        assert "chtest0" not in ns.ip("link", "show").stdout  # not persistent: gone with its fd


def test_mtu_change_resizes_the_read_buffer(topo: TapTopology) -> None:
    assert topo.tap is not None
    before = topo.tap.read_size
    topo.tap.set_mtu(9000)
    assert topo.tap.read_size == before + 7500
    assert "mtu 9000" in topo.ns.ip("link", "show", "dev", topo.tap_name).stdout
    topo.ns.ip("link", "set", "dev", topo.tap_name, "mtu", "1280")
    assert topo.tap.refresh_mtu() == 1280


def test_linux_arp_requests_for_our_address_reach_the_tap_port(topo: TapTopology, sched: RealTimeScheduler) -> None:
    port = topo.port(sched)
    silent = ScapyResponder(topo, port, answer=False)
    assert _ping(topo, sched, count=1) == 0
    assert silent.arp_requests >= 1
    assert silent.echo_requests == 0  # without an ARP answer Linux never sends the echo
    assert port.frames_in >= 1 and port.rx_frames == port.frames_in


def test_linux_ping_succeeds_when_our_side_answers_arp_and_echo(topo: TapTopology, sched: RealTimeScheduler) -> None:
    port = topo.port(sched)
    responder = ScapyResponder(topo, port)
    seen: list[tuple[str, str | None]] = []
    port.add_observer(lambda d, f, meta: seen.append((d, meta)))
    assert _ping(topo, sched, count=3) == 3
    assert responder.echo_requests == 3 and responder.arp_requests >= 1
    assert port.counters.sent == responder.echo_requests + responder.arp_requests
    assert ("tx", "scapy echo reply") in seen and ("rx", None) in seen


def test_frames_without_a_receiver_are_counted_drops(topo: TapTopology, sched: RealTimeScheduler) -> None:
    port = topo.port(sched)
    assert _ping(topo, sched, count=1) == 0
    assert port.drops.get("rx_no_receiver", 0) == port.frames_in >= 1
    assert port.rx_frames == 0


def test_scatter_writes_arrive_as_one_frame_each(topo: TapTopology) -> None:
    assert topo.tap is not None
    # A frame Linux receives and counts, then ignores (not for its MAC).
    eth = bytes.fromhex("02c6120000ff") + topo.our_mac + b"\x88\xb5"
    payload = memoryview(bytes(range(256)) * 4)
    before = _rx_packets(topo.ns, topo.tap_name)
    for _ in range(5):
        assert topo.tap.writev((eth, payload[:500])) == 14 + 500
    assert _rx_packets(topo.ns, topo.tap_name) - before == 5


def test_send_on_a_downed_interface_is_a_counted_link_down_drop(
    topo: TapTopology, sched: RealTimeScheduler
) -> None:
    port = topo.port(sched)
    topo.ns.ip("link", "set", "dev", topo.tap_name, "down")
    assert port.send(bytes(60)) is False
    assert port.counters.dropped[DropCause.LINK_DOWN] == 1
    assert port.errors_out == 1 and port.drops == {"tx_EIO": 1}


@pytest.mark.parametrize("hdr_sz", [10, 12])
def test_vnet_mode_delivers_linux_syn_with_partial_checksum_metadata(sched: RealTimeScheduler, hdr_sz: int) -> None:
    with TapTopology.unique(vnet_hdr=True, vnet_hdr_sz=hdr_sz, static_neigh=True) as topo:
        assert topo.tap is not None and topo.tap.vnet_hdr_sz == hdr_sz
        port = topo.port(sched)
        got: list[tuple[bytes, VnetHdr | None]] = []
        port.set_vnet_receiver(lambda frame, hdr: got.append((frame, hdr)))
        client = topo.ns.python(
            "import socket,sys\n"
            "s=socket.socket(); s.settimeout(1.0)\n"
            "try: s.connect((sys.argv[1], 8080))\n"
            "except OSError: pass\n",
            topo.our_ip,
        )
        assert drive(sched, lambda: any(TCP in Ether(f) for f, _ in got), timeout_s=5)
        client.kill()
        frame, hdr = next((f, h) for f, h in got if TCP in Ether(f))
        assert Ether(frame)[TCP].flags == "S" and Ether(frame)[TCP].dport == 8080
        assert hdr is not None and hdr.needs_csum and not hdr.is_gso
        assert (hdr.csum_start, hdr.csum_offset) == (14 + 20, 16)
        fixed = bytearray(frame)
        complete_checksum(fixed, hdr)
        pkt = Ether(bytes(fixed))
        del pkt[TCP].chksum
        assert Ether(bytes(pkt))[TCP].chksum == Ether(bytes(fixed))[TCP].chksum


def test_vnet_send_with_needs_csum_is_accepted_by_linux(sched: RealTimeScheduler) -> None:
    """Our SYN leaves with only the pseudo-header sum; Linux trusts the header and answers SYN-ACK."""
    with TapTopology.unique(vnet_hdr=True, offload=TUN_F_CSUM, static_neigh=True) as topo:
        port = topo.port(sched)
        listener = topo.ns.python(
            "import socket,sys,time\n"
            "s=socket.socket(); s.bind(('198.18.0.1', 8081)); s.listen(); print('ready', flush=True)\n"
            "time.sleep(10)\n",
            text=True,
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        replies: list[bytes] = []
        port.set_vnet_receiver(lambda frame, hdr: replies.append(frame))
        syn = (
            Ether(dst=_mac(topo.linux_mac), src=_mac(topo.our_mac))
            / IP(src=topo.our_ip, dst=topo.linux_ip)
            / TCP(sport=40001, dport=8081, flags="S", seq=1000)
        )
        frame = bytearray(bytes(syn))
        pseudo = bytes(map(int, topo.our_ip.split("."))) + bytes(map(int, topo.linux_ip.split(".")))
        pseudo += struct.pack("!BBH", 0, 6, len(frame) - 34)
        struct.pack_into("!H", frame, 34 + 16, ones_complement_sum(pseudo))
        hdr = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)
        assert port.send_vnet(frame, hdr)

        def syn_ack() -> bool:
            return any(TCP in Ether(f) and Ether(f)[TCP].flags == "SA" and Ether(f)[TCP].ack == 1001 for f in replies)

        assert drive(sched, syn_ack, timeout_s=5)


class TinyTcpPeer:
    """Just enough TCP (scapy-built) to accept one connection from Linux and acknowledge its data."""

    def __init__(self, topo: TapTopology, port: TapPort, lport: int) -> None:
        self.topo, self.port, self.lport = topo, port, lport
        self.our_seq = 5000
        self.peer_port = 0
        self.rcv_nxt = 0
        self.data_frames: list[tuple[int, VnetHdr | None]] = []  # (frame length, header)
        self.received = 0
        port.set_vnet_receiver(self.on_frame)

    def _segment(self, flags: str, payload: bytes = b"", **tcp: object) -> Ether:
        return (
            Ether(dst=_mac(self.topo.linux_mac), src=_mac(self.topo.our_mac))
            / IP(src=self.topo.our_ip, dst=self.topo.linux_ip)
            / TCP(
                sport=self.lport,
                dport=self.peer_port,
                flags=flags,
                seq=self.our_seq,
                ack=self.rcv_nxt,
                window=65535,
                **tcp,
            )
            / payload
        )

    def on_frame(self, frame: bytes, hdr: VnetHdr | None) -> None:
        eth = Ether(frame)
        if TCP not in eth or eth[TCP].dport != self.lport:
            return
        seg = eth[TCP]
        if seg.flags == "S":
            self.peer_port, self.rcv_nxt = seg.sport, seg.seq + 1
            self.port.send(bytes(self._segment("SA", options=[("MSS", 1460)])))
            self.our_seq += 1
            return
        n = len(eth[IP]) - eth[IP].ihl * 4 - seg.dataofs * 4  # IP total length covers a whole GSO frame
        if n > 0 and seg.seq == self.rcv_nxt:
            self.data_frames.append((len(frame), hdr))
            self.rcv_nxt += n
            self.received += n
            self.port.send(bytes(self._segment("A")))

    def send_gso(self, data: bytes, mss: int) -> bool:
        """One super-segment; the kernel (not us) is asked to treat it as `mss`-sized segments."""
        frame = bytearray(bytes(self._segment("PA", data)))
        pseudo = bytes(map(int, self.topo.our_ip.split("."))) + bytes(map(int, self.topo.linux_ip.split(".")))
        pseudo += struct.pack("!BBH", 0, 6, len(frame) - 34)
        struct.pack_into("!H", frame, 34 + 16, ones_complement_sum(pseudo))
        hdr = VnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 14 + 20 + 20, mss, 34, 16)
        ok = self.port.send_vnet(frame, hdr)
        self.our_seq += len(data)
        return ok


def test_tso_hands_over_64k_super_segments_and_takes_ours(sched: RealTimeScheduler) -> None:
    """With TUN_F_TSO4 Linux sends us frames far above the MTU tagged GSO_TCPV4 with the MSS, and
    accepts a GSO super-segment from us (the kernel cuts it, like a NIC doing large send offload)."""
    with TapTopology.unique(vnet_hdr=True, static_neigh=True) as topo:
        port = topo.port(sched)
        peer = TinyTcpPeer(topo, port, 8090)
        client = topo.ns.python(
            "import socket,sys\n"
            "s=socket.create_connection((sys.argv[1], 8090), timeout=5)\n"
            "s.sendall(bytes(60000))\n"
            "got=0\n"
            "while got < 4000:\n"
            "    b=s.recv(65536)\n"
            "    if not b: break\n"
            "    got+=len(b)\n"
            "print(got)\n",
            topo.our_ip,
            text=True,
        )
        assert drive(sched, lambda: peer.received >= 60000, timeout_s=8), peer.received
        big = [(ln, h) for ln, h in peer.data_frames if ln > topo.mtu + 14]
        assert big, f"no super-segment among {len(peer.data_frames)} data frames"
        h = big[0][1]
        # Our SYN-ACK offered MSS 1460 and no timestamps, so every segment carries exactly 1460.
        assert h is not None and h.gso == VIRTIO_NET_HDR_GSO_TCPV4 and h.gso_size == 1460
        assert h.needs_csum and h.hdr_len >= 14 + 20 + 20
        assert peer.send_gso(bytes(range(250)) * 16, mss=1000)
        assert drive(sched, lambda: client.poll() is not None, timeout_s=8)
        out, _ = client.communicate()
        assert out.strip() == "4000"


def test_read_batch_drains_what_linux_sent(topo: TapTopology) -> None:
    assert topo.tap is not None
    p = topo.ns.ping_popen(topo.our_ip, count=1, timeout_s=1.0)
    frames: list[bytes] = []
    for _ in range(200):  # bounded wait for the first ARP request
        frames += topo.tap.read_batch(8)
        if frames or p.poll() is not None:
            break
        time.sleep(0.01)
    p.kill()
    assert frames and all(len(f) >= 14 for f in frames)
    assert any(f[12:14] == b"\x08\x06" and f[:6] == b"\xff" * 6 for f in frames)  # broadcast ARP
    assert topo.tap.read_batch(8) == []


def test_plain_receiver_in_vnet_mode_sees_offload_info_in_rx_vnet(sched: RealTimeScheduler) -> None:
    with TapTopology.unique(vnet_hdr=True, static_neigh=True) as topo:
        port = topo.port(sched)
        seen: list[VnetHdr | None] = []
        port.set_receiver(lambda frame: seen.append(port.rx_vnet) if TCP in Ether(frame) else None)
        client = topo.ns.python(
            "import socket,sys\ns=socket.socket(); s.settimeout(1.0)\n"
            "try: s.connect((sys.argv[1], 8080))\nexcept OSError: pass\n",
            topo.our_ip,
        )
        assert drive(sched, lambda: bool(seen), timeout_s=5)
        client.kill()
        assert seen[0] is not None and seen[0].needs_csum
        assert port.rx_vnet is None  # only meaningful while the receiver runs
        with pytest.raises(ValueError, match="without vnet headers"):
            port.set_impairments(inbound=Impairments(loss=0.5))


def test_a_tap_port_refuses_a_scheduler_that_cannot_watch_fds(topo: TapTopology) -> None:
    with pytest.raises(NotImplementedError, match="file descriptors"):
        topo.port(SimScheduler())
    with pytest.raises(TypeError, match="add_reader"):
        topo.port(object())


def test_runts_and_oversized_frames_are_counted_drops_not_written(topo: TapTopology, sched: RealTimeScheduler) -> None:
    port = topo.port(sched)
    before = _rx_packets(topo.ns, topo.tap_name)
    eth = bytes.fromhex("02c6120000ff") + topo.our_mac + b"\x88\xb5"
    assert port.send(eth[:10]) is False
    assert port.send(eth + bytes(topo.mtu + 1)) is False
    tagged = bytes.fromhex("02c6120000ff") + topo.our_mac + b"\x81\x00\x00\x05\x88\xb5"
    assert port.send(tagged + bytes(topo.mtu))  # an 802.1Q tag earns 4 extra bytes
    c = port.counters
    assert (c.dropped[DropCause.RUNT], c.dropped[DropCause.MTU]) == (1, 1)
    assert (c.sent, c.delivered) == (3, 1)
    assert _rx_packets(topo.ns, topo.tap_name) - before == 1


def test_send_many_writes_a_burst_with_the_same_checks_and_counters(
    topo: TapTopology, sched: RealTimeScheduler
) -> None:
    port = topo.port(sched)
    eth = bytes.fromhex("02c6120000ff") + topo.our_mac + b"\x88\xb5"
    good = eth + bytes(100)
    before = _rx_packets(topo.ns, topo.tap_name)
    assert port.send_many([good, eth[:5], good, eth + bytes(topo.mtu + 1), memoryview(good)]) == 3
    c = port.counters
    assert (c.sent, c.delivered, c.bytes_delivered) == (5, 3, 3 * len(good))
    assert (c.dropped[DropCause.RUNT], c.dropped[DropCause.MTU]) == (1, 1)
    assert _rx_packets(topo.ns, topo.tap_name) - before == 3


_UDP_BURST = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in range(1, 1 + int(sys.argv[2])):
    s.sendto(bytes((size * 7 + i) & 0xFF for i in range(size * 9 % 1400 + 1)), (sys.argv[1], 9))
"""


def test_csum_receiver_gets_each_frame_with_the_complete_sum_of_its_l3_bytes(sched: RealTimeScheduler) -> None:
    """Slabs of frames summed in one go: every frame's sum equals the one's-complement sum of frame[14:]
    computed one frame at a time, for odd and even lengths and across slab boundaries."""
    with TapTopology.unique(static_neigh=True) as topo:
        port = topo.port(sched)
        plain: list[bytes] = []
        got: list[tuple[bytes, int]] = []
        port.set_receiver(plain.append)
        assert port.set_csum_receiver(lambda frame, csum: got.append((bytes(frame), csum)))
        drains = [0]
        port.set_drain_end(lambda: drains.__setitem__(0, drains[0] + 1))
        count = 150  # more than two slabs of SLAB_FRAMES
        p = topo.ns.python(_UDP_BURST, topo.our_ip, str(count))
        assert drive(sched, lambda: p.poll() is not None and sum(1 for f, _ in got if f[23] == 17) >= count,
                     timeout_s=10)
        udp = [(f, c) for f, c in got if len(f) > 23 and f[12:14] == b"\x08\x00" and f[23] == 17]
        assert len(udp) == count and plain == []
        assert {len(f) & 1 for f, _ in udp} == {0, 1}
        for frame, csum in got:
            assert csum == ones_complement_sum(frame[14:]) % 0xFFFF, len(frame)
        assert port.rx_frames == len(got) and 1 <= drains[0] <= port.wakeups


def test_observers_send_frames_to_the_plain_receiver_even_with_a_csum_receiver(topo: TapTopology,
                                                                                 sched: RealTimeScheduler) -> None:
    port = topo.port(sched)
    plain: list[bytes] = []
    summed: list[bytes] = []
    port.set_receiver(plain.append)
    port.set_csum_receiver(lambda frame, csum: summed.append(bytes(frame)))
    port.add_observer(lambda d, f, m: None)
    assert _ping(topo, sched, count=1) == 0
    assert plain and summed == []
    port.set_receiver(plain.append)  # a new plain receiver ends the csum delivery
    assert port._csum_receiver is None


def test_vnet_offloads_reports_what_linux_may_hand_us(sched: RealTimeScheduler) -> None:
    with TapTopology.unique() as plain_topo:
        assert plain_topo.port(sched).vnet_offloads is None
    with TapTopology.unique(vnet_hdr=True, offload=TUN_F_CSUM) as topo:
        assert topo.port(sched).vnet_offloads == (True, False)


def test_frames_already_read_into_a_slab_survive_a_receiver_change(sched: RealTimeScheduler) -> None:
    """The csum receiver swaps itself for a plain one on its first UDP frame: the frames read into the same
    slab behind it are handed to the new receiver, none is lost."""
    with TapTopology.unique(static_neigh=True) as topo:
        port = topo.port(sched)
        summed: list[bytes] = []
        plain: list[bytes] = []

        def first(frame: memoryview, csum: int) -> None:
            summed.append(bytes(frame))
            if frame[23] == 17:
                port.set_receiver(plain.append)

        port.set_receiver(plain.append)
        port.set_csum_receiver(first)
        count = 40
        p = topo.ns.python(_UDP_BURST, topo.our_ip, str(count))
        p.wait(10)
        time.sleep(0.05)  # the whole burst waits in the TAP queue: one drain reads it into one slab
        assert drive(sched, lambda: sum(1 for f in summed + plain if f[23] == 17) >= count, timeout_s=10)
        udp = [f for f in summed + plain if len(f) > 23 and f[23] == 17]
        assert len(udp) == count and sum(1 for f in summed if f[23] == 17) == 1


@pytest.mark.parametrize("vnet", [True, False], ids=["vnet_views", "plain_slabs"])
def test_frames_held_as_views_keep_their_bytes_while_the_port_reuses_free_buffers(
    sched: RealTimeScheduler, vnet: bool
) -> None:
    """The receive pool lends buffers as views: every other frame's view is kept to the end, the rest are
    dropped at once, and every kept view still reads what arrived (vnet views and plain slabs alike)."""
    count = 200
    with TapTopology.unique(static_neigh=True, vnet_hdr=vnet) as topo:
        port = topo.port(sched)
        kept: list[tuple[memoryview, bytes]] = []
        seen = [0]

        def take(frame: memoryview) -> None:
            if len(frame) > 23 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
                seen[0] += 1
                if seen[0] % 2:
                    kept.append((frame, bytes(frame)))

        if vnet:
            port.set_vnet_receiver(lambda frame, hdr: take(frame), views=True)  # type: ignore[arg-type]
        else:
            port.set_receiver(lambda frame: None)
            port.set_csum_receiver(lambda frame, csum: take(frame))
        p = topo.ns.python(_UDP_BURST, topo.our_ip, str(count))
        assert drive(sched, lambda: p.poll() is not None and seen[0] >= count, timeout_s=10)
        assert seen[0] == count and len(kept) == count // 2
        assert all(bytes(view) == copy for view, copy in kept)
        assert all(view.readonly for view, _ in kept)  # lent buffers are the port's: look, never touch
        pool = port._rx_pool if vnet else port._slab_pool
        assert pool is not None and pool.allocated >= 1
        label = "rx_pool" if vnet else "slab_pool"
        assert port.counter_dict()[f"{label}_allocated"] == pool.allocated
        if vnet:
            # Half the frames were dropped at once: their buffers were lent again.
            assert pool.reused > 0 and pool.allocated < count
