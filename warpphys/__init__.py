"""warpphys: learn and extrapolate physical dynamical systems with WARP.

The jobs (``fit``, ``load``, ``evaluate``, ``predict``) are in :mod:`warpphys.api`. The model
registry (:mod:`warpphys.registry`) holds the baselines as soon as it is imported, the root
registry (:mod:`warpphys.roots`) the physics roots. Importing the package itself is light (torch
is imported with the first module that needs it), so that the command line can answer Ctrl-C
from its first moment.
"""

__version__ = "0.1.0"

__all__ = ["DataError", "Trajectories", "WarpphysError", "__version__"]


def __getattr__(name: str):
    if name in ("DataError", "Trajectories"):
        from warpphys import data

        return getattr(data, name)
    if name == "WarpphysError":
        from warpphys.errors import WarpphysError

        return WarpphysError
    raise AttributeError(f"module 'warpphys' has no attribute {name!r}")
