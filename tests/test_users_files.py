"""Users' own files through every model: files without parameters, with parameters under other
names or in another column order, irregular sampling, a single long trajectory, other lengths;
and the mapping of a file's parameter names onto the system's (``--param-name FILE=SYSTEM``).

Fits are tiny (1 epoch, few short trajectories, a few units) so that the matrix runs in a minute.
"""

from __future__ import annotations

import numpy as np
import torch

import systems
from warpphys.data import simulate
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
