"""Figures of a fitted run, written under ``RUN_DIR/figures/``."""

from __future__ import annotations

from pathlib import Path

from warpphys import plots
from warpphys.data import Trajectories


def write_figures(fitted, test: Trajectories, out: Path, history: dict | None = None,
                  n_show: int = 6) -> list[Path]:
    """Truth vs prediction, phase portraits, error vs time, invariant, weights, training curves,
    and (physics models) recovered vs true parameters. Returns the written paths.

    Models with physical parameters show every estimate's rollout beside the truth (the
    amortised one-pass and the refined one, labelled) in the trajectories, phase portraits and
    error vs time, and both estimates against the truth in the parameter recovery; the
    invariant is drawn for the model's default estimate (:attr:`FittedModel.default_estimate`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    K = fitted.context
    show = test.subset(slice(0, min(n_show * 4, test.n)))
    _, theta = fitted.predict(show, K, keep_theta=True, estimate="amortised")
    shown = fitted.forecasts(show, K)
    every = fitted.forecasts(test, K)
    label = _labeller(fitted)
    x_show = {label(e): f.x_hat for e, f in shown.items()}
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
            t, sys_.invariant(show.x, p), sys_.invariant(shown[default].x_hat, p), context=K,
            window_end=window_end, name=sys_.invariant_name, n=n_show,
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
