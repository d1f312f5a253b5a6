"""Hostile input to `warpphys reproduce`: each gave a traceback or a silent wrong result, and
now gives one StudyError line naming the problem and the fix.

* a run's config.json edited into a JSON list (or damaged): a TypeError traceback;
* ``--seeds 1000000000000``: accepted, and ran on;
* ``--models warp,warp``: every row written, and averaged, twice;
* a study's data file replaced by one of another system or other sizes: reused silently.

Fits are replaced by a stand-in (:func:`_fake_run_one`) where a test only needs the study's
checks; the study's data are simulated for real (tiny scale: well under a second)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from warpphys import cli, metrics, reproduce
from warpphys.data import Trajectories, simulate

TINY = reproduce.SCALES["tiny"]
#: the tiny msd study's files: (trajectories, steps)
TRAIN_SIZE, TEST_SIZE = (20, 40), (8, 40)


def _fake_row(model: str, seed: int) -> dict:
    """A results row of the type run_one writes, without fitting anything."""
    return {"model": model, "seed": seed, "estimate": None,
            **{k: 0.5 for k in metrics.study_keys()}, "n_ood": 0, "inference_seconds": 0.01,
            "fit_seconds": 0.1, "epoch_seconds": 0.1, "n_params": 10, "n_train": 16,
            "epochs_run": 1, "train_status": "done", "cpu_seconds": 0.1}


@pytest.fixture
def no_fits(monkeypatch):
    """run_one replaced by a stand-in that writes a new run's config.json and returns one
    fake row: the study's own checks and tables run, no model is fitted. Returns its calls."""
    calls = []

    def fake_run_one(model, seed, *, run_dir, paths, **kw):
        calls.append((model, seed))
        assert all(p.exists() for p in paths.values())
        if not run_dir.exists():  # a finished run is not fitted again
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text(json.dumps({"n_train": 16, "context": 12}))
        return [_fake_row(model, seed)]

    monkeypatch.setattr(reproduce, "run_one", fake_run_one)
    return calls


def _study(out, **kw):
    kw = {"study": "msd", "scale": "tiny", "seeds": 1, "models": ["gru"], "device": "cpu", **kw}
    return reproduce.run_study(out=out, **kw)


def _cli(out, *args) -> int:
    """`warpphys reproduce` (tiny msd, one seed, gru unless told): its exit code."""
    argv = ["reproduce", "--study", "msd", "--scale", "tiny", "--device", "cpu", "--quiet",
            "--out", str(out), *args]
    if "--seeds" not in args:
        argv += ["--seeds", "1"]
    if "--models" not in args:
        argv += ["--models", "gru"]
    return cli.main(argv)


def _one_error_line(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("warpphys reproduce: error: ")
    return lines[0]


# -- 1. a run's config.json ----------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("[1]", "not a JSON object"),
    ('"text"', "not a JSON object"),
    ("{bad", "cannot be read as JSON"),
    ('{"context": 12}', "its n_train None is not a positive whole number"),
    ('{"n_train": "16", "context": 12}', "its n_train '16' is not a positive whole number"),
    ('{"n_train": 16.5, "context": 12}', "its n_train 16.5 is not"),
    ('{"n_train": true, "context": 12}', "its n_train True is not"),
    ('{"n_train": 0, "context": 12}', "its n_train 0 is not"),
    ('{"n_train": 16, "context": [12]}', "its context [12] is not"),
], ids=["list", "string", "invalid-json", "no-n_train", "text-n_train", "fraction", "bool",
        "zero", "list-context"])
def test_an_edited_run_config_is_refused_naming_the_run_folder(tmp_path, no_fits, text, words):
    out = tmp_path / "study"
    _study(out)
    config = out / "runs" / "gru-seed0" / "config.json"
    config.write_text(text)
    with pytest.raises(reproduce.StudyError) as e:
        _study(out)
    msg = str(e.value)
    assert "config.json" in msg and "was edited or damaged" in msg and words in msg, msg
    assert "delete the run folder" in msg and str(config.parent) in msg
    assert "fitted again" in msg and "\n" not in msg


def test_a_missing_run_config_is_refused(tmp_path, no_fits):
    out = tmp_path / "study"
    _study(out)
    (out / "runs" / "gru-seed0" / "config.json").unlink()
    with pytest.raises(reproduce.StudyError, match="cannot be read.*delete the run folder"):
        _study(out)


def test_the_cli_says_a_damaged_run_config_in_one_line(tmp_path, no_fits, capsys):
    out = tmp_path / "study"
    _study(out)
    (out / "runs" / "gru-seed0" / "config.json").write_text("[1]")
    rc = _cli(out)
    line = _one_error_line(capsys, rc)
    assert "was edited or damaged" in line and "delete the run folder" in line


def test_a_real_finished_run_with_an_edited_config_is_refused(tmp_path):
    """The campaign's case end to end: a finished (classical: no training) run, its
    config.json then replaced by [1]; the resumed study reuses the run's score and read the
    config for its table."""
    out = tmp_path / "study"
    _study(out, models=["classical"])
    (out / "runs" / "classical-seed0" / "config.json").write_text("[1]")
    with pytest.raises(reproduce.StudyError, match="config.json.*was edited or damaged"):
        _study(out, models=["classical"])


# -- 2. the number of seeds ------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [10**12, reproduce.MAX_SEEDS + 1, 1e12])
def test_too_many_seeds_are_refused_before_any_work(tmp_path, no_fits, seeds):
    with pytest.raises(reproduce.StudyError, match=f"too many.*at most {reproduce.MAX_SEEDS}"):
        _study(tmp_path / "s", seeds=seeds)
    assert not (tmp_path / "s").exists() and no_fits == []


@pytest.mark.parametrize("seeds", [0, -1, 2.5, float("inf"), float("nan"), True, "3", None])
def test_seeds_that_are_no_positive_integer_are_refused(tmp_path, no_fits, seeds):
    with pytest.raises(reproduce.StudyError, match="--seeds must be a positive integer"):
        _study(tmp_path / "s", seeds=seeds)
    assert not (tmp_path / "s").exists()


def test_seed_counts_up_to_the_maximum_are_accepted():
    assert reproduce._seed_count(reproduce.MAX_SEEDS) == reproduce.MAX_SEEDS
    assert reproduce._seed_count(3.0) == 3 and reproduce._seed_count(np.int64(2)) == 2


def test_the_cli_refuses_a_trillion_seeds_in_one_line(tmp_path, no_fits, capsys):
    rc = _cli(tmp_path / "s", "--seeds", "1000000000000")
    line = _one_error_line(capsys, rc)
    assert "--seeds 1000000000000 is too many" in line and "at most 100" in line
    assert not (tmp_path / "s").exists() and no_fits == []


# -- 3. duplicate models ---------------------------------------------------------------------------
@pytest.mark.parametrize("models, twice", [(["warp", "warp"], "warp"),
                                           (["gru", "classical", "gru"], "gru")])
def test_a_model_named_twice_is_refused(tmp_path, no_fits, models, twice):
    with pytest.raises(reproduce.StudyError, match=f"names '{twice}' more than once"):
        _study(tmp_path / "s", models=models)
    assert not (tmp_path / "s").exists() and no_fits == []


def test_the_cli_refuses_models_warp_warp_in_one_line(tmp_path, no_fits, capsys):
    rc = _cli(tmp_path / "s", "--models", "warp,warp")
    line = _one_error_line(capsys, rc)
    assert "'warp' more than once" in line and "name each model once" in line
    assert not (tmp_path / "s").exists()


def test_each_model_gives_its_rows_once(tmp_path, no_fits):
    out = tmp_path / "s"
    _study(out, models=["warp", "gru"])
    with open(out / "results.csv") as fh:
        assert [r["model"] for r in csv.DictReader(fh)] == ["warp", "gru"]


# -- 4. the study's data files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_data(tmp_path_factory):
    """A tiny msd study's data files of seed 0, clean and noisy (each: a folder of them)."""
    root = tmp_path_factory.mktemp("data")
    for noise, name in ((0.0, "clean"), (0.01, "noisy")):
        reproduce.study_data("msd", TINY, 0, noise, root / name)
    return root


def _copy(seed_data, tmp_path, name="clean"):
    folder = tmp_path / name
    shutil.copytree(seed_data / name, folder)
    return folder


def test_the_studys_own_files_are_reused_unchanged(seed_data, tmp_path):
    folder = _copy(seed_data, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    paths = reproduce.study_data("msd", TINY, 0, 0.0, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    train, test = (Trajectories.load(paths[k]) for k in ("train", "test"))
    assert (train.n, train.n_times) == TRAIN_SIZE and (test.n, test.n_times) == TEST_SIZE


def _crop(traj, n, steps):
    return Trajectories(t=traj.t[:steps], x=traj.x[:n, :steps], params=traj.params[:n],
                        state_names=traj.state_names, param_names=traj.param_names,
                        system=traj.system)


def _other_system(split):
    system = {"test": "pendulum", "train": "lotka_volterra"}[split]
    n, steps = TRAIN_SIZE if split == "train" else TEST_SIZE
    return _crop(simulate(system, n, split, 0), n, steps)


def _fewer_trajectories(split):
    n, steps = TRAIN_SIZE if split == "train" else TEST_SIZE
    return _crop(simulate("spring_mass", n, split, 0), n - 3, steps)


def _the_protocols_length(split):  # the protocol's full time grid, not the scale's crop
    n = (TRAIN_SIZE if split == "train" else TEST_SIZE)[0]
    return simulate("spring_mass", n, split, 0, preset="msd")


def _stretched_times(split):
    n, steps = TRAIN_SIZE if split == "train" else TEST_SIZE
    tr = _crop(simulate("spring_mass", n, split, 0, preset="msd"), n, steps)
    return Trajectories(t=2 * tr.t, x=tr.x, params=tr.params, system=tr.system)


def _no_system(split):
    n, steps = TRAIN_SIZE if split == "train" else TEST_SIZE
    tr = _crop(simulate("spring_mass", n, split, 0, preset="msd"), n, steps)
    return Trajectories(t=tr.t, x=tr.x)


@pytest.mark.parametrize("split", ["test", "train"])
@pytest.mark.parametrize("make, words", [
    (_other_system, "holds data of system"),
    (_fewer_trajectories, "trajectories of"),
    (_the_protocols_length, "steps that this study's scale makes"),
    (_stretched_times, "sample times are not the study protocol's"),
    (_no_system, "it names no system"),
], ids=["other-system", "fewer-trajectories", "other-length", "other-times", "no-system"])
def test_a_replaced_data_file_is_refused(seed_data, tmp_path, split, make, words):
    folder = _copy(seed_data, tmp_path)
    path = folder / f"{split}.npz"
    make(split).save(path)
    with pytest.raises(reproduce.StudyError) as e:
        reproduce.study_data("msd", TINY, 0, 0.0, folder)
    msg = str(e.value)
    assert str(path) in msg and "does not belong to this study" in msg and words in msg, msg
    assert "delete it (it will be simulated again) or choose another --out" in msg
    assert "\n" not in msg


def test_a_replaced_noisy_test_input_file_is_refused(seed_data, tmp_path):
    folder = _copy(seed_data, tmp_path, "noisy")
    _other_system("test").save(folder / "test_noisy.npz")
    with pytest.raises(reproduce.StudyError, match="test_noisy.npz.*does not belong.*pendulum"):
        reproduce.study_data("msd", TINY, 0, 0.01, folder)


def test_an_unreadable_data_file_is_refused(seed_data, tmp_path):
    folder = _copy(seed_data, tmp_path)
    (folder / "test.npz").write_bytes(b"not an archive")
    with pytest.raises(reproduce.StudyError, match="cannot be read.*delete it"):
        reproduce.study_data("msd", TINY, 0, 0.0, folder)


def test_a_study_with_a_replaced_test_file_stops_in_one_line(tmp_path, no_fits, capsys):
    out = tmp_path / "study"
    _study(out)
    _other_system("test").save(out / "data" / "seed0" / "test.npz")
    no_fits.clear()
    rc = _cli(out)
    line = _one_error_line(capsys, rc)
    assert "does not belong to this study" in line and "'pendulum'" in line
    assert no_fits == []  # refused before any run is fitted or scored


def test_a_diverged_seed_is_not_averaged_away():
    """A seed whose rollouts diverged (NaN) used to be left out of the mean, so that the model
    looked as good as its other seeds."""
    rows = [{"model": "warp", "estimate": None, "seed": 0, "test_mse": float("nan")},
            {"model": "warp", "estimate": None, "seed": 1, "test_mse": 0.5},
            {"model": "gru", "estimate": None, "seed": 0, "test_mse": 0.7},
            {"model": "gru", "estimate": None, "seed": 1, "test_mse": 0.9}]
    table = reproduce.summarize(rows, ["warp", "gru"])
    assert table["warp"]["test_mse"] == float("inf")
    assert table["gru"]["test_mse"] == pytest.approx(0.8)
    assert table["warp"]["ood_mse"] is None  # (absent: does not apply, not diverged)
