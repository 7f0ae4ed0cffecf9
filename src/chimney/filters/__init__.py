"""Intermediate (IM) filter drivers for the NDIS 6 chimney model: pass-through, monitoring and blocking
IMs (contract §3.8, R-IM-*), and the IM contract checks `ImChecks`."""

from chimney.filters.blocking import NonChimneyIm
from chimney.filters.checks import ImChecks, im_checks
from chimney.filters.monitor import ConnStats, MonitoringIm, TraceRecord
from chimney.filters.passthrough import (
    CallEntry,
    ImUsageError,
    NormalPathIm,
    OffloadEntry,
    PassThroughChimneyIm,
)

__all__ = [
    "CallEntry",
    "ConnStats",
    "ImChecks",
    "ImUsageError",
    "MonitoringIm",
    "NonChimneyIm",
    "NormalPathIm",
    "OffloadEntry",
    "PassThroughChimneyIm",
    "TraceRecord",
    "im_checks",
]
