"""Presets: the paper's data protocols (see PAPER.md), by name."""

from __future__ import annotations

from dataclasses import replace

from ._base import Box, Protocol
from .lotka_volterra import LOTKA_VOLTERRA, LV_TEST, LV_TRAIN
from .spring_mass import MSD_TEST, MSD_TRAIN, SPRING_MASS

MSD = replace(
    SPRING_MASS.default,
    name="msd",
    train_ranges=MSD_TRAIN,
    test_ranges=MSD_TEST,
    initial_state=Box(low=(1.0, 0.0), high=(1.0, 0.0)),
    t_end=1.0,
    n_steps=256,
    n_train=20480,
    n_val=2048,
    n_test=4096,
    test_horizon=1.0,
    context=100,
    doc="paper MSD: x0=(1,0), t in [0,1], 256 steps, context 100, test ranges partly OOD",
)

MSD_ZERO = replace(
    MSD,
    name="msd-zero",
    initial_state=Box(low=(0.5, -0.5), high=(1.5, 0.5)),
    n_train=8192,
    n_val=1024,
    n_test=2048,
    doc="paper MSD-Zero: MSD with (x0, v0) = (1, 0) + U(-0.5, 0.5)^2",
)

LV = replace(
    LOTKA_VOLTERRA.default,
    name="lv",
    train_ranges=LV_TRAIN,
    test_ranges=LV_TEST,
    initial_state=Box(low=(1.0, 1.0), high=(1.0, 1.0)),
    t_end=1.0,
    n_steps=256,
    n_train=20480,
    n_val=2048,
    n_test=4096,
    test_horizon=1.0,
    context=100,
    doc="paper LV: from (1, 1), t in [0, 1], 256 steps",
)

PRESETS: dict[str, Protocol] = {p.name: p for p in (MSD, MSD_ZERO, LV)}
