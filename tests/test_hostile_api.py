"""A fourth hostile-input campaign, on the Python API: each case used to crash with a raw
traceback, or give garbage without a word; now refused with the problem and the fix, or
handled."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from warpphys import api
from warpphys.data import DataError, Trajectories, add_noise, simulate
from warpphys.errors import RunError


@pytest.fixture(scope="module")
def pend():
    return simulate("pendulum", 4, "test", 0)


@pytest.fixture(scope="module")
def spring_run(tmp_path_factory, user_file):
    out = tmp_path_factory.mktemp("runs") / "phys"
    api.fit(data=user_file, model="warp-phys", epochs=1, context=5, width=4, batch_size=8,
            out=out, figures=False, progress=False, device="cpu")
    return out


# -- arrays ----------------------------------------------------------------------------------------
def test_state_columns_named_in_another_order_are_put_in_the_systems_order(pend, tmp_path):
    swapped = dict(t=pend.t, x=pend.x[..., ::-1], params=pend.params,
                   param_names=np.array(pend.param_names), state_names=np.array(["omega", "theta"]))
    np.savez(tmp_path / "f.npz", **swapped, system="pendulum")
    np.savez(tmp_path / "g.npz", **swapped)
    for read in (Trajectories.load(tmp_path / "f.npz"),
                 Trajectories.load(tmp_path / "g.npz", system="pendulum")):
        np.testing.assert_array_equal(read.x, pend.x)
        assert tuple(read.state_names) == ("theta", "omega")
    # built in Python, they are refused with the line that reorders them
    fix = r"another order; reorder them with traj.reorder_states\('pendulum'\) \(x\[\.\.\., \[1, 0"
    with pytest.raises(DataError, match=fix):
        Trajectories(t=pend.t, x=pend.x[..., ::-1], state_names=("omega", "theta"),
                     system="pendulum")
    mine = Trajectories(t=pend.t, x=pend.x[..., ::-1], state_names=("omega", "theta"))
    np.testing.assert_array_equal(mine.reorder_states("pendulum").x, pend.x)
    # names of the user's own (not the system's) are left as they are
    own = Trajectories(t=pend.t, x=pend.x, state_names=("angle", "rate"))
    assert own.reorder_states("pendulum") is own


def test_negative_strides_and_masked_arrays(pend):
    view = Trajectories(t=pend.t, x=pend.x[:, :, ::-1])  # (a view, negative strides)
    assert view.x.flags["C_CONTIGUOUS"]
    x = pend.x.copy()
    x[0, 10, 0] = -999.0
    with pytest.raises(DataError, match="masked array with 1 masked entries"):
        Trajectories(t=pend.t, x=np.ma.masked_equal(x, -999.0))
    unmasked = Trajectories(t=pend.t, x=np.ma.masked_array(pend.x))
    np.testing.assert_array_equal(unmasked.x, pend.x)


def test_trajectories_changed_after_they_were_made_are_checked_again(spring_run, user_file,
                                                                      tmp_path):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    traj.x = traj.x[:, :10]  # times no longer match
    with pytest.raises(DataError, match="changed after they were made"):
        fitted.evaluate(traj, 5)
    with pytest.raises(DataError, match="not saved"):
        traj.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    traj = Trajectories.load(user_file)
    traj.x[0, 3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fitted.predict(traj, 5, 3)


def test_save_refuses_folders_and_unwritable_places_and_takes_bytes_and_home(pend, tmp_path,
                                                                               monkeypatch):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        pend.save(tmp_path / "d.npz")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot write"):
        pend.save(tmp_path / "file" / "x.npz")  # (its parent is a file)
    for bad in (None, 3):
        with pytest.raises(DataError, match="named by a path"):
            pend.save(bad)
    pend.save(bytes(tmp_path / "b.npz"))
    monkeypatch.setenv("HOME", str(tmp_path))
    pend.save("~/h.npz")
    assert (tmp_path / "b.npz").is_file() and (tmp_path / "h.npz").is_file()
    assert not (tmp_path / "~").exists()


def test_add_noise_and_windows_check_their_arguments(pend):
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            add_noise(pend, 0.01, seed=seed)
    for sigma in ("a", True, -0.1, float("nan")):
        with pytest.raises(ValueError, match="noise level"):
            add_noise(pend, sigma)
    with pytest.raises(DataError, match="takes Trajectories"):
        add_noise(pend.x, 0.01)
    for n in (0, -2, 1.5):
        with pytest.raises(DataError, match="whole number"):
            pend.windows(n)


# -- models ----------------------------------------------------------------------------------------
def test_a_pendulum_model_takes_pendulum_drag_files(tmp_path):
    """Files of a richer system pass the system it extends (the README's route for drag):
    the fit used to train and then fail on its own held-out split, leaving no metrics."""
    simulate("pendulum_drag", 24, "train", 0).save(tmp_path / "drag.npz")
    fitted = api.fit(system="pendulum", data=tmp_path / "drag.npz", epochs=1, fresh_n=16,
                     width=4, batch_size=8, out=tmp_path / "run", figures=False,
                     progress=False, device="cpu")
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert np.isfinite(fitted.metrics["test_mse"])
    drag = Trajectories.load(tmp_path / "drag.npz")
    assert np.isfinite(api.evaluate(tmp_path / "run", tmp_path / "drag.npz")["test_mse"])
    assert fitted.predict(drag, 48, 4).shape == (24, 52, 2)


def test_model_methods_make_the_data_checks_of_fit(spring_run, user_file):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    with pytest.raises(DataError, match="too large for the float32"):
        fitted.evaluate(Trajectories(t=traj.t, x=traj.x * 1e20), 5)


def test_horizons_and_estimates_are_named_as_given(spring_run, user_file):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    with pytest.raises(DataError, match="is the whole file: give a horizon"):
        fitted.predict(traj, traj.n_times)
    assert fitted.predict(traj, traj.n_times, 3).shape[1] == traj.n_times + 3
    assert fitted.predict_refined(traj, traj.n_times, 3).shape[1] == traj.n_times + 3
    from warpphys.limits import ResourceError
    with pytest.raises(ResourceError):
        fitted.predict_refined(traj, 5, 10**12)
    assert set(fitted.forecasts(traj, 5, "refined")) == {"refined"}
    with pytest.raises(RunError, match="no estimate asked for"):
        fitted.forecasts(traj, 5, [])


def test_fit_switches_out_and_numbers_given_as_text(user_file, tmp_path):
    kw = dict(data=user_file, model="warp", epochs=1, context=5, device="cpu",
              out=tmp_path / "r")
    for key, value in (("figures", "no"), ("force", "yes"), ("progress", 0)):
        with pytest.raises(RunError, match=f"{key} must be True or False"):
            api.fit(**{**kw, key: value})
    with pytest.raises(RunError, match="out .--out. is empty"):
        api.fit(**{**kw, "out": ""})
    with pytest.raises(RunError, match=r"the text '1e-3' \(convert it with float\(\)\)"):
        api.fit(**kw, lr="1e-3")
    with pytest.raises(RunError, match="must be a number of seconds, got str"):
        api.fit(**kw, max_seconds="60")
    assert not (tmp_path / "r").exists()
    from fractions import Fraction
    api.fit(**kw, lr=Fraction(1, 1000), figures=False, progress=False)
    options = json.loads((tmp_path / "r" / "config.json").read_text())["options"]
    assert options["lr"] == 0.001


def test_reading_back_a_prediction_file_warns_of_nothing(spring_run, user_file, tmp_path):
    api.predict(spring_run, user_file, 5, 3, tmp_path / "p.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trajectories.load(tmp_path / "p.npz")


def test_estimates_far_outside_the_training_ranges_point_to_the_units(spring_run, user_file):
    """Times in kiloseconds instead of seconds: k/m fitted a million times larger, which used
    to be scored without a word about units."""
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the data as trained: no warning
        fitted.evaluate(traj, 5)
    ks = Trajectories(t=traj.t / 1000, x=traj.x, params=traj.params,
                      param_names=traj.param_names)
    with pytest.warns(UserWarning, match=r"refined [kc]/m of \d+ of 12 trajectories lies more "
                                         r"than 10x outside the training range.*units"):
        fitted.evaluate(ks, 5)


def test_resume_refuses_a_data_file_replaced_since_and_finds_one_named_relatively(
        user_file, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    Trajectories.load(user_file).save(work / "data.npz")
    monkeypatch.chdir(work)
    kw = dict(figures=False, progress=False)
    api.fit(data="data.npz", model="warp", epochs=1, context=5, width=4, batch_size=8,
            device="cpu", out=tmp_path / "run", **kw)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data_file"]
    assert recorded["path"] == str(work / "data.npz") and len(recorded["sha256"]) == 64
    monkeypatch.chdir(elsewhere)  # 'data.npz' is not here: the recorded place is used
    api.fit(resume=tmp_path / "run", epochs=2, **kw)
    other = simulate("spring_mass", 12, "train", 5)
    Trajectories(t=other.t[:20], x=other.x[:, :20], system="spring_mass").save(
        work / "data.npz")
    with pytest.raises(RunError, match="has changed since .* resuming would train on other"):
        api.fit(resume=tmp_path / "run", epochs=3, **kw)


def test_score_checks_its_forecasts(spring_run, user_file):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    fc = fitted.forecasts(traj, 5)
    assert fitted.score(traj, fc, 5) == fitted.evaluate(traj, 5)
    short = fitted.forecasts(traj, 5, horizon=3)
    with pytest.raises(DataError, match=r"forecast has shape \(12, 8, 2\), the trajectories "
                                        r"\(12, 20, 2\)"):
        fitted.score(traj, short, 5)
    with pytest.raises(DataError, match="has shape"):
        fitted.score(traj.subset(slice(0, 3)), fc, 5)
    for bad in ({}, fc["refined"].x_hat):
        with pytest.raises(RunError, match="what FittedModel.forecasts returns"):
            fitted.score(traj, bad, 5)
    with pytest.raises(RunError, match="unknown estimate 'banana'"):
        fitted.score(traj, {"banana": fc["refined"]}, 5)
    with pytest.raises(DataError, match="smaller than the sequence length"):
        fitted.score(traj, fc, 500)


def test_unix_times_rounded_in_float32_are_explained():
    t = (1.7e9 + np.linspace(0, 6, 96)).astype(np.float32)
    with pytest.raises(DataError, match="round onto each other in float32"):
        Trajectories(t=t, x=np.zeros((1, 96, 2)))
    with pytest.raises(DataError, match=r"strictly increasing; t\[1\] = 2.0 is followed by "
                                        r"t\[2\] = 2.0$"):
        Trajectories(t=[1.0, 2.0, 2.0, 3.0], x=np.zeros((1, 4, 2)))


def test_errors_about_windows_of_one_long_trajectory_say_the_file_was_cut(tmp_path):
    sim = simulate("pendulum", 1, "train", 0)
    Trajectories(t=sim.t[:64], x=sim.x[:, :64], system="pendulum").save(tmp_path / "one.npz")
    with pytest.raises(DataError, match=r"the 1 trajectories of 64 steps in --data are cut "
                                        r"into windows of 6 steps"):
        api.fit(data=tmp_path / "one.npz", epochs=1, out=tmp_path / "r", figures=False,
                progress=False)


def test_undamped_data_are_not_taken_for_data_in_other_units(spring_run, tmp_path):
    fitted = api.load(spring_run)
    undamped = simulate("spring_mass", 6, "train", 3, ranges={"c": (0.0, 0.0)})
    short = Trajectories(t=undamped.t[:20], x=undamped.x[:, :20], params=undamped.params,
                         param_names=undamped.param_names, system="spring_mass")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fitted.evaluate(short, 5)
    assert not [w for w in said if "units" in str(w.message)]


def test_data_on_another_scale_or_shifted_are_warned_of(spring_run, user_file):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    with pytest.warns(UserWarning, match=r"states vary x \d+x as much, v \d+x as much"):
        fitted.evaluate(Trajectories(t=traj.t, x=traj.x * 1000), 5)
    shifted = traj.x + np.array([1000.0, 0.0])
    with pytest.warns(UserWarning, match="shifted from the training data's mean: x by"):
        fitted.evaluate(Trajectories(t=traj.t, x=shifted), 5)


def test_repeated_trajectories_in_a_data_file_are_warned_of(user_file, tmp_path):
    traj = Trajectories.load(user_file)
    twice = Trajectories(t=traj.t, x=np.concatenate([traj.x, traj.x[:4]]), system="spring_mass")
    twice.save(tmp_path / "dup.npz")
    with pytest.warns(UserWarning, match="4 of the 16 trajectories repeat others exactly"):
        api.fit(data=tmp_path / "dup.npz", model="warp", epochs=1, context=5, width=4,
                out=tmp_path / "r", figures=False, progress=False, device="cpu")


def test_contexts_beyond_the_one_pass_rollouts_box_are_warned_of(spring_run, user_file):
    fitted = api.load(spring_run)
    traj = Trajectories.load(user_file)
    far = Trajectories(t=traj.t, x=traj.x + np.array([1000.0, 0.0]))
    with pytest.warns(UserWarning, match=r"contexts of 12 of 12 trajectories leave the states "
                                         r"the one-pass rollout holds"):
        fitted.predict(far, 5, 3, estimate="amortised")


def test_the_runs_own_context_too_long_for_a_file_is_named_as_the_runs(spring_run, user_file):
    fitted = api.load(spring_run)
    short = Trajectories.load(user_file).subset(slice(0, 2))
    short = Trajectories(t=short.t[:4], x=short.x[:, :4])
    with pytest.raises(DataError, match="the run's context of 5 steps .used when none is "
                                        "given. does not fit in these trajectories of 4 steps"):
        fitted.evaluate(short)


def test_too_few_training_trajectories_are_warned_of(tmp_path):
    with pytest.warns(UserWarning, match="--n-train 2: too few trajectories"):
        api.fit(system="spring_mass", model="warp", n_train=2, epochs=1, width=4,
                out=tmp_path / "r", figures=False, progress=False, device="cpu")
