"""chimney.trace: packet captures -- pcapng and classic pcap writers/readers, capturing Ports and Links,
and replaying a capture into a Port."""

from chimney.trace.capture import Capture, Replayer, read_capture
from chimney.trace.pcap import PacketRecord, PcapFormatError, PcapWriter, read_pcap
from chimney.trace.pcapng import PcapngWriter, read_pcapng

__all__ = [
    "Capture",
    "PacketRecord",
    "PcapFormatError",
    "PcapWriter",
    "PcapngWriter",
    "Replayer",
    "read_capture",
    "read_pcap",
    "read_pcapng",
]
