"""Pendulum with quadratic air drag: the pendulum plus a term its plain model lacks.

    theta' = omega
    omega' = -(g / L) sin(theta) - c omega - q omega |omega|

Parameters length L [m], linear damping c [1/s], quadratic drag q [1/rad]. Energy per unit mass
(as for the pendulum) obeys dE/dt = -L^2 omega^2 (c + q |omega|) <= 0.

This system exists to test physics known only in part: its ``base`` is "pendulum", so a model
given the pendulum's equations (``--system pendulum``) accepts its files, and a hybrid root
(pendulum vector field plus a neural correction) can learn the missing drag.
"""

from __future__ import annotations

from dataclasses import replace

from ._base import Param, xp
from .pendulum import GRAVITY, PENDULUM, Pendulum

DRAG_TRAIN, DRAG_TEST = (0.2, 0.5), (0.1, 0.7)


class PendulumDrag(Pendulum):
    def vector_field(self, t, x, params):
        m = xp(x)
        theta, omega = x[..., 0], x[..., 1]
        length, c, q = params[..., 0], params[..., 1], params[..., 2]
        acc = -(GRAVITY / length) * m.sin(theta) - c * omega - q * omega * abs(omega)
        return m.stack([omega, acc], -1)

    def invariant_rate(self, x, params):
        length, c, q = params[..., 0], params[..., 1], params[..., 2]
        omega = x[..., 1]
        return -(length**2) * omega**2 * (c + q * abs(omega))


PENDULUM_DRAG = PendulumDrag(
    name="pendulum_drag",
    state_names=PENDULUM.state_names,
    params=PENDULUM.params + (
        Param("drag", "1/rad", train=DRAG_TRAIN, test=DRAG_TEST, strict=False,
              doc="quadratic air drag q"),
    ),
    invariant_name="energy",
    damping=None,
    base="pendulum",
    default=replace(
        PENDULUM.default,
        name="pendulum_drag",
        system="pendulum_drag",
        train_ranges={**PENDULUM.default.train_ranges, "drag": DRAG_TRAIN},
        test_ranges={**PENDULUM.default.test_ranges, "drag": DRAG_TEST},
        doc="pendulum with quadratic drag; test twice as long and OOD",
    ),
    doc=__doc__,
)
