"""Physical systems: vector fields, parameters, invariants and batched simulators.

This package knows nothing of warpphys. Each system is one module registered here by name; a
new system is one new module plus one line in ``_REGISTRY``.

    >>> import systems
    >>> sys = systems.get_system("pendulum")
    >>> data = systems.sample("pendulum", n=8, split="train", seed=0)
    >>> data.x.shape            # (trajectories, time, state)
    torch.Size([8, 96, 2])
"""

from __future__ import annotations

import difflib
import hashlib
import numbers
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch

from ._base import MAX_PARAM, Box, Param, Protocol, System
from ._checks import check_device, check_dtype, check_memory, human_size, memory_bytes
from ._errors import SimulationCostError, SystemInputError, UnknownNameError
from ._presets import LV, MSD, MSD_ZERO, PRESETS
from ._simulate import COPIES, simulate, simulate_scipy
from .lotka_volterra import LOTKA_VOLTERRA
from .pendulum import PENDULUM
from .pendulum_drag import PENDULUM_DRAG
from .spring_mass import SPRING_MASS

_REGISTRY: dict[str, System] = {
    s.name: s for s in (PENDULUM, LOTKA_VOLTERRA, SPRING_MASS, PENDULUM_DRAG)
}

SPLITS = ("train", "val", "test")


def register(system: System) -> System:
    """Add a system to the registry (for systems defined outside this package)."""
    _REGISTRY[system.name] = system
    return system


def names() -> list[str]:
    """Names of the registered systems."""
    return sorted(_REGISTRY)


#: names users type for a system, normalised (lower case, '_' for '-' and spaces)
_ALIASES = {"lv": "lotka_volterra", "msd": "spring_mass", "mass_spring_damper": "spring_mass",
            "spring_mass_damper": "spring_mass", "predator_prey": "lotka_volterra"}


def unknown_system_message(name) -> str:
    """Why ``name`` is refused: the known systems, and the one probably meant, if any."""
    text = f"unknown system {name!r}; choose one of: {', '.join(names())}"
    if not isinstance(name, str):
        return text
    key = re.sub(r"[-\s]+", "_", name.strip().lower())
    guess = key if key in _REGISTRY else _ALIASES.get(key)
    if guess is None:
        close = difflib.get_close_matches(key, names(), n=1, cutoff=0.75)
        guess = close[0] if close else None
    if guess in _REGISTRY and guess != name:
        text += f" (did you mean {guess!r}?)"
    return text


def get_system(name: str) -> System:
    """The registered system called ``name`` (a clear error lists the known ones)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError(unknown_system_message(name)) from None


def get_protocol(system: str | None = None, preset: str | None = None) -> Protocol:
    """A preset by name, else the system's default protocol."""
    if preset is not None:
        if preset not in PRESETS:
            raise UnknownNameError(
                f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}"
            )
        proto = PRESETS[preset]
        if system is not None and proto.system != system:
            raise SystemInputError(
                f"preset {preset!r} is for system {proto.system!r}, not {system!r}; "
                f"drop --system or pick a preset of {system!r}"
            )
        return proto
    if system is None:
        raise SystemInputError("name a system or a preset")
    return get_system(system).default


class Simulation(NamedTuple):
    """A batch of simulated trajectories: ``t (T,)``, ``x (N, T, d)``, ``params (N, p)``."""

    t: torch.Tensor
    x: torch.Tensor
    params: torch.Tensor
    system: str
    protocol: str


def split_seed(seed: int, split: str) -> int:
    """A seed per (seed, split), so that splits made with one seed never share trajectories."""
    digest = hashlib.sha256(f"{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def sample_params(
    system: System, ranges: dict[str, tuple[float, float]], n: int, generator: torch.Generator,
    dtype=torch.float64,
) -> torch.Tensor:
    """Draw (n, p) parameters uniformly from ``ranges`` (every parameter must have one)."""
    cols = []
    for p in system.params:
        lo, hi = ranges.get(p.name, p.train)
        cols.append(lo + (hi - lo) * torch.rand(n, generator=generator, dtype=dtype))
    return torch.stack(cols, -1)


def sample(
    system: str | None = None,
    n: int | None = None,
    split: str = "train",
    seed: int = 0,
    *,
    preset: str | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    method: str = "auto",
    rtol: float | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    step_size: float | None = None,
    n_steps: int | None = None,
) -> Simulation:
    """Simulate ``n`` trajectories of a system (or preset) for one data split.

    Args:
        system: a registered system name (optional when ``preset`` is given).
        n: number of trajectories (default: the protocol's size for the split).
        split: "train" and "val" draw from the training ranges; "test" from the wider OOD ranges,
            over ``protocol.test_horizon`` times the training window.
        seed: random seed; the same seed, split and device give the same numbers.
        preset: a protocol of the paper ("msd", "msd-zero", "lv").
        dtype, device: where to simulate (float64 on CPU by default).
        method: "auto" (the closed form where the system has one, else dopri5), "exact", or
            a torchdiffeq method (see :func:`simulate`).
        rtol: relative tolerance of adaptive methods (default: :func:`simulate`'s).
        step_size: the largest step of a fixed-step method (default: the sample spacing / 8).
        n_steps: simulate only the split's first ``n_steps`` sample times (default: all); the
            parameters and initial states drawn are the same.
        ranges: ``{parameter name: (low, high)}`` overriding the split's sampling ranges for
            the named parameters (the others keep the protocol's ranges); ``low == high`` fixes
            a parameter. Ranges below a parameter's physical minimum are refused.
    """
    proto = get_protocol(system, preset)
    sys_ = get_system(proto.system)
    n = proto.default_n(split) if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise SystemInputError(f"the number of trajectories must be a positive integer, got {n!r}")
    n = int(n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        # (1.0 and 1 would seed different draws)
        raise SystemInputError(f"the seed must be a whole number >= 0, got {seed!r}")
    seed = int(seed)
    check_dtype(dtype, "dtype")
    check_device(device)
    if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(
            n_steps, numbers.Integral) or n_steps < 2):
        raise SystemInputError(f"n_steps must be a whole number of sample times >= 2, or None "
                               f"for all of them; got {n_steps!r}")
    t = proto.times(split, dtype)[:n_steps]
    check_memory(n, len(t), sys_.dim, dtype, device, copies=COPIES)  # (before drawing n states)
    chosen = dict(proto.ranges(split))
    if ranges:
        overrides = numeric_ranges(ranges)
        sys_.check_ranges(overrides)
        chosen.update(overrides)
    sys_.check_ranges(chosen)
    gen = torch.Generator().manual_seed(split_seed(seed, split))
    params = sample_params(sys_, chosen, n, gen, dtype)
    x0 = proto.initial_state.sample(n, gen, dtype)
    x = simulate(sys_, t.to(device), x0.to(device), params.to(device), method=method,
                 rtol=rtol, step_size=step_size)
    return Simulation(t.to(device), x, params.to(device), sys_.name, proto.name)


def numeric_ranges(ranges) -> dict[str, tuple[float, float]]:
    """``ranges`` as ``{name: (low, high)}`` of floats; SystemInputError where it is not a
    mapping of names onto pairs of numbers."""
    example = "e.g. {'k': (2.0, 30.0)}"
    if not isinstance(ranges, Mapping):
        raise SystemInputError(f"ranges must map parameter names onto (low, high) pairs, "
                               f"{example}; got {type(ranges).__name__}")
    out = {}
    for name, span in ranges.items():
        try:
            if isinstance(span, str | bytes):
                raise TypeError
            lo, hi = span
            out[name] = (float(lo), float(hi))
        except (TypeError, ValueError):
            raise SystemInputError(
                f"the range of {name!r} must be a pair of numbers (low, high), {example}; "
                f"got {span!r:.60}"
            ) from None
    return out


__all__ = [
    "MAX_PARAM", "SimulationCostError", "SystemInputError", "UnknownNameError",
    "Box", "LV", "MSD", "MSD_ZERO", "PRESETS", "Param", "Protocol", "SPLITS", "Simulation",
    "System", "get_protocol", "get_system", "names", "register", "sample", "sample_params",
    "numeric_ranges", "simulate", "simulate_scipy", "split_seed", "human_size", "memory_bytes",
]
