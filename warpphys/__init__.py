"""warpphys: learn and extrapolate physical dynamical systems with WARP."""

from warpphys.data import DataError, Trajectories

__version__ = "0.1.0"

__all__ = ["DataError", "Trajectories", "__version__"]
