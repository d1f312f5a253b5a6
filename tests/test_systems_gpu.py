"""GPU checks (opt-in: `pytest -m gpu`; skipped without CUDA by conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import systems

pytestmark = pytest.mark.gpu
F64 = torch.float64


def _batch(name: str, n: int):
    system = systems.get_system(name)
    gen = torch.Generator().manual_seed(0)
    params = systems.sample_params(system, system.default.test_ranges, n, gen)
    return system, system.default.initial_state.sample(n, gen), params


@pytest.mark.parametrize("name", ["pendulum", "spring_mass", "lotka_volterra"])
def test_cuda_simulation_matches_cpu(name):
    system, x0, params = _batch(name, 64)
    t = torch.linspace(0, 0.5, 21, dtype=F64)
    cpu = systems.simulate(system, t, x0, params)
    gpu = systems.simulate(system, t.cuda(), x0.cuda(), params.cuda())
    assert gpu.device.type == "cuda"
    # Same float64 arithmetic up to a few ulp in sin/log; adaptive step choices may differ
    # slightly, so the two agree to the default path's accuracy (1e-7 relative), not bitwise.
    err = (gpu.cpu() - cpu).abs().amax((1, 2)) / cpu.abs().amax((1, 2))
    assert float(err.max()) < 1e-7
    # fixed steps: identical step sequences, only rounding (ulp of sin/log, fused multiply-
    # adds) differs, amplified along the trajectory: 1e-9 relative
    rk_cpu = systems.simulate(system, t, x0, params, method="rk4")
    rk_gpu = systems.simulate(system, t.cuda(), x0.cuda(), params.cuda(), method="rk4")
    err = (rk_gpu.cpu() - rk_cpu).abs().amax((1, 2)) / rk_cpu.abs().amax((1, 2))
    assert float(err.max()) < 1e-9


def test_cuda_sample_and_spring_mass_closed_form():
    sim = systems.sample("spring_mass", 256, "test", device="cuda")
    assert sim.x.device.type == "cuda"
    system = systems.get_system("spring_mass")
    exact = system.exact_solution(sim.t, sim.x[:, 0], sim.params)
    err = (sim.x - exact).abs().amax((1, 2)) / exact.abs().amax((1, 2))
    assert np.all(err.cpu().numpy() < 1e-7)
