"""chimney.host: the host TCP/IP stack (framing, path, transport layers and sockets).

Public API: HostStack, Socket, TcpTransport/Tcb/HostPath (the chimney's hooks), HostIp.
"""

from chimney.host.ip import HostIp, IcmpError
from chimney.host.socket import Socket
from chimney.host.stack import HostStack, connected_pair
from chimney.host.tcp import HostListener, HostPath, Tcb, TcbPath, TcpTransport

__all__ = ["HostIp", "HostListener", "HostPath", "HostStack", "IcmpError", "Socket", "Tcb", "TcbPath", "TcpTransport", "connected_pair"]
