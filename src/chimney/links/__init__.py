"""chimney.links: the emulated network -- ports, point-to-point links with impairments, a learning switch.
A Linux TAP port (chimney.links.tap) offers the same `Port` interface."""

from chimney.links.base import DropCause, LinkCounters, Port, PortObserver, max_frame_len
from chimney.links.impair import Channel, GilbertElliott, Impairments, corrupt_frame
from chimney.links.p2p import Link, LinkPort
from chimney.links.switch import Switch, SwitchCounters, SwitchPort

__all__ = [
    "Channel",
    "DropCause",
    "GilbertElliott",
    "Impairments",
    "Link",
    "LinkCounters",
    "LinkPort",
    "Port",
    "PortObserver",
    "Switch",
    "SwitchCounters",
    "SwitchPort",
    "corrupt_frame",
    "max_frame_len",
]
