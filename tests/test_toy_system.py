"""A fourth system needs one file and one registration: the toy exponential decay of
tests/toy_system.py, registered with ``systems.register`` and nothing else changed, goes through
the every-system physics checks, ``simulate`` (Python and command line), a 1-epoch ``fit`` of
WARP and of WARP-Phys with every physics root, and ``evaluate``.

The registration lives in a module-scoped fixture that restores the registry afterwards, so that
no other test sees the toy system. Fits are tiny (8 trajectories of 21 steps, width 4).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import test_systems_physics
import test_systems_simulate
import torch
from toy_system import DECAY, NAME

import systems
from warpphys import Trajectories, api, cli
from warpphys.data import simulate
from warpphys.roots import physics_root_names

TINY = dict(n_train=8, width=4, hyper_width=8, batch_size=8, epochs=1, device="cpu",
            figures=False, progress=False)


@pytest.fixture(scope="module")
def toy_system():
    """The toy system registered for this module's tests only."""
    before = systems.names()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(systems, "_REGISTRY", dict(systems._REGISTRY))  # restored on exit
        systems.register(DECAY)
        yield systems.get_system(NAME)
    assert systems.names() == before and NAME not in before


@pytest.fixture(scope="module")
def toy_test_file(toy_system, tmp_path_factory):
    """Test-split file of the toy system written by ``warpphys simulate``."""
    out = tmp_path_factory.mktemp("toy") / "test.npz"
    assert cli.main(["simulate", "--system", NAME, "--n", "4", "--split", "test", "--seed", "3",
                     "--out", str(out)]) == 0
    return out


def test_the_toy_system_is_listed_by_the_registry(toy_system):
    assert NAME in systems.names() and toy_system is DECAY
    assert toy_system.dim == 1 and toy_system.n_params == 1


@pytest.mark.parametrize("check", [
    test_systems_physics.test_invariant_rate_is_the_derivative_of_the_invariant_along_the_field,
    test_systems_physics.test_invariant_rate_is_never_positive,
    test_systems_physics.test_vector_field_and_invariant_agree_on_numpy_and_torch,
    test_systems_simulate.test_torch_batch_equals_scipy_reference_trajectory_by_trajectory,
    test_systems_simulate.test_simulate_refuses_negative_physical_parameters,
    test_systems_simulate.test_sample_draws_parameters_inside_the_split_ranges,
], ids=lambda f: f.__name__)
def test_every_system_check_passes_for_the_registered_toy_system(toy_system, check):
    # the checks that loop over systems.names(), run on the system registered here (their own
    # parametrisation was collected before it existed)
    check(name=NAME)


def test_python_simulate_matches_the_exact_solution(toy_system):
    sim = simulate(NAME, 4, "test", seed=0)
    proto = toy_system.default
    assert sim.x.shape == (4, len(proto.times("test")), 1)
    assert sim.t[-1] == pytest.approx(proto.t_end * proto.test_horizon)
    x = torch.as_tensor(sim.x)
    exact = toy_system.exact_solution(torch.as_tensor(sim.t), x[:, 0], torch.as_tensor(sim.params))
    # dopri5 at rtol 1e-9 (test_systems_simulate.py's docstring): 1e-7 relative allowed
    assert float((x - exact).abs().max()) < 1e-7 * float(x.abs().max())


def test_command_line_simulate_writes_a_file_of_the_toy_system(toy_test_file):
    tr = Trajectories.load(toy_test_file, system=NAME)
    assert tr.system == NAME and tr.state_names == ("x",) and tr.param_names == ("k",)
    assert tr.x.shape == (4, len(DECAY.default.times("test")), 1)
    lo, hi = DECAY.default.test_ranges["k"]
    assert np.all((tr.params >= lo) & (tr.params <= hi))


@pytest.mark.parametrize("model, root", [("warp", None)]
                         + [("warp-phys", kind) for kind in physics_root_names()])
def test_fit_and_evaluate_the_toy_system(toy_system, toy_test_file, model, root, tmp_path):
    opts = {} if root is None else {"root": root}
    run = api.fit(system=NAME, model=model, out=tmp_path / "run", **opts, **TINY)
    metrics = api.evaluate(tmp_path / "run", toy_test_file)
    assert run.metrics["train_status"] == "completed"
    for key in ("test_mse", "extrapolation_mse", "ood_mse", "invariant_drift"):
        assert np.isfinite(run.metrics[key]) and np.isfinite(metrics[key]), key
    assert metrics["model"] == model and metrics["n_trajectories"] == 4
    if model == "warp-phys":
        # clean data: refining the estimate on the context recovers k (measured <= 3e-4 for the
        # hybrid root, 1e-6 ODE, 1e-11 closed form); a root that ignored the physics would not
        assert metrics["param_rel_error_refined"] < 1e-2
        assert np.isfinite(metrics["param_rel_error"])
    else:
        assert "param_rel_error" not in metrics


def test_command_line_fit_defaults_to_warp_phys_for_the_toy_system(toy_system, tmp_path,
                                                                    capsys):
    out = tmp_path / "run"
    assert cli.main(["fit", "--system", NAME, "--epochs", "1", "--n-train", "8", "--width", "4",
                     "--quiet", "--no-figures", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "warp-phys" and np.isfinite(summary["test_mse"])
    assert json.loads((out / "config.json").read_text())["system"] == NAME
