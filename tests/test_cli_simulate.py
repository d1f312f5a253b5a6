"""`warpphys simulate`: every system and preset, parameter ranges, and clear usage errors.

Usage errors exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import systems
from warpphys import Trajectories, cli


def simulate(*args: str) -> int:
    return cli.main(["simulate", *args])


@pytest.mark.parametrize("name", systems.names())
def test_simulate_writes_a_valid_file_for_every_system(name, tmp_path, capsys):
    out = tmp_path / f"{name}.npz"
    assert simulate("--system", name, "--n", "3", "--seed", "1", "--out", str(out)) == 0
    summary = json.loads(capsys.readouterr().out)
    tr = Trajectories.load(out, system=name)
    system = systems.get_system(name)
    assert tr.x.shape == (3, system.default.n_steps, system.dim)
    assert tr.system == name and tr.param_names == system.param_names
    assert tr.state_names == system.state_names
    assert summary["n"] == 3 and summary["system"] == name and summary["out"] == str(out)


@pytest.mark.parametrize("preset, system", [("msd", "spring_mass"), ("msd-zero", "spring_mass"),
                                            ("lv", "lotka_volterra")])
def test_simulate_writes_every_preset(preset, system, tmp_path):
    out = tmp_path / f"{preset}.npz"
    assert simulate("--preset", preset, "--n", "2", "--split", "test", "--out", str(out)) == 0
    tr = Trajectories.load(out, system=system)
    assert tr.x.shape == (2, 256, 2)
    lo_hi = systems.PRESETS[preset].test_ranges
    for j, name in enumerate(tr.param_names):
        assert np.all((tr.params[:, j] >= lo_hi[name][0]) & (tr.params[:, j] <= lo_hi[name][1]))


def test_preset_with_its_own_system_is_accepted(tmp_path):
    out = tmp_path / "msd.npz"
    assert simulate("--system", "spring_mass", "--preset", "msd", "--n", "1",
                    "--out", str(out)) == 0


def test_seed_makes_files_reproducible(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for out in (a, b):
        assert simulate("--system", "pendulum", "--n", "2", "--seed", "7", "--out", str(out)) == 0
    np.testing.assert_array_equal(Trajectories.load(a).x, Trajectories.load(b).x)


def test_range_overrides_the_sampling_range(tmp_path):
    out = tmp_path / "r.npz"
    assert simulate("--system", "spring_mass", "--n", "16", "--split", "val",
                    "--range", "k=5:6", "--range", "c=0:0", "--out", str(out)) == 0
    tr = Trajectories.load(out)
    m, k, c = tr.params.T
    assert np.all((k >= 5) & (k <= 6)) and np.all(c == 0)
    lo, hi = systems.MSD.train_ranges["m"]  # the others keep the split's ranges
    assert np.all((m >= lo) & (m <= hi))


# -- usage errors: code 2, one clear line, no traceback ------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--system", "pendulm"], "unknown system 'pendulm'; choose one of: "
                                  + ", ".join(systems.names())),
        (["--preset", "msd3"], "unknown preset 'msd3'; choose one of: msd, msd-zero, lv"),
        (["--system", "pendulum", "--preset", "lv"], "preset 'lv' is for system"),
        ([], "name a system with --system"),
        (["--system", "spring_mass", "--range", "c=-0.1:0.2"], "'c' starts at -0.1, below its "
                                                               "physical minimum"),
        (["--system", "spring_mass", "--range", "m=0:1"], "'m' starts at 0.0"),
        (["--system", "spring_mass", "--range", "k=5:1"], "is empty"),
        (["--system", "spring_mass", "--range", "k=5"], "not of the form NAME=LO:HI"),
        (["--system", "spring_mass", "--range", "k=a:b"], "not of the form NAME=LO:HI"),
        (["--system", "spring_mass", "--range", "=1:2"], "not of the form NAME=LO:HI"),
        (["--system", "spring_mass", "--range", "stiffness=1:2"], "no parameter 'stiffness'"),
        (["--system", "pendulum", "--device", "tpu"], "unknown device 'tpu'"),
        (["--system", "pendulum", "--method", "rk4", "--step-size", "1e-9"],
         "would take 6e+09 steps"),
        (["--system", "pendulum", "--step-size", "0.01"], "step_size sets fixed-step methods"),
        (["--system", "pendulum", "--method", "rk4", "--rtol", "1e-3"],
         "rtol/atol set the accuracy of adaptive methods"),
    ],
)
def test_bad_requests_exit_2_with_a_message(args, message, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert simulate(*args, "--n", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("warpphys simulate: error: ") and message in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("n", ["0", "-3", "two"])
def test_non_positive_n_exits_2(n, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        simulate("--system", "pendulum", "--n", n, "--out", str(tmp_path / "x.npz"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --n:" in err and "positive integer" in err and "Traceback" not in err


def test_bad_out_exits_2(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "folder.npz").mkdir()
    cases = {
        str(tmp_path / "x.csv"): "--out must name an .npz file",
        str(tmp_path / "a_file" / "x.npz"): "is a file",
        str(tmp_path / "folder.npz"): "is a folder",
    }
    for out, message in cases.items():
        assert simulate("--system", "pendulum", "--n", "1", "--out", out) == 2
        assert message in capsys.readouterr().err


def test_missing_out_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        simulate("--system", "pendulum")
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_exits_2(tmp_path, capsys):
    assert simulate("--system", "pendulum", "--device", "cuda", "--n", "1",
                    "--out", str(tmp_path / "x.npz")) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_command_line_in_a_subprocess(tmp_path):
    # The real process: exit codes, stdout JSON, stderr without traceback.
    out = tmp_path / "p.npz"
    ok = subprocess.run(
        [sys.executable, "-m", "warpphys", "simulate", "--system", "pendulum", "--n", "2",
         "--out", str(out)], capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n"] == 2 and Trajectories.load(out).n == 2
    bad = subprocess.run(
        [sys.executable, "-m", "warpphys", "simulate", "--system", "planets",
         "--out", str(tmp_path / "q.npz")], capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2
    assert "unknown system 'planets'" in bad.stderr and "Traceback" not in bad.stderr


def test_version_names_the_package_and_its_numerical_stack(capsys):
    import warpphys
    from warpphys import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"warpphys {warpphys.__version__} (torch ") and "torchdiffeq" in out


def test_a_warning_is_one_line_naming_the_command(tmp_path, capsys):
    from warpphys import cli

    assert cli.main(["simulate", "--system", "spring_mass", "--n", "2", "--rtol", "1e-3",
                     "--out", str(tmp_path / "s.npz")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warpphys simulate: warning: spring_mass is solved by its closed form, exact "
                   "to round-off and faster than any tolerance: rtol/atol are not used (method "
                   "dopri5 would use them)"]


@pytest.mark.parametrize("method", ["rk4", "dopri8_fixed"])
def test_step_size_chooses_the_fixed_step(method, tmp_path):
    out = tmp_path / "x.npz"
    assert simulate("--system", "pendulum", "--n", "3", "--method", method, "--step-size",
                    "0.0625", "--out", str(out)) == 0
    want = systems.sample("pendulum", 3, method=method, step_size=0.0625)
    np.testing.assert_array_equal(Trajectories.load(out).x, want.x.numpy())
    finer = systems.sample("pendulum", 3, method=method, step_size=0.0625 / 4)
    assert not np.array_equal(want.x.numpy(), finer.x.numpy())
