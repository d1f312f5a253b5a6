"""Hostile runs and checkpoints: a diverged --force fit, a model.pt from another run or edited,
trajectories of another system or with impossible parameters, a rollout that overflows, a user's
own figure in figures/, and a fit interrupted before its first checkpoint."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import SMALL_FIT, refused, variant
from warpphys import api, checkpoint, cli
from warpphys.data import DataError, Trajectories, simulate
from warpphys.train import Trainer


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(fitted_run, tmp_path, name="run"):
    return shutil.copytree(fitted_run, tmp_path / name)


def test_a_diverged_fit_never_replaces_a_run_with_force(fitted_run, user_file, tmp_path,
                                                        monkeypatch, capsys):
    run = _copy(fitted_run, tmp_path)
    before = _digest(run)
    monkeypatch.setattr(Trainer, "_validate", lambda self, *a: float("nan"))
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(run), "--force"])
    err = capsys.readouterr().err  # the divergence's warning, then the refusal
    assert rc == 2 and "Traceback" not in err
    assert "error: training diverged" in err and "is unchanged" in err.splitlines()[-1]
    assert _digest(run) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left


def test_trajectories_of_another_system_or_impossible_parameters_are_refused(fitted_run,
                                                                             user_file,
                                                                             tmp_path):
    # (fitted_run is a black box on spring-mass data: it knows its system from the file)
    fitted = api.load(fitted_run)
    assert fitted.system is not None and fitted.system.name == "spring_mass"
    pend = simulate("pendulum", 4, "train", 0)
    with pytest.raises(DataError, match="of system 'pendulum'.*trained on 'spring_mass'"):
        fitted.evaluate(pend, context=5)
    with pytest.raises(DataError, match="of system 'pendulum'"):
        fitted.predict(pend, context=5, horizon=3)
    params = np.load(user_file)["params"].copy()
    for bad in (-1.0, 0.0):
        params[:, 0] = bad
        path = variant(user_file, tmp_path / f"m{bad}.npz", params=params)
        with pytest.raises(DataError, match="parameters.*'m'"):
            fitted.evaluate(Trajectories.load(path), context=5)
        with pytest.raises(DataError, match="'m'"):
            api.evaluate(fitted_run, path)


def test_a_rollout_that_overflows_is_the_models_failure_and_writes_nothing(fitted_run,
                                                                           user_file, tmp_path,
                                                                           monkeypatch, capsys):
    original = api.FittedModel.forecasts

    def overflowing(self, traj, context=None, *args, **kw):
        out = original(self, traj, context, *args, **kw)
        for forecast in out.values():
            forecast.x_hat[1, context + 2:] = np.inf
        return out

    monkeypatch.setattr(api.FittedModel, "forecasts", overflowing)
    out = tmp_path / "pred.npz"
    rc = cli.main(["predict", str(fitted_run), "--data", str(user_file), "--context", "5",
                   "--horizon", "4", "--out", str(out)])
    line = refused(rc, capsys, "rollout overflowed", "1 of 12 trajectories",
                   "trajectory 1, step 7", "nothing was written")
    assert "'x' contains NaN" not in line and not out.exists()


def _edit_checkpoint(run, **info_changes):
    ckpt = checkpoint.load(run / "model.pt")
    info = json.loads(ckpt["info"])
    info.update(info_changes)
    ckpt["info"] = json.dumps(info)
    checkpoint.save(ckpt, run / "model.pt")
    return ckpt


@pytest.mark.parametrize("change, needle", [
    ({"model": "gru"}, "built as GRUBaseline, but the weights are a WARP"),
    ({"model": "warp-drive"}, "model 'warp-drive' is not one of"),
    ({"system": "warp_drive"}, "system 'warp_drive' is not one of"),
    ({"estimate": "banana"}, "estimate 'banana'"),
    ({"context": 10**9}, "is not shorter than its"),
])
def test_an_edited_checkpoint_is_refused_at_load(fitted_run, tmp_path, change, needle):
    run = _copy(fitted_run, tmp_path)
    _edit_checkpoint(run, **change)
    with pytest.raises(checkpoint.CheckpointError, match=needle):
        api.load(run)


def test_weights_that_are_not_finite_are_refused_at_load(fitted_run, tmp_path):
    run = _copy(fitted_run, tmp_path)
    ckpt = checkpoint.load(run / "model.pt")
    ckpt["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    checkpoint.save(ckpt, run / "model.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not finite"):
        api.load(run)


def test_a_model_pt_from_another_run_is_refused(fitted_run, user_file, tmp_path, capsys):
    other = tmp_path / "other"
    assert cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                     str(other), "--seed", "3"]) == 0
    run = _copy(fitted_run, tmp_path)
    shutil.copy(other / "model.pt", run / "model.pt")
    rc = cli.main(["evaluate", str(run), "--data", str(user_file)])
    refused(rc, capsys, "its seed is 3 where config.json beside it says 0",
            "different runs")


def test_force_keeps_a_users_own_figure_and_changes_nothing(fitted_run, user_file, tmp_path,
                                                            capsys):
    run = _copy(fitted_run, tmp_path)
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "mine.png").write_bytes(b"a figure of the user's")
    before = _digest(run)
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(run), "--force"])
    refused(rc, capsys, "figures/mine.png", "nothing was changed")
    assert _digest(run) == before


def test_a_fit_interrupted_before_its_first_checkpoint_leaves_a_usable_out(user_file, tmp_path,
                                                                           monkeypatch, capsys):
    run = tmp_path / "irun"

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", interrupt)
        with pytest.raises(KeyboardInterrupt, match="nothing to resume"):
            api.fit(data=user_file, model="warp", epochs=1, context=5, out=run, figures=False,
                    progress=False)
    assert not (run / "config.json").exists()
    # the same --out is then simply used (no advice to --resume what cannot be resumed)
    assert cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                     str(run)]) == 0


def test_an_existing_run_without_a_checkpoint_is_not_offered_for_resume(fitted_run, user_file,
                                                                        tmp_path, capsys):
    run = _copy(fitted_run, tmp_path)
    (run / "last.pt").unlink()
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(run)])
    line = refused(rc, capsys, "exists already", "--force")
    assert "--resume" not in line
    run2 = _copy(fitted_run, tmp_path, "run2")
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out",
                   str(run2)])
    refused(rc, capsys, f"--resume {run2}")
