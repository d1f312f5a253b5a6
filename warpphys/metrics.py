"""Metrics of a rollout, in physical units (keys as in DESIGN.md)."""

from __future__ import annotations

import numpy as np

import systems

VPT_THRESHOLD = 0.4


def _mse(err2: np.ndarray) -> float | None:
    return float(err2.mean()) if err2.size else None


def rollout_metrics(
    x: np.ndarray, x_hat: np.ndarray, t: np.ndarray, context: int, *, window: float,
    state_std: np.ndarray, system: systems.System | None = None, params: np.ndarray | None = None,
    ood: np.ndarray | None = None,
) -> dict:
    """Compare a rollout with the truth.

    Args:
        x, x_hat: (N, T, d) true and predicted states; ``x_hat[:, :context]`` is the context.
        t: (T,) times; the training window is ``t - t[0] <= window``.
        context: K, the number of fed steps; only steps K..T-1 are scored.
        state_std: (d,) per-state scale used to normalise errors for the valid prediction time.
        system, params: the known system and (N, p) parameters in its order (for the invariant).
        ood: (N,) bool, trajectories whose parameters lie outside the training ranges.

    Returns a dict with ``test_mse`` (rolled-out steps inside the training window),
    ``extrapolation_mse`` (steps beyond it; None if none), ``rollout_mse`` (all rolled-out steps),
    ``ood_mse``/``id_mse`` (all rolled-out steps of OOD / in-range trajectories),
    ``invariant_drift``, ``valid_prediction_time`` and counts.
    """
    err2 = (x_hat - x) ** 2  # (N, T, d)
    scored = np.arange(x.shape[1]) >= context
    inside = (t - t[0]) <= window * (1 + 1e-9)
    m = {
        "context": int(context),
        "horizon": int(x.shape[1] - context),
        "n_trajectories": int(x.shape[0]),
        "test_mse": _mse(err2[:, scored & inside]),
        "extrapolation_mse": _mse(err2[:, scored & ~inside]),
        "rollout_mse": _mse(err2[:, scored]),
        "ood_mse": None,
        "id_mse": None,
        "n_ood": None,
        "invariant_drift": None,
    }
    if ood is not None:
        m["n_ood"] = int(ood.sum())
        m["ood_mse"] = _mse(err2[ood][:, scored])
        m["id_mse"] = _mse(err2[~ood][:, scored])
    # valid prediction time: time after the context until the normalised error passes a threshold
    nerr = np.sqrt((((x_hat - x) / state_std) ** 2).mean(-1))[:, scored]  # (N, H)
    t_roll = t[scored] - t[context - 1]
    passed = nerr > VPT_THRESHOLD
    first = np.where(passed.any(1), passed.argmax(1), passed.shape[1])
    vpt = np.where(first < len(t_roll), t_roll[np.minimum(first, len(t_roll) - 1)], t_roll[-1])
    m["valid_prediction_time"] = float(np.median(vpt))
    m["vpt_threshold"] = VPT_THRESHOLD
    if system is not None and params is not None:
        m["invariant_drift"] = invariant_drift(system, x, x_hat, params, context)
        m["invariant"] = system.invariant_name
    return m


def invariant_drift(system, x, x_hat, params, context) -> float:
    """Mean over trajectories and rolled-out steps of |I(x_hat) - I(x)| / |I(x at the last
    context step)|: how far the rollout's invariant strays from the true one (which, for damped
    systems, itself decays)."""
    p = params[:, None, :]
    # a rollout may leave the invariant's domain (LV: log of a negative population): such steps
    # are NaN and left out of the mean, without numpy's warnings
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        true = system.invariant(x[:, context:], p)
        pred = system.invariant(x_hat[:, context:], p)
        ref = np.abs(system.invariant(x[:, context - 1], params)) + 1e-12
        rel = np.abs(pred - true) / ref[:, None]
    rel = np.where(np.isfinite(rel), rel, np.nan)
    return float(np.nanmean(rel)) if np.isfinite(rel).any() else None


def outside_ranges(params: np.ndarray, ranges: dict, names) -> np.ndarray:
    """(N,) bool: any parameter outside its (low, high) training range."""
    out = np.zeros(params.shape[0], dtype=bool)
    for j, name in enumerate(names):
        if name in ranges:
            lo, hi = ranges[name]
            out |= (params[:, j] < lo) | (params[:, j] > hi)
    return out


def param_relative_error(true: np.ndarray, est: np.ndarray) -> dict:
    """Median and mean relative error per column of (N, q) arrays."""
    rel = np.abs(est - true) / np.maximum(np.abs(true), 1e-12)
    return {
        "median": float(np.median(rel)),
        "mean": float(np.mean(rel)),
        "per_param_median": [float(v) for v in np.median(rel, 0)],
    }
