"""Figures of a fitted run, written under ``RUN_DIR/figures/``."""

from __future__ import annotations

from pathlib import Path

from warpphys import plots
from warpphys.data import Trajectories


def write_figures(fitted, test: Trajectories, out: Path, history: dict | None = None,
                  n_show: int = 6) -> list[Path]:
    """Truth vs prediction, phase portraits, error vs time, invariant, weights, training curves,
    and (physics models) recovered vs true parameters. Returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    K = fitted.context
    show = test.subset(slice(0, min(n_show * 4, test.n)))
    x_hat, theta = fitted.predict(show, K, keep_theta=True)
    x_all = fitted.predict(test, K)
    t = test.t
    window_end = test.t[0] + float(fitted.info["window"])
    names = list(test.state_names or fitted.info.get("state_names") or
                 [f"x{i}" for i in range(test.dim)])
    title = f"{fitted.info['model']} on {fitted.info.get('system') or 'data'}"
    plots.plot_trajectories(t, show.x, x_hat, context=K, window_end=window_end,
                            state_names=names, n=n_show, title=title,
                            path=out / "trajectories.png")
    plots.plot_phase_portraits(show.x, x_hat, context=K, state_names=names, n=n_show,
                               path=out / "phase_portraits.png")
    plots.plot_error_vs_time(t, test.x, x_all, context=K, window_end=window_end,
                             label=fitted.info["model"], path=out / "error_vs_time.png")
    if theta is not None:
        plots.plot_weight_trajectories(t, theta, context=K, path=out / "weights.png")
    sys_ = fitted.system
    params = test.system_params(sys_) if sys_ is not None else None
    if params is not None:
        p = params[: show.n, None, :]
        plots.plot_invariant(
            t, sys_.invariant(show.x, p), sys_.invariant(x_hat, p), context=K,
            window_end=window_end, name=sys_.invariant_name, n=n_show,
            path=out / "invariant.png")
        if fitted.model.has_params:
            est = fitted.recover_params(test, K)
            plots.plot_param_recovery(
                sys_.identifiable(params), sys_.identifiable(est),
                names=list(sys_.identifiable_names), path=out / "param_recovery.png")
    if history is not None and history.get("epoch"):
        plots.plot_training(history, path=out / "training.png")
    return sorted(out.glob("*.png"))
