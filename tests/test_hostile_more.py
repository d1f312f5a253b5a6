"""More hostile inputs (second campaign): each is refused with one line naming the problem and
the fix, by the package's own errors (``DataError``, ``SystemInputError``), never a traceback,
a hang, or a silent default. No training here but the shared 1-epoch ``fitted_run``."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import refused, variant

import systems
from warpphys import cli
from warpphys import data as wdata
from warpphys.data import DataError, Trajectories


def _cli(argv: list[str]) -> int:
    """``warpphys ARGV`` in-process; an argparse refusal (SystemExit) as its exit code."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture
def alarm():
    """A read that blocks (a FIFO with no writer) fails after 10 s instead of hanging."""
    def timeout(*_):
        raise TimeoutError("blocked reading the path for 10 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# -- 1. paths that are not regular files ---------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_as_data_is_refused_before_it_is_opened(tmp_path, fitted_run, capsys, alarm):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"'.*fifo\.npz' is a FIFO \(named pipe\), not a regular"):
        Trajectories.load(fifo)
    rc = _cli(["evaluate", str(fitted_run), "--data", str(fifo)])
    refused(rc, capsys, "FIFO", str(fifo))


@pytest.mark.parametrize("make, kind", [
    (lambda tmp: tmp, "a folder"),
    (lambda tmp: Path(os.devnull), "a character device"),
])
def test_a_folder_or_device_as_data_is_refused_naming_it(tmp_path, make, kind, alarm):
    path = make(tmp_path)
    with pytest.raises(DataError, match=f"{kind}, not a regular file") as err:
        Trajectories.load(path)
    assert repr(str(path)) in str(err.value)


# -- 2. empty path options -------------------------------------------------------------------------
@pytest.mark.parametrize("args, option", [
    (["fit", "--data", "{data}", "--epochs", "1", "--out", ""], "--out"),
    (["fit", "--data=", "--epochs", "1"], "--data"),
    (["fit", "--data", "{data}", "--test-data", ""], "--test-data"),
    (["fit", "--resume", ""], "--resume"),
    (["simulate", "--system", "spring_mass", "--out", ""], "--out"),
    (["evaluate", "", "--data", "{data}"], "run_dir"),
    (["evaluate", "{run}", "--data", ""], "--data"),
    (["predict", "{run}", "--data", " ", "--context", "2", "--horizon", "2", "--out", "p.npz"],
     "--data"),
    (["predict", "{run}", "--data", "{data}", "--context", "2", "--horizon", "2", "--out", ""],
     "--out"),
    (["reproduce", "--study", "msd", "--out", ""], "--out"),
])
def test_an_empty_path_option_is_refused_naming_the_option(args, option, tmp_path, monkeypatch,
                                                          user_file, fitted_run, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may appear here (fit --out "": runs/...)
    argv = [a.format(data=user_file, run=fitted_run) for a in args]
    refused(_cli(argv), capsys, f"argument {option}: the path is empty")
    assert list(tmp_path.iterdir()) == []


# -- 3. the Python API of trajectory files --------------------------------------------------------
@pytest.mark.parametrize("x, words", [
    ("hello", "'x' must hold real numbers, got dtype <U5"),
    ([[[1.0, 2.0]], [[3.0]]], "'x' must be an array of real numbers"),
    (np.ones((1, 3, 2)) * 1j, "'x' must hold real numbers, got dtype complex128"),
    (np.ones((1, 3, 2), dtype=bool), "'x' must hold real numbers, got dtype bool"),
])
def test_trajectories_of_anything_but_real_numbers_are_refused(x, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        Trajectories(t=np.linspace(0, 1, 3), x=x)
    with pytest.raises(DataError, match="'params' must hold real numbers"):
        Trajectories(t=np.linspace(0, 1, 3), x=np.ones((1, 3, 2)), params=[["a", "b"]])


@pytest.mark.parametrize("path, words", [
    (None, "named by a path .* got NoneType"),
    (3, "named by a path .* got int"),
    ("", r"path is empty \(''\)"),
])
def test_load_refuses_what_is_not_a_path(path, words):
    with pytest.raises(DataError, match=words):
        Trajectories.load(path)


def test_load_takes_a_str_bytes_or_path_alike(user_file):
    for path in (str(user_file), os.fsencode(user_file), Path(user_file)):
        assert Trajectories.load(path).n == 12


@pytest.mark.parametrize("mapping, words", [
    (["m"], r"a dict such as \{'mass': 'm'"),
    ("mass=m", r"a dict such as \{'mass': 'm'"),
    ({1: "m"}, r"maps names \(text\) onto names"),
    ({"mass": 2}, r"maps names \(text\) onto names"),
])
def test_param_names_must_map_names_onto_names(user_file, mapping, words):
    with pytest.raises(DataError, match=words):
        Trajectories.load(user_file, "spring_mass", param_names=mapping)


def test_param_names_as_a_mapping_still_renames(tmp_path, user_file):
    path = variant(user_file, tmp_path / "named.npz", param_names=np.array(["mass", "k", "c"]),
                   system=None)
    traj = Trajectories.load(path, "spring_mass", param_names={"mass": "m"})
    assert traj.param_names == ("m", "k", "c")


@pytest.mark.parametrize("ranges, words", [
    ({"m": (1, 2, 3)}, r"range of 'm' must be a pair of numbers"),
    ({"m": "ab"}, r"range of 'm' must be a pair of numbers"),
    ({"m": ("low", "high")}, r"range of 'm' must be a pair of numbers"),
    ({"m": 0.1}, r"range of 'm' must be a pair of numbers"),
    ([("m", 1, 2)], "ranges must map parameter names onto"),
])
def test_simulation_ranges_must_be_pairs_of_numbers(ranges, words):
    with pytest.raises(systems.SystemInputError, match=words):
        wdata.simulate("spring_mass", 4, "train", ranges=ranges)


# -- 4. systems ----------------------------------------------------------------------------------
def test_initial_states_where_the_vector_field_overflows_are_refused_at_once():
    with pytest.raises(systems.SystemInputError, match="overflows at the initial state of "
                                                       "trajectory 0.*far too large"):
        systems.simulate("lotka_volterra", np.linspace(0, 1, 9), [[1e200, 1e200]],
                         [[1.0, 1.0, 1.0, 1.0]])


def test_a_solution_that_blows_up_midway_is_refused_not_an_assertion():
    # negative populations: prey' = prey (1 - pred), pred' = pred (prey - 1) blows up at t ~ 0.3
    with pytest.raises(systems.SystemInputError, match="blew up.*step shrank.*underflow"):
        systems.simulate("lotka_volterra", np.linspace(0, 1, 3), [[2.0, -2.0]],
                         [[1.0, 1.0, 1.0, 1.0]], method="dopri5")


@pytest.mark.parametrize("params, words", [
    ([["a", "b"]], r"params must be numbers, shape \(B, 2\)"),
    ("ab", r"params must be numbers, shape \(B, 2\)"),
    (3.0, r"params must have shape \(B, 2\) .* got \(\)"),
])
def test_simulate_refuses_parameters_that_are_not_numbers(params, words):
    with pytest.raises(systems.SystemInputError, match=words):
        systems.simulate("pendulum", np.linspace(0, 1, 9), [[1.0, 0.0]], params)
    with pytest.raises(systems.SystemInputError, match="t must be numbers"):
        systems.simulate("pendulum", ["a", "b"], [[1.0, 0.0]], [[1.0, 0.1]])


@pytest.mark.parametrize("name", systems.names())
def test_invariant_and_its_rate_refuse_states_and_parameters_of_the_wrong_size(name):
    sys_ = systems.get_system(name)
    d, p = sys_.dim, sys_.n_params
    x, params = torch.ones(3, 5, d), torch.ones(3, 1, p)
    assert sys_.invariant(x, params).shape == (3, 5)
    assert sys_.invariant_rate(x.numpy(), params.numpy()).shape == (3, 5)
    for method in (sys_.invariant, sys_.invariant_rate):
        with pytest.raises(systems.SystemInputError, match=rf"x must have shape \(\.\.\., {d}\)"
                                                           rf".*got \(3, 5, 7\)"):
            method(torch.zeros(3, 5, 7), params)
        with pytest.raises(systems.SystemInputError, match=rf"params must have shape "
                                                           rf"\(\.\.\., {p}\)"):
            method(x, torch.ones(3, 1, p + 1))


# -- 5. parameters of absurd magnitude -------------------------------------------------------------
def test_parameters_beyond_float32_training_are_refused_naming_them():
    sys_ = systems.get_system("spring_mass")
    sys_.check_params(np.array([[1e29, 4.0, 0.1]]))  # large, and still fine
    with pytest.raises(systems.SystemInputError, match=r"'m' is 1e\+300, beyond 1e\+30"):
        sys_.check_params(np.array([[0.02, 4.0, 0.1], [1e300, 4.0, 0.1]]))
    with pytest.raises(systems.SystemInputError, match=r"'k' reaches 1e\+31"):
        sys_.check_ranges({"k": (1.0, 1e31)})


def test_a_file_with_an_absurd_mass_is_refused_before_training(tmp_path, user_file, fit_cli,
                                                                capsys):
    with np.load(user_file) as f:
        params = f["params"].copy()
    params[3, 0] = 1e300
    path = variant(user_file, tmp_path / "huge.npz", params=params)
    rc = fit_cli("--data", str(path), "--out", str(tmp_path / "run"))
    refused(rc, capsys, "'m' is 1e+300", "other units")
    assert not (tmp_path / "run").exists()


# -- 6. the repair line for an archive without 'x' ------------------------------------------------
def _suggested(message: str) -> str | None:
    return message[message.index("python -c"):].split('"')[1] if "python -c" in message else None


def _run(code: str, cwd: Path) -> None:
    assert shlex.split(f'python -c "{code}"')[2] == code  # (a line a shell runs as it is)
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)


def test_an_archive_of_times_alone_asks_for_x_and_suggests_no_repair(tmp_path):
    np.savez(tmp_path / "nox.npz", t=np.linspace(0, 1, 10))
    with pytest.raises(DataError) as err:
        Trajectories.load(tmp_path / "nox.npz")
    message = str(err.value)
    assert "needs 'x' of shape (N, T, d) and 't' of shape (T,)" in message
    assert _suggested(message) is None and "holds the states" not in message, message


def test_an_archive_of_text_suggests_no_member_as_the_states(tmp_path):
    with zipfile.ZipFile(tmp_path / "readme.npz", "w") as z:
        z.writestr("readme.txt", "my data are elsewhere")
    np.savez(tmp_path / "names.npz", t=np.linspace(0, 1, 4), labels=np.array([["a", "b"]] * 4))
    for name in ("readme.npz", "names.npz"):
        with pytest.raises(DataError, match="needs 'x' of shape") as err:
            Trajectories.load(tmp_path / name)
        assert _suggested(str(err.value)) is None, str(err.value)


def test_one_trajectory_of_states_beside_t_gets_a_repair_line_that_works(tmp_path):
    t, x = np.linspace(0, 2, 7), np.random.default_rng(0).normal(size=(7, 2))
    np.savez(tmp_path / "one.npz", t=t, traj=x)
    with pytest.raises(DataError, match="if 'traj' holds one trajectory's states") as err:
        Trajectories.load(tmp_path / "one.npz")
    _run(_suggested(str(err.value)), tmp_path)
    traj = Trajectories.load(tmp_path / "one_traj.npz")
    np.testing.assert_array_equal(traj.x, x[None])
    np.testing.assert_array_equal(traj.t, t)  # the archive's own times, not [0, 1]
