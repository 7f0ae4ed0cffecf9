"""The conformance test bench: host A (HostStack + OffloadManager) bound through NDIS to a user-supplied
offload target class, host B a plain HostStack on the wire, the verifier in RECORD mode with ChimneyChecks.

`build_pair` mirrors `chimney.host.chimney.build_offload_pair` but takes a target factory; `load_target`
resolves `module:Class` or `path/to/file.py:Class`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chimney.host.chimney import HostChimneyChecks, OffloadManager, OffloadPair
from chimney.host.ndis_binding import NdisHostBinding
from chimney.host.policy import OffloadPolicy
from chimney.host.stack import HostStack
from chimney.links.impair import Impairments
from chimney.links.p2p import Link
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.core import Ndis
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_MS

# (name, nic, scheduler, limits) -> a MiniportDriver with the OffloadTarget constructor.
TargetFactory = Callable[..., Any]


class ConformanceChecks(ChimneyChecks, HostChimneyChecks):
    """The full chimney phase machine plus the host's SourceHandle stamping of the initiate chain
    (R-OFF-22/23, R-TRM-11): MRO runs ChimneyChecks first, then HostChimneyChecks, then the core."""


def load_target(spec: str | None) -> TargetFactory:
    """`None` -> the built-in OffloadTarget; `pkg.module:Class` or `path/to/file.py:Class` -> that class."""
    if spec is None or spec in ("", "builtin"):
        from chimney.target import OffloadTarget

        return OffloadTarget
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"target must be MODULE:CLASS or path/to/file.py:CLASS, got {spec!r}")
    if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
        path = Path(mod_name).resolve()
        if not path.is_file():
            raise ValueError(f"no such file: {mod_name}")
        name = f"_chimney_target_{path.stem}_{abs(hash(str(path)))}"
        if name in sys.modules:
            return _attr(sys.modules[name], mod_name, attr, spec)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import {mod_name}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # `examples.x:Class` from the project root, as python -m does
        module = importlib.import_module(mod_name)
    return _attr(module, mod_name, attr, spec)


def _attr(module: Any, mod_name: str, attr: str, spec: str) -> TargetFactory:
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{mod_name} has no attribute {attr!r}") from None
    if not callable(cls):
        raise ValueError(f"{spec} is not a class or factory")
    return cls  # type: ignore[no-any-return]


def build_pair(
    scheduler: Any,
    factory: TargetFactory,
    *,
    seed: int = 0,
    impairments: Impairments | tuple[Impairments | None, Impairments | None] | None = None,
    target_options: dict[str, Any] | None = None,
    policy: OffloadPolicy | None = None,
    verifier: Verifier | None = None,
    ticks_per_second: int = 1000,
    settle_ns: int = 10 * NS_PER_MS,
) -> OffloadPair:
    """Host A (198.18.0.1) through NDIS to `factory(name, nic, scheduler, limits)` on `link.a`; host B
    (198.18.0.2) on `link.b`. Same layout and addresses as `build_offload_pair`."""
    from chimney.ndis.oid import NdisTcpConnectionOffloadParameters
    from chimney.target import EmulatedNic, TargetLimits

    if isinstance(impairments, tuple):
        a_to_b, b_to_a = impairments
    else:
        a_to_b = b_to_a = impairments
    link = Link(scheduler, "ab", a_to_b, b_to_a, mac_a=bytes.fromhex("02000000000a"),
                mac_b=bytes.fromhex("02000000000b"))
    ver = verifier if verifier is not None else Verifier(Mode.RECORD)
    ndis = Ndis(scheduler, ver, checks=ConformanceChecks)
    nic = EmulatedNic(link.a)
    limits = TargetLimits(**(target_options or {}))
    target = factory(f"toe{seed}", nic, scheduler, limits)
    ndis.register_miniport_driver(target)
    adapter = ndis.add_adapter(target, f"nic{seed}")
    host_a = HostStack(scheduler, "A")
    binding = NdisHostBinding(host_a, params=NdisTcpConnectionOffloadParameters(ticks_per_second=ticks_per_second))
    binding.attach(ndis, adapter, mac=nic.mac, addresses=["198.18.0.1/24"], mtu=link.a.mtu)
    manager = OffloadManager(host_a, binding, policy if policy is not None else OffloadPolicy.explicit())
    host_b = HostStack(scheduler, "B")
    host_b.attach(link.b, addresses=["198.18.0.2/24"])
    if settle_ns:
        scheduler.run_until(scheduler.now + settle_ns)
    return OffloadPair(host_a, host_b, link, ndis, target, binding, manager)
