"""Refinement evaluates the Jacobian's shifted unknowns as one stacked batch: each trajectory
must still see its own weights theta and its own data (float64)."""

import torch

import systems
from warpphys.physics import HybridRoot
from warpphys.refine import refine_context


def test_hybrid_refinement_of_a_trajectory_does_not_depend_on_its_batch():
    sim = systems.sample("lotka_volterra", n=3, split="train", seed=4)
    t, x, params = sim.t, sim.x, sim.params
    root = HybridRoot("lotka_volterra", substeps=2).double()
    root.set_scales(params.numpy())
    assert root.advance_uses_theta
    g = torch.Generator().manual_seed(0)
    theta = root.initial_weights().double().expand(3, -1).clone()
    # a different, non-zero correction for every trajectory
    theta[:, root.param_mlp.num_weights:] += 0.3 * torch.randn(
        3, root.correction.num_weights, generator=g, dtype=torch.float64)
    K = 12
    start = params * 1.2
    p_all, last_all = refine_context(root, x[:, :K], t[:K], start, theta=theta, iterations=3,
                                     shooting_iterations=1)
    for i in range(3):
        p_one, last_one = refine_context(root, x[i:i + 1, :K], t[:K], start[i:i + 1],
                                         theta=theta[i:i + 1], iterations=3,
                                         shooting_iterations=1)
        torch.testing.assert_close(p_one, p_all[i:i + 1], rtol=1e-9, atol=0)
        torch.testing.assert_close(last_one, last_all[i:i + 1], rtol=1e-9, atol=1e-12)
