"""Trajectory files (.npz): round trips, atomic writes, and every rule a broken file can break.

Each refusal is a ``DataError`` whose message names the rule, so a user knows what to fix.
"""

from __future__ import annotations

import builtins
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import systems
from warpphys import DataError, Trajectories
from warpphys import data as data_mod

RNG = np.random.default_rng(0)


def arrays(n=3, T=5, d=2, p=3):
    return {"t": np.linspace(0.0, 1.0, T), "x": RNG.normal(size=(n, T, d)),
            "params": RNG.uniform(0.1, 1.0, size=(n, p))}


def write(path: Path, **arrs) -> Path:
    np.savez(path, **arrs)
    return path


# -- round trips ---------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_every_key(tmp_path):
    a = arrays()
    tr = Trajectories(
        t=a["t"], x=a["x"], params=a["params"], state_names=("x", "v"),
        param_names=("m", "k", "c"), system="spring_mass",
    )
    back = Trajectories.load(tr.save(tmp_path / "sub" / "traj.npz"))
    np.testing.assert_array_equal(back.t, tr.t)
    np.testing.assert_array_equal(back.x, tr.x)
    np.testing.assert_array_equal(back.params, tr.params)
    assert back.state_names == ("x", "v") and back.param_names == ("m", "k", "c")
    assert back.system == "spring_mass"


def test_simulated_data_round_trip(tmp_path):
    tr = data_mod.simulate("pendulum", 3, "val", seed=2)
    back = Trajectories.load(tr.save(tmp_path / "p.npz"), system="pendulum")
    np.testing.assert_array_equal(back.x, tr.x)
    assert back.param_names == ("length", "damping") and back.state_names == ("theta", "omega")
    assert back.system_params(systems.get_system("pendulum")).shape == (3, 2)


def test_a_users_file_with_only_t_and_x_loads(tmp_path):
    path = write(tmp_path / "mine.npz", t=np.arange(4.0), x=np.ones((2, 4, 2), dtype=np.float32))
    tr = Trajectories.load(path, system="pendulum")
    assert tr.x.dtype == np.float64 and tr.params is None and tr.system is None
    assert tr.system_params(systems.get_system("pendulum")) is None


def test_unknown_keys_are_ignored_with_a_warning(tmp_path):
    path = write(tmp_path / "extra.npz", t=np.arange(3.0), x=np.ones((1, 3, 2)), notes=np.ones(2))
    with pytest.warns(UserWarning, match="ignoring unknown keys"):
        Trajectories.load(path)


def test_save_is_atomic_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.npz"
    Trajectories(**arrays()).save(path)
    before = path.read_bytes()

    def broken_savez(fh, **arrs):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(data_mod.np, "savez", broken_savez)
    with pytest.raises(DataError, match="cannot write .*disk full"):
        Trajectories(**arrays(n=5)).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]  # no temporary left


def test_save_refuses_a_name_without_npz(tmp_path):
    with pytest.raises(DataError, match="end in .npz"):
        Trajectories(**arrays()).save(tmp_path / "traj.npy")


# -- refusals: what the file holds ----------------------------------------------------------------
@pytest.mark.parametrize(
    "change, rule",
    [
        ({"x": None}, r"has no array 'x' \(keys: \['params', 't'\]\)"),
        ({"t": None}, "has no array 't'"),
        ({"x": np.ones((5, 2))}, "'x' must have rank 3"),
        ({"x": np.ones((1, 3, 5, 2))}, "'x' must have rank 3"),
        ({"t": np.ones((5, 1))}, "'t' must have rank 1"),
        ({"t": np.linspace(0, 1, 4)}, "'t' has 4 times but 'x' has 5"),
        ({"x": np.ones((0, 5, 2))}, "'x' is empty"),
        ({"t": np.array([0.0]), "x": np.ones((3, 1, 2))}, "at least 2 time steps"),
        ({"t": np.array([0.0, 0.1, 0.1, 0.3, 0.4])}, "strictly increasing; t\\[1\\]"),
        ({"t": np.array([0.0, 0.2, 0.1, 0.3, 0.4])}, "strictly increasing"),
        ({"t": np.array([0.0, 0.1, np.nan, 0.3, 0.4])}, "'t' contains NaN"),
        ({"x": np.where(np.arange(5)[None, :, None] == 2, np.nan, np.ones((3, 5, 2)))},
         "'x' contains NaN or infinite values \\(first at trajectory 0, step 2\\)"),
        ({"x": np.full((3, 5, 2), np.inf)}, "'x' contains NaN or infinite"),
        ({"params": np.ones((2, 3))}, "'params' must have shape \\(N, p\\) with N = 3"),
        ({"params": np.ones(3)}, "'params' must have shape \\(N, p\\)"),
        ({"param_names": np.array(["m", "k"])}, "'param_names' has 2 names for 3"),
        ({"state_names": np.array(["x", "v", "a"])}, "'state_names' has 3 names for d = 2"),
        ({"x": np.array(["a"] * 30).reshape(3, 5, 2)}, "'x' must hold real numbers"),
        ({"x": np.ones((3, 5, 2), dtype=complex)}, "'x' must hold real numbers"),
        ({"system": np.array("planets")}, "unknown system 'planets'"),
        ({"x": np.ones((3, 5, 3)), "system": np.array("pendulum")},
         "state size d = 3 does not match system 'pendulum'"),
    ],
)
def test_load_refuses_a_broken_file_naming_the_rule(tmp_path, change, rule):
    arrs = arrays(n=3, T=5, d=2, p=3)
    arrs.update(change)
    path = write(tmp_path / "bad.npz", **{k: v for k, v in arrs.items() if v is not None})
    with pytest.raises(DataError, match=rule) as err:
        Trajectories.load(path)
    assert "bad.npz" in str(err.value)  # the message says which file


def test_state_size_must_match_the_system_asked_for(tmp_path):
    path = write(tmp_path / "d3.npz", t=np.arange(3.0), x=np.ones((2, 3, 3)))
    Trajectories.load(path)  # fine without a system
    with pytest.raises(DataError, match="d = 3 does not match system 'lotka_volterra'"):
        Trajectories.load(path, system="lotka_volterra")


def test_declared_system_must_match_the_system_asked_for(tmp_path):
    path = write(tmp_path / "p.npz", t=np.arange(3.0), x=np.ones((2, 3, 2)),
                 system=np.array("pendulum"))
    with pytest.raises(DataError, match="declares system 'pendulum' but 'spring_mass'"):
        Trajectories.load(path, system="spring_mass")


def test_constructing_trajectories_validates_too():
    with pytest.raises(DataError, match="strictly increasing"):
        Trajectories(t=[0.0, 0.0, 1.0], x=np.ones((1, 3, 2)))
    with pytest.raises(DataError, match="rank 3"):
        Trajectories(**arrays()).subset(0)  # one trajectory must stay (1, T, d)


# -- refusals: what the file is -------------------------------------------------------------------
def test_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Trajectories.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize(
    "content", [b"", b"not a zip file at all", b"PK\x03\x04" + b"\x00" * 40],
    ids=["empty", "text", "broken-zip"],
)
def test_corrupt_file_is_refused(tmp_path, content):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable .npz trajectory file"):
        Trajectories.load(path)


def test_truncated_archive_is_refused(tmp_path):
    path = Trajectories(**arrays(n=50, T=40)).save(tmp_path / "cut.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable .npz"):
        Trajectories.load(path)


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.ones((2, 3)))
    with pytest.raises(DataError, match=r"single array of shape \(2, 3\), not an .npz archive"):
        Trajectories.load(path)


def _run_suggested_command(message: str, cwd: Path) -> None:
    import shlex
    import subprocess
    import sys

    line = message[message.index("python -c"):].split('"')
    code = line[1]
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)
    assert shlex.split(f'python -c "{code}"')[2] == code  # (a line a shell runs as it is)


def test_a_bare_array_of_states_is_refused_with_the_line_that_converts_it(tmp_path):
    """The WARP authors' MSD files are bare .npy arrays (N, 256, 2), sampled evenly on [0, 1];
    the refusal says so and gives a line that writes a trajectory file; it works as given."""
    x = np.random.default_rng(0).normal(size=(4, 6, 2))
    np.save(tmp_path / "train.npy", x)
    with pytest.raises(DataError, match=r"shape \(4, 6, 2\) and no sample times") as err:
        Trajectories.load(tmp_path / "train.npy")
    _run_suggested_command(str(err.value), tmp_path)
    traj = Trajectories.load(tmp_path / "train_traj.npz")
    np.testing.assert_array_equal(traj.x, x)
    np.testing.assert_allclose(traj.t, np.linspace(0, 1, 6))
    # an archive of other names (the authors' Lotka-Volterra files: 'full', 'clipped')
    np.savez(tmp_path / "lv.npz", states=x)
    with pytest.raises(DataError, match="no array 'x'.*if 'states' holds the states") as err:
        Trajectories.load(tmp_path / "lv.npz")
    _run_suggested_command(str(err.value), tmp_path)
    np.testing.assert_array_equal(Trajectories.load(tmp_path / "lv_traj.npz").x, x)


def test_an_archive_of_several_state_arrays_names_each_with_its_shape(tmp_path):
    # the WARP authors' Lotka-Volterra files hold 'full' and 'clipped' (N, T, d) arrays
    x = np.ones((4, 6, 2))
    np.savez(tmp_path / "lv.npz", full=x, clipped=x, mask=np.ones((4, 6)))
    with pytest.raises(DataError) as err:
        Trajectories.load(tmp_path / "lv.npz")
    message = str(err.value)
    assert "'clipped' has shape (4, 6, 2); 'full' has shape (4, 6, 2)" in message
    assert "'mask' has shape" not in message  # not shaped like states
    assert "check which holds the states" in message


def test_an_unreadable_extra_member_does_not_stop_a_valid_file(tmp_path):
    path = tmp_path / "extra.npz"
    np.savez(path, t=np.linspace(0, 1, 5), x=np.ones((2, 5, 2)))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("junk.npy", b"not an array header")
    with pytest.warns(UserWarning, match="ignoring unknown keys"):
        traj = Trajectories.load(path)
    assert traj.x.shape == (2, 5, 2)


class _Payload:
    """Unpickling this object would print a marker: it must never be unpickled."""

    def __reduce__(self):
        return (builtins.print, ("UNPICKLED",))


def test_pickled_object_arrays_are_never_loaded(tmp_path, capsys, monkeypatch):
    path = tmp_path / "pickle.npz"
    np.savez(path, t=np.arange(3.0), x=np.array([_Payload()], dtype=object))
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(data_mod.np, "load", spy)
    with pytest.raises(DataError, match="pickled Python objects, which are never loaded"):
        Trajectories.load(path)
    assert calls == [False]
    assert "UNPICKLED" not in capsys.readouterr().out


# -- parameters matched by name -------------------------------------------------------------------
SPRING = systems.get_system("spring_mass")


def test_system_params_matches_reordered_columns_by_name():
    p = np.array([[0.1, 0.02, 4.0], [0.2, 0.03, 5.0]])  # columns c, m, k
    tr = Trajectories(t=np.arange(3.0), x=np.ones((2, 3, 2)), params=p, param_names=("c", "m", "k"))
    np.testing.assert_array_equal(tr.system_params(SPRING), p[:, [1, 2, 0]])


def test_system_params_ignores_extra_columns():
    p = np.array([[7.0, 0.02, 4.0, 0.1]])
    tr = Trajectories(t=np.arange(3.0), x=np.ones((1, 3, 2)), params=p,
                      param_names=("temperature", "m", "k", "c"))
    np.testing.assert_array_equal(tr.system_params(SPRING), p[:, 1:])


def test_unmatched_param_names_warn_and_give_none():
    tr = Trajectories(t=np.arange(3.0), x=np.ones((1, 3, 2)), params=np.ones((1, 2)),
                      param_names=("mass", "stiffness"))
    with pytest.warns(UserWarning, match=r"lack \['m', 'k', 'c'\]"):
        assert tr.system_params(SPRING) is None


def test_unnamed_params_are_used_only_when_the_count_matches():
    ok = Trajectories(t=np.arange(3.0), x=np.ones((1, 3, 2)), params=np.ones((1, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ok.system_params(SPRING).shape == (1, 3)
    wrong = Trajectories(t=np.arange(3.0), x=np.ones((1, 3, 2)), params=np.ones((1, 2)))
    with pytest.warns(UserWarning, match="no param_names"):
        assert wrong.system_params(SPRING) is None


# -- the library entry point ---------------------------------------------------------------------
def test_data_simulate_takes_parameter_ranges():
    tr = data_mod.simulate("spring_mass", 8, "train", ranges={"k": (20.0, 21.0)})
    k = tr.system_params(SPRING)[:, 1]
    assert np.all((k >= 20.0) & (k <= 21.0))
    assert tr.system == "spring_mass" and tr.x.shape == (8, 128, 2)


def test_params_missing_for_some_trajectories_are_left_out_with_a_warning(tmp_path):
    arrs = arrays(n=3, T=5, d=2, p=3)
    arrs["params"] = arrs["params"].copy()
    arrs["params"][1] = np.nan  # (the parameters of one trajectory unknown)
    path = write(tmp_path / "some.npz", **arrs)
    with pytest.warns(UserWarning, match="'params' is missing .* for 1 of 3 trajectories"):
        traj = Trajectories.load(path)
    assert traj.params is None and traj.param_names is None
    np.testing.assert_array_equal(traj.x, arrs["x"])


def test_trajectories_padded_with_nan_are_named_as_padding(tmp_path):
    arrs = arrays(n=3, T=5, d=2, p=3)
    arrs["x"] = arrs["x"].copy()
    arrs["x"][0, 3:] = np.nan
    arrs["x"][2, 4:] = np.nan
    path = write(tmp_path / "padded.npz", **arrs)
    with pytest.raises(DataError, match=r"ends in NaN in 2 of 3 trajectories \(padding.*"
                                        r"the shortest after 3 steps.*x\[:, :3\]"):
        Trajectories.load(path)


@pytest.mark.parametrize("preset, system", [("lv", "lotka_volterra"), ("msd", "spring_mass"),
                                            ("msd-zero", "spring_mass")])
def test_a_system_key_naming_a_preset_means_its_system(tmp_path, preset, system):
    arrs = arrays(n=3, T=5, d=2, p=3)
    arrs.pop("param_names", None)
    arrs.pop("params", None)
    path = write(tmp_path / "p.npz", **arrs, system=np.array(preset))
    assert Trajectories.load(path).system == system
