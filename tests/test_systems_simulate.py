"""The batched simulator: the default adaptive path against closed forms and scipy, batch
independence, float32, and the API of ``systems.simulate`` / ``systems.sample``.

Tolerances of the default path: dopri5 with rtol 1e-9 / atol 1e-11 (float64) and step control on
the worst trajectory of the batch (max norm), so every trajectory's local error per step is below
~1e-9 of its size. Over the few hundred steps of these windows the global error stays below
~1e-8 relative (measured: <= 1.4e-9); the tests allow 1e-7.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import systems
from systems import Box, Param, Protocol, System
from systems._simulate import substep_grid

F64 = torch.float64
#: every registered system (a new one is tested by registering it before collection)
NAMES = systems.names()
# Windows long enough for about one period of the fastest OOD trajectory, short enough for CI;
# a system not named here runs over its default protocol's training window.
WINDOWS = {"pendulum": 3.0, "pendulum_drag": 3.0, "spring_mass": 0.5, "lotka_volterra": 0.3}


def window(name: str) -> float:
    return WINDOWS.get(name, systems.get_system(name).default.t_end)


def draw(name: str, n: int, seed: int = 0):
    """n parameter rows from the OOD test ranges and initial states from the default protocol."""
    system = systems.get_system(name)
    gen = torch.Generator().manual_seed(seed)
    params = systems.sample_params(system, system.default.test_ranges, n, gen)
    x0 = system.default.initial_state.sample(n, gen)
    if name == "spring_mass":  # the protocol starts every spring at (1, 0); vary it here
        x0 = x0 + torch.rand(n, 2, generator=gen, dtype=F64) - 0.5
    return system, x0, params


def rel_err(a, b):
    """Per-trajectory max |a - b| relative to the trajectory's largest |b|: (B,)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max((1, 2)) / np.abs(b).max((1, 2))


# -- the default path against references --------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_torch_batch_equals_scipy_reference_trajectory_by_trajectory(name):
    system, x0, params = draw(name, 6)
    t = torch.linspace(0, window(name), 31, dtype=F64)
    x = systems.simulate(system, t, x0, params)
    ref = systems.simulate_scipy(system, t.numpy(), x0.numpy(), params.numpy())
    # Each trajectory of the one batched torchdiffeq call matches its own solve_ivp (DOP853,
    # rtol 1e-11) to the default path's accuracy (module docstring): 1e-7 relative.
    assert x.shape == (6, 31, system.dim)
    errs = rel_err(x.numpy(), ref)
    assert np.all(errs < 1e-7), errs


def test_spring_mass_default_simulation_equals_the_closed_form():
    system, x0, params = draw("spring_mass", 32)
    t = torch.linspace(0, 1, 65, dtype=F64)
    x = systems.simulate(system, t, x0, params)
    exact = system.exact_solution(t, x0, params)
    # dopri5 at rtol 1e-9 over ~14 periods of the fastest OOD spring: measured 3.5e-10.
    assert np.all(rel_err(x, exact) < 1e-7)


def test_scipy_reference_equals_the_closed_form():
    # The reference itself (DOP853, rtol 1e-11): global error ~1e-10 relative; tolerance 1e-8.
    system, x0, params = draw("spring_mass", 4)
    t = np.linspace(0, 0.5, 21)
    ref = systems.simulate_scipy(system, t, x0.numpy(), params.numpy())
    exact = system.exact_solution(torch.as_tensor(t), x0, params)
    assert np.all(rel_err(ref, exact) < 1e-8)


# -- batch independence ----------------------------------------------------------------------------
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**16), data=st.data())
def test_fixed_step_trajectory_does_not_depend_on_its_batch(name, seed, data):
    # With fixed steps every trajectory takes the same arithmetic whatever its neighbours:
    # results are bitwise equal alone, in a permuted batch, and in a sub-batch.
    system, x0, params = draw(name, 6, seed)
    t = torch.linspace(0, window(name) / 3, 6, dtype=F64)
    h = float(t[1]) / 8
    full = systems.simulate(system, t, x0, params, method="rk4", step_size=h)
    perm = torch.as_tensor(data.draw(st.permutations(range(6))))
    keep = data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True))
    shuffled = systems.simulate(system, t, x0[perm], params[perm], method="rk4", step_size=h)
    subset = systems.simulate(system, t, x0[keep], params[keep], method="rk4", step_size=h)
    assert torch.equal(shuffled, full[perm])
    assert torch.equal(subset, full[keep])


@pytest.mark.parametrize("name", NAMES)
def test_adaptive_trajectory_depends_on_its_batch_only_within_tolerance(name):
    # dopri5 chooses one step sequence for the batch (the worst trajectory's), so a trajectory
    # next to a stiffer one takes smaller steps; both runs are within the default accuracy of
    # the truth, hence within 1e-7 relative of each other.
    system, x0, params = draw(name, 8)
    t = torch.linspace(0, window(name), 21, dtype=F64)
    together = systems.simulate(system, t, x0, params)
    for i in (0, 5):
        alone = systems.simulate(system, t, x0[i : i + 1], params[i : i + 1])
        assert rel_err(alone, together[i : i + 1])[0] < 1e-7


# -- precision -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_float32_agrees_with_float64_to_float32_precision_adaptive(name):
    system, x0, params = draw(name, 6)
    t = torch.linspace(0, window(name), 21, dtype=F64)
    x64 = systems.simulate(system, t, x0, params)
    x32 = systems.simulate(system, t.float(), x0.float(), params.float())
    assert x32.dtype == torch.float32
    # float32 runs at rtol 1e-6 (the default for float32) on numbers with eps 1.2e-7: a few
    # 1e-6 relative is float32 precision here (measured <= 3.7e-6). Tolerance 3e-5.
    assert np.all(rel_err(x32.double(), x64) < 3e-5)


@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**16))
def test_float32_agrees_with_float64_to_float32_precision_fixed_step(name, seed):
    # The same RK4 steps in both precisions: the difference is float32 rounding alone, about
    # eps32 = 1.2e-7 per step growing like sqrt(N) (N <= 100 steps here) times the problem's
    # amplification. Tolerance 1e-5, ~80 eps32.
    system, x0, params = draw(name, 4, seed)
    t = torch.linspace(0, window(name) / 3, 11, dtype=F64)
    h = float(t[1]) / 8
    x64 = systems.simulate(system, t, x0, params, method="rk4", step_size=h)
    x32 = systems.simulate(
        system, t.float(), x0.float(), params.float(), method="rk4", step_size=h
    )
    assert np.all(rel_err(x32.double(), x64) < 1e-5)


# -- fixed-step grids ------------------------------------------------------------------------------
def test_fixed_step_grid_passes_through_every_sample_time():
    t = torch.tensor([0.0, 0.1, 0.5, 0.55, 1.0], dtype=F64)
    grid = substep_grid(t, 0.1)
    assert all(bool((grid == s).any()) for s in t)
    assert float((grid[1:] - grid[:-1]).max()) <= 0.1 + 1e-12
    # an interval of exactly k steps (up to rounding) is cut into k, not k + 1
    assert len(substep_grid(torch.linspace(0, 1, 256, dtype=F64), 1 / 255 / 2)) == 511


def test_fixed_step_on_a_non_uniform_grid_matches_the_closed_form():
    # States are computed at the sample times, never interpolated between steps.
    system, x0, params = draw("spring_mass", 3)
    t = torch.tensor([0.0, 0.013, 0.05, 0.0501, 0.2, 0.31], dtype=F64)
    x = systems.simulate(system, t, x0, params, method="rk4", step_size=1e-3)
    # RK4 with rate * h <= 0.072 over T = 0.31: rate T z^4 / 120 <= 5e-6.
    assert np.all(rel_err(x, system.exact_solution(t, x0, params)) < 5e-6)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_simulate_refuses_negative_physical_parameters(name):
    system, x0, params = draw(name, 3)
    t = torch.linspace(0, 0.1, 3, dtype=F64)
    for j, p in enumerate(system.params):
        bad = params.clone()
        bad[1, j] = -0.5
        with pytest.raises(ValueError, match=f"parameter '{p.name}' must be"):
            systems.simulate(system, t, x0, bad)
        with pytest.raises(ValueError, match=f"parameter '{p.name}' must be"):
            system.check_params(bad)
        with pytest.raises(ValueError, match=f"parameter '{p.name}' must be"):
            systems.simulate_scipy(system, t.numpy(), x0.numpy(), bad.numpy())


def test_zero_is_allowed_only_for_non_strict_parameters():
    system = systems.get_system("spring_mass")
    system.check_params(torch.tensor([[0.02, 4.0, 0.0]]))  # no damping: fine
    with pytest.raises(ValueError, match="'m' must be > 0"):
        system.check_params(torch.tensor([[0.0, 4.0, 0.1]]))


def test_check_params_refuses_wrong_shape_and_nan():
    system = systems.get_system("pendulum")
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        system.check_params(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        system.check_params(np.array([[1.0, float("nan")]]))


def test_simulate_takes_a_name_and_arrays_that_are_not_tensors():
    """Notebook users pass numpy arrays, lists and system names: the same float64 result as
    from tensors (it was "x0 must be a floating-point torch tensor", or an AttributeError for
    a name)."""
    system, x0, params = draw("pendulum", 3)
    t = torch.linspace(0, 1, 6, dtype=F64)
    ref = systems.simulate(system, t, x0, params)
    for args in ((t.numpy(), x0.numpy(), params.numpy()), (t.tolist(), x0.tolist(),
                                                             params.tolist())):
        out = systems.simulate("pendulum", *args)
        assert out.dtype == F64
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    whole = systems.simulate(system, t, torch.tensor([[1, 0]] * 3), params)  # integers
    torch.testing.assert_close(whole, systems.simulate(system, t, torch.tensor([[1.0, 0.0]] * 3,
                                                                               dtype=F64),
                                                       params))


def test_a_solver_setting_the_method_would_ignore_is_refused():
    """rtol with a fixed-step method or a closed form, step_size with an adaptive one, were
    silently dropped."""
    pend, x0, params = draw("pendulum", 2)
    spring, sx0, sparams = draw("spring_mass", 2)
    t = torch.linspace(0, 1, 5, dtype=F64)
    for system, x, p, kw, words in (
            (pend, x0, params, {"method": "rk4", "rtol": 1e-3}, "rk4 is a fixed-step method"),
            (spring, sx0, sparams, {"method": "exact", "atol": 1e-3}, "closed form"),
            (pend, x0, params, {"method": "dopri5", "step_size": 0.1}, "adapts its steps")):
        with pytest.raises(systems.SystemInputError, match=words):
            systems.simulate(system, t, x, p, **kw)
    systems.simulate(spring, t, sx0, sparams, method="dopri5", rtol=1e-3)  # (what was meant)
    # the default method of a linear system is its closed form: a tolerance asked for speed is
    # not needed there, said, and the exact solution given
    with pytest.warns(UserWarning, match="closed form, exact to round-off"):
        auto = systems.simulate(spring, t, sx0, sparams, rtol=1e-3)
    torch.testing.assert_close(auto, systems.simulate(spring, t, sx0, sparams), rtol=0, atol=0)


def test_simulate_refuses_bad_shapes_and_times():
    system, x0, params = draw("pendulum", 2)
    t = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 2\)"):
        systems.simulate(system, t, x0[:, :1], params)
    with pytest.raises(ValueError, match="parameter rows"):
        systems.simulate(system, t, x0, params[:1])
    with pytest.raises(ValueError, match="strictly increasing"):
        systems.simulate(system, torch.tensor([0.0, 0.2, 0.1], dtype=F64), x0, params)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        systems.simulate(system, t[None], x0, params)
    with pytest.raises(ValueError, match=r"x0 must be an array of numbers, shape \(B, 2\)"):
        systems.simulate(system, t, [["a", "b"]] * 2, params)
    for bad in (float("nan"), float("inf")):  # (torchdiffeq would fail on an assertion)
        with pytest.raises(ValueError, match="x0 contains NaN or infinite"):
            systems.simulate(system, t, x0 * bad, params)
        with pytest.raises(ValueError, match="t contains NaN or infinite"):
            systems.simulate(system, torch.tensor([0.0, bad, 1.0], dtype=F64), x0, params)


@pytest.mark.parametrize("seed", [-1, 1.0, 2.5, True, "3"])
def test_sample_refuses_a_seed_that_is_not_a_whole_number(seed):
    with pytest.raises(systems.SystemInputError, match="the seed must be a whole number"):
        systems.sample("pendulum", 2, seed=seed, method="rk4")
    same = systems.sample("pendulum", 2, seed=np.int64(3), method="rk4")
    assert torch.equal(same.x, systems.sample("pendulum", 2, seed=3, method="rk4").x)


# -- sample: protocols, seeds and ranges ---------------------------------------------------------
def test_sample_is_reproducible_and_splits_differ():
    a = systems.sample("spring_mass", 4, "train", seed=3, method="rk4")
    b = systems.sample("spring_mass", 4, "train", seed=3, method="rk4")
    c = systems.sample("spring_mass", 4, "val", seed=3, method="rk4")
    assert torch.equal(a.x, b.x) and torch.equal(a.params, b.params)
    assert not torch.equal(a.params, c.params)


@pytest.mark.parametrize("name", NAMES)
def test_sample_draws_parameters_inside_the_split_ranges(name):
    proto = systems.get_system(name).default
    for split in ("train", "test"):
        sim = systems.sample(name, 16, split, method="rk4")
        assert sim.x.shape == (16, len(proto.times(split)), sim.x.shape[-1])
        for j, (lo, hi) in enumerate(proto.ranges(split)[p] for p in
                                     systems.get_system(name).param_names):
            assert torch.all((sim.params[:, j] >= lo) & (sim.params[:, j] <= hi))
    # the test split runs test_horizon times longer than training
    assert float(proto.times("test")[-1]) == pytest.approx(proto.t_end * proto.test_horizon)


def test_sample_ranges_override_the_split_ranges():
    sim = systems.sample(
        "spring_mass", 32, "test", ranges={"k": (30.0, 40.0), "c": (0.0, 0.0)}, method="rk4"
    )
    m, k, c = sim.params.T
    assert torch.all((k >= 30) & (k <= 40)) and torch.all(c == 0)
    lo, hi = systems.MSD.test_ranges["m"]  # untouched parameters keep the split's range
    assert torch.all((m >= lo) & (m <= hi))


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"k": (-1.0, 2.0)}, "below its physical minimum"),
        ({"m": (0.0, 0.1)}, "must be greater than 0.0"),  # strict: mass > 0
        ({"k": (3.0, 2.0)}, "is empty"),
        ({"c": (float("nan"), 1.0)}, "finite"),
        ({"spring": (1.0, 2.0)}, "has no parameter 'spring'"),
    ],
)
def test_sample_refuses_invalid_ranges(ranges, message):
    with pytest.raises((ValueError, KeyError), match=message):
        systems.sample("spring_mass", 2, ranges=ranges)


def test_sample_refuses_bad_requests():
    with pytest.raises(ValueError, match="positive integer"):
        systems.sample("pendulum", 0)
    with pytest.raises(ValueError, match="positive integer"):
        systems.sample("pendulum", 2.5)
    assert systems.sample("pendulum", np.int64(1), method="rk4").x.shape[0] == 1
    with pytest.raises(KeyError, match="unknown system 'pendulm'; choose one of"):
        systems.sample("pendulm", 2)
    with pytest.raises(KeyError, match="unknown preset"):
        systems.sample(preset="msd2", n=2)
    with pytest.raises(ValueError, match="is for system 'spring_mass'"):
        systems.sample("pendulum", 2, preset="msd")
    with pytest.raises(ValueError, match="unknown split"):
        systems.sample("pendulum", 2, "validation")


@pytest.mark.parametrize("preset", sorted(systems.PRESETS))
def test_presets_follow_the_paper_protocols(preset):
    proto = systems.PRESETS[preset]
    assert proto.n_steps == 256 and proto.t_end == 1.0 and proto.context == 100
    sim = systems.sample(preset=preset, n=3, split="test", method="rk4")
    assert sim.x.shape == (3, 256, 2) and sim.protocol == preset
    assert torch.allclose(sim.t, torch.linspace(0, 1, 256, dtype=F64))


# -- one new module is a new system --------------------------------------------------------------
class Decay(System):
    """x' = -r x: the smallest system, defined outside the package."""

    def vector_field(self, t, x, params):
        return -params[..., :1] * x

    def invariant(self, x, params):
        return x[..., 0]

    def invariant_rate(self, x, params):
        return -params[..., 0] * x[..., 0]

    def exact_solution(self, t, x0, params):
        t = torch.as_tensor(t, dtype=x0.dtype)
        return x0[:, None, :] * torch.exp(-params[:, None, :1] * (t - t[0])[None, :, None])


DECAY = Decay(
    name="decay",
    state_names=("x",),
    params=(Param("r", "1/s", train=(0.5, 1.0), test=(0.1, 2.0)),),
    invariant_name="amount",
    default=Protocol(
        name="decay", system="decay", train_ranges={"r": (0.5, 1.0)},
        test_ranges={"r": (0.1, 2.0)}, initial_state=Box(low=(1.0,), high=(2.0,)),
        t_end=2.0, n_steps=17, n_train=8, n_val=2, n_test=4,
    ),
)


@pytest.fixture
def decay_registered():
    systems.register(DECAY)
    yield DECAY
    systems._REGISTRY.pop("decay", None)


def test_a_registered_fourth_system_simulates_like_the_others(decay_registered, tmp_path):
    from warpphys import Trajectories, cli

    sim = systems.sample("decay", 5, "test", seed=1)
    exact = DECAY.exact_solution(sim.t, sim.x[:, 0], sim.params)
    assert sim.x.shape == (5, 17, 1) and np.all(rel_err(sim.x, exact) < 1e-7)
    out = tmp_path / "decay.npz"
    assert cli.main(["simulate", "--system", "decay", "--n", "3", "--out", str(out)]) == 0
    assert Trajectories.load(out, system="decay").param_names == ("r",)


def test_invariant_rate_defaults_to_zero_for_conservative_systems():
    lv = systems.get_system("lotka_volterra")
    x = torch.tensor([[1.0, 2.0]], dtype=F64)
    p = torch.tensor([[30.0, 100.0, 100.0, 30.0]], dtype=F64)
    assert float(lv.invariant_rate(x, p).abs().max()) == 0.0
    assert math.isfinite(float(lv.invariant(x, p)[0]))
