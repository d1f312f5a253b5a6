"""Users' own files through every model: files without parameters, with parameters under other
names or in another column order, irregular sampling, a single long trajectory, other lengths;
and the mapping of a file's parameter names onto the system's (``--param-name FILE=SYSTEM``).

Fits are tiny (1 epoch, few short trajectories, a few units) so that the matrix runs in a minute.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import systems
from warpphys.data import DataError, Trajectories, simulate
from warpphys.physics import fit_global_params


def test_global_parameter_fit_works_under_no_grad():
    """Models set their data scales under ``torch.no_grad()``; the global least-squares fit (used
    when a file has no usable parameters) runs its own optimisation regardless."""
    sys_ = systems.get_system("lotka_volterra")
    tr = simulate("lotka_volterra", 4, "train", 0)
    x, t = tr.x[:, :20], tr.t[:20]
    free = fit_global_params(sys_, x, t, steps=50)
    with torch.no_grad():
        held = fit_global_params(sys_, x, t, steps=50)
    np.testing.assert_allclose(held, free, rtol=1e-12)
    assert np.all(np.abs(np.log(held)) > 0.5)  # it moved from its start (all ones) towards ~30-95


# -- one long trajectory -------------------------------------------------------------------------
def test_a_long_trajectory_is_cut_into_consecutive_windows_on_one_time_grid():
    t = 0.5 + 0.1 * np.arange(43)
    x = np.random.default_rng(0).normal(size=(1, 43, 2))
    tr = Trajectories(t=t, x=x, params=np.array([[2.0, 0.3]]), param_names=("length", "damping"))
    w = tr.windows(10)
    assert w.x.shape == (10, 4, 2) and w.params.shape == (10, 2)
    np.testing.assert_allclose(w.t, t[:4])  # every window starts at the file's first time
    np.testing.assert_array_equal(w.x[3], x[0, 12:16])  # window i: steps 4i .. 4i+3
    np.testing.assert_array_equal(w.params, np.repeat(tr.params, 10, axis=0))
    assert w.param_names == tr.param_names


def test_windows_refuse_irregular_sampling_and_too_short_files_naming_the_fix():
    x = np.zeros((1, 40, 2))
    irregular = np.cumsum(np.random.default_rng(0).uniform(0.05, 0.15, 40))
    with pytest.raises(DataError, match="regular sampling.*N >= 3"):
        Trajectories(t=irregular, x=x).windows(10)
    with pytest.raises(DataError, match="at least 4 steps.*N >= 3"):
        Trajectories(t=np.arange(30.0), x=np.zeros((1, 30, 2))).windows(10)
