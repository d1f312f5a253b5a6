"""Figures: each writes a readable, non-blank image atomically and survives awkward inputs."""

import matplotlib

matplotlib.use("Agg")  # tests only; the library itself never picks a backend

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from warpphys import plots  # noqa: E402

K = 10  # context steps
WINDOW_END = 3.0


def damped_oscillators(n=3, T=40, seed=0):
    """t (T,), x and a slightly wrong prediction x_hat (n, T, 2) of damped harmonic oscillators."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, T)
    omega, zeta = rng.uniform(1, 2, (n, 1)), rng.uniform(0.05, 0.2, (n, 1))

    def states(w):
        q = np.exp(-zeta * w * t) * np.cos(w * t)
        return np.stack([q, np.gradient(q, t, axis=1)], -1)

    x, x_hat = states(omega), states(omega * 1.05)
    x_hat[:, :K] = x[:, :K]
    return t, x, x_hat


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_image(path):
    """A non-empty, non-blank image more than 100 px each way, with no temp file beside it."""
    assert path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0, "blank image"
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def legend_labels(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def make_all(t, x, x_hat):
    """Every public figure, as name -> callable(path, **kw)."""
    rng = np.random.default_rng(1)
    inv = 0.5 * (x**2).sum(-1)
    inv_hat = 0.5 * (x_hat**2).sum(-1)
    theta = np.concatenate([x[:, 1:], x[:, 1:] ** 2], -1) @ rng.normal(size=(4, 12))
    params = rng.uniform(0.5, 2.0, (len(x), 2))
    history = {"epoch": [1, 2, 3, 4], "train_loss": [1.0, 0.5, 0.2, 0.1],
               "val_epoch": [2, 4], "val_mse": [0.6, 0.15]}
    table = {"WARP": {"test_mse": 1e-3, "test_mse_std": 2e-4}, "GRU": {"test_mse": 3e-2}}
    win = {"context": K, "window_end": WINDOW_END}
    return {
        "trajectories": lambda **kw: plots.plot_trajectories(
            t, x, x_hat, state_names=["q", "p"], n=2, title="demo", **win, **kw),
        "phase_portraits": lambda **kw: plots.plot_phase_portraits(
            x, x_hat, context=K, state_names=["q", "p"], n=2, **kw),
        "error_vs_time": lambda **kw: plots.plot_error_vs_time(t, x, x_hat, label="WARP", **win,
                                                               **kw),
        "error_comparison": lambda **kw: plots.plot_error_comparison(
            t, x, {"a": x_hat, "b": 2 * x_hat - x}, **win, **kw),
        "invariant": lambda **kw: plots.plot_invariant(t, inv, inv_hat, n=2, **win, **kw),
        "weight_trajectories": lambda **kw: plots.plot_weight_trajectories(
            t, theta, context=K, n=2, k=2, **kw),
        "param_recovery": lambda **kw: plots.plot_param_recovery(
            params, params * 1.1, names=["omega", "zeta"], **kw),
        "training": lambda **kw: plots.plot_training(history, **kw),
        "comparison_bars": lambda **kw: plots.plot_comparison_bars(table, "test_mse", **kw),
    }


ALL = make_all(*damped_oscillators())


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_figure_saves_a_nonblank_png_atomically_and_closes(name, tmp_path):
    path = tmp_path / "figures" / f"{name}.png"  # the folder is created on demand
    fig = ALL[name](path=path)
    assert isinstance(fig, Figure)
    assert_image(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert fig.number not in plt.get_fignums(), "a saved figure is closed by default"


def test_without_path_the_figure_is_returned_open_and_nothing_is_written(tmp_path):
    fig = ALL["trajectories"]()
    assert fig.number in plt.get_fignums()
    assert list(tmp_path.iterdir()) == []


def test_close_false_keeps_the_saved_figure_open(tmp_path):
    fig = ALL["invariant"](path=tmp_path / "inv.png", close=False)
    assert fig.number in plt.get_fignums()


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")

    def broken_savefig(self, fh, **kw):
        fh.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        ALL["training"](path=path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    assert plt.get_fignums() == [], "a failed save still closes the figure"


def test_pdf_suffix_saves_a_pdf_and_an_unknown_suffix_says_what_to_use(tmp_path):
    ALL["training"](path=tmp_path / "loss.pdf")
    assert (tmp_path / "loss.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match=r"\.png, \.pdf or \.svg"):
        ALL["training"](path=tmp_path / "loss.xyz")
    assert [p.name for p in tmp_path.iterdir()] == ["loss.pdf"]


def test_extrapolation_is_marked_only_when_the_window_ends_before_the_last_time():
    t, x, x_hat = damped_oscillators()
    inside = plots.plot_trajectories(t, x, x_hat, context=K, window_end=WINDOW_END, n=1)
    assert "extrapolation" in legend_labels(inside)
    for window_end in (t[-1], t[-1] + 5.0, None):
        fig = plots.plot_trajectories(t, x, x_hat, context=K, window_end=window_end, n=1)
        assert "extrapolation" not in legend_labels(fig)
        assert "context" in legend_labels(fig)


def test_n_larger_than_the_number_of_trajectories_shows_all_of_them(tmp_path):
    t, x, x_hat = damped_oscillators(n=2)
    fig = plots.plot_trajectories(t, x, x_hat, context=K, window_end=WINDOW_END, n=50)
    assert sum(ax.get_visible() for ax in fig.axes) == 2 * 2  # 2 trajectories x 2 states
    fig = plots.plot_phase_portraits(x, x_hat, context=K, n=50, path=tmp_path / "phase.png")
    assert sum(ax.get_visible() for ax in fig.axes) == 2
    assert_image(tmp_path / "phase.png")
    theta = np.random.default_rng(0).normal(size=(2, len(t), 5))
    plots.plot_weight_trajectories(t, theta, context=K, n=50, k=9, path=tmp_path / "w.png")
    assert_image(tmp_path / "w.png")


def test_single_state_component_gives_compact_grid_and_derivative_phase_portrait(tmp_path):
    t, x, x_hat = damped_oscillators(n=4)
    q, q_hat = x[..., :1], x_hat[..., :1]
    fig = plots.plot_trajectories(t, q, q_hat, context=K, window_end=WINDOW_END,
                                  state_names=["q"], n=4, path=tmp_path / "traj.png")
    assert sum(ax.get_visible() for ax in fig.axes) == 4
    assert_image(tmp_path / "traj.png")
    fig = plots.plot_phase_portraits(q, q_hat, context=K, state_names=["q"], t=t, n=4,
                                     path=tmp_path / "phase.png")
    assert fig.axes[0].get_ylabel() == "dq/dt"
    assert_image(tmp_path / "phase.png")
    fig = plots.plot_phase_portraits(q[0], q_hat[0], context=K)  # one (T, 1) trajectory
    assert fig.axes[0].get_ylabel() == "dx0 per step"


def test_diverged_predictions_do_not_crash_and_keep_the_truth_in_view(tmp_path):
    t, x, x_hat = damped_oscillators()
    x_hat = x_hat.copy()
    x_hat[0, 25:30] = np.nan
    x_hat[0, 30:] = np.inf
    x_hat[1, 20:] = 1e30  # a huge but finite blow-up
    x_hat[2, K:] = np.nan  # a rollout that is NaN throughout
    fig = plots.plot_trajectories(t, x, x_hat, context=K, window_end=WINDOW_END,
                                  path=tmp_path / "traj.png")
    lo, hi = fig.axes[0].get_ylim()
    assert hi < 10, "a diverging prediction must not squash the true curve"
    plots.plot_phase_portraits(x, x_hat, context=K, path=tmp_path / "phase.png")
    plots.plot_error_vs_time(t, x, x_hat, context=K, window_end=WINDOW_END,
                             path=tmp_path / "err.png")
    inv, inv_hat = (x**2).sum(-1), (x_hat**2).sum(-1)
    plots.plot_invariant(t, inv, inv_hat, context=K, path=tmp_path / "inv.png")
    theta = np.concatenate([x_hat, x_hat], -1)
    plots.plot_weight_trajectories(t, theta, context=K, path=tmp_path / "w.png")
    est = np.array([[1.0, 2.0], [np.nan, 1.0], [np.inf, 3.0]])
    plots.plot_param_recovery(np.ones((3, 2)), est, names=["a", "b"], path=tmp_path / "p.png")
    for name in ("traj", "phase", "err", "inv", "w", "p"):
        assert_image(tmp_path / f"{name}.png")


def test_all_nan_prediction_and_all_nan_weights_still_give_a_figure(tmp_path):
    t, x, _ = damped_oscillators()
    nan = np.full_like(x, np.nan)
    plots.plot_error_vs_time(t, x, nan, context=K, window_end=WINDOW_END,
                             path=tmp_path / "err.png")
    fig = plots.plot_weight_trajectories(t, np.full((3, len(t), 4), np.nan), context=K,
                                         path=tmp_path / "w.png")
    assert "no finite weights" in fig.axes[0].texts[0].get_text()
    assert_image(tmp_path / "err.png")


def test_rollout_error_is_the_rms_over_the_state_after_the_context():
    _, x, _ = damped_oscillators()
    offset = np.array([0.3, 0.4])  # rms over the state: sqrt((0.09 + 0.16) / 2)
    err = plots._rollout_error(x, x + offset, context=K)
    assert err.shape == (x.shape[0], x.shape[1] - K)
    np.testing.assert_allclose(err, np.sqrt(0.125), rtol=1e-12)


def test_error_plot_with_no_rolled_out_steps_says_how_to_fix_it():
    t, x, x_hat = damped_oscillators()
    with pytest.raises(ValueError, match="context < T"):
        plots.plot_error_vs_time(t, x, x_hat, context=len(t), window_end=WINDOW_END)


def test_principal_components_of_rank_two_weights_explain_all_variance():
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(3, 20, 2)) * np.array([3.0, 1.0])
    theta = latent @ rng.normal(size=(2, 30)) + 5.0
    scores, ratio = plots._principal_components(theta, k=3)
    assert scores.shape == (3, 20, 3)
    assert ratio[0] >= ratio[1] >= ratio[2] >= 0
    np.testing.assert_allclose(ratio[:2].sum(), 1.0, atol=1e-10)
    np.testing.assert_allclose(scores.reshape(-1, 3).mean(0), 0.0, atol=1e-9)  # centred


@pytest.mark.parametrize("extra_times", [0, 1])
def test_weights_align_with_the_last_times(extra_times):
    t, x, _ = damped_oscillators()
    theta = np.random.default_rng(0).normal(size=(2, len(t) - extra_times, 6))
    fig = plots.plot_weight_trajectories(t, theta, context=K, n=2, k=2)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), t[extra_times:])
    assert "% of variance" in fig.axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match="T >= T'"):
        plots.plot_weight_trajectories(t[:5], theta, context=2)


def test_log_axes_only_for_positive_values():
    fig = plots.plot_param_recovery(np.array([[1.0, -1.0], [2.0, 0.5]]),
                                    np.array([[1.1, -0.9], [2.2, 0.4]]), names=["m", "c"])
    assert [ax.get_xscale() for ax in fig.axes[:2]] == ["log", "linear"]
    assert "median rel. error" in fig.axes[0].get_title()
    fig = plots.plot_comparison_bars({"a": {"r2": 0.9}, "b": {"r2": -0.1}, "c": {}}, "r2")
    assert fig.axes[0].get_yscale() == "linear"


def test_training_history_without_validation():
    fig = plots.plot_training({"epoch": [1, 2, 3], "train_loss": [1.0, 0.0, np.nan]})
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="train_loss"):
        plots.plot_training({"epoch": [1]})


def test_mismatched_shapes_are_reported():
    t, x, x_hat = damped_oscillators()
    with pytest.raises(ValueError, match="same shape"):
        plots.plot_trajectories(t, x, x_hat[:, :-1], context=K)
    with pytest.raises(ValueError, match="t must have shape"):
        plots.plot_trajectories(t[:-1], x, x_hat, context=K)


def test_a_legend_of_long_labels_stays_inside_a_one_panel_figure():
    # the one-pass and refined rollouts of a physics model, with every region marked: at
    # one row the legend ran past the right edge ("end of training windo")
    t, x, x_hat = damped_oscillators()
    preds = {"amortised (one pass)": x_hat, "refined on the context [default]": x_hat * 1.01}
    fig = plots.plot_error_comparison(t, x, preds, context=K, window_end=WINDOW_END,
                                      close=False)
    fig.canvas.draw()
    (legend,) = fig.legends
    box, edge = legend.get_window_extent(), fig.bbox
    assert edge.x0 <= box.x0 and box.x1 <= edge.x1
    texts = [text.get_text() for text in legend.get_texts()]
    assert "end of training window" in texts and len(texts) == 5
