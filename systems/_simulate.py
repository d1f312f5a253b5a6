"""Batched simulation with torchdiffeq, and the scipy reference path used by the tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torchdiffeq import odeint

from ._base import System


def _max_norm(ratio: torch.Tensor) -> torch.Tensor:
    # Step control on the worst trajectory, so that every trajectory meets the tolerance
    # (torchdiffeq's default RMS norm would let a few stiff trajectories hide behind the rest).
    return ratio.abs().max()


def simulate(
    system: System,
    t: torch.Tensor,
    x0: torch.Tensor,
    params: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | None = None,
) -> torch.Tensor:
    """Integrate a whole batch in one torchdiffeq call.

    Args:
        system: the physical system.
        t: (T,) strictly increasing sample times.
        x0: (B, d) initial states; its device and dtype are used throughout.
        params: (B, p) physical parameters, one row per trajectory.
        method: a torchdiffeq method; adaptive ("dopri5", "dopri8") or fixed-step ("rk4", ...).
        rtol, atol: tolerances of adaptive methods; default 1e-9/1e-11 in float64 and
            1e-6/1e-8 in float32.
        step_size: step of fixed-step methods (default: the sample spacing / 8).

    Returns:
        x: (B, T, d) states at the sample times, ``x[:, 0] == x0``.
    """
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    params = params.to(dtype=x0.dtype, device=x0.device)
    if x0.ndim != 2 or x0.shape[1] != system.dim:
        raise ValueError(f"x0 must have shape (B, {system.dim}), got {tuple(x0.shape)}")
    if params.shape[0] != x0.shape[0]:
        raise ValueError(f"{params.shape[0]} parameter rows for {x0.shape[0]} initial states")
    system.check_params(params)
    double = x0.dtype == torch.float64
    options = {}
    if method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"):
        rtol = rtol if rtol is not None else (1e-9 if double else 1e-6)
        atol = atol if atol is not None else (1e-11 if double else 1e-8)
        options["norm"] = _max_norm
    else:
        rtol, atol = 1e-7, 1e-9  # unused by fixed-step solvers
        dt = float((t[1:] - t[:-1]).min()) if len(t) > 1 else 1.0
        options["step_size"] = step_size if step_size is not None else dt / 8

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
