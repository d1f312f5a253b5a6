"""Metrics of a rollout (keys as in DESIGN.md), and the one table that names them.

:data:`METRICS` is the single list of the scored quantities: :meth:`FittedModel.evaluate
<warpphys.fitted.FittedModel.evaluate>` expands it into ``metrics.json``'s keys
(:func:`assemble`), ``warpphys fit`` prints the entries marked ``summary``, and ``warpphys
reproduce`` takes its CSV columns and markdown table from the entries marked ``study``. Adding a
metric is one entry here plus the line that computes it in :func:`rollout_metrics` (or
:func:`param_errors`).

Keys, for a metric ``KEY`` (see :func:`metric_key`):

* ``KEY``: the headline value, that of the estimate the model uses by default (for models with
  physical parameters the most accurate one, ``refined``; ``metrics["estimate"]`` names it);
* ``KEY_amortised`` / ``KEY_refined`` (models with physical parameters, entries with ``twins``):
  the one-pass estimate (no gradient step) and the estimate refined on the context;
* ``KEY_minmax`` (entries with ``minmax``, i.e. every MSE, also after a twin suffix): the same
  in the WARP paper's units, the states mapped to [-1, 1] by the training data's one global
  minimum and maximum ``(lo, hi)`` over all state variables: the physical MSE divided by
  ``((hi - lo) / 2) ** 2`` (:func:`to_minmax`). Absent for runs saved without ``minmax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

import systems

VPT_THRESHOLD = 0.4

#: the estimates of a model with physical parameters, in report order; the first is the one
#: forward pass, the last the most accurate (the default)
ESTIMATES = ("amortised", "refined")


@dataclass(frozen=True)
class Metric:
    """One scored quantity.

    Attributes:
        key: its key in ``metrics.json`` (headline value).
        label: short column header for tables.
        meaning: one line for the docs.
        twins: depends on the estimate: ``KEY_amortised`` and ``KEY_refined`` for physics models.
        minmax: an MSE: also ``KEY_minmax`` in the paper's units.
        per_param: also ``KEY_per_param`` (and ``KEY_<estimate>_per_param``): {name: value}.
        summary: printed by ``warpphys fit``: "" no, "headline" its headline (and minmax)
            value, "all" also its twins.
        study: a column of ``warpphys reproduce``'s results (csv and markdown).
    """

    key: str
    label: str
    meaning: str
    twins: bool = True
    minmax: bool = False
    per_param: bool = False
    summary: str = ""
    study: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("test_mse", "test MSE", "MSE of the rolled-out steps after the context, inside the "
           "training time window", minmax=True, summary="all", study=True),
    Metric("extrapolation_mse", "extrapolation MSE", "MSE of the rolled-out steps past the "
           "training time window (None if none)", minmax=True, summary="headline", study=True),
    Metric("rollout_mse", "rollout MSE", "MSE of all rolled-out steps", minmax=True),
    Metric("ood_mse", "OOD MSE", "MSE of all rolled-out steps of test trajectories whose "
           "identifiable parameters lie outside their training ranges", minmax=True,
           summary="headline", study=True),
    Metric("id_mse", "in-range MSE", "the same for trajectories inside the training ranges",
           minmax=True, summary="headline", study=True),
    Metric("invariant_drift", "invariant drift", "mean |I(x_hat) - I(x)| / |I(x_K)| over the "
           "rolled-out steps (|I(x_K)| at least 1e-3 of its median over the trajectories)",
           summary="headline", study=True),
    Metric("valid_prediction_time", "valid prediction time", "median time after the context "
           f"until the state-normalised RMS error passes {VPT_THRESHOLD}", summary="headline",
           study=True),
    Metric("param_rel_error", "param. rel. error", "median relative error of the identifiable "
           "parameters estimated from the context (physics models with known parameters)",
           per_param=True, summary="all", study=True),
)
BY_KEY = {m.key: m for m in METRICS}


def metric_key(key: str, estimate: str | None = None, minmax: bool = False,
               per_param: bool = False) -> str:
    """``KEY[_estimate][_per_param][_minmax]``, e.g. ``test_mse_refined_minmax``."""
    return (key + (f"_{estimate}" if estimate else "") + ("_per_param" if per_param else "")
            + ("_minmax" if minmax else ""))


def keys_of(metric: Metric, *, physics: bool, minmax: bool, twins: bool = True) -> list[str]:
    """Every key that ``metric`` expands into (headline first, then its twins)."""
    out = []
    for est in (None, *(ESTIMATES if physics and metric.twins and twins else ())):
        out.append(metric_key(metric.key, est))
        if metric.minmax and minmax:
            out.append(metric_key(metric.key, est, minmax=True))
    return out


def summary_keys(m: Mapping) -> list[str]:
    """The keys of ``m`` (a ``metrics.json``) that ``warpphys fit`` prints, in table order."""
    physics = m.get("estimate") is not None
    keys = ["model", "estimate"]
    for metric in METRICS:
        if metric.summary:
            keys += keys_of(metric, physics=physics, minmax=True,
                            twins=metric.summary == "all")
    keys += ["fit_seconds", "train_status"]
    return [k for k in keys if k in m]


def study_keys() -> list[str]:
    """The metric columns of a reproduction study (one row per model and estimate): every
    ``study`` entry's headline key, followed by its ``_minmax`` twin where it has one."""
    return [k for metric in METRICS if metric.study
            for k in keys_of(metric, physics=False, minmax=True)]


def minmax_half_range(minmax) -> float | None:
    """Half the width ``(hi - lo) / 2`` of the training data's global state range."""
    if minmax is None:
        return None
    lo, hi = (float(v) for v in minmax)
    return (hi - lo) / 2 if hi > lo else None


def to_minmax(mse: float | None, minmax) -> float | None:
    """A physical MSE in the paper's units: states mapped to [-1, 1] by ``minmax = (lo, hi)``,
    the training data's one global minimum and maximum over all state variables."""
    half = minmax_half_range(minmax)
    if mse is None or half is None:
        return None
    return float(mse) / half**2


def global_minmax(x: np.ndarray) -> list[float]:
    """``[lo, hi]``: the minimum and maximum of ``x (N, T, d)`` over all entries."""
    return [float(np.min(x)), float(np.max(x))]


def assemble(per_estimate: Mapping[str, dict], *, default: str, physics: bool,
             minmax=None) -> dict:
    """``metrics.json`` from the metrics of each estimate (:func:`rollout_metrics` and
    :func:`param_errors` of its rollout and parameters).

    Args:
        per_estimate: {estimate: metrics}; physics models give every name of
            :data:`ESTIMATES`, black-box models one.
        default: the estimate whose values become the headline keys.
        physics: whether the model has physical parameters: then ``KEY_<estimate>`` twins of
            every ``twins`` metric are added, and ``estimate`` names the default. Black-box
            models get neither (their keys are unchanged).
        minmax: the training data's ``(lo, hi)`` (None: no ``*_minmax`` keys).
    """
    out = dict(per_estimate[default])
    if physics:
        out["estimate"] = default
    for metric in METRICS:
        for est in (None, *(ESTIMATES if physics and metric.twins else ())):
            src = out if est is None else per_estimate.get(est, {})
            if metric.key not in src:  # e.g. parameter errors without true parameters
                continue
            out[metric_key(metric.key, est)] = src[metric.key]
            if metric.per_param:
                out[metric_key(metric.key, est, per_param=True)] = src.get(
                    metric_key(metric.key, per_param=True))
            if metric.minmax and minmax is not None:
                out[metric_key(metric.key, est, minmax=True)] = to_minmax(src[metric.key],
                                                                          minmax)
    return out


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
    passed = ~(nerr <= VPT_THRESHOLD)  # (a NaN or infinite error is no valid prediction)
    first = np.where(passed.any(1), passed.argmax(1), passed.shape[1])
    vpt = np.where(first < len(t_roll), t_roll[np.minimum(first, len(t_roll) - 1)], t_roll[-1])
    m["valid_prediction_time"] = float(np.median(vpt))
    m["vpt_threshold"] = VPT_THRESHOLD
    if system is not None and params is not None:
        m["invariant_drift"] = invariant_drift(system, x, x_hat, params, context)
        m["invariant"] = system.invariant_name
    return m


#: invariant_drift's reference |I(x_K)| is at least this share of its median over trajectories
DRIFT_FLOOR = 1e-3


def invariant_drift(system, x, x_hat, params, context) -> float:
    """Mean over trajectories and rolled-out steps of |I(x_hat) - I(x)| / |I(x at the last
    context step)|: how far the rollout's invariant strays from the true one (which, for damped
    systems, itself decays). The reference is at least :data:`DRIFT_FLOOR` of its median over
    the trajectories."""
    p = params[:, None, :]
    # a rollout may leave the invariant's domain (LV: log of a negative population): such steps
    # are NaN and left out of the mean, without numpy's warnings
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        true = system.invariant(x[:, context:], p)
        pred = system.invariant(x_hat[:, context:], p)
        ref = np.abs(system.invariant(x[:, context - 1], params))
        # a trajectory whose invariant is about zero (a spring at rest) is measured against a
        # thousandth of the typical one: its own would make one trajectory the whole mean
        typical = np.nanmedian(ref) if np.isfinite(ref).any() else 0.0
        ref = np.maximum(ref, DRIFT_FLOOR * typical) + 1e-12
        rel = np.abs(pred - true) / ref[:, None]
    rel = np.where(np.isfinite(rel), rel, np.nan)
    return float(np.nanmean(rel)) if np.isfinite(rel).any() else None


def outside_ranges(params: np.ndarray, ranges: dict, names) -> np.ndarray:
    """(N,) bool: any column of ``params (N, q)`` (named ``names``) outside its (low, high)
    training range in ``ranges``."""
    out = np.zeros(params.shape[0], dtype=bool)
    for j, name in enumerate(names):
        if name in ranges:
            lo, hi = ranges[name]
            out |= (params[:, j] < lo) | (params[:, j] > hi)
    return out


def identifiable_ranges(system: systems.System, params: np.ndarray) -> dict:
    """{identifiable name: [min, max]} of the system's identifiable combinations (e.g. k/m and
    c/m of a spring-mass system) over ``params (N, p)``: the training ranges that decide
    whether a test trajectory's dynamics lie in range."""
    ident = np.asarray(system.identifiable(params))
    return {n: [float(ident[:, j].min()), float(ident[:, j].max())]
            for j, n in enumerate(system.identifiable_names)}


def out_of_range(system: systems.System, params: np.ndarray, info: Mapping) -> np.ndarray | None:
    """(N,) bool flags of trajectories out of the training ranges: by the identifiable
    combinations against ``info["identifiable_ranges"]``, or, for runs saved before those were
    stored, by the raw parameters against ``info["param_ranges"]``. None if neither is known."""
    if info.get("identifiable_ranges"):
        return outside_ranges(np.asarray(system.identifiable(params)),
                              info["identifiable_ranges"], system.identifiable_names)
    if info.get("param_ranges"):
        return outside_ranges(params, info["param_ranges"], system.param_names)
    return None


def param_errors(system: systems.System, true: np.ndarray, est: np.ndarray) -> dict:
    """``param_rel_error`` (median relative error of the identifiable combinations of ``est``
    against ``true``, both (N, p)) and ``param_rel_error_per_param`` ({name: median})."""
    err = param_relative_error(system.identifiable(true), system.identifiable(est))
    return {"param_rel_error": err["median"],
            "param_rel_error_per_param": dict(zip(system.identifiable_names,
                                                  err["per_param_median"], strict=True))}


def param_relative_error(true: np.ndarray, est: np.ndarray) -> dict:
    """Median and mean relative error per column of (N, q) arrays.

    A column whose true values are all zero (the damping of an undamped file) has no relative
    error: None there, and it is left out of the overall median and mean (None if no column
    is left). Elsewhere each error is relative to the true value, but to no less than 1e-6 of
    the column's mean magnitude, so that one true zero does not swamp the rest."""
    true, est = np.asarray(true, dtype=np.float64), np.asarray(est, dtype=np.float64)
    scale = np.abs(true).mean(0)
    defined = scale > 0
    with np.errstate(divide="ignore", invalid="ignore"):  # (the all-zero columns: unused)
        rel = np.abs(est - true) / np.maximum(np.abs(true), 1e-6 * scale)
    per = [float(np.median(rel[:, j])) if ok else None for j, ok in enumerate(defined)]
    kept = rel[:, defined]
    return {
        "median": float(np.median(kept)) if kept.size else None,
        "mean": float(np.mean(kept)) if kept.size else None,
        "per_param_median": per,
    }
