"""Figures of a WARP run: rollouts, phase portraits, errors, invariants, weights, training.

Every function takes numpy arrays in physical units, returns the :class:`matplotlib.figure.Figure`
and, when ``path`` is given, saves it atomically (a temporary file in the same folder, then
``os.replace``; PNG at 120 dpi, or PDF/SVG when the suffix says so). After saving, the figure is
closed (released from pyplot) unless ``close=False``; without ``path`` nothing is closed, so the
caller can keep drawing on it or show it.

Backends: this module never calls ``matplotlib.use``. Figures are made with pyplot, so a notebook
keeps its inline backend, and a process without a display falls back to Agg on its own
(matplotlib's automatic backend selection). In a notebook, an unsaved (open) figure is shown by
pyplot at the end of the cell; if the call is also the cell's last expression it is shown twice,
so assign it (``fig = plot_...(...)``) or end the line with ``;``. A figure saved and closed with
``path`` is shown once when it is the last expression, and not at all otherwise.

Shapes (N trajectories, T times, d state components):

- ``t``: (T,) sample times, the same for all trajectories.
- ``x, x_hat``: (N, T, d) true and predicted states; ``x_hat[:, :context]`` is the context (the
  true steps fed to the model) and is not drawn as a prediction.
- ``window_end``: the absolute time (same units as ``t``) where the training window ends; the
  part after it is an extrapolation in time. ``None`` or ``>= t[-1]``: no extrapolation marked.

Non-finite predictions (a rollout that blew up) are drawn as gaps; axis limits follow the truth,
so a diverging prediction leaves the panel instead of squashing the true curve.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogLocator, NullFormatter

from warpphys import metrics
from warpphys.rundir import atomic_open

__all__ = [
    "plot_comparison_bars",
    "plot_error_comparison",
    "plot_error_vs_time",
    "plot_invariant",
    "plot_param_recovery",
    "plot_phase_portraits",
    "plot_trajectories",
    "plot_training",
    "plot_weight_trajectories",
]

DPI = 120

# One style per role, shared by the artists and their legend entries.
_TRUTH = {"color": "black", "lw": 1.3}
_PRED = {"color": "tab:blue", "ls": "--", "lw": 1.4}
#: styles of further predictions drawn beside the first (e.g. a second estimate's rollout)
_MORE_PREDS = ({"color": "tab:orange", "ls": "-.", "lw": 1.4},
               {"color": "tab:green", "ls": ":", "lw": 1.6})
_CONTEXT = {"facecolor": "0.88", "edgecolor": "none", "lw": 0}
_EXTRAP = {"facecolor": "#fcefef", "edgecolor": "#ecc4c4", "hatch": "//", "lw": 0}
_WINDOW_LINE = {"color": "#b03030", "ls": ":", "lw": 1.3}
_BAND_ALPHA = 0.25


# -- saving ---------------------------------------------------------------------------------------
def _finish(fig: Figure, path: str | os.PathLike | None, close: bool) -> Figure:
    """Save ``fig`` atomically to ``path`` (if given), then close it if ``close`` (also when the
    save fails, so a failed save leaks no pyplot figure)."""
    if path is None:
        return fig
    try:
        _save_atomic(fig, Path(path))
    finally:
        if close:
            plt.close(fig)
    return fig


def _save_atomic(fig: Figure, path: Path) -> None:
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ValueError(
            f"cannot save a figure as {fmt!r} ({str(path)!r}); use a .png, .pdf or .svg path"
        )
    with atomic_open(path, binary=True) as fh:
        fig.savefig(fh, format=fmt, dpi=DPI)


def _new_figure(nrows: int, ncols: int, *, panel: tuple[float, float], **kw):
    """A constrained-layout figure with an (nrows, ncols) array of axes of ``panel`` inches."""
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False, layout="constrained",
        figsize=(panel[0] * ncols + 0.6, panel[1] * nrows + 0.9), **kw,
    )
    return fig, axes


def _grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(n_panels, max_cols))
    return math.ceil(n_panels / ncols), ncols


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


# -- input checks ---------------------------------------------------------------------------------
def _float(a) -> np.ndarray:
    """``a`` as a float array with non-finite entries (inf from a diverged rollout) set to NaN."""
    a = np.array(a, dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    return a


def _states(x, name: str) -> np.ndarray:
    """(N, T, d) states; a single (T, d) trajectory is promoted to N = 1."""
    x = _float(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (N, T, d) or (T, d), got {x.shape}")
    return x


def _times(t, n_times: int) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) != n_times:
        raise ValueError(f"t must have shape (T,) = ({n_times},), got {t.shape}")
    return t


def _pair(t, x, x_hat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, x_hat = _states(x, "x"), _states(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {x.shape} and {x_hat.shape}")
    return (None if t is None else _times(t, x.shape[1])), x, x_hat


def _pred_style(i: int) -> dict:
    return _PRED if i == 0 else _MORE_PREDS[(i - 1) % len(_MORE_PREDS)]


def _predictions(t, x, x_hat) -> tuple[np.ndarray | None, np.ndarray, dict[str, np.ndarray]]:
    """``x_hat`` as {label: (N, T, d)}: one array is labelled "prediction"; a mapping (e.g.
    {"amortised": ..., "refined": ...}) keeps its labels, each checked against ``x``."""
    items = x_hat.items() if isinstance(x_hat, Mapping) else [("prediction", x_hat)]
    preds = {}
    for name, xh in items:
        t_, x_, preds[str(name)] = _pair(t, x, xh)
    if not preds:
        raise ValueError("x_hat is empty; pass an array or {label: x_hat}")
    return t_, x_, preds


def _count(n: int, available: int) -> int:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return min(int(n), available)


def _context(context: int, n_times: int) -> int:
    context = int(context)
    if not 0 <= context <= n_times:
        raise ValueError(f"context must lie in [0, T={n_times}], got {context}")
    return context


def _names(names: Sequence[str] | None, d: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{j}" for j in range(d)]
    names = [str(s) for s in np.atleast_1d(names)]
    if len(names) < d:
        raise ValueError(f"need {d} names, got {len(names)}: {names}")
    return names[:d]


# -- shared drawing -------------------------------------------------------------------------------
def _has_extrapolation(t: np.ndarray, window_end: float | None) -> bool:
    return window_end is not None and float(window_end) < t[-1]


def _mark_regions(ax, t: np.ndarray, *, context: int, window_end: float | None) -> None:
    """Shade the context (t <= t[context-1]) and tint/hatch the extrapolation (t > window_end)."""
    if context >= 1:
        ax.axvspan(t[0], t[context - 1], zorder=0, **_CONTEXT)
    if _has_extrapolation(t, window_end):
        ax.axvspan(max(float(window_end), t[0]), t[-1], zorder=0, **_EXTRAP)
        ax.axvline(float(window_end), zorder=1, **_WINDOW_LINE)
    ax.set_xlim(t[0], t[-1])


def _region_handles(t: np.ndarray, *, context: int, window_end: float | None) -> list:
    """Legend entries for the regions :func:`_mark_regions` draws."""
    handles = []
    if context >= 1:
        handles.append(Patch(**_CONTEXT, label="context"))
    if _has_extrapolation(t, window_end):
        handles.append(Patch(**_EXTRAP, label="extrapolation"))
        handles.append(Line2D([], [], **_WINDOW_LINE, label="end of training window"))
    return handles


def _style_handles(true_label: str = "truth", pred_label: str = "prediction",
                   color: str | None = None) -> list:
    c = {} if color is None else {"color": color}
    return [Line2D([], [], **{**_TRUTH, **c}, label=true_label),
            Line2D([], [], **{**_PRED, **c}, label=pred_label)]


def _pred_handles(preds: Mapping[str, np.ndarray]) -> list:
    """Legend entries: truth, then each prediction in its style."""
    return [Line2D([], [], **_TRUTH, label="truth")] + [
        Line2D([], [], **_pred_style(k), label=name) for k, name in enumerate(preds)]


def _figure_legend(fig: Figure, handles: list, ncols: int | None = None) -> None:
    """One legend below all panels, so it covers neither data nor the figure title; in no more
    columns than the figure's width holds (a long label, such as "refined on the context
    [default]", would otherwise run past the edge of a one-panel figure)."""
    ncols = ncols or min(len(handles), 6)
    # inches an entry takes at this font size, at most: its line and about 0.06 per character
    widths = sorted((0.5 + 0.06 * len(h.get_label()) for h in handles), reverse=True)
    while ncols > 1 and sum(widths[:ncols]) > fig.get_figwidth():
        ncols -= 1
    fig.legend(handles=handles, loc="outside lower center", frameon=False, ncols=ncols,
               fontsize="small")


def _limits(truth: np.ndarray, pred: np.ndarray | None = None, pad: float = 0.06):
    """Axis limits covering the truth and the prediction, the latter only up to one truth-range
    beyond the truth (a diverging rollout is clipped, not allowed to squash the truth)."""
    truth = truth[np.isfinite(truth)]
    if truth.size == 0:
        return None
    lo, hi = float(truth.min()), float(truth.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    if pred is not None:
        pred = pred[np.isfinite(pred)]
        if pred.size:
            lo = min(lo, max(float(pred.min()), lo - span))
            hi = max(hi, min(float(pred.max()), hi + span))
    span = hi - lo if hi > lo else span
    return lo - pad * span, hi + pad * span


def _set_ylim(ax, truth, pred=None) -> None:
    lim = _limits(truth, pred)
    if lim is not None:
        ax.set_ylim(*lim)


def _readable_log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number ticks ("0.02", "1.5") on a log axis, more of them when it spans few decades."""
    decades = np.log10(hi / lo)
    # (1-2-5 over two decades crowds "0.005" into "0.01" on a narrow panel: 1-3 there)
    subs = ((1.0,) if decades > 3 else (1.0, 3.0) if decades > 1.8 else (1.0, 2.0, 5.0)
            if decades > 1 else (1, 1.5, 2, 3, 5, 7))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _colors(k: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(k)]


@contextmanager
def _quiet_nan_stats():
    """Silence numpy's warnings for all-NaN slices (a fully diverged rollout is data, not a bug)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _positive_or_nan(a: np.ndarray) -> np.ndarray:
    """Values for a log axis: non-positive entries become gaps."""
    a = np.array(a, dtype=np.float64)
    a[~(a > 0)] = np.nan
    return a


# -- figures ------------------------------------------------------------------------------------
def plot_trajectories(
    t, x, x_hat, *, context: int, window_end: float | None = None,
    state_names: Sequence[str] | None = None, n: int = 6, title: str | None = None,
    path: str | os.PathLike | None = None, close: bool = True,
) -> Figure:
    """True vs predicted trajectories, one panel per (trajectory, state component).

    Args:
        t: (T,) sample times.
        x, x_hat: (N, T, d) true and predicted states ((T, d) for one trajectory); ``x_hat``
            may also be {label: (N, T, d)}, several predictions drawn together (e.g. the
            amortised and the refined estimate's rollouts), each in its own style.
        context: K, number of true steps fed to the model; t <= t[K-1] is shaded "context" and
            the prediction is drawn from step K-1 on.
        window_end: absolute end time of the training window; the part after it is hatched
            "extrapolation" (nothing when None or >= t[-1]).
        state_names: (d,) names of the state components (default x0, x1, ...).
        n: number of trajectories shown (the first n; fewer if N < n).
        title: figure title.
        path, close: save to this file (PNG unless the suffix says pdf/svg), then close.

    Layout: n rows x d columns; for d == 1 a compact grid of up to 3 columns.
    Truth is solid black, the (first) prediction dashed blue, others dash-dot orange, dotted green.
    """
    t, x, preds = _predictions(t, x, x_hat)
    N, T, d = x.shape
    n, context = _count(n, N), _context(context, T)
    names = _names(state_names, d, "x")
    start = max(context - 1, 0)
    panels = [(i, j) for i in range(n) for j in range(d)]
    nrows, ncols = (n, d) if d > 1 else _grid_shape(n)
    fig, axes = _new_figure(nrows, ncols, panel=(3.2, 1.7), sharex=True)
    for ax, (i, j) in zip(axes.flat, panels, strict=False):
        _mark_regions(ax, t, context=context, window_end=window_end)
        ax.plot(t, x[i, :, j], **_TRUTH)
        for k, xh in enumerate(preds.values()):
            ax.plot(t[start:], xh[i, start:, j], **_pred_style(k))
        _set_ylim(ax, x[i, :, j], np.concatenate([xh[i, start:, j] for xh in preds.values()]))
        if d > 1:
            if i == 0:
                ax.set_title(names[j])
            if j == 0:
                ax.set_ylabel(f"trajectory {i}")
        else:
            ax.set_title(f"trajectory {i}", fontsize="medium")
            ax.set_ylabel(names[0])
    _hide_unused(axes, len(panels))
    for ax in axes[-1]:
        ax.set_xlabel("t")
    if d == 1:  # the last row may be partly empty: label the lowest visible panel of each column
        for c in range(ncols):
            visible = [r for r in range(nrows) if r * ncols + c < len(panels)]
            axes[visible[-1], c].set_xlabel("t")
            axes[visible[-1], c].xaxis.set_tick_params(labelbottom=True)
    handles = _pred_handles(preds) + _region_handles(t, context=context, window_end=window_end)
    _figure_legend(fig, handles, ncols=min(len(handles), 6 if len(preds) == 1 else 3))
    if title:
        fig.suptitle(title)
    return _finish(fig, path, close)


def plot_phase_portraits(
    x, x_hat, *, context: int, state_names: Sequence[str] | None = None, n: int = 6,
    t=None, path: str | os.PathLike | None = None, close: bool = True,
) -> Figure:
    """Phase portraits (state 0 vs state 1) of true and predicted trajectories, one per panel.

    Args:
        x, x_hat: (N, T, d) true and predicted states ((T, d) for one trajectory), or
            ``x_hat`` as {label: (N, T, d)}: several predictions, each in its own style.
        context: K, number of fed true steps; this part of the true curve is drawn thick.
        state_names: (d,) names of the state components.
        n: number of trajectories (panels) shown; fewer if N < n.
        t: optional (T,) times, used only when d == 1: the portrait is then x vs dx/dt,
            estimated with ``np.gradient`` (per step, not per time unit, when t is None).
        path, close: save to this file, then close.

    The start of each trajectory is marked with a dot.
    """
    t, x, preds = _predictions(t, x, x_hat)
    N, T, d = x.shape
    n, context = _count(n, N), _context(context, T)
    names = _names(state_names, d, "x")
    if d == 1:
        grad = (lambda a: np.gradient(a, t, axis=1)) if t is not None else (
            lambda a: np.gradient(a, axis=1))
        x = np.concatenate([x, grad(x)], axis=-1)
        preds = {k: np.concatenate([xh, grad(xh)], axis=-1) for k, xh in preds.items()}
        names = [names[0], f"d{names[0]}/dt" if t is not None else f"d{names[0]} per step"]
    start = max(context - 1, 0)
    nrows, ncols = _grid_shape(n)
    fig, axes = _new_figure(nrows, ncols, panel=(3.0, 2.8))
    for i, ax in enumerate(axes.flat[:n]):
        if context >= 2:
            ax.plot(x[i, :context, 0], x[i, :context, 1], color="0.6", lw=5, alpha=0.6,
                    solid_capstyle="round", zorder=1)
        ax.plot(x[i, :, 0], x[i, :, 1], zorder=2, **_TRUTH)
        for k, xh in enumerate(preds.values()):
            ax.plot(xh[i, start:, 0], xh[i, start:, 1], zorder=3, **_pred_style(k))
        ax.plot(x[i, 0, 0], x[i, 0, 1], "o", color="black", ms=5, zorder=4)
        rolled = np.concatenate([xh[i, start:] for xh in preds.values()])
        lx = _limits(x[i, :, 0], rolled[:, 0])
        ly = _limits(x[i, :, 1], rolled[:, 1])
        if lx is not None:
            ax.set_xlim(*lx)
        if ly is not None:
            ax.set_ylim(*ly)
        ax.set_title(f"trajectory {i}", fontsize="medium")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    _hide_unused(axes, n)
    handles = _pred_handles(preds)
    if context >= 2:
        handles.append(Line2D([], [], color="0.6", lw=5, alpha=0.6, label="context"))
    handles.append(Line2D([], [], ls="none", marker="o", color="black", ms=5, label="start"))
    _figure_legend(fig, handles)
    return _finish(fig, path, close)


def _rollout_error(x: np.ndarray, x_hat: np.ndarray, context: int) -> np.ndarray:
    """(N, T-K) error after the context: sqrt of the mean over the state of the squared error."""
    with _quiet_nan_stats():
        return np.sqrt(np.nanmean((x_hat[:, context:] - x[:, context:]) ** 2, axis=-1))


def _draw_error(ax, t: np.ndarray, x: np.ndarray, predictions: Mapping[str, np.ndarray], *,
                context: int, window_end: float | None) -> list:
    """Median and 10-90% band of the rollout error per model; returns legend handles."""
    T = x.shape[1]
    if context >= T:
        raise ValueError(f"context={context} leaves no rolled-out steps of T={T}; use context < T")
    tt = t[context:]
    handles, any_finite = [], False
    for (label, x_hat), color in zip(predictions.items(), _colors(len(predictions)), strict=True):
        err = _positive_or_nan(_rollout_error(x, x_hat, context))
        any_finite |= bool(np.isfinite(err).any())
        with _quiet_nan_stats():
            med = np.nanmedian(err, axis=0)
            lo, hi = np.nanpercentile(err, [10, 90], axis=0)
        ax.fill_between(tt, lo, hi, color=color, alpha=_BAND_ALPHA, lw=0)
        (line,) = ax.plot(tt, med, color=color, lw=1.6, label=str(label))
        handles.append(line)
    handles.append(Patch(color="0.5", alpha=_BAND_ALPHA + 0.1, lw=0,
                         label="10–90% of trajectories"))
    _mark_regions(ax, t, context=0, window_end=window_end)
    if len(tt) > 1:
        ax.set_xlim(tt[0], t[-1])
    if any_finite:
        ax.set_yscale("log")
    else:  # every prediction is NaN (or exact): a log axis has nothing to show
        ax.text(0.5, 0.5, "no finite, non-zero error to show", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
    ax.set_xlabel("t")
    ax.set_ylabel("RMS error over state")
    return handles + _region_handles(t, context=0, window_end=window_end)


def plot_error_comparison(
    t, x, predictions: Mapping[str, np.ndarray], *, context: int,
    window_end: float | None = None, path: str | os.PathLike | None = None, close: bool = True,
) -> Figure:
    """Rollout error vs time for several models on the same test trajectories.

    Args:
        t: (T,) sample times.
        x: (N, T, d) true states.
        predictions: {label: x_hat} with each x_hat of shape (N, T, d).
        context: K; only steps K..T-1 (the rollout) are drawn.
        window_end: absolute end of the training window, marked by a dotted line and tint.
        path, close: save to this file, then close.

    The error of a trajectory at a step is sqrt(mean over the state of the squared error), in
    the state's units; drawn are the median over trajectories and its 10-90% band, log y-axis.
    """
    if not predictions:
        raise ValueError("predictions is empty; pass {label: x_hat}")
    x = _states(x, "x")
    t = _times(t, x.shape[1])
    preds = {}
    for label, x_hat in predictions.items():
        _, _, preds[label] = _pair(None, x, x_hat)
    context = _context(context, x.shape[1])
    fig, axes = _new_figure(1, 1, panel=(6.4, 3.6))
    handles = _draw_error(axes[0, 0], t, x, preds, context=context, window_end=window_end)
    _figure_legend(fig, handles, ncols=min(len(handles), 4))
    return _finish(fig, path, close)


def plot_error_vs_time(
    t, x, x_hat, *, context: int, window_end: float | None = None,
    path: str | os.PathLike | None = None, label: str | None = None, close: bool = True,
) -> Figure:
    """Rollout error vs time of one model; see :func:`plot_error_comparison` (same figure).

    Args:
        t: (T,) times; x, x_hat: (N, T, d) true and predicted states.
        context, window_end, path, close: as in :func:`plot_error_comparison`.
        label: legend label of the model (default "median error").
    """
    return plot_error_comparison(t, x, {label or "median error": x_hat}, context=context,
                                 window_end=window_end, path=path, close=close)


def plot_invariant(
    t, inv_true, inv_pred, *, context: int, window_end: float | None = None,
    name: str = "energy", n: int = 6, path: str | os.PathLike | None = None, close: bool = True,
) -> Figure:
    """A conserved (or slowly varying) quantity along true and predicted trajectories.

    Args:
        t: (T,) times.
        inv_true, inv_pred: (N, T) the invariant evaluated on the true and predicted states.
        context: K, number of fed steps (shaded); the prediction is drawn from step K-1 on.
        window_end: absolute end of the training window (extrapolation marked after it).
        name: the invariant's name, for the axis label.
        n: number of trajectories shown; one colour each (solid true, dashed predicted).
        path, close: save to this file, then close.
    """
    inv_true, inv_pred = _float(inv_true), _float(inv_pred)
    if inv_true.ndim == 1:
        inv_true, inv_pred = inv_true[None], inv_pred[None]
    if inv_true.ndim != 2 or inv_true.shape != inv_pred.shape:
        raise ValueError("inv_true and inv_pred must both have shape (N, T), got "
                         f"{inv_true.shape} and {inv_pred.shape}")
    N, T = inv_true.shape
    t = _times(t, T)
    n, context = _count(n, N), _context(context, T)
    start = max(context - 1, 0)
    fig, axes = _new_figure(1, 1, panel=(6.4, 3.6))
    ax = axes[0, 0]
    _mark_regions(ax, t, context=context, window_end=window_end)
    for i, color in zip(range(n), _colors(n), strict=True):
        ax.plot(t, inv_true[i], **{**_TRUTH, "color": color})
        ax.plot(t[start:], inv_pred[i, start:], **{**_PRED, "color": color})
    _set_ylim(ax, inv_true[:n], inv_pred[:n, start:])
    ax.set_xlabel("t")
    ax.set_ylabel(name)
    ax.set_title(f"{name} along {n} trajectories (colour = trajectory)", fontsize="medium")
    handles = _style_handles(f"true {name}", f"predicted {name}", color="0.25")
    _figure_legend(fig, handles + _region_handles(t, context=context, window_end=window_end))
    return _finish(fig, path, close)


def _principal_components(theta: np.ndarray, k: int):
    """PC scores (N, T', k) and explained variance ratios (k,) of pooled finite weight rows.

    Signs are fixed so that each component's largest loading is positive (reproducible).
    Returns (None, None) when fewer than two finite rows exist.
    """
    N, Tw, D = theta.shape
    rows = theta.reshape(-1, D)
    finite = np.isfinite(rows).all(axis=1)
    if finite.sum() < 2:
        return None, None
    mean = rows[finite].mean(axis=0)
    _, s, vt = np.linalg.svd(rows[finite] - mean, full_matrices=False)
    k = min(k, len(s))
    var = s**2
    ratio = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    vt = vt[:k]
    vt *= np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])[:, None]
    scores = (rows - mean) @ vt.T  # non-finite rows give NaN scores: gaps in the plot
    return scores.reshape(N, Tw, k), ratio


def plot_weight_trajectories(
    t, theta, *, context: int, n: int = 4, k: int = 3, window_end: float | None = None,
    path: str | os.PathLike | None = None, close: bool = True,
) -> Figure:
    """The root network's weights over time, projected on their leading principal components.

    Args:
        t: (T,) or (T'+1,) times. The weights are aligned with the last T' times,
            ``theta[:, j] <-> t[-T':][j]`` (so with T'+1 times the initial time has no weights,
            as when theta_j is the state of the linear recurrence after step j).
        theta: (N, T', D) flattened root-network weights per trajectory and step.
        context: K, number of fed true steps; times t <= t[K-1] are shaded.
        n: number of trajectories shown (fewer if N < n); the PCs are fitted on these,
            pooled over time (NaN/inf rows are left out of the fit).
        k: number of leading principal components, one panel each (at most D).
        window_end: optional absolute end of the training window (extrapolation marked).
        path, close: save to this file, then close.

    Panel titles give each component's explained variance ratio; the figure title their sum.
    """
    theta = _float(theta)
    if theta.ndim != 3:
        raise ValueError(f"theta must have shape (N, T', D), got {theta.shape}")
    N, Tw, D = theta.shape
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < Tw:
        raise ValueError(f"t must have shape (T,) with T >= T' = {Tw}, got {t.shape}")
    tw = t[len(t) - Tw:]
    n = _count(n, N)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    context = _context(context, len(t))
    scores, ratio = _principal_components(theta[:n], min(k, D))
    k = min(k, D) if ratio is None else len(ratio)
    fig, axes = _new_figure(k, 1, panel=(6.4, 1.9), sharex=True)
    colors = _colors(n)
    for j, ax in enumerate(axes[:, 0]):
        _mark_regions(ax, t, context=context, window_end=window_end)
        if scores is None:
            ax.text(0.5, 0.5, "no finite weights to analyse", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
            continue
        for i in range(n):
            ax.plot(tw, scores[i, :, j], color=colors[i], lw=1.3)
        ax.set_ylabel(f"PC{j + 1}")
        ax.set_title(f"PC{j + 1}: {ratio[j]:.1%} of variance", fontsize="small", loc="left")
    axes[-1, 0].set_xlabel("t")
    handles = [Line2D([], [], color=c, lw=1.3, label=f"trajectory {i}")
               for i, c in enumerate(colors)]
    _figure_legend(fig, handles + _region_handles(t, context=context, window_end=window_end),
                   ncols=min(n + 3, 4))
    total = "" if ratio is None else f" ({ratio.sum():.1%} of variance)"
    fig.suptitle(f"Root-network weights: leading {k} principal components{total}",
                 fontsize="medium")
    return _finish(fig, path, close)


def plot_param_recovery(
    true, est, *, names: Sequence[str] | None = None, path: str | os.PathLike | None = None,
    close: bool = True,
) -> Figure:
    """Recovered vs true physical parameters, one panel per parameter.

    Args:
        true, est: (N, p) true and estimated parameters ((N,) for one parameter); ``est`` may
            also be {label: (N, p)}, several estimates (e.g. amortised and refined) in one
            colour each, with a legend.
        names: (p,) parameter names (default p0, p1, ...).
        path, close: save to this file, then close.

    Each panel has the identity line, log-log axes when all its finite values are positive, and
    the median relative error |est - true| / |true| in its title, per estimate (NaN estimates
    are left out).
    """
    true = _float(true)
    several = isinstance(est, Mapping)
    ests = {str(k): _float(v) for k, v in (est.items() if several else [("", est)])}
    if true.ndim == 1:
        true = true[:, None]
        ests = {k: v[:, None] if v.ndim == 1 else v for k, v in ests.items()}
    for v in ests.values():
        if true.ndim != 2 or true.shape != v.shape:
            raise ValueError(f"true and est must both have shape (N, p), got {true.shape} "
                             f"and {v.shape}")
    p = true.shape[1]
    names = _names(names, p, "p")
    nrows, ncols = _grid_shape(p, 4)
    fig, axes = _new_figure(nrows, ncols, panel=(3.0, 3.0))
    colors = ["tab:blue", "tab:orange", "tab:green"]
    # in the panels, labels without the model's name that they all share ("warp-phys: ...")
    heads = {k.split(": ", 1)[0] if ": " in k else None for k in ests}
    short = {k: k.split(": ", 1)[1] if len(heads) == 1 and None not in heads else k
             for k in ests}
    for j, ax in enumerate(axes.flat[:p]):
        a = true[:, j]
        for k, (label, v) in enumerate(ests.items()):
            ax.scatter(a, v[:, j], s=14, color=colors[k % 3], alpha=0.7, edgecolor="none",
                       label=label or None)
        both = np.concatenate([a, *(v[:, j] for v in ests.values())])
        both = both[np.isfinite(both)]
        log = both.size > 0 and bool((both > 0).all())
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        if both.size:
            lo, hi = both.min(), both.max()
            if log:
                lo, hi = lo / 1.15, hi * 1.15
                _readable_log_ticks(ax.xaxis, lo, hi)
                _readable_log_ticks(ax.yaxis, lo, hi)
            else:
                pad = 0.06 * ((hi - lo) or max(abs(hi), 1.0))
                lo, hi = lo - pad, hi + pad
            ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", zorder=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        parts = []
        zero = not (np.abs(a[~np.isnan(a)]) > 0).any()  # every true value 0: no relative error
        for label, v in ests.items():
            ok = ~(np.isnan(v[:, j]) | np.isnan(a))  # (_float made non-finite values NaN)
            err = (metrics.param_relative_error(a[ok, None], v[ok, j, None])["median"]
                   if ok.any() else None)
            text = ("no finite estimates" if not ok.any() else f"{err:.1%}" if err is not None
                    else f"|est| {np.median(np.abs(v[ok, j])):.2g}")
            parts.append((f"{short[label]} " if label else "") + text)
        what = "true value 0, median" if zero else "median rel. error"
        if zero:  # tiny estimates: each tick its own exponent (a shared one meets the title)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(FormatStrFormatter("%.2g"))
        if len(parts) > 1:  # one line of title; the errors in the empty upper-left corner
            ax.set_title(f"{names[j]}: {what}", fontsize="medium")
            ax.text(0.03, 0.97, "\n".join(parts), transform=ax.transAxes, va="top",
                    ha="left", fontsize="x-small",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        else:
            ax.set_title(f"{names[j]}: {what} {parts[0]}", fontsize="medium")
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"recovered {names[j]}")
    _hide_unused(axes, p)
    if several:
        _figure_legend(fig, [Line2D([], [], ls="none", marker="o", color=colors[k % 3],
                                    label=label) for k, label in enumerate(ests)])
    return _finish(fig, path, close)


def plot_training(history: Mapping[str, Sequence[float]], path: str | os.PathLike | None = None,
                  *, close: bool = True) -> Figure:
    """Training loss and validation MSE vs epoch, log y-axis.

    Args:
        history: lists under ``epoch``, ``train_loss`` and (optional) ``val_epoch``,
            ``val_mse``; the best validation epoch is marked.
        path, close: save to this file, then close.
    """
    for key in ("epoch", "train_loss"):
        if key not in history:
            raise ValueError(f"history needs {key!r} (lists epoch, train_loss, val_epoch, "
                             f"val_mse), got keys {sorted(history)}")
    fig, axes = _new_figure(1, 1, panel=(6.0, 3.6))
    ax = axes[0, 0]
    ax.plot(np.asarray(history["epoch"], float),
            _positive_or_nan(np.asarray(history["train_loss"], float)),
            color="tab:blue", lw=1.4, label="training loss")
    val_e = np.asarray(history.get("val_epoch", []), float)
    val = _positive_or_nan(np.asarray(history.get("val_mse", []), float))
    if val.size and len(val_e) == len(val):
        ax.plot(val_e, val, "o-", color="tab:orange", lw=1.4, ms=3.5, label="validation MSE")
        if np.isfinite(val).any():
            best = int(np.nanargmin(val))
            ax.plot(val_e[best], val[best], "*", color="tab:red", ms=11, zorder=5,
                    label=f"best: {val[best]:.3g} (epoch {val_e[best]:g})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / MSE")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False, fontsize="small", loc="best")
    return _finish(fig, path, close)


def plot_comparison_bars(table: Mapping[str, Mapping[str, float]], metric: str | Sequence[str],
                         path: str | os.PathLike | None = None, *, close: bool = True,
                         reference: Mapping[str, Mapping[str, float]] | None = None,
                         reference_label: str = "reference",
                         titles: Mapping[str, str] | None = None) -> Figure:
    """One bar per model for ``metric`` (e.g. in a reproduction study), log y-axis.

    Args:
        table: {model: {metric: value, metric + "_std": spread (optional), ...}}; a model
            without the metric (or with None/NaN) gets an "n/a" label instead of a bar, one
            with an infinite value (rollouts that diverged) a "diverged" label.
        metric: the key to plot, or several keys: one panel each, side by side (e.g. an MSE in
            two units).
        path, close: save to this file, then close.
        reference: {metric: {model: value}}: numbers from elsewhere (e.g. a paper's) drawn as
            black diamonds on that metric's panel, beside the model's bar.
        reference_label: their legend entry.
        titles: {metric: panel title} (default "<metric> per model").

    The y-axis is logarithmic when all values are positive (linear otherwise); error bars come
    from ``metric + "_std"`` (on a log axis the lower whisker stops at a tenth of the value).
    Values are printed above the bars.
    """
    if not table:
        raise ValueError("table is empty; pass {model: {metric: value}}")
    keys = [metric] if isinstance(metric, str) else list(metric)
    models = list(table)
    fig, axes = _new_figure(1, len(keys), panel=(max(4.0, 0.9 * len(models) + 1.5), 3.6))
    for ax, key in zip(axes[0], keys, strict=True):
        _draw_bars(ax, table, key, (reference or {}).get(key, {}), reference_label)
        ax.set_title((titles or {}).get(key, f"{key} per model"), fontsize="medium")
    return _finish(fig, path, close)


def _draw_bars(ax, table, metric: str, reference: Mapping[str, float], reference_label: str):
    models = list(table)

    def value(m, key):
        v = table[m].get(key)
        return np.nan if v is None else float(v)

    vals = np.array([value(m, metric) for m in models])
    stds = np.array([value(m, metric + "_std") for m in models])
    refs = np.array([np.nan if reference.get(m) is None else float(reference[m])
                     for m in models])
    finite = np.isfinite(vals)
    shown = np.concatenate([vals[finite], refs[np.isfinite(refs)]])
    log = shown.size > 0 and bool((shown > 0).all())
    pos = np.arange(len(models))
    colors = _colors(len(models))
    heights = np.where(finite, vals, 0.0)
    ax.bar(pos, heights, color=colors, width=0.65)
    has_err = finite & np.isfinite(stds) & (stds > 0)
    err = np.where(has_err, stds, 0.0)
    # on a log axis a spread larger than the value would reach zero: clip at a tenth of the value
    lower = np.minimum(err, 0.9 * heights) if log else err
    if has_err.any():
        ax.errorbar(pos[has_err], heights[has_err],
                    yerr=np.vstack([lower[has_err], err[has_err]]), fmt="none", ecolor="0.2",
                    elinewidth=1, capsize=4)
    if np.isfinite(refs).any():
        ax.plot(pos + 0.4, refs, "D", color="black", ms=6, ls="none", label=reference_label)
        ax.legend(frameon=False, fontsize="small", loc="best")
    if log:
        ax.set_yscale("log")
    for m, x0, v, e, ok in zip(models, pos, vals, err, finite, strict=True):
        if ok:  # printed above the error bar, so the two never overlap
            ax.annotate(f"{v:.3g}", (x0, v + e), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize="small")
        else:  # (None or NaN: the metric does not apply; infinite: the rollouts diverged)
            ax.text(x0, 0.02, "diverged" if np.isinf(value(m, metric)) else "n/a",
                    transform=ax.get_xaxis_transform(), ha="center", color="0.4",
                    fontsize="small")
    # labels side by side while they fit under their bars (about 0.075 inch a character)
    slot = ax.get_position().width * ax.figure.get_figwidth() / max(len(models), 1)
    tilt = len(models) > 4 or max(len(m) for m in models) * 0.075 > 0.9 * slot
    ax.set_xticks(pos, models, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(metric)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.set_axisbelow(True)
