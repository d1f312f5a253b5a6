"""Damped nonlinear pendulum.

    theta' = omega
    omega' = -(g / L) sin(theta) - c omega

State (theta [rad], omega [rad/s]); parameters length L [m] and damping rate c [1/s]; gravity
g = 9.81 m/s^2 is fixed. Energy per unit mass, E = L^2 omega^2 / 2 + g L (1 - cos theta),
obeys dE/dt = -c L^2 omega^2 exactly: conserved for c = 0, never increasing for c >= 0.
The default initial angles reach 2.2 rad, far into the nonlinear regime.
"""

from __future__ import annotations

from ._base import Box, Param, Protocol, System, xp

GRAVITY = 9.81


class Pendulum(System):
    def vector_field(self, t, x, params):
        m = xp(x)
        theta, omega = x[..., 0], x[..., 1]
        length, c = params[..., 0], params[..., 1]
        return m.stack([omega, -(GRAVITY / length) * m.sin(theta) - c * omega], -1)

    def invariant(self, x, params):
        m = xp(x)
        theta, omega = x[..., 0], x[..., 1]
        length = params[..., 0]
        return 0.5 * length**2 * omega**2 + GRAVITY * length * (1.0 - m.cos(theta))

    def invariant_rate(self, x, params):
        length, c = params[..., 0], params[..., 1]
        return -c * length**2 * x[..., 1] ** 2


PENDULUM = Pendulum(
    name="pendulum",
    state_names=("theta", "omega"),
    params=(
        Param("length", "m", train=(0.5, 2.0), test=(0.35, 3.0), doc="pendulum length L"),
        Param("damping", "1/s", train=(0.0, 0.15), test=(0.0, 0.25), strict=False,
              doc="linear damping rate c"),
    ),
    invariant_name="energy",
    damping="damping",
    default=Protocol(
        name="pendulum",
        system="pendulum",
        train_ranges={"length": (0.5, 2.0), "damping": (0.0, 0.15)},
        test_ranges={"length": (0.35, 3.0), "damping": (0.0, 0.25)},
        initial_state=Box(low=(-2.2, -1.0), high=(2.2, 1.0)),
        t_end=6.0,
        n_steps=96,
        n_train=512,
        n_val=64,
        n_test=128,
        test_horizon=2.0,
        context=48,
        # 48 steps (3 s) hold about one period: in less, the length and the damping (which
        # takes 5% off the amplitude in 1.5 s) are barely visible to any estimator
        doc="lightly damped pendulum, amplitudes up to 2.2 rad; context of about one period; "
            "test twice as long and OOD",
    ),
    doc=__doc__,
)
