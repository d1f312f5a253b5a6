"""A fourth hostile-input campaign, on the command line: signals, options a model ignores,
degenerate data in the metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from conftest import SMALL_FIT

from warpphys import api, cli, metrics
from warpphys.data import Trajectories, simulate

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _started(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "warpphys", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path):
    """Ctrl-C in the first seconds (torch still importing) used to print a traceback."""
    proc = _started(["simulate", "--system", "pendulum", "--n", "4", "--out", "s.npz"],
                    tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err


def test_sigterm_during_a_forced_fit_says_where_it_stopped_and_keeps_the_old_run(user_file,
                                                                                 tmp_path):
    run = tmp_path / "run"
    assert cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                     str(run)]) == 0
    before = (run / "metrics.json").read_bytes()
    proc = _started(["fit", "--model", "warp-phys", "--epochs", "400", "--context", "5",
                     "--quiet", "--no-figures", "--data", str(user_file), "--out", str(run),
                     "--force"], tmp_path)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.startswith("warpphys fit: interrupted"), err
    assert "SIGTERM" in err
    assert (run / "metrics.json").read_bytes() == before  # --force replaces only on success


def test_options_a_model_does_not_read_are_warned_of_and_not_recorded(user_file, tmp_path):
    with pytest.warns(UserWarning, match=r"model 'transformer' does not use --depth, --width"):
        api.fit(data=user_file, model="transformer", epochs=1, context=5, width=512, depth=7,
                out=tmp_path / "t", figures=False, progress=False, device="cpu")
    with pytest.warns(UserWarning, match=r"model 'classical' does not use --epochs, --lr"):
        api.fit(data=user_file, model="classical", epochs=5, lr=0.5, context=5,
                out=tmp_path / "c", figures=False, progress=False, device="cpu")
    with warnings.catch_warnings():  # the models' own sizes: no warning
        warnings.simplefilter("error", UserWarning)
        api.fit(data=user_file, model="gru", epochs=1, context=5, width=8,
                out=tmp_path / "g", figures=False, progress=False, device="cpu")


def test_resuming_a_model_with_nothing_to_train_is_refused_in_one_line(user_file, tmp_path,
                                                                       capsys):
    run = tmp_path / "c"
    assert cli.main(["fit", "--model", "classical", "--context", "5", "--quiet",
                     "--no-figures", "--data", str(user_file), "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["fit", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has nothing to train" in err and "Traceback" not in err


def test_a_trajectory_at_rest_does_not_set_the_invariant_drift():
    sim = simulate("spring_mass", 8, "test", 0)
    x = sim.x.copy()
    x_hat = x * (1 + 1e-3)  # every rollout 0.1% off
    base = metrics.invariant_drift(systems_of(sim), x, x_hat, sim.params, 32)
    x[0] = 0.0  # one spring at rest: its energy is 0
    x_hat[0] = 1e-3
    drift = metrics.invariant_drift(systems_of(sim), x, x_hat, sim.params, 32)
    assert drift < 10 * base, (drift, base)
    assert np.isfinite(drift)


def systems_of(sim):
    import systems
    return systems.get_system(sim.system)


def test_reading_back_json_of_a_rest_file_is_finite(fitted_run, user_file, tmp_path, capsys):
    data = Trajectories.load(user_file)
    x = data.x.copy()
    x[0] = 0.0
    Trajectories(t=data.t, x=x, system="spring_mass").save(tmp_path / "rest.npz")
    assert cli.main(["evaluate", str(fitted_run), "--data", str(tmp_path / "rest.npz")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["invariant_drift"] is None or out["invariant_drift"] < 1e6


def test_fit_with_stderr_closed_writes_the_whole_run(user_file, tmp_path):
    """With stderr closed (2>&-) the progress bar raised in tqdm and left half a run."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "warpphys", "fit", "--model", "warp",
                           "--epochs", "2", "--context", "5", "--width", "4", "--device", "cpu",
                           "--no-figures", "--data", str(user_file), "--out", str(out)],
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          close_fds=True, pass_fds=(), preexec_fn=lambda: os.close(2),
                          timeout=300)
    assert proc.returncode == 0
    assert (out / "metrics.json").is_file()


def test_test_data_that_is_the_training_data_is_warned_of(user_file, tmp_path):
    with pytest.warns(UserWarning, match="same trajectories as --data: the model is trained "
                                         "on the ones it is tested on"):
        api.fit(data=user_file, test_data=user_file, model="warp", epochs=1, context=5,
                width=4, out=tmp_path / "r", figures=False, progress=False, device="cpu")


def test_force_onto_a_symbolic_link_is_refused(fitted_run, user_file, tmp_path, capsys):
    import shutil
    shutil.copytree(fitted_run, tmp_path / "target")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(tmp_path / "link"), "--force"])
    assert rc == 2 and "is a symbolic link" in capsys.readouterr().err
    assert (tmp_path / "link").is_symlink()


@pytest.mark.parametrize("args, words", [
    (["--depth", "99999999999999999999999"], "depth must be a whole number from 1 to 100"),
    (["--width", "99999999999999"], "width must be a whole number from 1 to 2,147,483,648"),
    (["--lr", "1e-320"], "learning rate of at least 1e-12"),
])
def test_absurd_sizes_and_rates_are_refused_at_once(args, words, user_file, tmp_path, capsys):
    start = time.monotonic()
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    assert time.monotonic() - start < 10 and not (tmp_path / "r").exists()


def test_unknown_arguments_are_named_by_their_command(fitted_run, user_file, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", str(fitted_run), str(fitted_run), "--data", str(user_file)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("warpphys evaluate: error: unrecognized arguments")
    assert "see `warpphys evaluate --help`" in err


def test_a_failed_write_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    from warpphys import rundir

    def read_only(src, dst):
        raise OSError(30, "Read-only file system", src)  # (src: the temporary, a Path)

    monkeypatch.setattr(rundir.os, "replace", read_only)
    with pytest.raises(OSError) as e:
        rundir.write_json({"a": 1}, tmp_path / "config.json")
    assert e.value.filename == str(tmp_path / "config.json")
    assert list(tmp_path.iterdir()) == []  # (the temporary removed)


def test_results_lost_on_stdout_are_errors_and_a_gone_reader_exits_quietly(fitted_run,
                                                                           user_file,
                                                                           tmp_path):
    cmd = [sys.executable, "-m", "warpphys", "evaluate", str(fitted_run), "--data",
           str(user_file)]
    closed = subprocess.run(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: os.close(1), timeout=300)
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, env=ENV, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    assert proc.returncode == 2 and "No space left" in proc.stderr
    reader = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    reader.stdout.close()  # the reader goes away before the result comes
    err = reader.stderr.read()
    assert reader.wait(timeout=300) == 141 and err == "", err


def test_only_models_that_read_fixed_steps_warn_of_another_sampling_rate(fitted_run, user_file,
                                                                         tmp_path):
    data = Trajectories.load(user_file)
    coarse = Trajectories(t=data.t[::2], x=data.x[:, ::2], params=data.params,
                          param_names=data.param_names, system=data.system)
    with pytest.warns(UserWarning, match="reads the dynamics sample by sample"):
        api.load(fitted_run).evaluate(coarse, 5)
    classical = api.fit(data=user_file, model="classical", context=5, out=tmp_path / "c",
                        figures=False, progress=False, device="cpu")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        classical.evaluate(coarse, 5)
    assert not [w for w in said if "sample by sample" in str(w.message)]


def test_a_run_without_its_model_yet_or_a_study_folder_is_named_for_what_it_is(fitted_run,
                                                                               tmp_path):
    import shutil
    run = tmp_path / "running"
    shutil.copytree(fitted_run, run)
    (run / "model.pt").unlink()  # (as while its fit runs: config.json and last.pt only)
    with pytest.raises(api.RunError, match="no model.pt yet: its fit is still running.*"
                                           "fit --resume"):
        api.load(run)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text("{}")
    with pytest.raises(api.RunError, match="is a reproduction study, not a run"):
        api.load(tmp_path / "study")


def test_a_long_rollout_of_a_black_box_shows_its_progress(fitted_run, user_file, capsys):
    fitted = api.load(fitted_run)
    one = Trajectories.load(user_file).subset(slice(0, 1))
    fitted.predict(one, 5, 100)  # short: no bar
    assert "rollout" not in capsys.readouterr().err
    x = fitted.predict(one, 5, 10_000)
    assert x.shape == (1, 10_005, 2)
    assert "rollout" in capsys.readouterr().err  # (tqdm's bar, on stderr)


def test_a_diverged_rollout_has_no_valid_prediction_time():
    t = np.linspace(0, 1, 20)
    x = np.stack([np.sin(6 * t), np.cos(6 * t)], -1)[None].repeat(3, 0)
    x_hat = x.copy()
    x_hat[:, 5:] = np.nan  # every rollout diverged right after the context
    m = metrics.rollout_metrics(x, x_hat, t, 5, window=1.0, state_std=np.ones(2))
    assert m["valid_prediction_time"] == pytest.approx(t[5] - t[4])  # (its first step)
    exact = metrics.rollout_metrics(x, x.copy(), t, 5, window=1.0, state_std=np.ones(2))
    assert exact["valid_prediction_time"] == pytest.approx(t[-1] - t[4])


def test_compare_checks_its_columns_context_and_knows_which_way_is_better(fitted_run,
                                                                          user_file):
    from warpphys import report
    test = Trajectories.load(user_file)
    fitted = api.load(fitted_run)
    c = report.compare({"warp": fitted}, test, columns="test_mse", n_show=1)
    assert c.columns == ["test_mse"]
    for bad in (["test_mse", "bogus"], ["tset_mse"]):
        with pytest.raises(ValueError, match="unknown metric columns"):
            report.compare({"warp": fitted}, test, columns=bad)
    for context in (5.7, "5", True):
        with pytest.raises(ValueError, match="whole number of steps"):
            report.compare({"warp": fitted}, test, context=context)
    rows = [{"name": "a", "default": True, "valid_prediction_time": 0.1, "test_mse": 1.0},
            {"name": "b", "default": True, "valid_prediction_time": 0.9, "test_mse": 2.0}]
    table = report.Comparison(rows=rows, columns=["test_mse"], figures={}, forecasts={})
    assert table.best("valid_prediction_time")["name"] == "b"  # (longer is better)
    assert table.best("test_mse")["name"] == "a"
    with pytest.raises(ValueError, match="among must be"):
        table.best(among="bogus")


def test_many_trajectories_show_the_refinements_progress(user_file, capsys, monkeypatch,
                                                          tmp_path):
    from warpphys import progress
    monkeypatch.setattr(progress, "PROGRESS_WORK", 100)  # (a big job, in small)
    fitted = api.fit(data=user_file, model="warp-phys", epochs=1, context=5, width=4,
                     batch_size=8, figures=False, progress=False, device="cpu",
                     out=tmp_path / "phys")
    capsys.readouterr()
    fitted.evaluate(Trajectories.load(user_file), 5)
    err = capsys.readouterr().err
    assert "refinement" in err and "rollout" in err
