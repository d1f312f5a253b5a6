"""Batched simulation with torchdiffeq, and the scipy reference path used by the tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torchdiffeq import odeint

from ._base import System, SystemInputError

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("rk4", "dopri5_fixed", "midpoint", "euler", "explicit_adams", "implicit_adams")
#: "exact": the system's closed form (linear systems); "auto": that where it exists, else dopri5
METHODS = ("auto", "exact", *ADAPTIVE_METHODS, *FIXED_METHODS)


def has_closed_form(system: System) -> bool:
    """Whether the system overrides :meth:`System.exact_solution`."""
    return type(system).exact_solution is not System.exact_solution


def _max_norm(ratio: torch.Tensor) -> torch.Tensor:
    # Step control on the worst trajectory, so that every trajectory meets the tolerance
    # (torchdiffeq's default RMS norm would let a few stiff trajectories hide behind the rest).
    return ratio.abs().max()


def substep_grid(t: torch.Tensor, step_size: float) -> torch.Tensor:
    """The integration grid of fixed-step methods: every sample interval of ``t`` cut into
    ``ceil(|interval| / step_size)`` equal steps (``t`` increasing or decreasing).

    The sample times are grid points, so fixed-step solutions are returned at the sample times
    themselves (never interpolated between steps), on uniform and non-uniform grids alike.
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if len(t) < 2:
        return t
    gaps = t[1:] - t[:-1]
    # The small slack keeps an interval of exactly k steps (up to rounding) at k, not k + 1.
    counts = torch.ceil(gaps.abs() / step_size - 1e-9).clamp(min=1).long()
    interval = torch.repeat_interleave(torch.arange(len(gaps), device=t.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(interval), device=t.device) - starts[interval]
    inner = t[:-1][interval] + gaps[interval] * (within.to(t.dtype) / counts[interval].to(t.dtype))
    return torch.cat([inner, t[-1:]])


def simulate(
    system: System,
    t: torch.Tensor,
    x0: torch.Tensor,
    params: torch.Tensor,
    *,
    method: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | None = None,
) -> torch.Tensor:
    """Integrate a whole batch in one torchdiffeq call.

    Args:
        system: the physical system, or its registered name.
        t: (T,) strictly increasing sample times (strictly decreasing integrates backward in
            time from ``t[0]``).
        x0: (B, d) initial states; its device and dtype are used throughout (an array that is
            not a floating-point tensor, e.g. numpy or a list: float64 on the CPU). ``t`` and
            ``params`` may be arrays of numbers too.
        params: (B, p) physical parameters, one row per trajectory.
        method: "auto" (default: "exact" for systems with a closed form, else "dopri5");
            "exact": the system's closed form (``system.exact_solution``; round-off accuracy,
            no step at all); or a torchdiffeq method, adaptive ("dopri5", "dopri8") or
            fixed-step ("rk4", ...).
        rtol, atol: tolerances of adaptive methods; default 1e-9/1e-11 in float64 and
            1e-6/1e-8 in float32 (atol: rtol / 100 when only rtol is given).
        step_size: largest step of fixed-step methods: every sample interval is cut into
            ``ceil(interval / step_size)`` equal steps, so that states are computed at the
            sample times, never interpolated (default: the smallest sample spacing / 8).
            Fixed steps make a trajectory's result exactly independent of the rest of its
            batch; adaptive steps are chosen for the whole batch (the worst trajectory).

    Returns:
        x: (B, T, d) states at the sample times, ``x[:, 0] == x0``.
    """
    if isinstance(system, str):
        from . import get_system  # (the registry imports this module)

        system = get_system(system)
    if not (isinstance(x0, torch.Tensor) and x0.is_floating_point()):
        # numpy arrays, lists, integer tensors: float64 on the CPU (a float32 or GPU
        # computation needs x0 as a tensor of that dtype and device)
        try:
            x0 = torch.as_tensor(np.asarray(x0.cpu() if isinstance(x0, torch.Tensor) else x0,
                                            dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"x0 must be an array of numbers, shape (B, {system.dim}); got "
                             f"{type(x0).__name__}") from None
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    params = torch.as_tensor(params, dtype=x0.dtype, device=x0.device)
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"t must have shape (T,) with T >= 2 sample times, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or infinite values")
    gaps = t[1:] - t[:-1]
    if not (bool((gaps > 0).all()) or bool((gaps < 0).all())):
        raise ValueError("t must be strictly increasing (or strictly decreasing, to go backward)")
    if x0.ndim != 2 or x0.shape[1] != system.dim:
        raise ValueError(f"x0 must have shape (B, {system.dim}), got {tuple(x0.shape)}")
    if params.shape[0] != x0.shape[0]:
        raise ValueError(f"{params.shape[0]} parameter rows for {x0.shape[0]} initial states")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or infinite values; every initial state must be finite")
    system.check_params(params)
    # the user's choices: SystemInputError (a ValueError), one line on the command line
    if method not in METHODS:
        raise SystemInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None and not (math.isfinite(float(tol)) and float(tol) > 0):
            raise SystemInputError(f"{name} must be a positive finite number, got {tol!r}")
    if rtol is not None and float(rtol) >= 1:  # a relative error of 100%: no accuracy at all
        raise SystemInputError(f"rtol is a relative error and must be below 1 (e.g. 1e-6), "
                               f"got {rtol!r}")
    asked = method
    if method == "auto":
        method = "exact" if has_closed_form(system) else "dopri5"
    # a setting the chosen method would ignore is refused, not silently dropped (but the
    # closed form chosen by "auto" needs no tolerance: that is only said)
    tolerance = rtol is not None or atol is not None
    if tolerance and method == "exact" and asked == "auto":
        warnings.warn(f"{system.name} is solved by its closed form, exact to round-off and "
                      f"faster than any tolerance: rtol/atol are not used (method dopri5 would "
                      f"use them)", stacklevel=2)
        rtol = atol = None
    elif tolerance and method not in ADAPTIVE_METHODS:
        how = (f"{system.name} is solved by its closed form" if method == "exact"
               else f"{method} is a fixed-step method")
        raise SystemInputError(f"rtol/atol set the accuracy of adaptive methods (dopri5, "
                               f"dopri8, ...), but {how}; choose one, e.g. method dopri5")
    if step_size is not None and method not in FIXED_METHODS:
        how = "takes none" if method == "exact" else "adapts its steps"
        raise SystemInputError(f"step_size sets fixed-step methods (rk4, midpoint, ...), and "
                               f"{method} {how}; choose one, e.g. rk4")
    if method == "exact":
        if not has_closed_form(system):
            raise SystemInputError(
                f"{system.name} has no closed form; use an integrator, e.g. dopri5"
            )
        return system.exact_solution(t, x0, params).contiguous()
    double = x0.dtype == torch.float64
    options = {}
    if method in ADAPTIVE_METHODS:
        if atol is None:  # states are O(1): atol two decades below rtol
            atol = rtol * 1e-2 if rtol is not None else (1e-11 if double else 1e-8)
        rtol = rtol if rtol is not None else (1e-9 if double else 1e-6)
        options["norm"] = _max_norm
    else:
        rtol, atol = 1e-7, 1e-9  # unused by fixed-step solvers
        dt = float(gaps.abs().min())
        h = step_size if step_size is not None else dt / 8
        # torchdiffeq calls this with the sample times as given (also when they decrease).
        options["grid_constructor"] = lambda func, y0, t_: substep_grid(t_, h)

    def rhs(time, x):
        return system.vector_field(time, x, params)

    x = odeint(rhs, x0, t, method=method, rtol=rtol, atol=atol, options=options)
    return x.transpose(0, 1).contiguous()


def simulate_scipy(
    system: System,
    t,
    x0,
    params,
    *,
    method: str = "DOP853",
    rtol: float = 1e-11,
    atol: float = 1e-13,
) -> np.ndarray:
    """Reference solution: one ``scipy.integrate.solve_ivp`` call per trajectory (float64).

    Same arguments as :func:`simulate`, as numpy arrays; returns (B, T, d).
    """
    t = np.asarray(t, dtype=np.float64)
    x0 = np.asarray(x0, dtype=np.float64)
    params = np.asarray(params, dtype=np.float64)
    system.check_params(params)
    out = np.empty((x0.shape[0], t.shape[0], system.dim))
    for i in range(x0.shape[0]):
        p = params[i]
        sol = solve_ivp(
            lambda time, y, p=p: system.vector_field(time, y, p),
            (t[0], t[-1]), x0[i], method=method, t_eval=t, rtol=rtol, atol=atol,
        )
        if not sol.success:
            raise RuntimeError(f"scipy failed on trajectory {i}: {sol.message}")
        out[i] = sol.y.T
    return out
