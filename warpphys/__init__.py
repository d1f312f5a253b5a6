"""warpphys: learn and extrapolate physical dynamical systems with WARP.

The jobs (``fit``, ``load``, ``evaluate``, ``predict``) are in :mod:`warpphys.api`. Importing the
package fills the registries: models (:mod:`warpphys.registry`, the baselines included) and
roots (:mod:`warpphys.roots`, the physics roots included).
"""

import warpphys.baselines  # noqa: F401  (registers the baselines in warpphys.registry)
from warpphys.data import DataError, Trajectories
from warpphys.errors import WarpphysError

__version__ = "0.1.0"

__all__ = ["DataError", "Trajectories", "WarpphysError", "__version__"]
