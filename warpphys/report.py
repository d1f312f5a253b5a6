"""Reports of fitted models: the figures of a run (:func:`write_figures`, written under
``RUN_DIR/figures/``) and a side-by-side comparison of several models on the same test
trajectories (:func:`compare`, the notebooks' one helper)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from warpphys import metrics, plots
from warpphys.data import Trajectories
from warpphys.fitted import FittedModel


def write_figures(fitted, test: Trajectories, out: Path, history: dict | None = None,
                  n_show: int = 6, forecasts: dict | None = None) -> list[Path]:
    """Truth vs prediction, phase portraits, error vs time, invariant, weights, training curves,
    and (physics models) recovered vs true parameters. Returns the written paths.

    Models with physical parameters show every estimate's rollout beside the truth (the
    amortised one-pass and the refined one, labelled) in the trajectories, phase portraits and
    error vs time, and both estimates against the truth in the parameter recovery; the
    invariant is drawn for the model's default estimate (:attr:`FittedModel.default_estimate`).
    ``forecasts``: :meth:`FittedModel.forecasts` of ``test`` at the run's context, where they
    were already computed (e.g. for the metrics), so that they are not computed again.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    K = fitted.context
    show = test.subset(slice(0, min(n_show * 4, test.n)))
    _, theta = fitted.predict(show, K, keep_theta=True, estimate="amortised")
    every = fitted.forecasts(test, K) if forecasts is None else forecasts
    label = _labeller(fitted)
    x_show = {label(e): f.x_hat[: show.n] for e, f in every.items()}
    x_all = {label(e): f.x_hat for e, f in every.items()}
    default = fitted.resolve_estimate(None)
    t = test.t
    window_end = test.t[0] + float(fitted.info["window"])
    names = list(test.state_names or fitted.info.get("state_names") or
                 [f"x{i}" for i in range(test.dim)])
    title = f"{fitted.info['model']} on {fitted.info.get('system') or 'data'}"
    plots.plot_trajectories(t, show.x, x_show, context=K, window_end=window_end,
                            state_names=names, n=n_show, title=title,
                            path=out / "trajectories.png")
    plots.plot_phase_portraits(show.x, x_show, context=K, state_names=names, n=n_show,
                               path=out / "phase_portraits.png")
    plots.plot_error_comparison(t, test.x, x_all, context=K, window_end=window_end,
                                path=out / "error_vs_time.png")
    if theta is not None:
        plots.plot_weight_trajectories(t, theta, context=K, path=out / "weights.png")
    sys_ = fitted.system
    params = test.system_params(sys_) if sys_ is not None else None
    if params is not None:
        p = params[: show.n, None, :]
        plots.plot_invariant(
            t, sys_.invariant(show.x, p), sys_.invariant(x_show[label(default)], p),
            context=K, window_end=window_end, name=sys_.invariant_name, n=n_show,
            path=out / "invariant.png")
        if fitted.model.has_params:
            plots.plot_param_recovery(
                sys_.identifiable(params),
                {e + (" [default]" if e == default else ""): sys_.identifiable(f.params)
                 for e, f in every.items()},
                names=list(sys_.identifiable_names), path=out / "param_recovery.png")
    if history is not None and history.get("epoch"):
        plots.plot_training(history, path=out / "training.png")
    return sorted(out.glob("*.png"))


def _labeller(fitted):
    """Legend label of an estimate's rollout: the model's name, or for models with physical
    parameters (named in the figure's title) which estimate, the default one marked."""
    model = fitted.info["model"]
    if not fitted.model.has_params:
        return lambda estimate: model
    default = fitted.resolve_estimate(None)
    what = {"amortised": "amortised (one pass)", "refined": "refined on the context"}
    return lambda e: what.get(e, e) + (" [default]" if e == default else "")


# -- comparing models -----------------------------------------------------------------------------
#: what each estimate is, for legends and tables
#: metrics (and their twins) for which more is better; for the others less is
HIGHER_IS_BETTER = ("valid_prediction_time",)

ESTIMATE_WORDS = {"amortised": "amortised (one pass)", "refined": "refined on the context"}


def row_label(model: str, estimate: str | None) -> str:
    """A comparison row's name: the model, with its estimate where it has several, e.g.
    ``warp-phys (refined)`` or ``warp``."""
    return model if not estimate else f"{model} ({estimate})"


def default_columns() -> list[str]:
    """The metric columns of a comparison: the headline key of every entry of
    :data:`warpphys.metrics.METRICS`, each MSE followed by its ``_minmax`` twin."""
    return [k for m in metrics.METRICS for k in metrics.keys_of(m, physics=False, minmax=True)]


@dataclass
class Comparison:
    """Several fitted models scored and drawn on the same test trajectories (:func:`compare`).

    In a notebook the comparison displays as its table (``display(comparison)`` or as a cell's
    last expression); ``comparison.figures[name]`` displays one figure.

    Attributes:
        rows: one dict per model and estimate, in the order the models were given and then
            :data:`warpphys.metrics.ESTIMATES`: ``name`` (:func:`row_label`), ``model`` (the
            name it was given under), ``estimate`` (None for black-box models), ``default``
            (True for the estimate the model uses unless told otherwise: its most accurate,
            the refined one for models with physical parameters; True for black-box models),
            ``inference_seconds`` (computing that estimate's rollout of the whole test set),
            and the metric keys of ``columns`` (None where a metric does not apply).
        columns: the metric keys of the table, in order (see :func:`default_columns`).
        figures: {name: matplotlib Figure}, see :func:`compare`. They are closed in pyplot
            (not shown twice), and can still be displayed, saved or drawn on.
        forecasts: {model: {estimate: :class:`warpphys.fitted.Forecast`}}, the rollouts.
        context: K, the true steps each model was fed.
        metrics: {row name: the full metrics dict of that estimate (``FittedModel.score``)}.
    """

    rows: list[dict]
    columns: list[str]
    figures: dict[str, Figure] = field(default_factory=dict)
    forecasts: dict[str, dict] = field(default_factory=dict)
    context: int = 0
    metrics: dict[str, dict] = field(default_factory=dict)

    def row(self, name: str) -> dict:
        """The row called ``name`` (e.g. ``"warp-phys (refined)"``, or a model's name: its
        default estimate's row)."""
        for r in self.rows:
            if r["name"] == name:
                return r
        for r in self.rows:
            if r["model"] == name and r["default"]:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r['name'] for r in self.rows]}")

    def defaults(self) -> list[dict]:
        """Each model's row of its default (most accurate) estimate."""
        return [r for r in self.rows if r["default"]]

    def best(self, key: str = "test_mse", *, among: str = "defaults") -> dict:
        """The row with the best finite ``key`` (the lowest; the highest for
        :data:`HIGHER_IS_BETTER` keys, such as the valid prediction time), among each model's
        default estimate (``among="defaults"``) or all rows (``"all"``). Raises ValueError if
        no row has a finite value."""
        if among not in ("defaults", "all"):
            raise ValueError(f"among must be 'defaults' or 'all', got {among!r}")
        rows = self.defaults() if among == "defaults" else self.rows
        scored = [r for r in rows if _finite(r.get(key))]
        if not scored:
            raise ValueError(f"no row has a finite {key!r}")
        pick = max if key.startswith(HIGHER_IS_BETTER) else min
        return pick(scored, key=lambda r: r[key])

    def to_markdown(self, columns: Sequence[str] | None = None, digits: int = 3) -> str:
        """The table as markdown: one line per row, ``columns`` (default :attr:`columns`, only
        those some row has a value for), numbers to ``digits`` significant digits, "–" where a
        metric does not apply; each model's default estimate is marked "(default)"."""
        cols = [c for c in (columns or self.columns)
                if any(r.get(c) is not None for r in self.rows)]
        lines = ["| model | estimate | " + " | ".join(cols) + " |",
                 "|---" * (len(cols) + 2) + "|"]
        for r in self.rows:
            est = r["estimate"] or "–"
            if r["estimate"] and r["default"]:
                est += " (default)"
            cells = [_fmt(r.get(c), digits) for c in cols]
            lines.append(f"| {r['model']} | {est} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))


def _fmt(v, digits: int) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}g}"


def _named(fitted_models) -> dict[str, FittedModel]:
    if isinstance(fitted_models, Mapping):
        named = {str(k): v for k, v in fitted_models.items()}
    else:
        named = {}
        for f in fitted_models:
            name = f.info["model"]
            if name in named:
                raise ValueError(f"two models are called {name!r}; pass a dict "
                                 "{name: fitted model} to tell them apart")
            named[name] = f
    if not named:
        raise ValueError("no models to compare; pass {name: FittedModel} or a list of them")
    for name, f in named.items():
        if not isinstance(f, FittedModel):
            raise TypeError(f"{name!r} is a {type(f).__name__}, not a FittedModel (from "
                            "warpphys.api.fit or warpphys.api.load)")
    return named


def compare(
    fitted_models: Mapping[str, FittedModel] | Sequence[FittedModel], test: Trajectories, *,
    context: int | None = None, n_show: int = 3, columns: Sequence[str] | None = None,
) -> Comparison:
    """Score and draw several fitted models on the same test trajectories.

    Every model is fed the first ``context`` true steps of each test trajectory and rolls out
    to its end; models with physical parameters (WARP-Phys) give two rows and two rollouts,
    their ``amortised`` estimate (one forward pass) and their ``refined`` one (refined on the
    context; their default, the most accurate), black-box models one.

    Args:
        fitted_models: {name: FittedModel} (names as they appear in the table and legends), or
            a list of FittedModels, named by the model they hold (``info["model"]``).
        test: the test trajectories, in the units of the training data (e.g. from
            ``warpphys.data.simulate(system, split="test")``); with the system's parameters
            (``params``) the table also has parameter errors, the OOD / in-range split and the
            invariant drift, and the figures the parameter recovery and the invariant.
        context: K, the true steps fed to every model (default: the models' own context,
            which must then be the same for all; at least 1 and below the test length).
        n_show: trajectories drawn in the trajectory and phase-portrait figures (the first
            ``n_show`` of ``test``); errors and parameters are drawn for all of them.
        columns: metric keys of the table (default :func:`default_columns`: every metric of
            :data:`warpphys.metrics.METRICS`, each MSE also in the paper's units,
            ``*_minmax``).

    Returns:
        a :class:`Comparison`: ``rows`` (model x estimate, the metrics in the test data's
        units; each ``_minmax`` MSE with the states mapped to [-1, 1] by that model's training
        data), and ``figures``:

        - ``"trajectories"``: truth and every rollout (every model, both estimates of physics
          models, labelled) of the first ``n_show`` test trajectories, the context shaded and
          the part past the training window (the first model's) hatched as extrapolation;
        - ``"phase_portraits"``: the same rollouts in the plane of the first two states;
        - ``"error_vs_time"``: median and 10-90% band of every rollout's RMS error after the
          context, over all test trajectories (log scale, state units);
        - ``"param_recovery: <model>"`` (models with physical parameters, test data with
          parameters): both estimates of the identifiable parameter combinations against the
          truth, each panel titled with their median relative errors;
        - ``"invariant: <row name>"`` (test data with parameters of a known system): the
          invariant along truth and each model's default rollout.
    """
    named = _named(fitted_models)
    first = next(iter(named.values()))
    if context is None:
        contexts = {name: f.context for name, f in named.items()}
        if len(set(contexts.values())) > 1:
            raise ValueError(f"the models were trained with different contexts {contexts}; "
                             "pass context=K to feed them all the same steps")
        context = first.context
    if isinstance(context, bool) or not isinstance(context, numbers.Integral):
        raise ValueError(f"context must be a whole number of steps, got {context!r}")
    K = int(context)
    if not 1 <= K < test.n_times:
        raise ValueError(f"context {K} must be at least 1 and below the test length "
                         f"T = {test.n_times}")
    cols = [columns] if isinstance(columns, str) else list(columns or default_columns())
    known = {m.key for m in metrics.METRICS}
    unknown = [c for c in cols if not isinstance(c, str) or (
        c.removesuffix("_minmax").removesuffix("_per_param") not in known
        and c not in ("n_ood", "n_trajectories", "horizon", "vpt_threshold"))]
    if unknown:  # (a typo would be an empty column)
        raise ValueError(f"unknown metric columns {unknown}; choose among "
                         f"{', '.join(sorted(known))} (and their *_minmax twins)")
    rows, per_row, forecasts, rollouts = [], {}, {}, {}
    for name, fitted in named.items():
        fc = fitted.forecasts(test, K)
        forecasts[name] = fc
        physics = fitted.model.has_params
        default = fitted.resolve_estimate(None)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for est in (e for e in metrics.ESTIMATES if e in fc):
                m = fitted.score(test, fc, K, estimate=est)
                label = row_label(name, est if physics else None)
                per_row[label] = m
                rows.append({"name": label, "model": name, "estimate": est if physics else None,
                             "default": est == default,
                             "inference_seconds": fc[est].seconds,
                             **{c: m.get(c) for c in cols}})
                legend = label if not physics else (
                    f"{name}: {ESTIMATE_WORDS.get(est, est)}"
                    + (" [default]" if est == default else ""))
                rollouts[label] = (legend, fc[est].x_hat)
    figures = _comparison_figures(named, test, K, forecasts, rollouts, rows, n_show)
    return Comparison(rows=rows, columns=cols, figures=figures, forecasts=forecasts, context=K,
                      metrics=per_row)


def _comparison_figures(named, test, K, forecasts, rollouts, rows, n_show) -> dict[str, Figure]:
    first = next(iter(named.values()))
    window_end = test.t[0] + float(first.info["window"])
    names = list(test.state_names or first.info.get("state_names") or
                 [f"x{i}" for i in range(test.dim)])
    n = min(n_show, test.n)
    shown = {legend: x_hat[:n] for legend, x_hat in rollouts.values()}
    every = dict(rollouts.values())
    title = f"{', '.join(named)} on {first.info.get('system') or 'the test data'}"
    figs = {
        "trajectories": plots.plot_trajectories(
            test.t, test.x[:n], shown, context=K, window_end=window_end, state_names=names,
            n=n, title=title),
        "error_vs_time": plots.plot_error_comparison(test.t, test.x, every, context=K,
                                                     window_end=window_end),
    }
    figs["phase_portraits"] = plots.plot_phase_portraits(
        test.x[:n], shown, context=K, state_names=names, n=n, t=test.t)
    figs["phase_portraits"].suptitle(title)
    for name, fitted in named.items():
        sys_ = fitted.system
        params = test.system_params(sys_) if sys_ is not None else None
        if params is None:
            continue
        fc = forecasts[name]
        if fitted.model.has_params:
            default = fitted.resolve_estimate(None)
            fig = plots.plot_param_recovery(
                sys_.identifiable(params),
                {f"{name}: {ESTIMATE_WORDS.get(e, e)}" + (" [default]" if e == default else ""):
                 sys_.identifiable(f.params) for e, f in fc.items() if f.params is not None},
                names=list(sys_.identifiable_names))
            figs[f"param_recovery: {name}"] = fig
        row = next(r for r in rows if r["model"] == name and r["default"])
        x_hat = fc[row["estimate"] or "amortised"].x_hat
        p = params[:n, None, :]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            fig = plots.plot_invariant(
                test.t, sys_.invariant(test.x[:n], p), sys_.invariant(x_hat[:n], p),
                context=K, window_end=window_end, name=sys_.invariant_name, n=n)
        fig.suptitle(f"{row['name']}: {sys_.invariant_name} along the rollouts")
        figs[f"invariant: {row['name']}"] = fig
    for fig in figs.values():  # shown where the notebook asks, not at the end of the cell
        plt.close(fig)
    return figs
