"""Users' own files through every model: files without parameters, with parameters under other
names or in another column order, irregular sampling, a single long trajectory, other lengths;
and the mapping of a file's parameter names onto the system's (``--param-name FILE=SYSTEM``).

Fits are tiny (1 epoch, ten short trajectories, a few units) so that the matrix runs in about a
minute on one thread. It loops over the model registry, so a new model is tested by registering
it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

import systems
from warpphys import api, registry
from warpphys.data import DataError, Trajectories, simulate
from warpphys.physics import fit_global_params

#: the system the matrix's files come from (the issue's)
SYSTEM = "pendulum"
CONTEXT = 6
#: options that keep every model tiny; a model not named here runs with its defaults
TINY = {"width": 4, "hyper_width": 8, "batch_size": 8}
TINY_MODEL = {
    "gru": {"hidden": 4},
    "lstm": {"hidden": 4},
    "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 8},
    "node": {"node_width": 8, "encoder_width": 8, "augment": 2},
}


def tiny(model: str) -> dict:
    known = set(registry.BASE_OPTIONS) | registry.model_option_names(model)
    return {k: v for k, v in {**TINY, **TINY_MODEL.get(model, {})}.items() if k in known}


def test_global_parameter_fit_works_under_no_grad():
    """Models set their data scales under ``torch.no_grad()``; the global least-squares fit (used
    when a file has no usable parameters) runs its own optimisation regardless."""
    sys_ = systems.get_system("lotka_volterra")
    tr = simulate("lotka_volterra", 2, "train", 0)
    x, t = tr.x[:, :10], tr.t[:10]
    free = fit_global_params(sys_, x, t, steps=20)
    with torch.no_grad():
        held = fit_global_params(sys_, x, t, steps=20)
    np.testing.assert_allclose(held, free, rtol=1e-12)
    assert np.all(np.abs(np.log(held)) > 0.5)  # it moved away from its start (all ones)


# -- one long trajectory -------------------------------------------------------------------------
def test_a_long_trajectory_is_cut_into_consecutive_windows_on_one_time_grid():
    t = 0.5 + 0.1 * np.arange(43)
    x = np.random.default_rng(0).normal(size=(1, 43, 2))
    tr = Trajectories(t=t, x=x, params=np.array([[2.0, 0.3]]), param_names=("length", "damping"))
    w = tr.windows(10)
    assert w.x.shape == (10, 4, 2) and w.params.shape == (10, 2)
    np.testing.assert_allclose(w.t, t[:4])  # every window starts at the file's first time
    np.testing.assert_array_equal(w.x[3], x[0, 12:16])  # window i: steps 4i .. 4i+3
    np.testing.assert_array_equal(w.params, np.repeat(tr.params, 10, axis=0))
    assert w.param_names == tr.param_names


def test_windows_refuse_irregular_sampling_and_too_short_files_naming_the_fix():
    x = np.zeros((1, 40, 2))
    irregular = np.cumsum(np.random.default_rng(0).uniform(0.05, 0.15, 40))
    with pytest.raises(DataError, match="regular sampling.*N >= 3"):
        Trajectories(t=irregular, x=x).windows(10)
    with pytest.raises(DataError, match="at least 4 steps.*N >= 3"):
        Trajectories(t=np.arange(30.0), x=np.zeros((1, 30, 2))).windows(10)


# -- users' files --------------------------------------------------------------------------------
def make_file(kind: str, system: str = SYSTEM, seed: int = 0) -> Trajectories:
    """A user's file of ``kind``, as a user would write it with ``np.savez`` (no system key).

    no-params: t and x only. unmatched-names: params under the user's own names. reordered:
    params under the system's names, columns in another order. irregular: 24 of the 96 sample
    times, drawn at random, no params. single: one long trajectory (the test split's
    twice-as-long window) with params. other-length: every 6th step over twice the default
    window (32 steps of 6 dt), with params.
    """
    sys_ = systems.get_system(system)
    if kind in ("single", "other-length"):
        sim = simulate(system, 1 if kind == "single" else 10, "test", seed)
        step = 1 if kind == "single" else 6
        return Trajectories(t=sim.t[::step], x=sim.x[:, ::step], params=sim.params,
                            param_names=sys_.param_names)
    sim = simulate(system, 10, "train", seed)
    if kind == "irregular":
        idx = np.sort(np.random.default_rng(seed).choice(sim.n_times, 24, replace=False))
        return Trajectories(t=sim.t[idx], x=sim.x[:, idx])
    t, x = sim.t[:24], sim.x[:, :24]
    if kind == "no-params":
        return Trajectories(t=t, x=x)
    if kind == "unmatched-names":
        return Trajectories(t=t, x=x, params=sim.params,
                            param_names=[f"my_{n}" for n in sys_.param_names])
    if kind == "reordered":
        return Trajectories(t=t, x=x, params=sim.params[:, ::-1],
                            param_names=sys_.param_names[::-1])
    raise ValueError(kind)


KINDS = ("no-params", "unmatched-names", "reordered", "irregular", "single", "other-length")
#: the kinds whose params can be matched to the system's parameters
USABLE = {"reordered", "single", "other-length"}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("users-files")
    return {kind: make_file(kind).save(folder / f"{kind}.npz") for kind in KINDS}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the CPUs may be shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def matrix_clock():
    """Wall time of the whole matrix, printed at its end (``pytest -s`` shows it)."""
    start = time.perf_counter()
    yield
    print(f"\nusers' files matrix: {time.perf_counter() - start:.1f} s")


def _reads_parameters(model: str) -> bool:
    """Whether ``model`` (built for SYSTEM) estimates physical parameters, i.e. needs physics."""
    sys_ = systems.get_system(SYSTEM)
    opts = registry.resolve_options(model, tiny(model))
    return bool(registry.MODELS[model](sys_.dim, sys_, opts).has_params)


@pytest.mark.parametrize("physics", ["known", "unknown"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", sorted(registry.MODELS))
def test_every_model_fits_and_evaluates_every_kind_of_users_file(
        model, kind, physics, user_files, matrix_clock, tmp_path):
    """fit (1 epoch) and evaluate run cleanly with finite metrics; parameter metrics appear
    exactly when the file's params can be matched; models that estimate physical parameters
    refuse unknown physics with a message naming --system."""
    data, out = user_files[kind], tmp_path / "run"
    system = SYSTEM if physics == "known" else None
    needs = _reads_parameters(model)
    kw = dict(data=data, system=system, model=model, epochs=1, context=CONTEXT, out=out,
              device="cpu", figures=False, progress=False, **tiny(model))
    if needs and system is None:
        with pytest.raises(api.RunError, match="--system"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the single file's windows
            api.fit(**kw)
        assert not out.exists()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = api.fit(**kw)
        metrics = api.evaluate(out, data)
    said = " ".join(str(w.message) for w in caught)
    assert run.metrics["train_status"] == "completed"
    assert np.isfinite(run.metrics["test_mse"]) and np.isfinite(metrics["test_mse"])
    assert metrics["model"] == model and metrics["n_trajectories"] == Trajectories.load(data).n
    if kind == "single":
        assert "windows" in said and run.info["n_train"] == 8
    if system is not None and kind == "unmatched-names":
        assert "ignoring params" in said
    has_param_error = "param_rel_error" in metrics
    assert has_param_error == (needs and kind in USABLE), sorted(metrics)
    if has_param_error:
        assert np.isfinite(metrics["param_rel_error_refined"])
        assert run.info["param_ranges"]


# -- the user's parameter names mapped onto the system's (--param-name FILE_NAME=SYSTEM_NAME) -----
#: spring_mass's parameters (m, k, c) as a user may call them
THEIR_NAMES = {"mass": "m", "stiffness": "k", "damping": "c"}


@pytest.fixture(scope="module")
def named_file(tmp_path_factory):
    """12 spring-mass trajectories of 24 steps, params under the user's names, in another order."""
    sim = simulate("spring_mass", 12, "train", 0)
    return Trajectories(t=sim.t[:24], x=sim.x[:, :24], params=sim.params[:, [2, 0, 1]],
                        param_names=("damping", "mass", "stiffness"),
                        ).save(tmp_path_factory.mktemp("named") / "mine.npz")


def test_loading_with_param_names_matches_the_users_columns_to_the_systems():
    sys_ = systems.get_system("spring_mass")
    p = np.array([[0.1, 2.0, 30.0]])
    tr = Trajectories(t=np.arange(3.0), x=np.zeros((1, 3, 2)), params=p,
                      param_names=("damping", "mass", "stiffness"))
    with pytest.warns(UserWarning, match="ignoring params"):
        assert tr.system_params(sys_) is None
    mapped = tr.rename_params(THEIR_NAMES, "spring_mass")
    assert mapped.param_names == ("c", "m", "k")
    np.testing.assert_array_equal(mapped.system_params(sys_), [[2.0, 30.0, 0.1]])  # (m, k, c)
    part = tr.rename_params({"mass": "m", "nothing": "k"}, "spring_mass", strict=False)
    assert part.param_names == ("damping", "m", "stiffness")  # a recorded mapping, another file


@pytest.mark.parametrize("mapping, needle", [
    ({"weight": "m"}, "not in the file's param_names"),
    ({"mass": "M"}, "not parameters of spring_mass"),
    ({"mass": "m", "stiffness": "m"}, "two names onto one"),
    ({"stiffness": "damping"}, "not parameters"),
])
def test_a_wrong_param_name_mapping_is_refused_naming_the_rule(named_file, mapping, needle):
    with pytest.raises(DataError, match=needle):
        Trajectories.load(named_file, "spring_mass", param_names=mapping)


def test_a_mapping_onto_a_name_the_file_already_has_is_refused(tmp_path):
    tr = Trajectories(t=np.arange(3.0), x=np.zeros((1, 3, 2)), params=np.ones((1, 2)),
                      param_names=("m", "mass"))
    with pytest.raises(DataError, match=r"two columns named \['m'\]"):
        tr.rename_params({"mass": "m"}, "spring_mass")


def test_mapped_names_give_parameter_metrics_recorded_for_evaluate_and_resume(named_file,
                                                                                tmp_path):
    """Exact identification (classical) on the user's columns: a wrong match would give errors
    of order one. The mapping is recorded; evaluate and --resume apply it."""
    kw = dict(data=named_file, system="spring_mass", epochs=1, context=CONTEXT, device="cpu",
              figures=False, progress=False)
    plain = api.fit(model="classical", out=tmp_path / "plain", **kw)
    assert "param_rel_error" not in plain.metrics  # the user's names match nothing
    run = api.fit(model="classical", out=tmp_path / "mapped", param_names=THEIR_NAMES, **kw)
    assert run.metrics["param_rel_error"] < 1e-3
    assert run.info["param_name_map"] == THEIR_NAMES
    again = api.evaluate(tmp_path / "mapped", named_file)  # the recorded mapping, whole file
    assert again["param_rel_error"] < 1e-3
    assert "param_rel_error" not in api.evaluate(tmp_path / "plain", named_file)
    given = api.evaluate(tmp_path / "plain", named_file, param_names=THEIR_NAMES)
    assert given["param_rel_error"] < 1e-3

    phys = api.fit(model="warp-phys", out=tmp_path / "phys", param_names=THEIR_NAMES, **kw,
                   **tiny("warp-phys"))
    (tmp_path / "phys" / api.METRICS_FILE).unlink()
    resumed = api.fit(resume=tmp_path / "phys", device="cpu", figures=False, progress=False)
    assert "param_rel_error" in resumed.metrics
    assert resumed.metrics["test_mse"] == pytest.approx(phys.metrics["test_mse"], rel=1e-6)


def test_param_name_on_the_command_line(named_file, tmp_path, capsys):
    import json

    from conftest import refused

    from warpphys import cli

    run = tmp_path / "run"
    base = ["fit", "--data", str(named_file), "--system", "spring_mass", "--model", "classical",
            "--context", str(CONTEXT), "--quiet", "--no-figures", "--device", "cpu"]
    pairs = ["--param-name", "mass=m", "--param-name", "stiffness=k", "--param-name", "damping=c"]
    assert cli.main([*base, *pairs, "--out", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["param_rel_error"] < 1e-3
    config = json.loads((run / "config.json").read_text())
    assert config["param_name_map"] == THEIR_NAMES
    assert cli.main(["evaluate", str(run), "--data", str(named_file)]) == 0
    assert json.loads(capsys.readouterr().out)["param_rel_error"] < 1e-3
    # the mapping given again, with the estimate switch: both estimates get parameter metrics
    assert cli.main(["evaluate", str(run), "--data", str(named_file), *pairs, "--estimate",
                     "amortised"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["estimate"] == "amortised"
    assert printed["param_rel_error"] == printed["param_rel_error_amortised"]
    assert printed["param_rel_error_refined"] < 1e-3

    refused(cli.main([*base, "--param-name", "weight=m", "--out", str(tmp_path / "a")]), capsys,
            "mine.npz", "'weight'", "not in the file's param_names")
    refused(cli.main([*base, "--param-name", "mass=M", "--out", str(tmp_path / "b")]), capsys,
            "not parameters of spring_mass", "'m', 'k', 'c'")
    refused(cli.main([*base, "--param-name", "mass", "--out", str(tmp_path / "c")]), capsys,
            "FILE_NAME=SYSTEM_NAME")
    refused(cli.main(["evaluate", str(run), "--data", str(named_file), "--param-name",
                      "weight=m"]), capsys, "not in the file's param_names")
    refused(cli.main(["fit", "--data", str(named_file), "--model", "warp", "--param-name",
                      "mass=m", "--out", str(tmp_path / "d"), "--quiet"]), capsys, "--system")
    assert not any((tmp_path / n).exists() for n in "abcd")
