"""Run directories as files: save/load round trips, reproducibility, resume, the divergence guard,
atomic writes, and checkpoints that are corrupt, foreign or unsafe (never unpickled).

Fits are tiny (1-4 epochs, width 4): these tests check the mechanisms, not accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import refused

from warpphys import Trajectories, api, checkpoint, cli, rundir
from warpphys.model import WARP

SMALL = {"context": 5, "width": 4, "batch_size": 8, "figures": False, "progress": False,
         "device": "cpu"}


def _fit(data, out, *, model="warp", epochs=1, seed=0, **kw) -> api.FittedModel:
    return api.fit(data=data, out=out, model=model, epochs=epochs, seed=seed, **{**SMALL, **kw})


def strict_json(path: Path):
    """Parse JSON refusing NaN and Infinity (not JSON, and unreadable by other languages)."""
    def no_constant(name):
        raise ValueError(f"{path.name} contains {name}")

    return json.loads(path.read_text(), parse_constant=no_constant)


@pytest.fixture
def run_copy(fitted_run, tmp_path) -> Path:
    """A private copy of a finished run directory, to damage."""
    return Path(shutil.copytree(fitted_run, tmp_path / "run"))


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["warp", "warp-phys"])
def test_loaded_model_predicts_exactly_as_the_fitted_one(model, user_file, tmp_path):
    fitted = _fit(user_file, tmp_path / "run", model=model)
    loaded = api.FittedModel.load(tmp_path / "run")
    traj = Trajectories.load(user_file)
    assert loaded.info == json.loads(json.dumps(fitted.info))
    assert loaded.metrics == json.loads(json.dumps(fitted.metrics))
    state, back = fitted.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == back.keys()
    for k in state:
        torch.testing.assert_close(back[k], state[k], rtol=0, atol=0)
    # the same weights and the same arithmetic: bitwise the same rollout, also past the file's end
    np.testing.assert_array_equal(loaded.predict(traj, 5, 30), fitted.predict(traj, 5, 30))
    if model == "warp-phys":
        np.testing.assert_array_equal(loaded.recover_params(traj), fitted.recover_params(traj))


def test_same_seed_same_metrics_other_seed_other_metrics(fitted_run, user_file, tmp_path):
    saved = json.loads((fitted_run / "metrics.json").read_text())  # fitted with seed 0
    again = _fit(user_file, tmp_path / "again", seed=0)
    assert again.metrics["test_mse"] == pytest.approx(saved["test_mse"], rel=1e-9)
    weights = api.load(fitted_run).model.state_dict()
    for k, v in again.model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    other = _fit(user_file, tmp_path / "other", seed=1)
    assert other.metrics["test_mse"] != pytest.approx(saved["test_mse"], rel=1e-6)


# -- resume --------------------------------------------------------------------------------------
def test_resume_finishes_an_interrupted_run_as_if_never_stopped(user_file, tmp_path, monkeypatch,
                                                                capsys):
    # 3 epochs validate (and checkpoint last.pt) after epochs 2 and 3; stop during epoch 3
    whole = _fit(user_file, tmp_path / "whole", epochs=3)
    run = tmp_path / "interrupted"
    original = WARP.training_loss

    def interrupt_after_first_checkpoint(self, *args, **kwargs):
        if (run / api.LAST_FILE).exists():
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WARP, "training_loss", interrupt_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        _fit(user_file, run, epochs=3)
    monkeypatch.setattr(WARP, "training_loss", original)
    assert {p.name for p in run.iterdir()} == {"config.json", "last.pt"}
    assert checkpoint.load(run / "last.pt")["epoch"] == 2

    assert cli.main(["fit", "--resume", str(run), "--quiet", "--no-figures",
                     "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["train_status"] == "completed"
    config = json.loads((run / "config.json").read_text())
    assert config["epochs_run"] == 3 and config["status"] == "completed"
    metrics = json.loads((run / "metrics.json").read_text())
    # restored weights, optimiser, schedule and random generator: the same numbers
    assert metrics["test_mse"] == pytest.approx(whole.metrics["test_mse"], rel=1e-9)
    assert config["best_val_mse"] == pytest.approx(whole.info["best_val_mse"], rel=1e-9)


def test_resume_without_a_training_checkpoint_is_refused(tmp_path, capsys):
    refused(cli.main(["fit", "--resume", str(tmp_path / "nothing"), "--quiet"]), capsys,
            "to resume from")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # stopped before its first checkpoint
    refused(cli.main(["fit", "--resume", str(tmp_path / "half"), "--quiet"]), capsys,
            "last.pt")


# -- divergence guard ----------------------------------------------------------------------------
def test_absurd_learning_rate_stops_with_advice_and_a_usable_model(user_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["fit", "--data", str(user_file), "--model", "warp", "--epochs", "2",
                   "--context", "5", "--width", "4", "--batch-size", "8", "--lr", "1e6",
                   "--no-figures", "--quiet", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["train_status"] == "diverged"
    assert printed.err.startswith("warpphys fit: warning: ") and "smaller --lr" in printed.err
    config, metrics = strict_json(out / "config.json"), strict_json(out / "metrics.json")
    assert config["status"] == metrics["train_status"] == "diverged"
    assert "--lr" in config["status_message"]
    fitted = api.load(out)
    assert all(torch.isfinite(v).all() for v in fitted.model.state_dict().values())
    assert np.isfinite(fitted.predict(Trajectories.load(user_file), 5, 10)).all()
    assert np.isfinite(metrics["test_mse"])


# -- atomic writes -------------------------------------------------------------------------------
def _failing_torch_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("writer", ["checkpoint.save", "api.save_model"])
def test_a_failed_checkpoint_write_keeps_the_old_file(writer, run_copy, user_file, monkeypatch,
                                                      capsys):
    fitted = api.load(run_copy)
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    monkeypatch.setattr(torch, "save", _failing_torch_save)
    with pytest.raises(OSError, match="No space"):
        if writer == "checkpoint.save":
            checkpoint.save({"kind": "model", "state_dict": {}}, run_copy / "model.pt")
        else:
            api.save_model(fitted, run_copy)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before  # no temporary files
    assert cli.main(["evaluate", str(run_copy), "--data", str(user_file)]) == 0


def test_a_failed_json_write_keeps_the_old_file(run_copy, monkeypatch):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}

    def failing_dump(obj, fh, **kwargs):
        fh.write('{"test_mse": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", failing_dump)
    with pytest.raises(OSError):
        rundir.write_json({"test_mse": 1.0}, run_copy / "metrics.json")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


# -- checkpoints that must be refused ------------------------------------------------------------
def _truncate(path: Path, tmp_path: Path) -> str:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "corrupt"


def _empty(path: Path, tmp_path: Path) -> str:
    path.write_bytes(b"")
    return "corrupt"


def _foreign_state_dict(path: Path, tmp_path: Path) -> str:
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    return "not a warpphys checkpoint"


def _other_version(path: Path, tmp_path: Path) -> str:
    checkpoint.save({"kind": "model"}, path)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "version": 99}, path)
    return "version 99"


def _incomplete(path: Path, tmp_path: Path) -> str:
    checkpoint.save({"kind": "model", "class": "WARP"}, path)
    return "does not match this version"


def _training_checkpoint(path: Path, tmp_path: Path) -> str:
    shutil.copyfile(path.with_name("last.pt"), path)
    return "not a model checkpoint"


def _missing(path: Path, tmp_path: Path) -> str:
    path.unlink()  # (config.json and last.pt stay: as while the fit runs)
    return "no model.pt yet"


DAMAGE = [_truncate, _empty, _foreign_state_dict, _other_version, _incomplete,
          _training_checkpoint, _missing]


def _command(name: str, run: Path, data: Path, tmp_path: Path) -> list[str]:
    if name == "evaluate":
        return ["evaluate", str(run), "--data", str(data)]
    return ["predict", str(run), "--data", str(data), "--context", "5", "--horizon", "3",
            "--out", str(tmp_path / "pred.npz")]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_bad_checkpoint_is_refused(damage, command, run_copy, user_file, tmp_path, capsys):
    words = damage(run_copy / "model.pt", tmp_path)
    refused(cli.main(_command(command, run_copy, user_file, tmp_path)), capsys, "model.pt", words)
    assert not (tmp_path / "pred.npz").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("via", ["torch", "pickle"])
def test_a_pickled_object_checkpoint_is_never_unpickled(via, command, run_copy, user_file,
                                                        tmp_path, pickle_bomb, capsys):
    marker = tmp_path / "MARKER"
    pickle_bomb(run_copy / "model.pt", marker, via=via)
    refused(cli.main(_command(command, run_copy, user_file, tmp_path)), capsys,
            "not loaded", "arbitrary code")
    assert not marker.exists()
    with pytest.raises(checkpoint.CheckpointError):
        api.load(run_copy)
    assert not marker.exists()


def test_resume_never_unpickles_a_training_checkpoint(run_copy, tmp_path, pickle_bomb, capsys):
    marker = tmp_path / "MARKER"
    pickle_bomb(run_copy / "last.pt", marker)
    before = os.stat(run_copy / "model.pt").st_mtime_ns
    refused(cli.main(["fit", "--resume", str(run_copy), "--quiet", "--device", "cpu"]), capsys,
            "last.pt", "not loaded")
    assert not marker.exists()
    assert os.stat(run_copy / "model.pt").st_mtime_ns == before
