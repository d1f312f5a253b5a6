"""Spring-mass-damper (MSD).

    m x'' + c x' + k x = 0,  state (x [m], v [m/s])

Parameters mass m [kg], stiffness k [N/m], damping c [N s/m]. Energy E = m v^2 / 2 + k x^2 / 2
obeys dE/dt = -c v^2 exactly. The system is linear, so x(t) = expm(M t) x0 with
M = [[0, 1], [-k/m, -c/m]] (the exact solution). Trajectories determine only k/m and c/m.
The default protocol is the paper's MSD protocol (x0 = 1, v0 = 0, t in [0, 1], 256 steps).
"""

from __future__ import annotations

import torch

from ._base import Box, Param, Protocol, System, xp
from ._linear import expm2_apply

MSD_TRAIN = {"m": (0.02, 0.04), "k": (4.0, 16.0), "c": (0.01, 0.2)}
MSD_TEST = {"m": (0.01, 0.05), "k": (2.0, 18.0), "c": (0.01, 0.3)}


class SpringMass(System):
    linear = True

    def vector_field(self, t, x, params):
        pos, vel = x[..., 0], x[..., 1]
        m, k, c = params[..., 0], params[..., 1], params[..., 2]
        acc = -(k * pos + c * vel) / m
        return xp(x).stack([vel, acc], -1)

    def invariant(self, x, params):
        m, k = params[..., 0], params[..., 1]
        return 0.5 * m * x[..., 1] ** 2 + 0.5 * k * x[..., 0] ** 2

    def invariant_rate(self, x, params):
        return -params[..., 2] * x[..., 1] ** 2

    def generator_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """M with dx/dt = M x, shape (..., 2, 2)."""
        m, k, c = params[..., 0], params[..., 1], params[..., 2]
        zero, one = torch.zeros_like(m), torch.ones_like(m)
        return torch.stack(
            [torch.stack([zero, one], -1), torch.stack([-k / m, -c / m], -1)], -2
        )

    def exact_solution(self, t, x0, params):
        """x(t) = expm(M t) x0 for every trajectory: (B, T, 2)."""
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        params = torch.as_tensor(params, dtype=x0.dtype, device=x0.device)
        return expm2_apply(self.generator_matrix(params), t - t[0], x0)

    @property
    def identifiable_names(self):
        return ("k/m", "c/m")

    def identifiable(self, params):
        m = params[..., 0]
        return xp(params).stack([params[..., 1] / m, params[..., 2] / m], -1)

    def from_identifiable(self, ident, reference):
        """(m, k, c) with the given (k/m, c/m), the mass taken from ``reference``."""
        m = ident[..., 0] * 0 + reference[..., 0]
        return xp(ident).stack([m, ident[..., 0] * m, ident[..., 1] * m], -1)


SPRING_MASS = SpringMass(
    name="spring_mass",
    state_names=("x", "v"),
    params=(
        Param("m", "kg", train=MSD_TRAIN["m"], test=MSD_TEST["m"], doc="mass"),
        Param("k", "N/m", train=MSD_TRAIN["k"], test=MSD_TEST["k"], doc="spring stiffness"),
        Param("c", "N s/m", train=MSD_TRAIN["c"], test=MSD_TEST["c"], strict=False,
              doc="damping coefficient"),
    ),
    invariant_name="energy",
    damping="c",
    default=Protocol(
        name="spring_mass",
        system="spring_mass",
        train_ranges=MSD_TRAIN,
        test_ranges=MSD_TEST,
        initial_state=Box(low=(1.0, 0.0), high=(1.0, 0.0)),
        t_end=1.0,
        n_steps=128,
        n_train=512,
        n_val=64,
        n_test=128,
        test_horizon=2.0,
        context=32,
        doc="MSD ranges on a CPU-sized grid; test twice as long and OOD",
    ),
    doc=__doc__,
)
