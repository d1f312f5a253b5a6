"""`warpphys fit / evaluate / predict` end to end on a user's own file, and every bad input.

Fits are tiny (1 epoch, width 4) so that the whole module runs in seconds: these tests check the
contracts of ../shared/DESIGN.md (run directory, metric keys, file keys and shapes, refusals),
not accuracy. Bad input: exit code 2, one line on stderr naming the problem, no traceback, and
nothing written or changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import refused, variant

from warpphys import Trajectories, api, cli

DESIGN_KEYS = {"test_mse", "context", "extrapolation_mse", "ood_mse", "invariant_drift"}


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}




# -- fit on a user's file ------------------------------------------------------------------------
def test_fit_on_a_users_file_writes_the_run_directory(fitted_run):
    assert {"config.json", "metrics.json", "model.pt"} <= {p.name for p in fitted_run.iterdir()}
    assert not (fitted_run / "figures").exists()  # --no-figures
    metrics = json.loads((fitted_run / "metrics.json").read_text())
    assert DESIGN_KEYS <= set(metrics)
    assert metrics["context"] == 5 and metrics["model"] == "warp"
    assert np.isfinite(metrics["test_mse"]) and metrics["train_status"] == "completed"
    config = json.loads((fitted_run / "config.json").read_text())
    assert config["system"] == "spring_mass"  # declared by the file
    assert config["model"] == "warp" and config["context"] == 5 and config["n_steps"] == 20
    assert config["n_train"] + config["n_val"] + config["n_test"] == 12


def test_fit_with_figures_writes_pngs(user_file, tmp_path, fit_cli, capsys):
    out = tmp_path / "run"
    assert fit_cli("--data", str(user_file), "--out", str(out), figures=True) == 0
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert json.loads(capsys.readouterr().out)["run_dir"] == str(out)


def test_fit_on_a_file_with_only_t_and_x(user_file, tmp_path, capsys):
    bare = variant(user_file, tmp_path / "bare.npz", params=None, param_names=None,
                   state_names=None, system=None)
    out = tmp_path / "run"
    # no --model: with no system known, the default is the black-box WARP
    rc = cli.main(["fit", "--data", str(bare), "--epochs", "1", "--context", "5", "--width", "4",
                   "--batch-size", "8", "--no-figures", "--quiet", "--device", "cpu",
                   "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["model"] == "warp"
    metrics = json.loads((out / "metrics.json").read_text())
    assert DESIGN_KEYS <= set(metrics) and np.isfinite(metrics["test_mse"])
    assert metrics["invariant_drift"] is None and metrics["ood_mse"] is None  # nothing to use
    assert json.loads((out / "config.json").read_text())["system"] is None


def _fit_phys(data: Path, out: Path) -> dict:
    assert cli.main(["fit", *_small("warp-phys"), "--data", str(data), "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_no_fresh_data_trains_warp_phys_on_the_file_alone(user_file, tmp_path):
    runs = {}
    for name, extra in (("fresh", []), ("alone", ["--no-fresh-data"])):
        out = tmp_path / name
        assert cli.main(["fit", *_small("warp-phys"), "--data", str(user_file), "--out",
                         str(out), "--system", "spring_mass", *extra]) == 0
        runs[name] = json.loads((out / "config.json").read_text())
    assert runs["fresh"]["fresh_data"] == "file" and runs["fresh"]["options"]["fresh_data"]
    assert runs["alone"]["fresh_data"] is None
    assert runs["alone"]["options"]["fresh_data"] is False


def _small(model: str) -> list[str]:
    return ["--model", model, "--epochs", "1", "--context", "5", "--width", "4",
            "--batch-size", "8", "--no-figures", "--quiet", "--device", "cpu"]


def test_param_columns_are_matched_by_name_not_position(user_file, tmp_path):
    with np.load(user_file) as f:
        params, names = f["params"], f["param_names"]
    order = [2, 0, 1]
    reordered = variant(user_file, tmp_path / "reordered.npz", params=params[:, order],
                        param_names=names[order])
    swapped = variant(user_file, tmp_path / "swapped.npz", params=params[:, order])  # names kept
    base = _fit_phys(user_file, tmp_path / "base")
    assert DESIGN_KEYS | {"param_rel_error"} <= set(base)
    assert np.isfinite(base["param_rel_error"]) and np.isfinite(base["invariant_drift"])
    # the same parameters under another column order: the same training and the same metrics
    same = _fit_phys(reordered, tmp_path / "reordered")
    for key in ("test_mse", "param_rel_error", "invariant_drift", "ood_mse"):
        assert same[key] == pytest.approx(base[key], rel=1e-9), key
    assert (json.loads((tmp_path / "reordered" / "config.json").read_text())["param_ranges"]
            == json.loads((tmp_path / "base" / "config.json").read_text())["param_ranges"])
    # control: columns moved but names not, so the metrics see other parameters
    other = _fit_phys(swapped, tmp_path / "swapped")
    assert other["param_rel_error"] != pytest.approx(base["param_rel_error"], rel=1e-6)


def test_unmatched_param_names_warn_and_the_fit_goes_on(user_file, tmp_path, capsys):
    odd = variant(user_file, tmp_path / "odd.npz",
                  param_names=np.array(["mass", "stiffness", "damping"]))
    metrics = _fit_phys(odd, tmp_path / "run")
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("warpphys fit: warning: param_names")
    assert "ignoring params" in warned[0]
    assert "param_rel_error" not in metrics and np.isfinite(metrics["test_mse"])
    assert metrics["invariant_drift"] is None and metrics["ood_mse"] is None


# -- evaluate and predict ------------------------------------------------------------------------
def test_evaluate_prints_the_metrics_of_a_fresh_computation(fitted_run, user_file, capsys):
    assert cli.main(["evaluate", str(fitted_run), "--data", str(user_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    fresh = api.load(fitted_run).evaluate(Trajectories.load(user_file))
    assert printed == json.loads(json.dumps(fresh))
    assert DESIGN_KEYS <= set(printed) and printed["n_trajectories"] == 12
    assert printed["context"] == 5  # the run's context by default


def test_evaluate_a_physics_model_reports_param_rel_error(user_file, tmp_path, capsys):
    _fit_phys(user_file, tmp_path / "run")
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "run"), "--data", str(user_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert DESIGN_KEYS | {"param_rel_error"} <= set(printed)
    assert printed["model"] == "warp-phys" and np.isfinite(printed["param_rel_error"])


def test_evaluate_with_another_context(fitted_run, user_file, capsys):
    assert cli.main(["evaluate", str(fitted_run), "--data", str(user_file), "--context", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["context"] == 8 and printed["horizon"] == 12


def test_metrics_json_is_evaluate_on_the_held_out_split(fitted_run, user_file):
    saved = json.loads((fitted_run / "metrics.json").read_text())
    test = api._split_file(Trajectories.load(user_file), seed=0)[2]
    fresh = api.load(fitted_run).evaluate(test)
    assert fresh["test_mse"] == pytest.approx(saved["test_mse"], rel=1e-9)


def test_predict_extends_past_the_files_end_with_the_input_keys(fitted_run, user_file, tmp_path,
                                                                 capsys):
    out = tmp_path / "pred.npz"
    rc = cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "5",
                   "--horizon", "30", "--out", str(out)])
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "n": 12, "T": 35, "d": 2}
    with np.load(user_file) as f, np.load(out) as g:
        assert set(g.files) == set(f.files)
        assert g["x"].shape == (12, 35, 2) and np.all(np.isfinite(g["x"]))
        np.testing.assert_array_equal(g["x"][:, :5], f["x"][:, :5])  # the context is the truth
        np.testing.assert_array_equal(g["t"][:20], f["t"])
        dt = f["t"][-1] - f["t"][-2]
        np.testing.assert_allclose(np.diff(g["t"][19:]), dt, rtol=1e-9)  # last spacing continued
        for key in ("params", "param_names", "state_names", "system"):
            np.testing.assert_array_equal(g[key], f[key])
    fitted = api.load(fitted_run)
    np.testing.assert_allclose(Trajectories.load(out).x,
                               fitted.predict(Trajectories.load(user_file), 5, 30), rtol=1e-12)


def test_predict_inside_the_file_and_on_a_file_with_only_t_and_x(fitted_run, user_file,
                                                                   tmp_path):
    bare = variant(user_file, tmp_path / "bare.npz", params=None, param_names=None,
                   state_names=None, system=None)
    out = tmp_path / "pred.npz"
    rc = cli.main(["predict", str(fitted_run), "--data", str(bare), "--context", "4",
                   "--horizon", "3", "--out", str(out)])
    assert rc == 0
    with np.load(bare) as f, np.load(out) as g:
        assert set(g.files) == {"t", "x"}
        assert g["x"].shape == (12, 7, 2)
        np.testing.assert_array_equal(g["t"], f["t"][:7])


# -- bad input -----------------------------------------------------------------------------------
def test_unknown_system_is_refused(tmp_path, fit_cli, capsys):
    out = tmp_path / "run"
    refused(fit_cli("--system", "planets", "--out", str(out)), capsys,
            "unknown system 'planets'", "pendulum")
    assert not out.exists()


def test_unknown_model_is_refused(user_file, tmp_path, fit_cli, capsys):
    out = tmp_path / "run"
    refused(fit_cli("--data", str(user_file), "--model", "tranformer", "--out", str(out)),
            capsys, "unknown model 'tranformer'", "warp")
    assert not out.exists()


def test_physics_model_without_a_system_is_refused(user_file, tmp_path, fit_cli, capsys):
    bare = variant(user_file, tmp_path / "bare.npz", system=None)
    out = tmp_path / "run"
    refused(fit_cli("--data", str(bare), "--model", "warp-phys", "--out", str(out)), capsys,
            "warp-phys needs the system", "--system")
    assert not out.exists()


def _command(name: str, run: Path, data: Path, tmp_path: Path) -> list[str]:
    return {
        "fit": ["fit", *_small("warp"), "--data", str(data), "--out", str(tmp_path / "new")],
        "evaluate": ["evaluate", str(run), "--data", str(data)],
        "predict": ["predict", str(run), "--data", str(data), "--context", "5", "--horizon",
                    "3", "--out", str(tmp_path / "pred.npz")],
    }[name]


COMMANDS = ["fit", "evaluate", "predict"]


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_data_file_is_refused(command, fitted_run, tmp_path, capsys):
    cmd = _command(command, fitted_run, tmp_path / "nowhere.npz", tmp_path)
    refused(cli.main(cmd), capsys, "nowhere.npz", "does not exist")
    assert not (tmp_path / "new").exists() and not (tmp_path / "pred.npz").exists()


def _break(rule: str, user_file: Path, path: Path) -> Path:
    with np.load(user_file) as f:
        t, x = f["t"], f["x"]
    if rule == "not an archive":
        path.write_text("time,x,v\n0,1,0\n")
        return path
    changes = {
        "missing x": {"x": None},
        "missing t": {"t": None},
        "wrong rank": {"x": x[:, :, 0]},
        "NaN": {"x": np.where(np.arange(20)[None, :, None] == 7, np.nan, x)},
        "non-increasing t": {"t": np.concatenate([t[:10], t[9:10], t[11:]])},
        "t and x lengths": {"t": t[:-1]},
        "d not matching the system": {"x": np.concatenate([x, x[..., :1]], axis=-1),
                                      "state_names": None},
        "unknown declared system": {"system": np.array("planets")},
    }[rule]
    return variant(user_file, path, **changes)


RULES = {  # broken rule -> words the message must contain
    "not an archive": "not a readable .npz",
    "missing x": "no array 'x'",
    "missing t": "no array 't'",
    "wrong rank": "rank 3",
    "NaN": "NaN",
    "non-increasing t": "strictly increasing",
    "t and x lengths": "'t' has 19 times",
    "d not matching the system": "d = 3 does not match system 'spring_mass'",
    "unknown declared system": "planets",
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("rule", list(RULES))
def test_malformed_data_file_is_refused_naming_the_rule(rule, command, fitted_run, user_file,
                                                        tmp_path, capsys):
    bad = _break(rule, user_file, tmp_path / "bad.npz")
    refused(cli.main(_command(command, fitted_run, bad, tmp_path)), capsys, RULES[rule])
    assert not (tmp_path / "new").exists() and not (tmp_path / "pred.npz").exists()


def test_state_size_must_match_the_system_asked_for(user_file, tmp_path, fit_cli, capsys):
    # a file that declares no system, checked against --system
    with np.load(user_file) as f:
        wide = Trajectories(t=f["t"], x=np.concatenate([f["x"], f["x"][..., :1]], -1))
    path = wide.save(tmp_path / "wide.npz")
    refused(fit_cli("--data", str(path), "--system", "spring_mass", "--out", str(tmp_path / "r")),
            capsys, "d = 3 does not match system 'spring_mass'")


@pytest.mark.parametrize("context", ["20", "50"])
def test_fit_context_must_be_smaller_than_the_sequence(context, user_file, tmp_path, fit_cli,
                                                       capsys):
    out = tmp_path / "run"
    refused(fit_cli("--data", str(user_file), "--context", context, "--out", str(out)), capsys,
            f"--context {context}", "smaller than the sequence length T = 20")
    assert not out.exists()


def test_evaluate_and_predict_context_must_fit_the_sequence(fitted_run, user_file, tmp_path,
                                                            capsys):
    refused(cli.main(["evaluate", str(fitted_run), "--data", str(user_file), "--context", "20"]),
            capsys, "--context 20", "T = 20")
    out = tmp_path / "pred.npz"
    refused(cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "21",
                      "--horizon", "2", "--out", str(out)]), capsys, "--context 21")
    assert not out.exists()


def test_predict_out_must_be_an_npz_file(fitted_run, user_file, tmp_path, capsys):
    refused(cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "5",
                      "--horizon", "2", "--out", str(tmp_path / "pred.csv")]), capsys, ".npz")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_missing_run_directory_is_refused(command, user_file, tmp_path, capsys):
    cmd = _command(command, tmp_path / "no-run", user_file, tmp_path)
    refused(cli.main(cmd), capsys, "no-run", "does not exist")


# -- run directories -----------------------------------------------------------------------------
@pytest.fixture
def old_run(fitted_run, tmp_path) -> Path:
    """A private copy of a finished run directory."""
    return Path(shutil.copytree(fitted_run, tmp_path / "old", copy_function=shutil.copy2))


def test_existing_run_directory_is_refused_and_left_untouched(old_run, user_file, fit_cli,
                                                              capsys):
    before = snapshot(old_run)
    msg = refused(fit_cli("--data", str(user_file), "--seed", "3", "--out", str(old_run)),
                  capsys, "exists already")
    assert "--force" in msg and "--resume" in msg
    assert snapshot(old_run) == before


def test_force_replaces_an_existing_run_directory(old_run, user_file, fit_cli):
    (old_run / "figures").mkdir()
    (old_run / "figures" / "trajectories.png").write_bytes(b"an old figure of the run")
    assert fit_cli("--data", str(user_file), "--seed", "3", "--force", "--out", str(old_run)) == 0
    assert not (old_run / "figures").exists()  # the new run has --no-figures
    assert not list(old_run.parent.glob(".old.*"))  # no staging or old copy left beside it
    assert json.loads((old_run / "config.json").read_text())["seed"] == 3
    assert api.load(old_run).info["seed"] == 3


@pytest.mark.parametrize("bad", [["--context", "20"], ["--model", "warp-phys"]])
def test_a_refused_fit_with_force_leaves_the_old_run_untouched(bad, old_run, user_file, tmp_path,
                                                               fit_cli, capsys):
    # --force replaces a run only once the new one is known to be valid
    bare = variant(user_file, tmp_path / "bare.npz", system=None)
    before = snapshot(old_run)
    refused(fit_cli("--data", str(bare), "--force", *bad, "--out", str(old_run)), capsys)
    assert snapshot(old_run) == before


def test_out_naming_a_file_is_refused(user_file, tmp_path, fit_cli, capsys):
    out = tmp_path / "run.txt"
    out.write_text("keep me")
    refused(fit_cli("--data", str(user_file), "--out", str(out)), capsys, "is a file")
    assert out.read_text() == "keep me"


# -- the real process ----------------------------------------------------------------------------
def test_console_script_refuses_an_unsafe_checkpoint_without_a_traceback(fitted_run, user_file,
                                                                         tmp_path, pickle_bomb):
    run = Path(shutil.copytree(fitted_run, tmp_path / "run"))
    marker = tmp_path / "MARKER"
    pickle_bomb(run / "model.pt", marker, via="torch")
    script = Path(sys.executable).with_name("warpphys")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "warpphys"]
    res = subprocess.run([*cmd, "evaluate", str(run), "--data", str(user_file)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "not loaded" in res.stderr and "arbitrary code" in res.stderr
    assert not marker.exists()
