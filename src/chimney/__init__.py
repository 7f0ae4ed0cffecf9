"""tcp-chimney: the NDIS TCP Chimney Offload architecture in Python.

A host TCP/IP stack, an offload target and the NDIS contract between them, checked by a verifier.
"""

__version__ = "0.1.0"
