"""Captures of links and ports: what scapy/tshark and our reader see, and replaying a capture into a port."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgReader, rdpcap

from chimney.links import Impairments, Link, Switch
from chimney.sim import NS_PER_MS, NS_PER_US, SimScheduler
from chimney.trace import Capture, PcapFormatError, Replayer, read_capture

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def segment(i: int, from_a: bool = True, payload_len: int = 200) -> bytes:
    src, dst = (MAC_A, MAC_B) if from_a else (MAC_B, MAC_A)
    ips = ("198.18.0.1", "198.18.0.2") if from_a else ("198.18.0.2", "198.18.0.1")
    ports = (40000, 80) if from_a else (80, 40000)
    return bytes(
        Ether(src=src, dst=dst)
        / IP(src=ips[0], dst=ips[1])
        / TCP(sport=ports[0], dport=ports[1], seq=1000 + i * payload_len, ack=1, flags="PA")
        / (bytes([65 + i % 26]) * payload_len)
    )


def wan(sched: SimScheduler) -> Link:
    imp = Impairments(rate_bps=100_000_000, delay_ns=3 * NS_PER_MS)
    link = Link(sched, "wan", imp, imp)
    link.a.set_receiver(lambda f: None)
    link.b.set_receiver(lambda f: None)
    return link


def test_link_capture_at_send_reads_back_in_scapy_with_ns_times_and_comments(tmp_path: Path) -> None:
    sched = SimScheduler(seed=1)
    link = wan(sched)
    path = tmp_path / "wan.pcapng"
    cap = Capture(path, sched)
    assert cap.attach(link) == [0, 1]
    sched.call_at(1_234_567, link.a.send, segment(0), "conn 3, offloaded, sent by the target")
    sched.call_at(2_000_001, link.b.send, segment(1, from_a=False), "conn 3, ack from peer")
    sched.call_at(2_500_003, link.a.send, segment(2))
    sched.run()
    cap.close()

    pkts = list(PcapNgReader(str(path)))
    assert [p.time for p in pkts] == [Decimal("0.001234567"), Decimal("0.002000001"), Decimal("0.002500003")]
    assert [p.comments for p in pkts] == [[b"conn 3, offloaded, sent by the target"], [b"conn 3, ack from peer"], None]
    assert [p.sniffed_on for p in pkts] == ["wan a_to_b", "wan b_to_a", "wan a_to_b"]
    assert [p[TCP].seq for p in pkts] == [1000, 1200, 1400]
    assert all(p[IP].chksum == IP(bytes(p[IP])).chksum for p in pkts)

    recs = list(read_capture(path))
    assert [(r.interface_name, r.timestamp_ns) for r in recs] == [
        ("wan a_to_b", 1_234_567),
        ("wan b_to_a", 2_000_001),
        ("wan a_to_b", 2_500_003),
    ]
    assert [r.direction for r in recs] == ["out", "out", "out"]


def test_capture_at_delivery_shows_arrival_times_and_impairment_notes(tmp_path: Path) -> None:
    sched = SimScheduler(seed=4)
    link = Link(sched, "noisy", Impairments(delay_ns=50 * NS_PER_US, corrupt=0.5, duplicate=0.3))
    got: list[bytes] = []
    link.b.set_receiver(got.append)
    path = tmp_path / "noisy.pcapng"
    with Capture(path, sched) as cap:
        cap.attach(link, at="both")
        for i in range(40):
            link.a.send(segment(i), f"seg {i}")
        sched.run()
    recs = [r for r in read_capture(path) if r.interface_name == "noisy a_to_b"]
    sent = [r for r in recs if r.direction == "out"]
    arrived = [r for r in recs if r.direction == "in"]
    assert len(sent) == 40 and all(r.timestamp_ns == 0 for r in sent)
    assert [r.data for r in arrived] == got
    assert all(r.timestamp_ns == 50 * NS_PER_US for r in arrived)
    dups = [r for r in arrived if r.comment and r.comment.endswith("duplicate")]
    # a duplicate of a damaged frame carries the same damage and both notes
    damaged = [r for r in arrived if r.comment and "corrupted" in r.comment and r not in dups]
    assert len(damaged) == link.a.counters.corrupted > 0
    assert len(dups) == link.a.counters.duplicated > 0
    originals = {r.comment: r.data for r in sent}
    for r in damaged:
        assert r.data != originals[r.comment.split(";")[0]]


def test_port_capture_records_both_directions_on_one_interface(tmp_path: Path) -> None:
    sched = SimScheduler()
    sw = Switch(sched, "sw")
    p0, p1 = sw.add_port(), sw.add_port()
    p0.set_receiver(lambda f: None)
    p1.set_receiver(lambda f: None)
    path = tmp_path / "port.pcapng"
    with Capture(path, sched) as cap:
        cap.attach(p0, name="host0")
        p0.send(segment(0))
        p1.send(segment(1, from_a=False))
        sched.run()
    pkts = list(PcapNgReader(str(path)))
    assert [(p.sniffed_on, p.direction) for p in pkts] == [("host0", 2), ("host0", 1)]  # out, then in


def test_switch_capture_creates_an_interface_per_port(tmp_path: Path) -> None:
    sched = SimScheduler()
    sw = Switch(sched, "sw")
    for _ in range(3):
        sw.add_port().set_receiver(lambda f: None)
    with Capture(tmp_path / "sw.pcapng", sched) as cap:
        assert cap.attach(sw) == [0, 1, 2]
        sw.ports[0].send(segment(0))  # unknown destination: flooded to ports 1 and 2
        sched.run()
        assert cap.interfaces == ["sw.p0", "sw.p1", "sw.p2"]
    recs = list(read_capture(tmp_path / "sw.pcapng"))
    assert sorted((r.interface_name, r.direction) for r in recs) == [("sw.p0", "out"), ("sw.p1", "in"), ("sw.p2", "in")]


def test_classic_pcap_capture_by_suffix(tmp_path: Path) -> None:
    sched = SimScheduler()
    link = wan(sched)
    path = tmp_path / "wan.pcap"
    with Capture(path, sched) as cap:
        assert cap.format == "pcap"
        cap.attach(link)
        sched.call_at(123_456_789, link.a.send, segment(0), "comment is dropped in classic pcap")
        sched.run()
    pkts = rdpcap(str(path))
    assert len(pkts) == 1 and pkts[0].time == Decimal("0.123456789")
    (rec,) = read_capture(path)
    assert rec.data == segment(0) and rec.comment is None


def test_closed_capture_stops_observing(tmp_path: Path) -> None:
    sched = SimScheduler()
    link = wan(sched)
    cap = Capture(tmp_path / "c.pcapng", sched)
    cap.attach(link)
    link.a.send(segment(0))
    cap.close()
    link.a.send(segment(1))  # must neither be written nor fail on the closed file
    sched.run()
    assert cap.packets == 1
    assert len(list(read_capture(tmp_path / "c.pcapng"))) == 1
    with pytest.raises(ValueError, match="closed"):
        cap.attach(link)


def test_read_capture_rejects_unknown_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(PcapFormatError, match="not a pcap"):
        list(read_capture(bad))


def test_replay_reproduces_frames_and_relative_timing(tmp_path: Path) -> None:
    sched = SimScheduler(seed=2)
    link = wan(sched)
    path = tmp_path / "orig.pcapng"
    with Capture(path, sched) as cap:
        cap.attach(link)
        for i in range(5):
            sched.call_at(10 * NS_PER_MS + i * 700 * NS_PER_US, link.a.send, segment(i), f"seg {i}")
            sched.call_at(10 * NS_PER_MS + i * 900 * NS_PER_US, link.b.send, segment(i, from_a=False))
        sched.run()

    # replay only the a_to_b side into a fresh link, starting at t = 1 s, at half speed
    sched2 = SimScheduler(seed=2)
    link2 = Link(sched2, "replayed")
    seen: list[tuple[int, bytes]] = []
    link2.b.set_receiver(lambda f: seen.append((sched2.now, f)))
    metas: list[str | None] = []
    link2.a.add_observer(lambda d, f, m: metas.append(m))
    done: list[bool] = []
    sched2.run_until(1_000 * NS_PER_MS)
    rp = Replayer(sched2, link2.a, read_capture(path), interface="wan a_to_b", speed=0.5, on_done=lambda: done.append(True))
    rp.start()
    sched2.run()
    assert [f for _, f in seen] == [segment(i) for i in range(5)]
    assert [t for t, _ in seen] == [1_000 * NS_PER_MS + i * 1_400 * NS_PER_US for i in range(5)]
    assert metas == [f"replay: seg {i}" for i in range(5)]
    assert rp.injected == 5 and rp.done and done == [True]


def test_tshark_finds_no_malformed_packets(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed: the independent Wireshark dissector check cannot run")
    sched = SimScheduler(seed=1)
    link = wan(sched)
    path = tmp_path / "check.pcapng"
    with Capture(path, sched) as cap:
        cap.attach(link)  # at "send": each frame once, so TCP analysis sees two clean streams
        for i in range(20):
            sched.call_at(i * NS_PER_MS, link.a.send, segment(i), f"seg {i}")
            sched.call_at(i * NS_PER_MS + 1, link.b.send, segment(i, from_a=False))
        sched.run()
    out = subprocess.run(
        [tshark, "-r", str(path), "-q", "-z", "expert,error"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Malformed" not in out.stdout, out.stdout
    listing = subprocess.run([tshark, "-r", str(path)], capture_output=True, text=True, timeout=60, check=True)
    assert len(listing.stdout.strip().splitlines()) == 40
    fields = subprocess.run(
        [tshark, "-r", str(path), "-c", "2", "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_name",
         "-e", "frame.comment"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    assert fields == ["0.000000000\twan a_to_b\tseg 0", "0.000000001\twan b_to_a\t"]


def test_replay_of_a_wall_clock_pcap_keeps_nanosecond_offsets(tmp_path: Path) -> None:
    from chimney.trace import PcapWriter

    epoch = 1_700_000_000_000_000_000  # real captures carry wall-clock times far beyond float precision
    path = tmp_path / "wall.pcap"
    with PcapWriter(path) as w:
        for i, off in enumerate([0, 1, 1_000_003, 2_000_000_007]):
            w.write_packet(epoch + off, segment(i))
    sched = SimScheduler()
    link = Link(sched, "r")
    seen: list[int] = []
    link.b.set_receiver(lambda f: seen.append(sched.now))
    Replayer(sched, link.a, read_capture(path)).start(start_ns=5)
    sched.run()
    assert seen == [5, 6, 1_000_008, 2_000_000_012]
