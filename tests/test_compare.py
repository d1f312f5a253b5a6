"""The notebooks' helper, :func:`warpphys.report.compare`: one table row per model and estimate
with the metric keys of :data:`warpphys.metrics.METRICS`, and labelled figures of every rollout."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from warpphys import api, metrics, report  # noqa: E402
from warpphys.data import Trajectories, simulate  # noqa: E402

SYSTEM = "spring_mass"
TINY = {"epochs": 1, "width": 4, "depth": 1, "hyper_width": 8, "batch_size": 8, "context": 5,
        "device": "cpu", "figures": False, "progress": False}


def _crop(traj: Trajectories, steps: int) -> Trajectories:
    return Trajectories(t=traj.t[:steps], x=traj.x[:, :steps], params=traj.params,
                        state_names=traj.state_names, param_names=traj.param_names,
                        system=traj.system)


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """A 1-epoch WARP-Phys and a 1-epoch black-box WARP on 20 short spring-mass trajectories."""
    folder = tmp_path_factory.mktemp("compare")
    data = _crop(simulate(SYSTEM, n=20, seed=0), 20).save(folder / "train.npz")
    return {model: api.fit(data=data, system=SYSTEM, model=model, out=folder / model, **TINY)
            for model in ("warp-phys", "warp")}


@pytest.fixture(scope="module")
def test_data():
    """Six test trajectories twice as long as the training ones (an extrapolation part)."""
    return _crop(simulate(SYSTEM, n=6, split="test", seed=1), 40)


@pytest.fixture(scope="module")
def comparison(fits, test_data):
    return report.compare(fits, test_data, n_show=2)


def test_rows_are_model_by_estimate_with_the_default_marked(comparison):
    assert [(r["name"], r["model"], r["estimate"], r["default"]) for r in comparison.rows] == [
        ("warp-phys (amortised)", "warp-phys", "amortised", False),
        ("warp-phys (refined)", "warp-phys", "refined", True),
        ("warp", "warp", None, True),
    ]
    assert [r["name"] for r in comparison.defaults()] == ["warp-phys (refined)", "warp"]
    assert comparison.row("warp-phys")["estimate"] == "refined"  # a model's name: its default
    with pytest.raises(KeyError, match="rows"):
        comparison.row("gru")


def test_columns_are_every_metric_with_its_minmax_twin(comparison):
    cols = comparison.columns
    assert cols == report.default_columns()
    for m in metrics.METRICS:
        assert m.key in cols
        assert (m.key + "_minmax" in cols) == m.minmax
    for r in comparison.rows:
        assert set(cols) <= set(r)
        assert r["inference_seconds"] >= 0
    assert comparison.row("warp")["param_rel_error"] is None  # black box: no parameters
    assert comparison.row("warp-phys (refined)")["param_rel_error"] is not None


def test_row_values_are_the_models_own_evaluation(fits, test_data, comparison):
    """Each row holds what ``FittedModel.evaluate`` reports for that estimate."""
    for r in comparison.rows:
        kw = {"estimate": r["estimate"]} if r["estimate"] else {}
        m = fits[r["model"]].evaluate(test_data, **kw)
        for key in ("test_mse", "test_mse_minmax", "extrapolation_mse", "ood_mse",
                    "valid_prediction_time"):
            if m[key] is None:
                assert r[key] is None
            else:
                assert r[key] == pytest.approx(m[key], rel=1e-6), (r["name"], key)


def test_markdown_table_has_one_line_per_row(comparison):
    md = comparison.to_markdown()
    assert md == comparison._repr_markdown_()
    header, rule, *lines = md.splitlines()
    assert header.startswith("| model | estimate | test_mse | test_mse_minmax |")
    assert len(lines) == len(comparison.rows)
    assert rule.count("|") == header.count("|")
    assert "| warp-phys | refined (default) |" in lines[1]
    assert lines[2].startswith("| warp | – |")
    short = comparison.to_markdown(columns=["test_mse"])
    assert short.splitlines()[0] == "| model | estimate | test_mse |"


def test_best_is_the_lowest_default_estimate(comparison):
    best = comparison.best("test_mse")
    defaults = comparison.defaults()
    assert best["default"]
    assert best["test_mse"] == min(r["test_mse"] for r in defaults)
    overall = comparison.best("test_mse", among="all")
    assert overall["test_mse"] == min(r["test_mse"] for r in comparison.rows)


def _legend(fig: Figure) -> list[str]:
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()] + [
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_figures_show_truth_and_every_rollout_labelled(comparison, test_data):
    figs = comparison.figures
    assert set(figs) == {"trajectories", "phase_portraits", "error_vs_time",
                         "param_recovery: warp-phys", "invariant: warp-phys (refined)",
                         "invariant: warp"}
    assert all(isinstance(f, Figure) for f in figs.values())
    rollouts = ["warp-phys: amortised (one pass)", "warp-phys: refined on the context [default]",
                "warp"]
    for name in ("trajectories", "phase_portraits"):
        assert _legend(figs[name])[:4] == ["truth", *rollouts]
    assert {"context", "extrapolation"} <= set(_legend(figs["trajectories"]))
    assert _legend(figs["error_vs_time"])[:3] == rollouts
    # n_show trajectories x d states, each with the truth and the three rollouts
    panels = [ax for ax in figs["trajectories"].axes if ax.get_visible() and ax.lines]
    assert len(panels) == 2 * test_data.dim
    assert all(len(ax.lines) >= 4 for ax in panels)
    assert _legend(figs["param_recovery: warp-phys"]) == rollouts[:2]


def test_figures_are_not_left_open_in_pyplot(comparison):
    """Displayed where the notebook asks, not all again at the end of the cell."""
    open_figs = set(plt.get_fignums())
    assert not {f.number for f in comparison.figures.values()} & open_figs


def test_list_of_models_is_named_by_model(fits, test_data):
    c = report.compare(list(fits.values()), test_data.subset(slice(0, 2)), n_show=1,
                       columns=["test_mse"])
    assert [r["name"] for r in c.rows] == ["warp-phys (amortised)", "warp-phys (refined)", "warp"]
    assert c.columns == ["test_mse"]
    with pytest.raises(ValueError, match="pass a dict"):
        report.compare([fits["warp"], fits["warp"]], test_data)


def test_context_is_shared_or_given(fits, test_data):
    c = report.compare({"warp": fits["warp"]}, test_data, context=8, n_show=1)
    assert c.context == 8 and c.metrics["warp"]["context"] == 8
    other = dataclasses.replace(fits["warp"], info={**fits["warp"].info, "context": 6})
    with pytest.raises(ValueError, match="different contexts"):
        report.compare({"warp-phys": fits["warp-phys"], "warp": other}, test_data)
    with pytest.raises(ValueError, match="below the test length"):
        report.compare({"warp": fits["warp"]}, test_data, context=test_data.n_times)
    with pytest.raises(TypeError, match="not a FittedModel"):
        report.compare({"x": object()}, test_data)


def test_without_parameters_no_parameter_figures(fits, test_data):
    bare = Trajectories(t=test_data.t, x=test_data.x, system=SYSTEM)
    c = report.compare(fits, bare, n_show=1)
    assert set(c.figures) == {"trajectories", "phase_portraits", "error_vs_time"}
    assert all(r["param_rel_error"] is None for r in c.rows)
    assert np.isfinite(c.row("warp-phys (refined)")["test_mse"])
