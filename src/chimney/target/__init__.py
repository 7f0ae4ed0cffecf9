"""chimney.target: the NDIS 6 TCP chimney offload target (a miniport whose emulated NIC runs offloaded
connections with the chimney.tcp engine). Public API: OffloadTarget, EmulatedNic, TargetLimits."""

from chimney.target.context import NeighborCtx, PathCtx, Phase, TcpCtx
from chimney.target.miniport import EmulatedNic, OffloadTarget, TargetLimits

__all__ = ["EmulatedNic", "NeighborCtx", "OffloadTarget", "PathCtx", "Phase", "TargetLimits", "TcpCtx"]
