"""Lotka-Volterra predator-prey system.

    x' = a x - b x y,   y' = c x y - d y

State (prey x, predator y), both positive; parameters a, b, c, d > 0 (rates, 1/time). The first
integral V = c x - d ln x + b y - a ln y is conserved exactly along every trajectory (no damping).
The default protocol follows the paper: start at (1, 1), t in [0, 1], 256 steps.
"""

from __future__ import annotations

from ._base import Box, Param, Protocol, System, xp

LV_TRAIN = {"a": (20.0, 50.0), "b": (80.0, 120.0), "c": (80.0, 120.0), "d": (20.0, 50.0)}
LV_TEST = {"a": (10.0, 60.0), "b": (70.0, 130.0), "c": (70.0, 130.0), "d": (10.0, 60.0)}


class LotkaVolterra(System):
    def vector_field(self, t, x, params):
        prey, pred = x[..., 0], x[..., 1]
        a, b, c, d = (params[..., i] for i in range(4))
        return xp(x).stack([a * prey - b * prey * pred, c * prey * pred - d * pred], -1)

    def invariant(self, x, params):
        m = xp(x)
        prey, pred = x[..., 0], x[..., 1]
        a, b, c, d = (params[..., i] for i in range(4))
        return c * prey - d * m.log(prey) + b * pred - a * m.log(pred)


LOTKA_VOLTERRA = LotkaVolterra(
    name="lotka_volterra",
    state_names=("prey", "predator"),
    params=tuple(
        Param(n, "1/time", train=LV_TRAIN[n], test=LV_TEST[n], doc=doc)
        for n, doc in [("a", "prey growth rate"), ("b", "predation rate"),
                       ("c", "predator growth per prey"), ("d", "predator death rate")]
    ),
    invariant_name="first integral",
    state_low=(0.0, 0.0),
    damping=None,
    default=Protocol(
        name="lotka_volterra",
        system="lotka_volterra",
        train_ranges=LV_TRAIN,
        test_ranges=LV_TEST,
        initial_state=Box(low=(1.0, 1.0), high=(1.0, 1.0)),
        t_end=1.0,
        n_steps=128,
        n_train=512,
        n_val=64,
        n_test=128,
        test_horizon=2.0,
        context=32,
        doc="LV ranges on a CPU-sized grid; test twice as long and OOD",
    ),
    doc=__doc__,
)
