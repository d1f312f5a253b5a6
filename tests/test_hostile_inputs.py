"""The command line under hostile but realistic use (issue 14): never lose a user's data, never
show a traceback.

One table of refused commands runs each in a workspace of a user's files (a data file, a run
directory, a folder of their own data and notes, an earlier prediction), and checks that the
command exits 2 with one line naming the problem, and that every file the user had is unchanged
(sha256 of each before and after) and nothing new appears. The cases that succeed, resume or
are interrupted have their own tests below. Every fit is tiny (1-2 epochs, width 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_FIT, refused, variant

from warpphys import Trajectories, api, checkpoint, cli, fitted
from warpphys.train import Trainer

LONG = "x" * 300


def checksums(root: Path) -> dict:
    """Every entry under ``root``: sha256 of each file, None for a folder or link."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest()
                    if p.is_file() and not p.is_symlink() else None)
    return out




def huge_header_file(src: Path, dst: Path) -> Path:
    """A small .npz whose 'x' header declares 10^12 float64 elements (the data are absent)."""
    import zipfile

    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    with zipfile.ZipFile(dst, "w") as z:
        for key, a in arrays.items():
            if key == "x":
                header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**4, 100)}
                with z.open("x.npy", "w") as fh:
                    np.lib.format.write_array_header_1_0(fh, header)
                    fh.write(b"\0" * 26_000)
            else:
                with z.open(f"{key}.npy", "w") as fh:
                    np.lib.format.write_array(fh, a)
    return dst


@pytest.fixture
def ws(tmp_path, user_file, fitted_run, monkeypatch) -> Path:
    """A user's workspace (also the current folder): data.npz, run/ (a finished run),
    precious/ (their data and notes), pred.npz (an earlier prediction), and broken inputs."""
    shutil.copy(user_file, tmp_path / "data.npz")
    shutil.copytree(fitted_run, tmp_path / "run")
    (tmp_path / "precious").mkdir()
    shutil.copy(user_file, tmp_path / "precious" / "data.npz")
    (tmp_path / "precious" / "notes.txt").write_text("three weeks of lab notes")
    shutil.copy(user_file, tmp_path / "pred.npz")
    (tmp_path / "folder.npz").mkdir()
    data = tmp_path / "data.npz"
    with np.load(data) as f:
        x, t, params = f["x"], f["t"], f["params"]
    variant(data, tmp_path / "wide.npz", x=np.concatenate([x, x[..., :1]], -1),
            state_names=None, system=None)
    variant(data, tmp_path / "short.npz", x=x[:, :4], t=t[:4])
    variant(data, tmp_path / "huge_values.npz", x=np.where(np.arange(20)[None, :, None] == 3,
                                                           1e40, x))
    variant(data, tmp_path / "at_rest.npz", x=np.repeat(x[:, :1], x.shape[1], 1))
    variant(data, tmp_path / "names_twice.npz", param_names=np.array(["m", "m", "c"]))
    variant(data, tmp_path / "times_1e300.npz", t=t * 1e300)
    variant(data, tmp_path / "times_1e-300.npz", t=t * 1e-300)
    variant(data, tmp_path / "times_unresolved.npz", t=np.r_[0.0, 1e-9, 1.0 + t[2:]])
    variant(data, tmp_path / "negative_k.npz", params=params * np.array([1.0, -1.0, 1.0]))
    huge_header_file(data, tmp_path / "huge_header.npz")
    os.symlink("loop.npz", tmp_path / "loop.npz")
    edited = tmp_path / "edited"
    shutil.copytree(fitted_run, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "system": "pendulum"}))
    edited_list = tmp_path / "edited_list"
    shutil.copytree(fitted_run, edited_list)
    (edited_list / "config.json").write_text("[1]")
    edited_map = tmp_path / "edited_map"
    shutil.copytree(fitted_run, edited_map)
    (edited_map / "config.json").write_text(json.dumps({**config,
                                                        "param_name_map": {"mass": "m"}}))
    foreign = tmp_path / "foreign"
    shutil.copytree(fitted_run, foreign)
    state = checkpoint.load(foreign / "last.pt")
    state["model_state"] = {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim else v
                            for k, v in state["model_state"].items()}
    checkpoint.save(state, foreign / "last.pt")
    badinfo = tmp_path / "badinfo"
    shutil.copytree(fitted_run, badinfo)
    ckpt = checkpoint.load(badinfo / "model.pt")
    checkpoint.save({**ckpt, "info": 123}, badinfo / "model.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


FIT = ["fit", *SMALL_FIT, "--no-figures"]
PREDICT = ["predict", "run", "--data", "data.npz", "--context", "5", "--horizon", "3"]
SIM = ["simulate", "--system", "spring_mass", "--n", "2"]

#: case -> (command line, words the one-line refusal must contain)
REFUSED = {
    # data destroyed
    "force over a folder of the user's files": (
        [*FIT, "--data", "precious/data.npz", "--out", "precious", "--force"],
        ["--force replaces only a run directory", "precious"]),
    "force over the current folder": (
        [*FIT, "--data", "data.npz", "--out", ".", "--force"], ["current folder"]),
    "force over a run with test data of another d": (
        [*FIT, "--data", "data.npz", "--out", "run", "--force", "--test-data", "wide.npz"],
        ["wide.npz", "d = 3"]),
    "force over a run with test data shorter than the context": (
        [*FIT, "--data", "data.npz", "--out", "run", "--force", "--test-data", "short.npz"],
        ["--context 5", "short.npz"]),
    "predict over its input": ([*PREDICT[:3], "pred.npz", *PREDICT[4:], "--out", "pred.npz"],
                               ["is the input file"]),
    "predict over its input with --force": (
        [*PREDICT[:3], "pred.npz", *PREDICT[4:], "--out", "pred.npz", "--force"],
        ["is the input file"]),
    "predict over an existing file": ([*PREDICT, "--out", "precious/data.npz"],
                                      ["exists already", "--force"]),
    "simulate over an existing file": ([*SIM, "--out", "pred.npz"], ["exists already"]),
    # operating-system errors
    "fit --out with a 300-character name": ([*FIT, "--data", "data.npz", "--out", LONG],
                                            ["File name too long", "(300 characters)"]),
    "simulate --out with a 300-character name": ([*SIM, "--out", LONG + ".npz"],
                                                 ["File name too long"]),
    "predict --out with a 300-character name": ([*PREDICT, "--out", LONG + ".npz"],
                                                ["File name too long"]),
    "fit --out inside a file": ([*FIT, "--data", "data.npz", "--out", "data.npz/run"],
                                ["data.npz/run", "Not a directory"]),
    "predict --out an existing folder": ([*PREDICT, "--out", "folder.npz"], ["is a folder"]),
    "fit --out unwritable": ([*FIT, "--data", "data.npz", "--out", "/proc/warpphys-run"],
                             ["/proc/warpphys-run"]),
    "predict --out unwritable": ([*PREDICT, "--out", "/proc/warpphys.npz"],
                                 ["/proc/warpphys.npz"]),
    "reproduce --out unwritable": (
        ["reproduce", "--study", "msd", "--models", "classical", "--seeds", "1", "--quiet",
         "--out", "/proc/warpphys-study"], ["/proc/warpphys-study"]),
    "data from /proc": (["evaluate", "run", "--data", "/proc/self/status"],
                        ["/proc/self/status", "not a readable .npz"]),
    "data a symlink loop": (["evaluate", "run", "--data", "loop.npz"],
                            ["loop.npz", "loop of links"]),
    "fit --out a symlink loop": ([*FIT, "--data", "data.npz", "--out", "loop.npz"],
                                 ["loop.npz", "loop of links"]),
    # memory
    "simulate --n 10^12": (["simulate", "--system", "spring_mass", "--n", "1000000000000",
                            "--out", "big.npz"], ["1000000000000 trajectories", "memory",
                                                  "smaller --n"]),
    "fit --width 100000": ([*FIT, "--data", "data.npz", "--width", "100000", "--out", "new"],
                           ["--width 100000", "memory", "smaller --width"]),
    "predict --horizon 10^12": ([*PREDICT[:-1], "1000000000000", "--out", "new.npz"],
                                ["memory", "smaller --horizon"]),
    "an .npz whose header claims 10^12 elements": (
        ["evaluate", "run", "--data", "huge_header.npz"], ["'x' of shape (1000000, 10000, 100)",
                                                           "memory"]),
    # checkpoints
    "model.pt whose info is not warpphys's": (["evaluate", "badinfo", "--data", "data.npz"],
                                              ["badinfo/model.pt", "run configuration"]),
    "last.pt of another architecture": (["fit", "--resume", "foreign"],
                                        ["foreign/last.pt", "another architecture"]),
    # --resume
    "resume with a config.json that is not an object": (["fit", "--resume", "edited_list"],
                                                          ["config.json' is not valid JSON",
                                                           "not a JSON object"]),
    "resume with an edited config.json": (["fit", "--resume", "edited"],
                                          ["does not match the checkpoint", "system"]),
    "resume with an edited param_name_map": (["fit", "--resume", "edited_map"],
                                              ["does not match the checkpoint",
                                               "param_name_map"]),
    "resume with --param-name": (["fit", "--resume", "run", "--param-name", "mass=m"],
                                 ["--param-name cannot change on resume"]),
    "resume with --estimate": (["fit", "--resume", "run", "--estimate", "amortised"],
                               ["--estimate cannot change on resume"]),
    "resume with --data": (["fit", "--resume", "run", "--data", "data.npz"],
                           ["--data cannot change on resume"]),
    "resume with --out and --force": (["fit", "--resume", "run", "--out", "run", "--force"],
                                      ["--out, --force cannot change on resume"]),
    "resume with --width": (["fit", "--resume", "run", "--width", "8"], ["--width"]),
    "resume with --seed": (["fit", "--resume", "run", "--seed", "1"], ["--seed"]),
    "resume with --epochs already trained": (["fit", "--resume", "run", "--epochs", "1",
                                              "--quiet"], ["--epochs 1", "must exceed"]),
    # silent wrong results
    "states beyond float32": ([*FIT, "--data", "huge_values.npz", "--out", "new"],
                              ["1e+40", "float32", "rescale"]),
    "evaluate on states beyond float32": (["evaluate", "run", "--data", "huge_values.npz"],
                                          ["float32"]),
    "--n-train with --data": ([*FIT, "--data", "data.npz", "--n-train", "5", "--out", "new"],
                              ["--n-train", "--data gives them"]),
    "a file whose trajectories never move": (
        [*FIT, "--model", "warp-phys", "--data", "at_rest.npz", "--out", "new"],
        ["at_rest.npz", "no trajectory changes over time"]),
    "a parameter name given twice": ([*FIT, "--data", "names_twice.npz", "--out", "new"],
                                     ["names_twice.npz", "'param_names' names 'm' more than once"]),
    "times spanning 1e300": ([*FIT, "--data", "times_1e300.npz", "--out", "new"],
                             ["times_1e300.npz", "times span 1.5e+299", "rescale the time axis"]),
    "times spaced 1e-300": (["evaluate", "run", "--data", "times_1e-300.npz"],
                            ["spacing falls to", "rescale the time axis"]),
    "a spacing float32 cannot resolve": (["predict", "run", "--data", "times_unresolved.npz",
                                          "--context", "5", "--horizon", "3", "--out",
                                          "new.npz"],
                                         ["spacing of 1e-09", "float32 resolution"]),
    "negative parameter in a user's file": (
        [*FIT, "--model", "warp-phys", "--data", "negative_k.npz", "--out", "new"],
        ["negative_k.npz", "parameter 'k'"]),
    "stiff damping range": (["simulate", "--system", "spring_mass", "--range", "c=1e6:1e6",
                             "--out", "stiff.npz"], ["c=1e+06:1e+06", "too stiff"]),
    "stiff spring range": (["simulate", "--system", "spring_mass", "--range", "k=1e12:1e12",
                            "--out", "stiff.npz"], ["k=1e+12", "too stiff"]),
    "stiff damping range, exact method": (["simulate", "--system", "spring_mass", "--range",
                                           "c=1e6:1e6", "--method", "exact", "--out",
                                           "stiff.npz"], ["c=1e+06:1e+06", "too stiff"]),
    "a system named in another spelling": (["simulate", "--system", "Spring-Mass", "--n", "2",
                                            "--out", "s.npz"],
                                           ["unknown system 'Spring-Mass'",
                                            "did you mean 'spring_mass'?"]),
    "a system named by the paper's dataset": ([*FIT, "--system", "lv", "--out", "new"],
                                              ["did you mean 'lotka_volterra'?"]),
    "unknown simulate method": (["simulate", "--system", "pendulum", "--method", "rk5",
                                 "--out", "p.npz"], ["unknown method 'rk5'"]),
    "exact method of a nonlinear system": (["simulate", "--system", "pendulum", "--method",
                                            "exact", "--out", "p.npz"], ["no closed form"]),
    "pendulum length 0": (["simulate", "--system", "pendulum", "--range", "length=0:0",
                           "--out", "p.npz"], ["'length'", "greater than 0.0"]),
    "reproduce --models ,": (["reproduce", "--study", "msd", "--models", ",", "--out",
                              "study"], ["names no model"]),
    "unknown system named in bytes": (
        ["evaluate", "run", "--data", "bytes_system.npz"], ["'planets'"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_command_is_one_line_and_changes_nothing(case, ws, capsys):
    argv, needles = REFUSED[case]
    if case == "unknown system named in bytes":
        variant(ws / "data.npz", ws / "bytes_system.npz", system=np.array(b"planets"))
    before = checksums(ws)
    line = refused(cli.main(argv), capsys, *needles)
    assert "b'planets'" not in line
    assert checksums(ws) == before  # nothing changed, nothing new (no staging folder left)


#: argparse errors: one line naming the problem and --help, exit 2
USAGE = {
    "fit --epochs two": ["fit", "--epochs", "two"],
    "fit --lr -1": ["fit", "--system", "pendulum", "--lr", "-1"],
    "fit --lr nan": ["fit", "--system", "pendulum", "--lr", "nan"],
    "fit --lr inf": ["fit", "--system", "pendulum", "--lr", "inf"],
    "fit --max-minutes -1": ["fit", "--system", "pendulum", "--max-minutes", "-1"],
    "fit --seed -1 with --system": ["fit", "--system", "pendulum", "--seed", "-1"],
    "fit --seed -1 with --data": ["fit", "--data", "data.npz", "--seed", "-1"],
    "fit --seed 1e23": ["fit", "--data", "data.npz", "--seed", "100000000000000000000000"],
    "simulate --seed -1": ["simulate", "--system", "pendulum", "--seed", "-1", "--out", "s.npz"],
    "simulate --seed 1e23": ["simulate", "--system", "pendulum", "--seed", "1e23", "--out",
                             "s.npz"],
    "simulate --rtol nan": ["simulate", "--system", "pendulum", "--rtol", "nan", "--out",
                            "s.npz"],
    "simulate --rtol -1": ["simulate", "--system", "pendulum", "--rtol", "-1", "--out", "s.npz"],
    "fit --threads 0": ["fit", "--system", "pendulum", "--threads", "0"],
    "unknown option": ["evaluate", "run", "--data", "data.npz", "--contxt", "3"],
}


@pytest.mark.parametrize("case", list(USAGE))
def test_a_usage_error_is_one_line_pointing_to_help(case, ws, capsys):
    before = checksums(ws)
    with pytest.raises(SystemExit) as exit_:
        cli.main(USAGE[case])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert ": error: " in err and "--help" in err and "usage:" not in err
    if "seed" in case:
        assert "a seed is a whole number from 0 to 2**63 - 1" in err
    if "--lr" in case or "minutes" in case or "--rtol" in case:
        assert "positive finite number" in err
    assert checksums(ws) == before


def test_the_library_refuses_the_same_seeds_and_rates(ws):
    for kw in ({"seed": -1}, {"seed": 10**23}, {"lr": float("nan")}, {"lr": -1.0},
               {"max_seconds": -60.0}):
        with pytest.raises(api.RunError):
            api.fit(data="data.npz", model="warp", out="new", **kw)
    assert not (ws / "new").exists()


def test_the_library_refuses_counts_that_are_not_whole_numbers(ws):
    for kw, words in (({"epochs": 1.5}, "epochs must be a whole number"),
                      ({"epochs": "3"}, "epochs must be a whole number"),
                      ({"context": True}, "context must be a whole number"),
                      ({"n_train": 0}, "n_train must be a whole number"),
                      ({"data": np.zeros((2, 8, 2))}, "data must be the path of an .npz file")):
        with pytest.raises(api.RunError, match=words):
            api.fit(**{"data": "data.npz", "model": "warp", "out": "new", **kw})
    assert not (ws / "new").exists()
    fitted = api.load("run")
    traj = Trajectories.load("data.npz")
    for call, words in ((lambda: fitted.predict(traj, 5.5), "--context must be a whole number"),
                        (lambda: fitted.predict(traj, 5, horizon=2.0), "--horizon must be"),
                        (lambda: fitted.evaluate(traj, context=True), "--context must be"),
                        (lambda: fitted.predict(traj.x, 5), "got ndarray; wrap arrays as "
                                                            "Trajectories"),
                        (lambda: fitted.evaluate(torch.as_tensor(traj.x)), "got Tensor"),
                        (lambda: api.load("data.npz"), "is a file, not a run directory")):
        with pytest.raises((api.RunError, api.DataError), match=words):
            call()


@pytest.mark.parametrize("model, kw, words", [
    ("warp", {"p_forcing_end": 2.0}, "p_forcing_end must be a number from 0 to 1"),
    ("warp-phys", {"substeps": 0}, "substeps must be a whole number from 1 to"),
    ("warp-phys", {"substeps": "x"}, "substeps must be"),
    ("warp-phys", {"param_weight": -1.0}, "param_weight must be a number from 0"),
    ("warp-phys", {"parallel_warmup": 3.0}, "parallel_warmup must be a number from 0 to 1"),
    ("warp-phys", {"train_steps": -3}, "train_steps must be a whole number"),
    ("warp-phys", {"patience": -1}, "patience must be a whole number from 0 to"),
    ("warp-phys", {"freeze_params": "no"}, "freeze_params must be True or False"),
    ("gru", {"layers": 0}, "layers must be a whole number from 1 to 100"),
    ("node", {"augment": -1}, "augment must be a whole number from 0 to"),
    ("classical", {"bound": -1.0}, "bound must be a number from"),
    ("warp-phys", {"lift": "logs"}, "--model warp-phys: unknown lift 'logs'"),
    ("warp-phys", {"log_floor": 0.0}, "log_floor must be a number from"),
])
def test_the_library_refuses_options_out_of_their_range(ws, model, kw, words):
    """Options the command line does not offer reach the models from Python: out of range
    they were used as given (p_forcing_end 2, a string "no" read as True) or crashed
    (substeps 0: ZeroDivisionError; an unknown lift: a ValueError from inside the model)."""
    with pytest.raises(api.RunError, match=words):
        api.fit(data="data.npz", model=model, out="new", **kw)
    assert not (ws / "new").exists()


def test_a_learning_rate_of_zero_for_a_is_accepted(ws):
    """lr_transition 0 (warp-phys's default: A stays as initialised) was refused when given."""
    api.fit(data="data.npz", model="warp", out="new", lr_transition=0.0, epochs=1, context=5,
            width=4, batch_size=8, figures=False, progress=False)
    with pytest.raises(api.RunError, match="--lr-transition must be a positive"):
        api.fit(data="data.npz", model="warp", out="new2", lr_transition=-1e-3)


@pytest.mark.parametrize("edit, words", [
    ({"context": "abc"}, "context 'abc' is not a whole number"),
    ({"minmax": "x"}, "minmax is not two finite numbers"),
    ({"minmax": [None, 1.0]}, "minmax is not two finite numbers"),
    ({"state_std": [1.0]}, "state_std is not 2 finite numbers"),
    ({"state_std": [0.0, 1.0]}, "state_std is not positive"),
    ({"identifiable_ranges": {"k/m": "x"}}, "identifiable_ranges is not a mapping"),
    ({"system": 5}, "system 5 is not text"),
    ({"options": []}, "options is not a mapping"),
])
def test_a_checkpoint_with_an_edited_run_configuration_is_refused(ws, capsys, edit, words):
    """model.pt carries the run's configuration; edited or damaged, it gave tracebacks
    (ValueError, TypeError, a reshape error) in evaluate and predict."""
    state = checkpoint.load(ws / "run" / "model.pt")
    info = json.loads(state["info"])
    assert len(info["state_std"]) == 2
    shutil.copytree(ws / "run", ws / "edited_info")
    checkpoint.save({**state, "info": json.dumps({**info, **edit})},
                    ws / "edited_info" / "model.pt")
    for argv in (["evaluate", "edited_info", "--data", "data.npz"], [*PREDICT[:1], "edited_info",
                                                                      *PREDICT[2:], "--out",
                                                                      "new.npz"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and "re-run `warpphys fit`" in err
    assert not (ws / "new.npz").exists()


def test_the_library_predict_never_overwrites_its_input_and_asks_before_replacing(ws):
    """api.predict wrote over any existing file, its own input included (the command line
    refused both); now the input never, another file only with force=True."""
    before = checksums(ws)
    for kw, words in (({"out": "data.npz"}, "is the input file"),
                      ({"out": "data.npz", "force": True}, "is the input file"),
                      ({"out": "pred.npz"}, "exists already"),
                      ({"out": np.zeros(2)}, "out must be the path of an .npz file")):
        with pytest.raises(api.RunError, match=words):
            api.predict("run", "data.npz", 5, 3, **kw)
    with pytest.raises(api.RunError, match="data must be the path of an .npz file"):
        api.evaluate("run", np.zeros((2, 8, 2)))
    assert checksums(ws) == before
    api.predict("run", "data.npz", 5, 3, "pred.npz", force=True)
    assert Trajectories.load("pred.npz").n_times == 8


def test_parameter_jobs_of_a_black_box_say_what_they_need(ws):
    """refine, recover_params and predict_refined of a black-box run raised a TypeError from
    inside its root; now one error names the model and what to fit."""
    fitted = api.load("run")  # (a black-box warp run)
    traj = Trajectories.load("data.npz")
    for call in (lambda: fitted.refine(traj, 5), lambda: fitted.recover_params(traj, 5),
                 lambda: fitted.predict_refined(traj, 5)):
        with pytest.raises(api.RunError, match="model 'warp' has none; fit a physics model"):
            call()


def test_refinement_iterations_are_a_whole_number(tmp_path):
    fitted = api.fit(system="pendulum", epochs=1, n_train=16, fresh_n=32, out=tmp_path / "run",
                     figures=False, progress=False)
    from warpphys.data import simulate

    traj = simulate("pendulum", 4, "test", 3)
    for bad, words in ((-1, "iterations must be from 0 to 1000"), (1.5, "whole number")):
        with pytest.raises(api.DataError, match=words):
            fitted.refine(traj, 5, iterations=bad)
    assert fitted.refine(traj, 5, iterations=0)[0].shape == (4, 2)  # the amortised estimates


@pytest.mark.parametrize("edit", [{"epoch": "x"}, {"epoch": -5}, {"stale": "x"},
                                  {"best_val": "x"}, {"history": [1]}, {"optimizer": {}},
                                  {"generator": torch.zeros(3)},
                                  {"best_state": {"x": torch.zeros(1)}}])
def test_a_damaged_training_checkpoint_is_refused_and_the_run_left_as_it_was(ws, capsys, edit):
    """Fields of last.pt that were edited or damaged gave tracebacks (ValueError, TypeError,
    KeyError, RuntimeError) on --resume, after config.json had been rewritten, so that the
    run no longer resumed at all; a negative epoch count trained on."""
    state = checkpoint.load(ws / "run" / "last.pt")
    shutil.copytree(ws / "run", ws / "damaged")
    checkpoint.save({**state, **edit}, ws / "damaged" / "last.pt")
    before = checksums(ws / "damaged")
    assert cli.main(["fit", "--resume", "damaged", "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "damaged or edited" in err and "last.pt" in err
    assert checksums(ws / "damaged") == before


def test_a_resume_stopped_before_its_first_checkpoint_can_be_resumed_again(ws, capsys):
    """--resume --epochs N records N in config.json at once; if that resume is stopped before
    it writes a checkpoint, the epochs of config.json and last.pt differ: that alone is no
    edit."""
    config = json.loads((ws / "run" / "config.json").read_text())
    config["options"]["epochs"] = 9
    (ws / "run" / "config.json").write_text(json.dumps(config))
    assert cli.main(["fit", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert json.loads((ws / "run" / "config.json").read_text())["options"]["epochs"] == 2


def test_numpy_integers_are_welcome_where_counts_are_asked(ws):
    fitted = api.fit(data="data.npz", model="warp", out="np_ints", seed=np.int64(2),
                     epochs=np.int32(1), context=np.int64(5), figures=False, progress=False)
    config = json.loads((ws / "np_ints" / "config.json").read_text())
    assert (config["seed"], config["context"], config["options"]["epochs"]) == (2, 5, 1)
    traj = Trajectories.load("data.npz")
    x_hat = fitted.predict(traj, np.int64(5), horizon=np.int64(3))
    assert x_hat.shape == (traj.n, 8, traj.dim)
    np.testing.assert_array_equal(x_hat, fitted.predict(traj, 5, horizon=3))


# -- what succeeds -------------------------------------------------------------------------------
def test_force_replaces_a_run_only_after_the_new_one_succeeded(ws, capsys, monkeypatch):
    before = checksums(ws / "run")

    def fails(*a, **kw):
        raise RuntimeError("a bug in the middle of training")

    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main([*FIT, "--data", "data.npz", "--out", "run", "--force", "--seed", "4"])
    assert checksums(ws / "run") == before
    assert sorted(p.name for p in ws.iterdir() if p.name.startswith(".")) == []
    monkeypatch.setattr(Trainer, "fit", fit)
    assert cli.main([*FIT, "--data", "data.npz", "--out", "run", "--force", "--seed", "4"]) == 0
    assert api.load(ws / "run").info["seed"] == 4
    assert json.loads(capsys.readouterr().out)["run_dir"] == "run"
    assert sorted(p.name for p in ws.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("force", [False, True])
def test_ctrl_c_during_fit_says_where_the_checkpoint_is(force, ws, capsys, monkeypatch):
    save = Trainer._save

    def save_then_interrupt(self):
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_interrupt)
    out = "run" if force else "new"
    before = checksums(ws / "run")
    rc = cli.main([*FIT, "--data", "data.npz", "--out", out, *(["--force"] if force else [])])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "last checkpoint" in err and "--resume" in err
    resume_dir = err.split("--resume ")[1].strip().rstrip("`")
    assert Path(resume_dir, "last.pt").exists()
    if force:
        assert checksums(ws / "run") == before and "is unchanged" in err
    else:
        assert resume_dir == "new"
    monkeypatch.setattr(Trainer, "_save", save)
    assert cli.main(["fit", "--resume", resume_dir, "--quiet", "--no-figures"]) == 0
    assert json.loads((Path(resume_dir) / "config.json").read_text())["status"] == "completed"


def test_resume_extends_training_with_epochs_and_keeps_the_test_data(ws, capsys):
    with np.load(ws / "data.npz") as f:
        variant(ws / "data.npz", ws / "test.npz", x=f["x"][:5], params=f["params"][:5])
    assert cli.main([*FIT, "--data", "data.npz", "--test-data", "test.npz", "--out", "r"]) == 0
    config = json.loads((ws / "r" / "config.json").read_text())
    assert config["test_data"] == "test.npz" and config["options"]["epochs"] == 1
    assert config["max_seconds"] is None
    assert cli.main(["fit", "--resume", "r", "--epochs", "2", "--quiet", "--no-figures"]) == 0
    config = json.loads((ws / "r" / "config.json").read_text())
    assert config["options"]["epochs"] == 2 and config["epochs_run"] == 2
    assert json.loads((ws / "r" / "metrics.json").read_text())["n_trajectories"] == 5


def test_a_corrupt_metrics_json_does_not_block_evaluate(ws, capsys):
    (ws / "run" / "metrics.json").write_text("{ not json")
    assert cli.main(["evaluate", "run", "--data", "data.npz"]) == 0
    printed = capsys.readouterr()
    assert "test_mse" in json.loads(printed.out)
    assert printed.err.startswith("warpphys evaluate: warning: ignoring ") and \
        "metrics.json" in printed.err


def test_json_is_strict_non_finite_numbers_become_null(tmp_path):
    from warpphys.rundir import write_json

    write_json({"test_mse": float("nan"), "drift": [np.float64("inf"), 1.0]}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()

    def no_constants(name):
        raise AssertionError(f"{name} in strict JSON")

    assert json.loads(text, parse_constant=no_constants) == {"test_mse": None,
                                                             "drift": [None, 1.0]}
    assert json.loads(cli._json({"a": float("-inf")}), parse_constant=no_constants) == {
        "a": None}


def test_a_bytes_system_key_is_read_as_text(ws):
    path = variant(ws / "data.npz", ws / "b.npz", system=np.array(b"spring_mass"),
                   param_names=np.array([b"m", b"k", b"c"]))
    traj = Trajectories.load(path)
    assert traj.system == "spring_mass" and traj.param_names == ("m", "k", "c")


def test_only_the_keys_of_the_format_are_read(ws, monkeypatch):
    # an ignored key whose header claims 10^12 elements is neither read nor a problem
    big = huge_header_file(ws / "data.npz", ws / "big.npz")
    import zipfile

    with zipfile.ZipFile(big, "a") as z, z.open("notes.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**12,)})
    good = variant(ws / "data.npz", ws / "good.npz")
    with zipfile.ZipFile(good, "a") as z, z.open("notes.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**12,)})
    with pytest.warns(UserWarning, match="ignoring unknown keys"):
        assert Trajectories.load(good).n == 12


def test_unix_timestamps_predict_like_times_from_zero(ws):
    fitted = api.load(ws / "run")
    traj = Trajectories.load(ws / "data.npz")
    shifted = Trajectories(t=traj.t + 1.7e9, x=traj.x)
    np.testing.assert_allclose(fitted.predict(shifted, 5, 10), fitted.predict(traj, 5, 10),
                               rtol=1e-6, atol=1e-9)
    x0, t0 = api._tensors(traj, "cpu")
    x1, t1 = api._tensors(shifted, "cpu")
    torch.testing.assert_close(t1, t0)  # the models see the same times


def test_output_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        from warpphys.data import simulate

        out = simulate("spring_mass", n=2).save(tmp_path / "s.npz")
        from warpphys.rundir import write_json

        write_json({"a": 1}, tmp_path / "c.json")
        checkpoint.save({"kind": "model"}, tmp_path / "m.pt")
    finally:
        os.umask(old)
    for p in (out, tmp_path / "c.json", tmp_path / "m.pt"):
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_populations_far_below_zero_are_warned_of_and_noise_is_not():
    """A Lotka-Volterra file of standardised (centred) states trained silently into a
    meaningless fit (parameter error 100%); observation noise on small populations dips a
    little below zero, and passes."""
    import warnings

    import systems
    from warpphys.data import Trajectories, add_noise

    sys_ = systems.get_system("lotka_volterra")
    clean = Trajectories.from_simulation(systems.sample("lotka_volterra", 16, seed=4))
    centred = Trajectories(t=clean.t, x=clean.x - clean.x.mean((0, 1)), params=clean.params,
                           param_names=clean.param_names, state_names=clean.state_names)
    with pytest.warns(UserWarning, match=r"prey to -0\.\d+ \(0\.\d+ of its std below 0\), "
                                         r"predator .* give them in physical units"):
        fitted.check_model_data(centred, sys_, "--data 'f.npz'")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.check_model_data(add_noise(clean, 0.01, seed=1), sys_, "--data 'f.npz'")
        fitted.check_model_data(clean, sys_, "--data 'f.npz'")


def test_rollouts_that_overflow_are_reported_not_only_nulled():
    """A Lotka-Volterra file whose populations are a million times what its rates allow made
    every refined rollout overflow: test_mse was null, with no word of why."""
    import warnings

    import systems
    from warpphys.fitted import _warn_non_finite

    sys_ = systems.get_system("lotka_volterra")
    rolled = np.ones((4, 6, 2))
    rolled[1, 3, 0] = np.inf
    rolled[2, 5, 1] = np.nan
    with pytest.warns(UserWarning, match=r"^2 of 4 refined rollouts overflowed .* null: the data "
                                         r"may not follow lotka_volterra's equations \(compare"):
        _warn_non_finite(rolled, "refined", sys_)
    with pytest.warns(UserWarning, match=r"^2 of 4 rollouts overflowed .* follow the model$"):
        _warn_non_finite(rolled, "", None)  # a black box
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_non_finite(np.ones((4, 6, 2)), "refined", sys_)


def test_data_sampled_at_another_rate_than_training_are_warned_of(ws):
    """A file whose times count samples (0, 1, 2, ...) where training used seconds: evaluate
    and predict ran silently, though WARP's filters turn by fixed angles per step."""
    import warnings

    from warpphys.data import Trajectories

    fitted = api.load("run")
    traj = Trajectories.load("data.npz")
    fast = Trajectories(t=np.arange(traj.n_times, dtype=float), x=traj.x)
    words = r"sampled every 1 \(median\), [\d.]+x the training data's .* resample the data to it"
    with pytest.warns(UserWarning, match=words):
        fitted.evaluate(fast, context=5)
    with pytest.warns(UserWarning, match=words):
        fitted.predict(fast, 5, horizon=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(traj, 5, horizon=2)  # the training spacing: no warning
