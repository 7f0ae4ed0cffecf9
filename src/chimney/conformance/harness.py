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

from chimney.filters.checks import ImChecks
from chimney.host.chimney import OffloadPair, build_offload_pair
from chimney.host.policy import OffloadPolicy
from chimney.links.impair import Impairments
from chimney.ndis.checks_chimney import ChimneyChecks
from chimney.ndis.verifier import Mode, Verifier
from chimney.sim.scheduler import NS_PER_MS

# (name, nic, scheduler, limits) -> a MiniportDriver with the OffloadTarget constructor.
TargetFactory = Callable[..., Any]


class ConformanceChecks(ChimneyChecks):
    """The full chimney phase machine (the core stamps and hands back the initiate chain itself,
    R-OFF-22/23, R-TRM-11)."""


class ConformanceImChecks(ImChecks):
    """The same with pass-through IMs stacked between host and target: the IM rules (§3.8) on top."""


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
    ims: int = 0,
) -> OffloadPair:
    """`build_offload_pair` with a user's target (`factory(name, nic, scheduler, limits)`), the combined
    conformance checks, a RECORD verifier (collect every violation) and explicit offloads by default;
    `ims` pass-through intermediate drivers between host A and the target."""
    return build_offload_pair(
        scheduler,
        seed,
        impairments,
        target_options,
        policy=policy if policy is not None else OffloadPolicy.explicit(),
        verifier=verifier if verifier is not None else Verifier(Mode.RECORD),
        ticks_per_second=ticks_per_second,
        settle_ns=settle_ns,
        target_factory=factory,
        checks=ConformanceImChecks if ims else ConformanceChecks,
        ims=ims,
    )
