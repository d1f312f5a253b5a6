"""The `System` description shared by every physical system.

A system states, in one place, what it is: state and parameter names, parameter ranges for
training and for out-of-distribution (OOD) testing, the initial-condition distribution, the
default time grid, the vector field, and the invariant with its exact rate of change.

Vector fields and invariants are written once and work on both torch tensors and numpy arrays
(the scipy reference path uses numpy), with the leading dimensions broadcast:
``x: (..., d)``, ``params: (..., p)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ._checks import real_array
from ._errors import SystemInputError, UnknownNameError


def xp(a: Any):
    """The array namespace (torch or numpy) that ``a`` belongs to."""
    return torch if isinstance(a, torch.Tensor) else np


#: the largest parameter magnitude accepted. Models train in float32 (largest value 3.4e38);
#: a parameter up to 1e30 leaves eight decades for its products with states and other
#: parameters in the vector field and the invariant (k x^2, m v^2, ...) before they overflow,
#: and its reciprocal (1e-30, in ratios such as k/m) stays a normal float32 (above 1.2e-38).
#: Beyond it, training diverges and writes NaN metrics: such values are a units mistake.
MAX_PARAM = 1e30


def _checking_sizes(method):
    """``method(self, x, params)`` that first checks the sizes of ``x`` and ``params``
    (:meth:`System.check_sizes`)."""

    @functools.wraps(method)
    def checked(self, x, params):
        self.check_sizes(x, params, method.__name__)
        return method(self, x, params)

    checked.checks_sizes = True
    return checked


@dataclass(frozen=True)
class Param:
    """One physical parameter.

    ``train`` and ``test`` are (low, high) ranges of the uniform distributions that parameters are
    drawn from; ``test`` is wider (out of distribution). ``minimum`` is the smallest physically
    valid value (0 for non-negative parameters); values must be strictly above it when
    ``strict`` is true.
    """

    name: str
    unit: str
    train: tuple[float, float]
    test: tuple[float, float]
    minimum: float = 0.0
    strict: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Box:
    """A uniform distribution on an axis-aligned box; ``low == high`` gives a fixed value."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def sample(self, n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
        low = torch.tensor(self.low, dtype=dtype)
        high = torch.tensor(self.high, dtype=dtype)
        u = torch.rand(n, len(self.low), generator=generator, dtype=dtype)
        return low + (high - low) * u


@dataclass(frozen=True)
class Protocol:
    """How data are generated: parameter ranges, initial states and time grid.

    Every system has a ``default`` protocol; presets (``systems.PRESETS``) reproduce published
    protocols by overriding ranges, initial states and sizes. ``test_horizon`` is the length of
    test trajectories in units of the training window (2.0: test runs twice as long as training,
    to score extrapolation).
    """

    name: str
    system: str
    train_ranges: dict[str, tuple[float, float]]
    test_ranges: dict[str, tuple[float, float]]
    initial_state: Box
    t_end: float
    n_steps: int
    n_train: int
    n_val: int
    n_test: int
    test_horizon: float = 1.0
    context: int | None = None
    doc: str = ""

    def ranges(self, split: str) -> dict[str, tuple[float, float]]:
        if split not in ("train", "val", "test"):
            raise SystemInputError(f"unknown split {split!r}: use 'train', 'val' or 'test'")
        return self.test_ranges if split == "test" else self.train_ranges

    def times(self, split: str, dtype=torch.float64) -> torch.Tensor:
        """Sample times: ``n_steps`` points on [0, t_end], longer for the test split."""
        steps = self.n_steps
        t_end = self.t_end
        if split == "test" and self.test_horizon != 1.0:
            steps = int(round((self.n_steps - 1) * self.test_horizon)) + 1
            t_end = self.t_end * (steps - 1) / (self.n_steps - 1)
        return torch.linspace(0.0, t_end, steps, dtype=dtype)

    def default_n(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


@dataclass(frozen=True)
class System:
    """Base class of a physical system; subclasses implement the physics methods."""

    name: str
    state_names: tuple[str, ...]
    params: tuple[Param, ...]
    invariant_name: str
    default: Protocol = field(repr=False)
    damping: str | None = None  # the parameter that, set to zero, makes the system conservative
    base: str | None = None  # a system whose equations model this one in part (its files pass)
    # lowest physical value of each state (populations: 0), or None where any value is possible;
    # models that step the known physics keep their states above it, and feed an observed value
    # at or below it (noise on a small population) as slightly above it: the bound itself is a
    # fixed point of the dynamics that a positive state never reaches
    state_low: tuple[float, ...] | None = None
    doc: str = ""
    #: linear systems (dx/dt = M(params) x) implement :meth:`generator_matrix`, so that models
    #: can propagate them exactly
    linear: ClassVar[bool] = False

    # -- description ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.state_names)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def n_params(self) -> int:
        return len(self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise UnknownNameError(
            f"{self.name} has no parameter {name!r}; its parameters: {self.param_names}"
        )

    def __init_subclass__(cls, **kwargs):
        # a system's invariant and its rate are evaluated on states and parameters from users'
        # files and rollouts: their sizes are checked there (a state of the wrong size would
        # read the wrong columns, or none, silently). The vector field, called thousands of
        # times inside the integrators, is checked once at their entry points instead.
        super().__init_subclass__(**kwargs)
        for name in ("invariant", "invariant_rate"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "checks_sizes", False):
                setattr(cls, name, _checking_sizes(method))

    def check_sizes(self, x, params, what: str = "invariant") -> None:
        """Refuse states ``x`` whose last axis is not of size ``dim``, or parameters ``params``
        whose last axis is not of size ``n_params`` (both torch or numpy, any leading axes)."""
        for a, size, names, label in ((x, self.dim, self.state_names, "x"),
                                      (params, self.n_params, self.param_names, "params")):
            shape = tuple(getattr(a, "shape", None) or np.shape(a))
            if not shape or shape[-1] != size:
                raise SystemInputError(
                    f"{self.name}.{what}: {label} must have shape (..., {size}) for "
                    f"{list(names)}, got {shape}"
                )

    # -- physics (override) ---------------------------------------------------------------
    def vector_field(self, t, x, params):
        """dx/dt at time ``t``; ``x: (..., d)``, ``params: (..., p)``; torch or numpy."""
        raise NotImplementedError

    def invariant(self, x, params):
        """The conserved (or dissipated) quantity along ``x: (..., d)``; returns ``(...)``."""
        raise NotImplementedError

    def invariant_rate(self, x, params):
        """The exact d(invariant)/dt along the flow (zero for conservative systems)."""
        return 0.0 * self.invariant(x, params)

    def exact_solution(self, t, x0, params):
        """Closed-form ``x(t)`` of shape (B, T, d), or ``None`` where no closed form exists."""
        return None

    @property
    def identifiable_names(self) -> tuple[str, ...]:
        """Names of the parameter combinations that trajectories determine uniquely."""
        return self.param_names

    def identifiable(self, params):
        """Map parameters ``(..., p)`` to their identifiable combinations ``(..., q)``."""
        return params

    def from_identifiable(self, ident, reference):
        """Parameters ``(..., p)`` whose identifiable combinations are ``ident (..., q)``.

        Where the combinations leave parameters free (spring-mass: only k/m and c/m are fixed
        by a trajectory), those come from ``reference (p,)`` (e.g. the training data's typical
        parameters). Systems whose parameters are all identifiable return ``ident``.
        """
        return ident

    # -- checks ---------------------------------------------------------------------------
    def check_params(self, params) -> None:
        """Refuse physically invalid parameters with a message naming the parameter."""
        a = real_array(params, f"{self.name} parameters",
                       f"(N, {self.n_params}) for {list(self.param_names)}")
        if a.ndim != 2 or a.shape[1] != self.n_params:
            raise SystemInputError(
                f"{self.name} parameters must have shape (N, {self.n_params}) for "
                f"{list(self.param_names)}, got {tuple(a.shape)}"
            )
        if not np.all(np.isfinite(a)):
            raise SystemInputError(f"{self.name} parameters contain NaN or infinite values")
        for j, p in enumerate(self.params):
            bad = a[:, j] <= p.minimum if p.strict else a[:, j] < p.minimum
            if np.any(bad):
                rel = ">" if p.strict else ">="
                raise SystemInputError(
                    f"{self.name} parameter {p.name!r} must be {rel} {p.minimum} "
                    f"(got {a[bad, j].min():.4g}); physical parameters cannot be negative"
                )
            huge = np.abs(a[:, j]) > MAX_PARAM
            if np.any(huge):
                raise SystemInputError(
                    f"{self.name} parameter {p.name!r} is {a[huge, j][0]:.4g}, beyond "
                    f"{MAX_PARAM:.0g}, the largest magnitude float32 models can train on; "
                    f"express it in other units (its usual range is {p.train[0]:g} to "
                    f"{p.train[1]:g} {p.unit})"
                )

    def check_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        """Refuse sampling ranges ``{name: (low, high)}`` that are empty, not finite, name no
        parameter of this system, or reach below a parameter's physical minimum."""
        for name, (lo, hi) in ranges.items():
            p = self.param(name)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise SystemInputError(
                    f"range of {name!r} must be finite numbers, got ({lo}, {hi})"
                )
            if lo > hi:
                raise SystemInputError(f"range of {name!r} is empty: low {lo} > high {hi}")
            if max(abs(lo), abs(hi)) > MAX_PARAM:
                raise SystemInputError(
                    f"range of {self.name} parameter {name!r} reaches "
                    f"{max(abs(lo), abs(hi)):.4g}, beyond {MAX_PARAM:.0g}, the largest "
                    f"magnitude float32 models can train on; choose a range of the usual scale "
                    f"({p.train[0]:g} to {p.train[1]:g} {p.unit})"
                )
            if lo < p.minimum:
                raise SystemInputError(
                    f"range of {self.name} parameter {name!r} starts at {lo}, below its physical "
                    f"minimum {p.minimum}; choose a range of "
                    f"{'positive' if p.strict else 'non-negative'} values"
                )
            if p.strict and lo == p.minimum:
                raise SystemInputError(
                    f"range of {self.name} parameter {name!r} starts at {lo}, but it must be "
                    f"greater than {p.minimum}; choose a range of positive values"
                )
