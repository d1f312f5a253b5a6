"""Scoring: the metric table and its keys, the estimate switch (API and CLI), in/out of the
training ranges judged by the identifiable combinations, and the paper's min-max units.

Fits are tiny (1 epoch, width 4): these tests check which numbers are reported under which key,
not how good they are.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import refused

import systems
from warpphys import api, cli, metrics, rundir
from warpphys.data import Trajectories

TWINNED = [m.key for m in metrics.METRICS if m.twins]
MSES = [m.key for m in metrics.METRICS if m.minmax]


def _small(model: str) -> list[str]:
    return ["--model", model, "--epochs", "1", "--context", "5", "--width", "4",
            "--batch-size", "8", "--no-figures", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def phys_run(tmp_path_factory, user_file):
    out = tmp_path_factory.mktemp("runs") / "phys"
    assert cli.main(["fit", *_small("warp-phys"), "--data", str(user_file), "--out",
                     str(out)]) == 0
    return out


# -- the metric table ----------------------------------------------------------------------------
def test_every_table_entry_is_documented_and_unique():
    keys = [m.key for m in metrics.METRICS]
    assert len(keys) == len(set(keys))
    assert all(m.meaning and m.label for m in metrics.METRICS)
    assert {"test_mse", "extrapolation_mse", "ood_mse", "id_mse", "invariant_drift",
            "valid_prediction_time", "param_rel_error"} <= set(keys)


def test_assemble_gives_physics_models_twins_and_black_boxes_their_old_keys():
    amortised = {"context": 3, "test_mse": 4.0, "ood_mse": None, "param_rel_error": 0.5,
                 "param_rel_error_per_param": {"a": 0.5}}
    refined = {"context": 3, "test_mse": 1.0, "ood_mse": None, "param_rel_error": 0.1,
               "param_rel_error_per_param": {"a": 0.1}}
    phys = metrics.assemble({"amortised": amortised, "refined": refined}, default="refined",
                            physics=True, minmax=(-1.0, 3.0))  # half range 2: divide by 4
    assert phys["estimate"] == "refined"
    assert phys["test_mse"] == 1.0 and phys["test_mse_refined"] == 1.0
    assert phys["test_mse_amortised"] == 4.0 and phys["test_mse_amortised_minmax"] == 1.0
    assert phys["test_mse_minmax"] == 0.25 and phys["test_mse_refined_minmax"] == 0.25
    assert phys["ood_mse_minmax"] is None and "param_rel_error_minmax" not in phys
    assert phys["param_rel_error_amortised_per_param"] == {"a": 0.5}
    assert phys["param_rel_error_per_param"] == {"a": 0.1}
    other = metrics.assemble({"amortised": amortised, "refined": refined}, default="amortised",
                             physics=True)
    assert other["test_mse"] == 4.0 and other["estimate"] == "amortised"
    assert not [k for k in other if k.endswith("_minmax")]  # no scale stored: no such keys
    box = metrics.assemble({"amortised": {"context": 3, "test_mse": 4.0}}, default="amortised",
                           physics=False)
    assert box == {"context": 3, "test_mse": 4.0}


# -- the estimate switch: Python API -------------------------------------------------------------
def test_a_physics_model_reports_the_refined_estimate_by_default_with_both_twins(phys_run,
                                                                                  user_file):
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    m = fitted.evaluate(traj)
    assert m["estimate"] == "refined" and fitted.default_estimate == "refined"
    for key in TWINNED:
        assert f"{key}_amortised" in m and f"{key}_refined" in m, key
        assert m[key] == m[f"{key}_refined"], key
    for key in MSES:
        for name in (key, f"{key}_amortised", f"{key}_refined"):
            assert f"{name}_minmax" in m, name
    assert m["test_mse_amortised"] != m["test_mse_refined"]
    assert m["param_rel_error_per_param"] == m["param_rel_error_refined_per_param"]
    # the amortised twin is what the one-pass rollout scores
    x_hat = fitted.predict(traj, estimate="amortised")
    assert fitted.score_rollout(traj, x_hat, 5)[0]["test_mse"] == m["test_mse_amortised"]
    # asking for the amortised estimate moves only the headline keys
    a = fitted.evaluate(traj, estimate="amortised")
    assert a["estimate"] == "amortised" and a["test_mse"] == m["test_mse_amortised"]
    assert a["param_rel_error"] == m["param_rel_error_amortised"]
    assert {k: v for k, v in a.items() if k.endswith(("_amortised", "_refined"))} == {
        k: v for k, v in m.items() if k.endswith(("_amortised", "_refined"))}
    assert api.evaluate(phys_run, user_file, estimate="amortised") == a


def test_predict_rolls_out_the_refined_estimate_by_default(phys_run, user_file):
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    refined = fitted.predict(traj, 5, 10)
    np.testing.assert_array_equal(refined, fitted.predict_refined(traj, 5, 10))
    amortised = fitted.predict(traj, 5, 10, estimate="amortised")
    assert not np.allclose(refined[:, 5:], amortised[:, 5:])
    with pytest.raises(api.RunError, match="one-pass"):
        fitted.predict(traj, 5, 10, estimate="refined", keep_theta=True)
    with pytest.raises(api.RunError, match="unknown estimate"):
        fitted.predict(traj, 5, 10, estimate="best")


def test_recover_params_gives_the_refined_estimate_by_default(phys_run, user_file):
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    default = fitted.recover_params(traj, 5)
    refined = fitted.recover_params(traj, 5, estimate="refined")
    amortised = fitted.recover_params(traj, 5, estimate="amortised")
    np.testing.assert_array_equal(default, refined)
    np.testing.assert_array_equal(default, fitted.refine(traj, 5)[0].numpy())
    assert not np.allclose(refined, amortised)
    # the older spelling still works, and may not contradict the new one
    np.testing.assert_array_equal(fitted.recover_params(traj, 5, refine=False), amortised)
    np.testing.assert_array_equal(fitted.recover_params(traj, 5, refine=True), refined)
    with pytest.raises(api.RunError, match="give one of them"):
        fitted.recover_params(traj, 5, refine=True, estimate="amortised")
    with pytest.raises(api.RunError, match="True or False"):
        fitted.recover_params(traj, 5, refine="yes")


def test_black_box_models_have_no_twins_and_refuse_the_refined_estimate(fitted_run, user_file):
    fitted = api.load(fitted_run)
    m = fitted.evaluate(Trajectories.load(user_file))
    assert "estimate" not in m and fitted.default_estimate is None
    assert not [k for k in m if k.endswith(("_amortised", "_refined"))]
    assert "test_mse_minmax" in m  # paper units for every model
    assert fitted.evaluate(Trajectories.load(user_file), estimate="amortised") == m
    with pytest.raises(api.RunError, match="no physical parameters"):
        fitted.evaluate(Trajectories.load(user_file), estimate="refined")


# -- the estimate switch: command line -----------------------------------------------------------
def test_cli_estimate_switch_on_fit_evaluate_and_predict(phys_run, user_file, tmp_path, capsys):
    out = tmp_path / "amortised"
    assert cli.main(["fit", *_small("warp-phys"), "--data", str(user_file), "--out", str(out),
                     "--estimate", "amortised"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())
    assert summary["estimate"] == saved["estimate"] == "amortised"
    assert saved["test_mse"] == saved["test_mse_amortised"] == summary["test_mse"]
    assert {"test_mse_amortised", "test_mse_refined", "test_mse_minmax"} <= set(summary)
    # the run keeps its choice as its default; --estimate overrides it
    assert cli.main(["evaluate", str(out), "--data", str(user_file)]) == 0
    assert json.loads(capsys.readouterr().out)["estimate"] == "amortised"
    assert cli.main(["evaluate", str(out), "--data", str(user_file), "--estimate",
                     "refined"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["estimate"] == "refined" and printed["test_mse"] == printed["test_mse_refined"]
    # predict: the refined rollout by default, the amortised one on request, and it says which
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    cases = [([], fitted.predict_refined(traj, 5, 7)),
             (["--estimate", "amortised"], fitted.predict(traj, 5, 7, estimate="amortised"))]
    for flag, expected in cases:
        pred = tmp_path / f"pred_{flag[1] if flag else 'default'}.npz"  # predict never
        # replaces an existing --out without --force
        assert cli.main(["predict", str(phys_run), "--data", str(user_file), "--context", "5",
                         "--horizon", "7", "--out", str(pred), *flag]) == 0
        said = json.loads(capsys.readouterr().out)["estimate"]
        assert said == (flag[1] if flag else "refined")
        with warnings.catch_warnings():  # (its extra keys are read back without a warning)
            warnings.simplefilter("error")
            np.testing.assert_allclose(Trajectories.load(pred).x, expected, rtol=1e-12)
        # and the parameters that drove the rollouts, named, with the estimate's name
        with np.load(pred) as f:
            assert str(f["estimate"]) == said
            assert list(f["params_estimated_names"]) == list(fitted.system.param_names)
            np.testing.assert_allclose(f["params_estimated"],
                                       fitted.recover_params(traj, 5, estimate=said),
                                       rtol=1e-12)


def test_cli_refuses_the_refined_estimate_of_a_black_box(fitted_run, user_file, tmp_path,
                                                          capsys):
    rc = cli.main(["evaluate", str(fitted_run), "--data", str(user_file), "--estimate",
                   "refined"])
    refused(rc, capsys, "no physical parameters")
    rc = cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "5",
                   "--horizon", "3", "--out", str(tmp_path / "p.npz"), "--estimate", "refined"])
    refused(rc, capsys, "no physical parameters")
    assert not (tmp_path / "p.npz").exists()
    # its own rollout is written with the input's keys only: it has no parameters to add
    assert cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "5",
                     "--horizon", "3", "--out", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as f:
        assert not set(f.files) & {"params_estimated", "params_estimated_names", "estimate"}
    rc = cli.main(["fit", *_small("warp"), "--data", str(user_file), "--out",
                   str(tmp_path / "run"), "--estimate", "refined"])
    refused(rc, capsys, "no physical parameters")
    assert not (tmp_path / "run").exists()  # refused before training


# -- in range / out of range, by the dynamics ----------------------------------------------------
def test_raw_parameters_out_of_range_with_dynamics_in_range_count_as_in_range():
    sm = systems.get_system("spring_mass")
    train = np.array([[0.02, 4.0, 0.01], [0.04, 16.0, 0.2]])  # k/m 200..400, c/m 0.5..5
    info = {"param_ranges": {"m": [0.02, 0.04], "k": [4.0, 16.0], "c": [0.01, 0.2]},
            "identifiable_ranges": metrics.identifiable_ranges(sm, train)}
    assert info["identifiable_ranges"] == {"k/m": [200.0, 400.0], "c/m": [0.5, 5.0]}
    test = np.array([
        [0.08, 24.0, 0.16],  # m, k outside their ranges; k/m = 300, c/m = 2: in range
        [0.03, 9.0, 0.06],   # everything in range
        [0.03, 15.0, 0.06],  # m, k, c in range, but k/m = 500: dynamics out of range
        [0.03, 9.0, 0.3],    # c outside, c/m = 10 outside too
    ])
    np.testing.assert_array_equal(metrics.out_of_range(sm, test, info),
                                  [False, False, True, True])
    # runs saved before the identifiable ranges were stored: the raw ranges, as before
    old = {"param_ranges": info["param_ranges"]}
    np.testing.assert_array_equal(metrics.out_of_range(sm, test, old),
                                  [True, False, False, True])
    assert metrics.out_of_range(sm, test, {}) is None


def test_fit_stores_the_identifiable_ranges_and_evaluate_splits_by_them(phys_run, user_file):
    fitted = api.load(phys_run)
    sm = systems.get_system("spring_mass")
    train = api._split_file(Trajectories.load(user_file), 0)[0]
    ident = sm.identifiable(train.system_params(sm))
    ranges = fitted.info["identifiable_ranges"]
    assert list(ranges) == ["k/m", "c/m"]
    for j, name in enumerate(ranges):
        assert ranges[name] == pytest.approx([ident[:, j].min(), ident[:, j].max()], rel=1e-12)
    traj = Trajectories.load(user_file)
    flags = metrics.outside_ranges(sm.identifiable(traj.system_params(sm)), ranges,
                                   sm.identifiable_names)
    m = fitted.evaluate(traj)
    assert m["n_ood"] == int(flags.sum())
    fitted.info.pop("identifiable_ranges")  # an older run: raw ranges
    raw = metrics.outside_ranges(traj.system_params(sm), fitted.info["param_ranges"],
                                 sm.param_names)
    assert fitted.evaluate(traj)["n_ood"] == int(raw.sum())


# -- the paper's units ---------------------------------------------------------------------------
def test_a_zero_predictor_in_physical_and_minmax_units_by_hand(tmp_path):
    # two trajectories, three steps, two states; context 1, so steps 1 and 2 are scored
    x = np.array([[[1.0, -2.0], [3.0, 0.0], [-1.0, 2.0]],
                  [[0.0, 1.0], [2.0, -3.0], [1.0, 4.0]]])
    path = Trajectories(t=np.array([0.0, 0.5, 1.0]), x=x).save(tmp_path / "tiny.npz")
    traj = Trajectories.load(path)
    # scored squared errors: 9, 0, 1, 4 and 4, 9, 1, 16: sum 44 over 8 entries
    physical = 44 / 8
    lo, hi = -3.0, 5.0  # the training data's global min and max: half range 4, squared 16
    m = metrics.rollout_metrics(traj.x, np.zeros_like(traj.x), traj.t, 1, window=1.0,
                                state_std=np.ones(2))
    out = metrics.assemble({"amortised": m}, default="amortised", physics=False,
                           minmax=(lo, hi))
    assert out["test_mse"] == pytest.approx(5.5, rel=1e-15) == physical
    assert out["test_mse_minmax"] == pytest.approx(5.5 / 16, rel=1e-15)
    # the same, the states mapped to [-1, 1] by the training min and max (zero maps to -0.25)
    scaled = (traj.x - lo) / (hi - lo) * 2 - 1
    zero = (0.0 - lo) / (hi - lo) * 2 - 1
    assert np.mean((scaled[:, 1:] - zero) ** 2) == pytest.approx(out["test_mse_minmax"],
                                                                 rel=1e-12)


def test_fit_stores_the_training_datas_global_minmax(phys_run, user_file):
    fitted = api.load(phys_run)
    train = api._split_file(Trajectories.load(user_file), 0)[0]
    assert fitted.info["minmax"] == [float(train.x.min()), float(train.x.max())]
    m = fitted.evaluate(Trajectories.load(user_file))
    half = (train.x.max() - train.x.min()) / 2
    assert m["test_mse_amortised_minmax"] == pytest.approx(m["test_mse_amortised"] / half**2,
                                                           rel=1e-12)
    fitted.info.pop("minmax")  # a run saved before: no minmax keys at all
    assert not [k for k in fitted.evaluate(Trajectories.load(user_file)) if "minmax" in k]


# -- figures -------------------------------------------------------------------------------------
def test_figures_of_a_physics_model_show_both_estimates_labelled(phys_run, user_file, tmp_path,
                                                                 monkeypatch):
    from warpphys import plots, report

    seen = {}
    for name in ("plot_trajectories", "plot_phase_portraits", "plot_error_comparison",
                 "plot_param_recovery"):
        original = getattr(plots, name)

        def spy(*args, _name=name, _original=original, **kw):
            predictions = args[2] if _name in ("plot_trajectories", "plot_error_comparison") \
                else args[1]
            seen[_name] = list(predictions)
            return _original(*args, **kw)

        monkeypatch.setattr(plots, name, spy)
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    paths = report.write_figures(fitted, traj, tmp_path / "figures", n_show=2)
    assert {"trajectories.png", "phase_portraits.png", "error_vs_time.png",
            "param_recovery.png"} <= {p.name for p in paths}
    # only the figures it writes are warpphys's own in a run directory (--force deletes those)
    assert {p.name for p in paths} <= set(rundir.FIGURE_FILES)
    for name, labels in seen.items():
        assert len(labels) == 2, name
        assert any("amortised" in s for s in labels) and any("refined" in s for s in labels)
        assert sum("[default]" in s for s in labels) == 1 and "[default]" in labels[1]


def test_plots_draw_several_predictions_with_a_legend_entry_each():
    from warpphys import plots

    t = np.linspace(0, 1, 12)
    x = np.stack([np.sin(6 * t), np.cos(6 * t)], -1)[None].repeat(2, 0)
    preds = {"amortised": x + 0.1, "refined": x + 0.01}
    for fig in (plots.plot_trajectories(t, x, preds, context=4, n=2),
                plots.plot_phase_portraits(x, preds, context=4, n=2)):
        texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        assert {"truth", "amortised", "refined"} <= set(texts)
        # every panel: the truth and one line per prediction
        assert all(len(ax.lines) >= 3 for ax in fig.axes if ax.get_visible())
    fig = plots.plot_param_recovery(np.array([[1.0], [2.0]]),
                                    {"amortised": np.array([[1.5], [2.0]]),
                                     "refined": np.array([[1.0], [2.2]])}, names=["k"])
    said = fig.axes[0].get_title() + " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "amortised 25.0%" in said and "refined 5.0%" in said


def test_a_context_of_one_step_is_refused_for_physics_models(phys_run, user_file, tmp_path):
    """WARP-Phys reads its parameters from how the context's states change: with one step,
    fit, evaluate and predict ended in a ValueError traceback from inside the model."""
    fitted = api.load(phys_run)
    traj = Trajectories.load(user_file)
    words = r"--context 1: .*reads physical parameters .* at least 2 steps"
    for call in (lambda: fitted.evaluate(traj, context=1),
                 lambda: fitted.predict(traj, 1, horizon=3),
                 lambda: api.fit(data=user_file, out=tmp_path / "new", context=1, epochs=1)):
        with pytest.raises(api.DataError, match=words):
            call()
    assert not (tmp_path / "new").exists()


def test_reading_the_one_pass_estimate_after_another_context_is_warned_of(phys_run, user_file,
                                                                          fitted_run):
    """The read-out trains mostly at the end of the run's context (context_share): evaluate
    and predict say so when asked for another context; not at the run's own, nor for a black
    box."""
    import warnings

    traj = Trajectories.load(user_file)
    fitted = api.load(phys_run)
    words = r"--context 8: .* trained mostly at the end of its 5-step context .* --context 8"
    with pytest.warns(UserWarning, match=words):
        fitted.evaluate(traj, context=8)
    with pytest.warns(UserWarning, match=words):
        fitted.predict(traj, 8, horizon=2, estimate="amortised")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(traj, 5, horizon=2, estimate="amortised")
        api.load(fitted_run).predict(traj, 8, horizon=2)
