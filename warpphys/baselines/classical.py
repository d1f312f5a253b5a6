"""Classical system identification: per trajectory, fit the known ODE's parameters to the
context window by least squares (scipy), then simulate the rest with the known ODE.

This is the honest reference for WARP-Phys: with clean data and exact physics it is nearly exact.
Nothing is trained (``epochs`` is always 0); the "fit" of a run only stores a starting guess of
the parameters taken from the training data (the geometric mean of their parameters, or one
global least-squares fit when the file has none).

Per trajectory (``scipy.optimize.least_squares``, trust-region reflective, on log-parameters
within a factor ``e^bound`` of the starting guess):

* ``residuals="one-step"`` (default): the residuals are the one-step prediction errors over the
  context, ``RK4(x_s; p, dt) - x_{s+1}`` (``substeps`` RK4 steps per sample interval), scaled by
  each state's spread in the context. Fast (one vectorised evaluation per residual) and exact on
  clean data; biased under observation noise (noisy states are also the regressors). The rollout
  starts at the last observed context state.
* ``residuals="shooting"``: the unknowns are the log-parameters and the initial state; the
  residuals are the errors of one simulation through the whole context (one RK4 step per
  sample interval). Robust to observation noise (the noise averages out), about 10x slower;
  started from the one-step estimate. The rollout starts at the fitted (denoised) state of the
  last context step.

The Jacobian is by central differences, all its columns from one batched (numpy) evaluation.

The rest of the trajectory is simulated with :func:`systems.simulate` (fixed-step RK4 with
``substeps`` steps per sample interval, batched: a poor estimate can never stall an adaptive
solver).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import nn

import systems
from warpphys.baselines.base import Baseline
from warpphys.model import Output


def rk4_step(system, x, params, dt, substeps: int):
    """``substeps`` RK4 steps of the system's vector field over ``dt``, numpy or torch.

    x: (..., d); params: (..., p); dt: (...) or a scalar. Returns (..., d)."""
    h = dt / substeps
    h = h[..., None] if hasattr(h, "ndim") and h.ndim else h
    f = system.vector_field
    for _ in range(substeps):
        k1 = f(None, x, params)
        k2 = f(None, x + 0.5 * h * k1, params)
        k3 = f(None, x + 0.5 * h * k2, params)
        k4 = f(None, x + h * k3, params)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def simulate_rk4(system, x0: np.ndarray, params: np.ndarray, dt: np.ndarray,
                 substeps: int) -> np.ndarray:
    """States (n, K, d) from ``x0 (n, d)`` over the sample intervals ``dt (K-1,)`` (numpy)."""
    out = [x0]
    with np.errstate(all="ignore"):
        for h in dt:
            out.append(rk4_step(system, out[-1], params, float(h), substeps))
    return np.stack(out, 1)


class PhysicsStep(nn.Module):
    """One sample step of the known ODE (``advance(x, params, dt, theta)``), the interface of a
    physics root, so that :func:`warpphys.refine.refine_params` can polish the estimates."""

    def __init__(self, system: str, substeps: int):
        super().__init__()
        self.system = systems.get_system(system)
        self.substeps = substeps

    def advance(self, x, params, dt, theta=None):
        return rk4_step(self.system, x, params, dt.to(x.dtype), self.substeps)


class ClassicalSysID(Baseline):
    """Per-trajectory least-squares identification of the known ODE, then simulation.

    Args:
        dim: state size d (must be the system's).
        system: a registered system name.
        residuals: "one-step" or "shooting" (see the module docstring).
        substeps: RK4 steps per sample interval, in the residuals and the rollout; "auto"
            picks 2-16 from the training data's largest step-to-step changes.
        bound: log-parameters stay within +-bound of the starting guess.
        max_nfev: most residual evaluations per trajectory (scipy's ``max_nfev``).
    """

    has_params = True
    reads_fixed_steps = False  # (its equations are integrated over each interval as it is)
    CACHE_SIZE = 65536

    def __init__(self, dim: int, *, system: str, residuals: str = "one-step",
                 substeps: int | str = "auto", bound: float = 7.0, max_nfev: int = 200):
        if residuals not in ("one-step", "shooting"):
            raise ValueError(f"residuals must be 'one-step' or 'shooting', got {residuals!r}")
        sys_ = systems.get_system(system)
        if dim != sys_.dim:
            raise ValueError(f"{system} has state size {sys_.dim}, not {dim}")
        steps = 4 if substeps == "auto" else int(substeps)
        super().__init__(dim, system=system, residuals=residuals, substeps=substeps,
                         bound=float(bound), max_nfev=int(max_nfev))
        self.system = sys_
        self.substeps = steps
        # the starting guess; a Parameter (frozen) so that the optimiser of the Trainer has
        # something to hold (nothing is trained: epochs is 0)
        self.log_guess = nn.Parameter(torch.zeros(sys_.n_params, dtype=torch.float64),
                                      requires_grad=False)
        self.root = PhysicsStep(system, steps)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    # -- data scales (the only "training") ---------------------------------------------------
    @torch.no_grad()
    def fit_data_scales(self, train, system=None) -> None:
        """Starting guess from the training data's parameters (one global least-squares fit
        when the file has none); RK4 substeps from its step-to-step changes."""
        params = train.system_params(self.system)
        if params is None or np.any(params < 0):
            from warpphys.physics import fit_global_params

            params = fit_global_params(self.system, train.x, train.t)[None, :]
        self.set_scales(params, train.x)

    @torch.no_grad()
    def set_scales(self, params: np.ndarray, x: np.ndarray | None = None) -> None:
        """Starting guess: the geometric mean of ``params (N, p)`` (values near zero floored at
        1e-3 of the column's mean). With ``x (N, T, d)`` and ``substeps="auto"``: enough RK4
        substeps that one moves a state by at most ~1/16 of its spread (2 to 16)."""
        params = np.atleast_2d(np.asarray(params, dtype=np.float64))
        floor = 1e-3 * np.abs(params).mean(0) + 1e-12
        guess = np.exp(np.log(np.maximum(params, floor)).mean(0))
        self.log_guess.copy_(torch.as_tensor(np.log(guess), dtype=torch.float64))
        self._cache.clear()
        if x is not None and self.hparams["substeps"] == "auto":
            rel = np.abs(np.diff(x, axis=1)) / x.reshape(-1, x.shape[-1]).std(0)
            self.substeps = int(np.clip(np.ceil(16 * np.quantile(rel, 0.99)), 2, 16))
            self.root.substeps = self.substeps
            self.hparams["substeps"] = self.substeps

    # -- one trajectory ------------------------------------------------------------------------
    @staticmethod
    def _solve(residuals, v0: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_nfev: int):
        """``least_squares`` on ``residuals(V (m, n)) -> (m, R)`` (rows of unknowns), with a
        central-difference Jacobian whose 2n columns come from one batched evaluation."""

        def fun(v):
            return residuals(v[None])[0]

        def jac(v):
            eps = 1e-6 * np.maximum(1.0, np.abs(v))
            step = np.diag(eps)
            r = residuals(np.concatenate([v + step, v - step]))
            n = len(v)
            return ((r[:n] - r[n:]) / (2 * eps[:, None])).T

        return least_squares(fun, v0, jac=jac, bounds=(lo, hi), method="trf",
                             max_nfev=max_nfev).x

    def _one_step(self, x, dt, scale, logp0, bounds) -> np.ndarray:
        sys_, n = self.system, self.substeps

        def residuals(V):  # V: (m, p) log-parameters -> (m, (K-1) d)
            with np.errstate(all="ignore"):
                x0 = np.broadcast_to(x[None, :-1], (len(V),) + x[:-1].shape)
                pred = rk4_step(sys_, x0, np.exp(V)[:, None, :], dt[None, :], n)
            r = ((pred - x[None, 1:]) / scale).reshape(len(V), -1)
            return np.where(np.isfinite(r), r, 1e6)

        return self._solve(residuals, logp0, bounds[0], bounds[1], self.hparams["max_nfev"])

    def _shooting(self, x, dt, scale, logp0, bounds) -> tuple[np.ndarray, np.ndarray]:
        sys_, p = self.system, logp0.shape[0]

        def simulate(V):  # V: (m, p + d) rows of (log-parameters, initial state / scale)
            return simulate_rk4(sys_, V[:, p:] * scale, np.exp(V[:, :p]), dt, 1)

        def residuals(V):
            r = ((simulate(V) - x[None]) / scale).reshape(len(V), -1)
            return np.where(np.isfinite(r), r, 1e6)

        v0 = np.concatenate([logp0, x[0] / scale])
        lo = np.concatenate([bounds[0], np.full(self.dim, -np.inf)])
        hi = np.concatenate([bounds[1], np.full(self.dim, np.inf)])
        v = self._solve(residuals, v0, lo, hi, self.hparams["max_nfev"])
        return v[:p], simulate(v[None])[0, -1]

    def _fit(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-parameters (p,) and the rollout's start state (d,) from a context x (K, d)."""
        guess = self.log_guess.detach().cpu().numpy().copy()
        key = hashlib.sha1(x.tobytes() + t.tobytes() + guess.tobytes()).digest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        b = self.hparams["bound"]
        bounds = (guess - b, guess + b)
        dt = np.diff(t)
        scale = np.maximum(x.std(0), 1e-8 * (np.abs(x).max() + 1e-300))
        if x.shape[0] < 2:
            out = (guess, x[-1])
        else:
            logp = self._one_step(x, dt, scale, guess, bounds)
            out = (logp, x[-1])
            if self.hparams["residuals"] == "shooting" and x.shape[0] > 2:
                out = self._shooting(x, dt, scale, logp, bounds)
        self._cache[key] = out
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return out

    def fit_context(self, x: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per trajectory of ``x (B, K, d)`` (physical units): parameters (B, p) and rollout
        start states (B, d), float64 numpy."""
        xs = x.detach().double().cpu().numpy()
        ts = t.detach().double().cpu().numpy()
        fits = [self._fit(np.ascontiguousarray(xi), ts) for xi in xs]
        logp = np.stack([f[0] for f in fits])
        return np.exp(logp), np.stack([f[1] for f in fits])

    # -- the interface -------------------------------------------------------------------------
    @torch.no_grad()
    def recover_params(self, x: torch.Tensor, t: torch.Tensor, context: int,
                       return_theta: bool = False):
        """Physical parameters (B, p) fitted to the first ``context`` steps of ``x``; with
        ``return_theta`` also their logarithms (the model's "state")."""
        params, _ = self.fit_context(x[:, :context], t[:context])
        est = torch.as_tensor(params, dtype=torch.float64, device=x.device)
        return (est, est.log()) if return_theta else est

    @torch.no_grad()
    def rollout(self, x, t, context, keep_theta=False):
        """Fit each trajectory's context, then simulate to every time in ``t (K+H,)``.
        Returns ``(x_hat (B, K+H, d), log-parameters (B, K+H-1, p) or None)``."""
        K, T = context, t.shape[0]
        params, start = self.fit_context(x[:, :K], t[:K])
        parts = [x[:, :K].double()]
        if T > K:
            tt = t[K - 1:].detach().double().cpu()
            step = float((tt[1:] - tt[:-1]).abs().min()) / self.substeps
            sim = systems.simulate(self.system, tt, torch.as_tensor(start),
                                   torch.as_tensor(params), method="rk4", step_size=step)
            parts.append(sim[:, 1:].to(x.device))
        x_hat = torch.cat(parts, 1).to(x.dtype)
        theta = None
        if keep_theta:
            lp = torch.as_tensor(np.log(params), dtype=x.dtype, device=x.device)
            theta = lp[:, None].expand(-1, T - 1, -1)
        return x_hat, theta

    def run(self, xn, t, *, context, p_forcing=0.0, generator=None, keep_theta=False) -> Output:
        """The rollout in normalised units (the common interface; nothing is learned)."""
        self._check_run(xn, t, context, 0.0)
        x = self.normalizer.decode(xn[:, :context])
        x_hat, theta = self.rollout(x, t, context, keep_theta=keep_theta)
        mean = self.normalizer.encode(x_hat[:, 1:])
        if xn.shape[1] > 1:  # the context steps are given (exactly, not through float rounding)
            k = min(context, xn.shape[1]) - 1
            mean = torch.cat([xn[:, 1:k + 1], mean[:, k:]], 1)
        return Output(mean, None, theta)

    def training_loss(self, xn, t, *, context, **kw) -> dict:
        raise RuntimeError("classical system identification has nothing to train (epochs 0)")
