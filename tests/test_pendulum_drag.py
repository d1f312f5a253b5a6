"""The partial-physics demonstration system: a pendulum with quadratic drag."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import systems
from warpphys.data import DataError, Trajectories, check_system

DRAG = systems.get_system("pendulum_drag")


@given(st.integers(0, 2**31 - 1))
def test_pendulum_drag_energy_rate_is_the_derivative_along_the_field(seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 2, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([5.0, 8.0])
    params = systems.sample_params(DRAG, DRAG.default.test_ranges, 16, g)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(DRAG.invariant(x, params).sum(), x)
    along = (grad * DRAG.vector_field(0.0, x, params)).sum(-1).detach()
    rate = DRAG.invariant_rate(x.detach(), params)
    # exact identity: only float64 rounding of terms of size <= 1e3 separates the two
    assert torch.allclose(along, rate, rtol=1e-12, atol=1e-10)
    assert torch.all(rate <= 0)


def test_zero_drag_equals_the_pendulum():
    sim = systems.sample("pendulum_drag", n=8, seed=1, ranges={"drag": (0.0, 0.0)})
    plain = systems.simulate(systems.get_system("pendulum"), sim.t, sim.x[:, 0], sim.params[:, :2])
    # both integrated by dopri5 at rtol 1e-9 through identical arithmetic when q = 0
    torch.testing.assert_close(sim.x, plain, rtol=1e-9, atol=1e-9)


def test_drag_files_are_accepted_by_the_pendulum_model_only():
    sim = systems.sample("pendulum_drag", n=4, seed=0)
    tr = Trajectories.from_simulation(sim)
    check_system(tr, "pendulum")  # partial physics: the pendulum models it in part
    with pytest.raises(DataError, match="declares system"):
        check_system(tr, "spring_mass")
    # the pendulum's parameters are found by name; drag is not among them
    np.testing.assert_array_equal(tr.system_params(systems.get_system("pendulum")),
                                  tr.params[:, :2])
