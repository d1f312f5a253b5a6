"""Hostile run directories and inputs, third campaign: run files that are devices, FIFOs or too
large, model configurations edited to build huge models, JSON nested too deeply, scales edited
in the weights, data and parameters too small for float32, tolerances no solver reaches, and
relative errors of parameters that are zero."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import systems
from tests.conftest import SMALL_FIT, refused, variant
from warpphys import api, checkpoint, cli, metrics, rundir
from warpphys.data import simulate
from warpphys.errors import RunError


def _copy(fitted_run, tmp_path):
    return shutil.copytree(fitted_run, tmp_path / "run")


def _evaluate(run, user_file, capsys) -> tuple[int, str]:
    rc = cli.main(["evaluate", str(run), "--data", str(user_file), "--context", "5"])
    return rc, capsys.readouterr().err


def _edit_checkpoint(run, edit) -> None:
    ckpt = torch.load(run / "model.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, run / "model.pt")


# -- run files that are not regular files, or too large -------------------------------------------
@pytest.mark.parametrize("name", ["model.pt", "config.json", "metrics.json"])
def test_a_fifo_or_device_in_place_of_a_run_file_never_hangs_or_fills_memory(
        fitted_run, user_file, tmp_path, capsys, name):
    for kind in ("fifo", "devzero"):
        run = tmp_path / kind
        shutil.copytree(fitted_run, run)
        (run / name).unlink()
        if kind == "fifo":
            os.mkfifo(run / name)
        else:
            (run / name).symlink_to("/dev/zero")
        rc, err = _evaluate(run, user_file, capsys)
        assert "Traceback" not in err
        if name == "model.pt":
            assert rc == 2 and "not a regular file" in err
        else:  # (the checkpoint carries its own configuration; the metrics are only shown)
            assert rc == 0 or "not a regular file" in err


def test_run_files_larger_than_warpphys_writes_are_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 100 + "0]")
    monkeypatch.setattr(rundir, "MAX_JSON_BYTES", 50)
    with pytest.raises(RunError, match="larger than any file warpphys writes"):
        rundir.read_json(path)
    with pytest.raises(checkpoint.CheckpointError, match="larger than any file"):
        rundir.read_bytes(path, 50, checkpoint.CheckpointError)


def test_json_nested_too_deeply_is_invalid_json_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        rundir.read_json(path)


def test_deeply_nested_run_configuration_inside_model_pt_is_refused(fitted_run, user_file,
                                                                     tmp_path, capsys):
    run = _copy(fitted_run, tmp_path)
    _edit_checkpoint(run, lambda c: c.update(info="[" * 100_000 + "]" * 100_000))
    rc, err = _evaluate(run, user_file, capsys)
    assert rc == 2 and "no run configuration" in err and "Traceback" not in err


# -- model configurations that would build huge models --------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    ({"hyper_width": 2 * 10**8}, "hyper_width"),
    ({"dim": 10**6}, "dim"),
    ({"root": {"depth": 10**6}}, "more than 1,000 layers"),
    ({"hyper_width": 65}, "builds"),  # plausible, but not these weights: built on meta only
    ({"log_floor": float("nan")}, "not finite"),
])
def test_a_model_configuration_that_does_not_describe_the_weights_is_refused_unbuilt(
        fitted_run, user_file, tmp_path, capsys, edit, needle):
    run = _copy(fitted_run, tmp_path)

    def change(ckpt):
        for key, value in edit.items():
            if isinstance(value, dict):
                ckpt["model_config"][key].update(value)
            else:
                ckpt["model_config"][key] = value

    _edit_checkpoint(run, change)
    rc = cli.main(["evaluate", str(run), "--data", str(user_file), "--context", "5"])
    refused(rc, capsys, "does not match this version", needle)


def test_physics_roots_refuse_solver_settings_that_cannot_run():
    from warpphys.physics import FIXED_METHODS, ODERoot

    assert "rk4" in FIXED_METHODS and "dopri5" not in FIXED_METHODS
    for bad in (0, -1, 10**7, 2.5, True):
        with pytest.raises(ValueError, match="substeps must be 'auto' or a whole number"):
            ODERoot("pendulum", substeps=bad)
    with pytest.raises(ValueError, match="unknown fixed-step method 'bogus'"):
        ODERoot("pendulum", method="bogus")
    assert ODERoot("pendulum", substeps=3).substeps == 3


# -- scales edited in the weights or the run configuration ----------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["state_dict"]["normalizer.std"].zero_(), "normaliser"),
    (lambda c: c["state_dict"]["normalizer.std"].mul_(-1), "normaliser"),
    (lambda c: c["state_dict"]["normalizer.mean"].add_(1e3), "normaliser"),
    (lambda c: c.update(info=json.dumps({**json.loads(c["info"]), "minmax": [5, -5]})),
     "minmax"),
    (lambda c: c.update(info=json.dumps({k: v for k, v in json.loads(c["info"]).items()
                                         if k != "window"})), "no window"),
    (lambda c: c["state_dict"].update(B=c["state_dict"]["B"].to(torch.complex64)),
     "real-valued tensors holding their values"),
])
def test_edited_scales_are_named_as_the_checkpoints_fault_not_the_datas(
        fitted_run, user_file, tmp_path, capsys, edit, needle):
    run = _copy(fitted_run, tmp_path)
    _edit_checkpoint(run, edit)
    rc, err = _evaluate(run, user_file, capsys)
    assert rc == 2 and needle in err and "Traceback" not in err, err


def test_the_scale_check_accepts_every_fitted_run_however_small(user_file, tmp_path):
    """torch's std (the normaliser's) and numpy's (the run configuration's) differ by
    sqrt(n / (n - 1)): 9% on 6 samples; the check allows for it."""
    with np.load(user_file) as f:
        tiny = variant(user_file, tmp_path / "tiny.npz", t=f["t"][:4], x=f["x"][:3, :4],
                       params=f["params"][:3])
    api.fit(data=tiny, model="warp", out=tmp_path / "run", epochs=1, context=2,
            figures=False, progress=False)
    assert api.load(tmp_path / "run").info["n_train"] >= 1


# -- data and parameters too small for float32 ----------------------------------------------------
def test_states_that_vary_too_little_for_float32_are_refused_before_training(user_file,
                                                                            tmp_path, capsys):
    x = np.load(user_file)["x"] * 1e-300
    path = variant(user_file, tmp_path / "tiny.npz", x=x, params=None, system=None)
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(path), "--out",
                   str(tmp_path / "run")])
    refused(rc, capsys, "vary by only", "rescale the data")
    assert not (tmp_path / "run").exists()


def test_parameters_below_float32_resolution_are_refused_but_zero_is_not(user_file, tmp_path,
                                                                         capsys):
    params = np.load(user_file)["params"].copy()
    params[:, 2] = 0.0  # undamped: fine
    fine = variant(user_file, tmp_path / "zero.npz", params=params)
    params[0, 2] = 1e-300  # (a float64 simulation takes it; the float32 models cannot)
    tiny = variant(user_file, tmp_path / "tiny.npz", params=params)
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(tiny), "--out",
                   str(tmp_path / "run")])
    refused(rc, capsys, "parameter 'c' is 1e-300", "below 1e-30")
    assert cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(fine), "--out",
                     str(tmp_path / "run")]) == 0


# -- tolerances that no solver reaches ------------------------------------------------------------
@pytest.mark.parametrize("method, rtol, needle", [
    ("dopri5", 1e-300, "machine epsilon"),
    ("dopri8_uniform", 1e-17, "machine epsilon"),
    ("adaptive_heun", 1e-9, "order 2"),
    ("fehlberg2", 1e-10, "order 2"),
])
def test_tolerances_that_would_take_hours_are_refused(method, rtol, needle):
    with pytest.raises(systems.SystemInputError, match=needle):
        simulate("pendulum", 2, "train", 0, method=method, rtol=rtol)


def test_low_order_methods_run_at_tolerances_they_reach():
    tr = simulate("pendulum", 2, "train", 0, method="bosh3", rtol=1e-7)
    ref = simulate("pendulum", 2, "train", 0)
    assert np.abs(tr.x - ref.x).max() < 1e-4


# -- relative errors of parameters that are zero --------------------------------------------------
def test_a_parameter_that_is_zero_everywhere_has_no_relative_error():
    true = np.array([[10.0, 0.0], [20.0, 0.0]])
    est = np.array([[10.1, 1e-12], [19.8, 1e-9]])
    err = metrics.param_relative_error(true, est)
    assert err["per_param_median"][1] is None
    assert err["median"] == pytest.approx(0.01)  # the defined column alone
    # one zero among other values: relative to a millionth of the column's typical size
    err = metrics.param_relative_error(np.array([[1.0], [0.0], [1.0]]),
                                       np.array([[1.0], [1e-9], [1.0]]))
    assert err["median"] == 0.0 and err["mean"] == pytest.approx(1e-9 / (1e-6 * 2 / 3) / 3)
    assert metrics.param_relative_error(np.zeros((2, 1)), np.ones((2, 1)))["median"] is None


def test_the_recovery_figure_of_a_zero_parameter_gives_the_estimates_size_not_an_error():
    from warpphys import plots

    true = np.c_[[200.0, 400.0, 600.0], np.zeros(3)]
    fig = plots.plot_param_recovery(true, {"refined": true + [[0.0, 3.5e-11]]},
                                    names=["k/m", "c/m"], close=False)
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert "median rel. error" in titles[0] and "0.0%" in titles[0]
    assert "true value 0" in titles[1] and "|est| 3.5e-11" in titles[1]


def test_fit_on_undamped_data_reports_the_identified_parameters_only(tmp_path):
    sim = simulate("spring_mass", 40, "train", 0, ranges={"c": (0.0, 0.0)})
    path = sim.save(tmp_path / "undamped.npz")
    fitted = api.fit(data=path, out=tmp_path / "run", figures=False, progress=False,
                     epochs=2, fresh_n=64)
    m = fitted.metrics
    assert m["param_rel_error_per_param"]["c/m"] is None
    assert m["param_rel_error"] == m["param_rel_error_per_param"]["k/m"] < 1e-3


# -- the Python API's arguments -------------------------------------------------------------------
def test_api_arguments_of_the_wrong_kind_are_refused_in_one_line(fitted_run, user_file,
                                                                 tmp_path):
    from warpphys.data import DataError, Trajectories

    fitted = api.load(fitted_run)
    traj = Trajectories.load(user_file)
    for bad in (0, -1, 1.5, None, True):
        with pytest.raises(DataError, match="batch_size"):
            fitted.predict(traj, 5, 3, batch_size=bad)
    for bad in (None, 0):
        with pytest.raises(RunError, match="device must be cpu, cuda or auto"):
            api.load(fitted_run, device=bad)
    for bad in (None, 3, b"run"):
        with pytest.raises(RunError, match="run_dir must be the path"):
            api.load(bad)
    with pytest.raises(RunError, match="FittedModel already"):
        api.evaluate(fitted, user_file)
    for out in (tmp_path / "x.txt", tmp_path):  # refused before the rollout, not after
        with pytest.raises(RunError, match="--out"):
            api.predict(fitted_run, user_file, 5, 3, out, force=True)


def test_refinement_arguments_are_checked_and_bounded(tmp_path):
    from warpphys.data import DataError

    sim = simulate("spring_mass", 24, "train", 0)
    fitted = api.fit(data=sim.save(tmp_path / "s.npz"), out=tmp_path / "run", epochs=1,
                     fresh_n=32, figures=False, progress=False)
    for bad in (1.5, "3", float("nan"), -1, 10**9):
        with pytest.raises(DataError, match="iterations"):
            fitted.recover_params(sim, 20, refine=True, iterations=bad)
        with pytest.raises(DataError, match="iterations"):
            fitted.predict_refined(sim, 20, 5, iterations=bad)
    refined = fitted.refine(sim.subset(slice(0, 2)), 20)
    with pytest.raises(DataError, match="what refine\\(\\) returns for these 24"):
        fitted.predict_refined(sim, 20, 5, refined=refined)
    with pytest.raises(DataError, match="what refine"):
        fitted.predict_refined(sim, 20, 5, refined=(1, 2, 3))
    whole = fitted.refine(sim, 20)
    np.testing.assert_array_equal(fitted.predict_refined(sim, 20, 5, refined=whole),
                                  fitted.predict_refined(sim, 20, 5))


def test_missing_samples_inside_the_data_are_warned_of(fitted_run, user_file, tmp_path):
    from warpphys.data import Trajectories

    fitted = api.load(fitted_run)
    with np.load(user_file) as f:
        keep = np.r_[0:8, 12:20]  # four samples missing after the eighth
        path = variant(user_file, tmp_path / "gap.npz", t=f["t"][keep], x=f["x"][:, keep])
    with pytest.warns(UserWarning, match="spacing is uneven.*between samples 7 and 8"):
        fitted.evaluate(Trajectories.load(path), context=5)


def test_a_file_too_short_for_the_default_context_names_the_file_not_an_option(
        user_file, tmp_path, capsys):
    with np.load(user_file) as f:
        short = variant(user_file, tmp_path / "short.npz", t=f["t"][:5], x=f["x"][:, :5])
    rc = cli.main(["fit", "--epochs", "1", "--no-figures", "--model", "warp-phys", "--data",
                   str(short), "--out", str(tmp_path / "run")])
    refused(rc, capsys, "the data have 5 time steps", "or --context 2")


def test_an_option_of_another_model_names_its_flag_and_the_models_that_take_it(tmp_path,
                                                                              capsys):
    rc = cli.main(["fit", "--system", "pendulum", "--model", "warp", "--readout", "head",
                   "--epochs", "1", "--out", str(tmp_path / "run")])
    refused(rc, capsys, "model 'warp' takes no option readout (--readout; for warp-phys)")
    rc = cli.main(["fit", "--system", "pendulum", "--model", "gru", "--no-fresh-data",
                   "--epochs", "1", "--out", str(tmp_path / "run")])
    refused(rc, capsys, "fresh_data (--no-fresh-data; for warp-phys)")


def test_a_simulation_that_would_run_for_minutes_is_refused_up_front(tmp_path, capsys):
    # (damping 4e4 over 6 s: about 80,000 explicit steps, minutes of a 2-core machine)
    rc = cli.main(["simulate", "--system", "pendulum", "--n", "4", "--range",
                   "damping=4e4:4e4", "--out", str(tmp_path / "stiff.npz")])
    refused(rc, capsys, "too stiff or fast to simulate", "budget 20000")
    assert not (tmp_path / "stiff.npz").exists()


def test_times_stored_as_durations_and_a_parameter_ranged_twice_are_refused(user_file, tmp_path,
                                                                           capsys):
    from warpphys.data import DataError, Trajectories

    with np.load(user_file) as f:
        path = variant(user_file, tmp_path / "td.npz",
                       t=(f["t"] * 1000).astype("timedelta64[ms]"))
    with pytest.raises(DataError, match="'t' holds dates or durations"):
        Trajectories.load(path)
    rc = cli.main(["simulate", "--system", "pendulum", "--n", "2", "--range", "damping=0:0.1",
                   "--range", "damping=0:0", "--out", str(tmp_path / "r.npz")])
    refused(rc, capsys, "--range names 'damping' twice")


def test_a_long_refined_rollout_shows_its_progress(tmp_path, monkeypatch, capsys):
    from warpphys import progress

    sim = simulate("spring_mass", 8, "train", 0)
    fitted = api.fit(data=sim.save(tmp_path / "s.npz"), out=tmp_path / "run", epochs=1,
                     fresh_n=32, figures=False, progress=False)
    capsys.readouterr()
    monkeypatch.setattr(progress, "PROGRESS_STEPS", 50)
    x_short = fitted.predict(sim, 20, 40)  # below the threshold: no bar
    assert "refined rollout" not in capsys.readouterr().err
    x_long = fitted.predict(sim, 20, 60)
    assert "refined rollout" in capsys.readouterr().err
    np.testing.assert_array_equal(x_long[:, :60], x_short)  # the bar changes nothing
