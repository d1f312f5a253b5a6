"""The partial-physics demonstration system: a pendulum with quadratic drag. (Its invariant rate
and the properties every system shares are checked in test_systems_physics.py, which loops over
the registered systems.)"""

import numpy as np
import pytest
import torch

import systems
from warpphys.data import DataError, Trajectories, check_system

DRAG = systems.get_system("pendulum_drag")


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
