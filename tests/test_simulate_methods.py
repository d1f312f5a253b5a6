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
