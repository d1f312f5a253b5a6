"""A fourth system, defined outside the package in one file: exponential decay.

    x' = -k x,  state x [1], parameter rate k [1/s]

Its invariant is the "energy" E = x^2 / 2, which decays at the exact rate dE/dt = -k x^2 <= 0.
The system is linear (M = [[-k]]), so x(t) = x0 exp(-k (t - t0)) is its exact solution and the
closed-form physics root applies. One state and one parameter: the smallest shapes any code
path must handle.

Tests register it with ``systems.register(DECAY)`` (see the ``toy_system`` fixture in
test_toy_system.py) and unregister it afterwards.
"""

from __future__ import annotations

import torch

from systems import Box, Param, Protocol, System

NAME = "decay"
TRAIN = {"k": (0.5, 2.0)}
TEST = {"k": (0.25, 3.0)}  # wider: out of distribution on both sides


class Decay(System):
    linear = True

    def vector_field(self, t, x, params):
        return -params[..., :1] * x

    def invariant(self, x, params):
        return 0.5 * x[..., 0] ** 2

    def invariant_rate(self, x, params):
        return -params[..., 0] * x[..., 0] ** 2

    def generator_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """M with dx/dt = M x, shape (..., 1, 1)."""
        return -params[..., :1, None]

    def exact_solution(self, t, x0, params):
        """x0 exp(-k (t - t0)) for every trajectory: (B, T, 1)."""
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        return x0[:, None, :] * torch.exp(-params[:, None, :1] * (t - t[0])[None, :, None])


DECAY = Decay(
    name=NAME,
    state_names=("x",),
    params=(Param("k", "1/s", train=TRAIN["k"], test=TEST["k"], doc="decay rate"),),
    invariant_name="energy",
    damping="k",
    default=Protocol(
        name=NAME,
        system=NAME,
        train_ranges=TRAIN,
        test_ranges=TEST,
        initial_state=Box(low=(0.5,), high=(2.0,)),
        t_end=2.0,
        n_steps=21,
        n_train=16,
        n_val=4,
        n_test=4,
        test_horizon=2.0,
        doc="x0 ~ U(0.5, 2), t in [0, 2] (test: [0, 4]), 21 steps",
    ),
    doc=__doc__,
)
