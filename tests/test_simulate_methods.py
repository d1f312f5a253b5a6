"""Simulation methods: the closed form of linear systems, and the integrator options."""

import numpy as np
import pytest
import torch

import systems
from systems._linear import expm2_apply


@pytest.mark.parametrize("kind", ["oscillating", "overdamped", "critical", "random"])
def test_closed_form_2x2_flow_matches_the_matrix_exponential(kind):
    g = torch.Generator().manual_seed(0)
    B = 200
    if kind == "random":
        M = 3.0 * torch.randn(B, 2, 2, generator=g, dtype=torch.float64)
    else:
        w2 = torch.rand(B, generator=g, dtype=torch.float64) * 900 + 1  # k/m
        gamma = {"oscillating": 0.2 * w2.sqrt(), "overdamped": 3.0 * w2.sqrt(),
                 "critical": 2.0 * w2.sqrt()}[kind]  # c/m
        M = torch.zeros(B, 2, 2, dtype=torch.float64)
        M[:, 0, 1], M[:, 1, 0], M[:, 1, 1] = 1.0, -w2, -gamma
    t = torch.linspace(0.0, 1.0, 50, dtype=torch.float64)
    x0 = torch.randn(B, 2, generator=g, dtype=torch.float64)
    ref = torch.einsum("btij,bj->bti", torch.linalg.matrix_exp(M[:, None] * t[:, None, None]), x0)
    got = expm2_apply(M, t, x0)
    scale = ref.abs().amax(1, keepdim=True)  # each component of each trajectory
    assert float(((got - ref).abs() / scale).max()) < 1e-10


def test_default_simulation_of_a_linear_system_is_its_closed_form():
    sys_ = systems.get_system("spring_mass")
    sim = systems.sample("spring_mass", 64, "test", seed=3)
    exact = sys_.exact_solution(sim.t, sim.x[:, 0], sim.params)
    torch.testing.assert_close(sim.x, exact, rtol=0, atol=0)
    ref = systems.simulate_scipy(sys_, sim.t.numpy(), sim.x[:8, 0].numpy(), sim.params[:8].numpy())
    scale = np.abs(ref).max(1, keepdims=True)
    assert (np.abs(sim.x[:8].numpy() - ref) / scale).max() < 1e-8  # scipy's own error


def test_a_looser_tolerance_is_used_and_less_accurate():
    sys_ = systems.get_system("spring_mass")
    sim = systems.sample("spring_mass", 32, "test", seed=1)
    loose = systems.sample("spring_mass", 32, "test", seed=1, method="dopri5", rtol=1e-4)
    tight = systems.sample("spring_mass", 32, "test", seed=1, method="dopri5")
    err = lambda s: float((s.x - sim.x).abs().max())  # noqa: E731
    assert err(tight) < 1e-7 < err(loose) < 1e-2
    assert sys_.name == sim.system


def test_exact_method_needs_a_closed_form():
    with pytest.raises(ValueError, match="no closed form") as refused:
        systems.sample("pendulum", 4, method="exact")
    assert isinstance(refused.value, systems.SystemInputError)  # one line on the command line


@pytest.mark.parametrize("c", [20.0, 50.0])
def test_a_strongly_damped_closed_form_stays_finite_and_matches_dopri5(c):
    # a stiff overdamped eigenvalue's exponential underflows within the step budget of
    # warpphys.data.check_simulation_cost: the closed form must not turn that into 0 * inf
    exact = systems.sample("spring_mass", 4, "test", seed=2, ranges={"c": (c, c)})
    ref = systems.sample("spring_mass", 4, "test", seed=2, ranges={"c": (c, c)},
                         method="dopri5")
    assert torch.isfinite(exact.x).all()
    assert float((exact.x - ref.x).abs().max()) < 1e-7


def test_backward_times_of_a_stiff_overdamped_flow_match_the_matrix_exponential():
    M = torch.tensor([[[0.0, 1.0], [-300.0, -40.0]], [[0.0, 1.0], [-1.0, -3e4]],
                      [[0.5, 2.0], [1.0, -0.3]]], dtype=torch.float64)
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (torch.linspace(0.0, 1.0, 20, dtype=torch.float64),
              torch.linspace(0.0, -0.01, 20, dtype=torch.float64)):
        ref = torch.einsum("btij,bj->bti",
                           torch.linalg.matrix_exp(M[:, None] * t[:, None, None]), x0)
        got = expm2_apply(M, t, x0)
        assert float(((got - ref).abs() / ref.abs().amax(1, keepdim=True)).max()) < 1e-9


@pytest.mark.parametrize("kw, needle", [({"method": "rk5"}, "unknown method 'rk5'"),
                                         ({"method": "dopri5", "rtol": -1.0}, "rtol must be"),
                                         ({"method": "dopri5", "rtol": float("nan")},
                                          "rtol must be"),
                                         ({"method": "dopri5", "rtol": 2.0},
                                          r"rtol is a relative error and must be below 1")])
def test_bad_methods_and_tolerances_are_input_errors(kw, needle):
    with pytest.raises(systems.SystemInputError, match=needle):
        systems.sample("pendulum", 4, **kw)


# -- dopri8_uniform (the default of nonlinear systems) and the fixed-step tableau methods ---------
def _reference(name, n=24, n_steps=None, seed=5, split="test"):
    sim = systems.sample(name, n, split, seed=seed, n_steps=n_steps)
    ref = systems.simulate_scipy(systems.get_system(name), sim.t.numpy(), sim.x[:, 0].numpy(),
                                 sim.params.numpy(), rtol=1e-13, atol=1e-15)
    return sim, ref


def _rel(x, ref):
    """The worst component of the worst trajectory, relative to that component's scale."""
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    return float((np.abs(x - ref).max(1) / np.abs(ref).max(1)).max())


@pytest.mark.parametrize("name", ["pendulum", "lotka_volterra"])
def test_the_default_of_nonlinear_systems_is_dopri8_on_equal_steps_at_its_tolerance(name):
    sim, ref = _reference(name)
    uniform = systems.simulate(name, sim.t, sim.x[:, 0], sim.params, method="dopri8_uniform")
    torch.testing.assert_close(sim.x, uniform, rtol=0, atol=0)  # "auto" is dopri8_uniform
    assert _rel(sim.x, ref) < 1e-8  # the default tolerance, rtol 1e-9, with a margin
    # the tolerance is used (on samples 8 times sparser: at the files' spacing one step per
    # sample interval, the fewest this method takes, is already within 1e-8)
    loose = systems.simulate(name, sim.t[::8], sim.x[:, 0], sim.params, method="dopri8_uniform",
                             rtol=1e-5)
    assert 1e-8 < _rel(loose, ref[:, ::8]) < 1e-3


def test_dopri8_uniform_shortens_its_steps_until_every_step_passes_the_error_test():
    # LV sampled 16 times per unit time: one dopri8 step per sample interval is far too long
    # (it blows up), and the states are still right at every sample
    sim = systems.sample("lotka_volterra", 16, "test", seed=2)
    t = sim.t[::16]
    x = systems.simulate("lotka_volterra", t, sim.x[:, 0], sim.params)
    one_step = systems.simulate("lotka_volterra", t, sim.x[:, 0], sim.params,
                                method="dopri8_fixed", step_size=float(t[1] - t[0]))
    ref = systems.simulate_scipy(systems.get_system("lotka_volterra"), t.numpy(),
                                 sim.x[:, 0].numpy(), sim.params.numpy(), rtol=1e-13, atol=1e-15)
    assert not _rel(one_step, ref) < 1e-3  # far off, or blown up (NaN)
    assert _rel(x, ref) < 1e-8


def test_dopri8_uniform_hands_a_kinked_field_to_an_adaptive_method():
    # quadratic drag has a kink at zero speed: equal steps would all have to be as short as
    # the few steps across a turning point, so dopri8_uniform declines and dopri5 integrates
    sim, ref = _reference("pendulum_drag", n=8, n_steps=64)
    assert _rel(sim.x, ref) < 1e-7
    adaptive = systems.simulate("pendulum_drag", sim.t, sim.x[:, 0], sim.params,
                                method="dopri5")
    torch.testing.assert_close(sim.x, adaptive, rtol=0, atol=0)


def test_dopri8_uniform_integrates_backward_and_in_float32():
    sim, ref = _reference("pendulum", n=8, n_steps=48)
    back = systems.simulate("pendulum", sim.t.flip(0), sim.x[:, -1], sim.params)
    assert _rel(back.flip(1), ref) < 1e-7
    single = systems.simulate("pendulum", sim.t.float(), sim.x[:, 0].float(), sim.params.float())
    assert single.dtype == torch.float32
    assert _rel(single.double(), ref) < 1e-4


@pytest.mark.parametrize("method, order", [("dopri5_fixed", 5), ("dopri8_fixed", 8)])
def test_fixed_step_tableau_methods_converge_at_their_order(method, order):
    sim, ref = _reference("pendulum", n=8, n_steps=97, split="train")
    dt = float(sim.t[1] - sim.t[0])
    errs = [_rel(systems.simulate("pendulum", sim.t, sim.x[:, 0], sim.params, method=method,
                                  step_size=dt / k), ref) for k in (1, 2)]
    observed = np.log2(errs[0] / errs[1])  # global error ~ h^order
    assert order - 1.0 < observed < order + 2.0, (errs, observed)


def test_tableau_methods_refuse_gradients_and_auto_then_stays_differentiable():
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    params = torch.tensor([[1.0, 0.1]], dtype=torch.float64, requires_grad=True)
    with pytest.raises(systems.SystemInputError, match="without autograd.*dopri5"):
        systems.simulate("pendulum", t, x0, params, method="dopri8_uniform")
    x = systems.simulate("pendulum", t, x0, params)  # auto: dopri5, through autograd
    (grad,) = torch.autograd.grad(x[0, -1, 0], params)
    assert torch.isfinite(grad).all() and float(grad[0, 0].abs()) > 0


def test_dopri8_uniform_on_hostile_grids_and_batches():
    pend = systems.get_system("pendulum")
    x0 = torch.tensor([[1.0, 0.5], [2.0, -1.0]], dtype=torch.float64)
    p = torch.tensor([[1e-3, 0.1], [1.0, 0.0]], dtype=torch.float64)  # a 1 mm pendulum: 99/s
    for t in (torch.linspace(0.0, 1.0, 11, dtype=torch.float64),  # 10 periods per sample
              torch.tensor([0.0, 1e-3, 0.5, 3.0], dtype=torch.float64)):  # uneven spacing
        x = systems.simulate(pend, t, x0, p)
        ref = systems.simulate_scipy(pend, t.numpy(), x0.numpy(), p.numpy(), rtol=1e-13,
                                     atol=1e-15)
        assert _rel(x, ref) < 1e-7
    empty = systems.simulate(pend, t, x0[:0], p[:0])
    assert empty.shape == (0, 4, 2)
