"""Trajectory files (.npz): the exchange format of ../shared/DESIGN.md, with validation.

| key          | shape          | meaning                                      |
|--------------|----------------|----------------------------------------------|
| t            | (T,) float     | sample times, strictly increasing            |
| x            | (N, T, d) float| states                                       |
| params       | (N, p) float   | optional: physical parameters per trajectory |
| state_names  | (d,) str       | optional                                     |
| param_names  | (p,) str       | optional                                     |
| system       | str            | optional: a registered system name           |
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import systems


class DataError(ValueError):
    """A trajectory file or array breaks a rule of the file format; the message names the rule."""


@dataclass
class Trajectories:
    """A batch of trajectories in physical units.

    Attributes:
        t: (T,) strictly increasing sample times.
        x: (N, T, d) states.
        params: (N, p) physical parameters, or None.
        state_names, param_names: names of the state and parameter columns, or None.
        system: a registered system name, or None.
    """

    t: np.ndarray
    x: np.ndarray
    params: np.ndarray | None = None
    state_names: tuple[str, ...] | None = None
    param_names: tuple[str, ...] | None = None
    system: str | None = None

    def __post_init__(self):
        self.t = np.asarray(self.t, dtype=np.float64)
        self.x = np.asarray(self.x, dtype=np.float64)
        if self.params is not None:
            self.params = np.asarray(self.params, dtype=np.float64)
        if self.state_names is not None:
            self.state_names = tuple(str(s) for s in np.atleast_1d(self.state_names))
        if self.param_names is not None:
            self.param_names = tuple(str(s) for s in np.atleast_1d(self.param_names))
        if self.system is not None:
            self.system = str(self.system)
        validate(self)

    # -- views ------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_times(self) -> int:
        return self.x.shape[1]

    @property
    def dim(self) -> int:
        return self.x.shape[2]

    def __len__(self) -> int:
        return self.n

    def subset(self, index) -> Trajectories:
        """Trajectories ``index`` (a slice, mask or index array)."""
        return replace(
            self, x=self.x[index], params=None if self.params is None else self.params[index]
        )

    def system_params(self, system: systems.System) -> np.ndarray | None:
        """``params`` with columns in the system's order, matched by ``param_names``.

        Returns None, with a warning, when the columns cannot be matched (then metrics that need
        parameters are skipped); never raises.
        """
        if self.params is None:
            return None
        names = self.param_names
        if names is None:
            if self.params.shape[1] == system.n_params:
                return self.params
            warnings.warn(
                f"params has {self.params.shape[1]} columns and no param_names, but "
                f"{system.name} has parameters {list(system.param_names)}: ignoring params",
                stacklevel=2,
            )
            return None
        missing = [p for p in system.param_names if p not in names]
        if missing:
            warnings.warn(
                f"param_names {list(names)} lack {missing} of {system.name}: ignoring params "
                f"for parameter metrics",
                stacklevel=2,
            )
            return None
        return self.params[:, [names.index(p) for p in system.param_names]]

    # -- torch ------------------------------------------------------------------------------
    @classmethod
    def from_simulation(cls, sim: systems.Simulation) -> Trajectories:
        sys_ = systems.get_system(sim.system)
        return cls(
            t=sim.t.cpu().numpy(), x=sim.x.cpu().numpy(), params=sim.params.cpu().numpy(),
            state_names=sys_.state_names, param_names=sys_.param_names, system=sys_.name,
        )

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz file atomically (a temporary file renamed into place)."""
        arrays = {"t": self.t, "x": self.x}
        if self.params is not None:
            arrays["params"] = self.params
        if self.state_names is not None:
            arrays["state_names"] = np.array(self.state_names)
        if self.param_names is not None:
            arrays["param_names"] = np.array(self.param_names)
        if self.system is not None:
            arrays["system"] = np.array(self.system)
        path = Path(path)
        if path.suffix != ".npz":
            raise DataError(f"trajectory files end in .npz, got {path.name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, system: str | None = None) -> Trajectories:
        """Read and validate an .npz file; ``system`` (if given) must match its state size."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"data file {str(path)!r} does not exist")
        hint = "write one with numpy.savez(path, t=..., x=...) or `warpphys simulate`"
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{str(path)!r} holds a single array, not an .npz archive of named arrays; "
                    f"{hint}"
                )
            with loaded as f:
                raw = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            if isinstance(e, DataError):
                raise
            if "Object arrays" in str(e):
                raise DataError(
                    f"{str(path)!r} holds pickled Python objects, which are never loaded (they can "
                    f"run code); store numbers as float arrays and names as string arrays, "
                    f"e.g. np.array(names, dtype=str)"
                ) from None
            if "pickle" in str(e):  # not a zip: numpy would try to unpickle it
                e = "not an .npz archive; pickled files are never loaded"
            raise DataError(
                f"{str(path)!r} is not a readable .npz trajectory file ({e}); {hint}"
            ) from None
        if "x" not in raw:
            raise DataError(
                f"{str(path)!r} has no array 'x' (keys: {sorted(raw)}); a trajectory file needs "
                f"'x' of shape (N, T, d) and 't' of shape (T,)"
            )
        if "t" not in raw:
            raise DataError(f"{str(path)!r} has no array 't': add the (T,) sample times")
        unknown = set(raw) - {"t", "x", "params", "state_names", "param_names", "system"}
        if unknown:
            warnings.warn(f"{path.name}: ignoring unknown keys {sorted(unknown)}", stacklevel=2)
        sysname = raw.get("system")
        if sysname is not None and sysname.size == 1:
            sysname = sysname.reshape(()).item()
        traj = _build(
            path.name,
            t=raw["t"], x=raw["x"], params=raw.get("params"),
            state_names=raw.get("state_names"), param_names=raw.get("param_names"),
            system=None if sysname is None else str(sysname),
        )
        if system is not None:
            check_system(traj, system)
        return traj


def _build(source: str, **fields) -> Trajectories:
    try:
        for key in ("t", "x", "params"):
            a = fields.get(key)
            dtype = None if a is None else np.asarray(a).dtype
            if dtype is not None and (
                not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating)
            ):
                raise DataError(f"'{key}' must hold real numbers, got dtype {dtype}")
        return Trajectories(**fields)
    except DataError as e:
        raise DataError(f"{source}: {e}") from None


def validate(tr: Trajectories) -> None:
    """Check every rule of the file format; raise DataError naming the first broken one."""
    t, x = tr.t, tr.x
    if x.ndim != 3:
        raise DataError(
            f"'x' must have rank 3, shape (N, T, d) = (trajectories, time, state); got shape "
            f"{x.shape}. For a single trajectory use x[None]"
        )
    if t.ndim != 1:
        raise DataError(f"'t' must have rank 1, shape (T,); got shape {t.shape}")
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise DataError(f"'x' is empty: shape {x.shape}")
    if t.shape[0] != x.shape[1]:
        raise DataError(
            f"'t' has {t.shape[0]} times but 'x' has {x.shape[1]} time steps (axis 1 of (N, T, d))"
        )
    if t.shape[0] < 2:
        raise DataError("a trajectory needs at least 2 time steps")
    if not np.all(np.isfinite(t)):
        raise DataError("'t' contains NaN or infinite values")
    if not np.all(np.diff(t) > 0):
        i = int(np.argmin(np.diff(t) > 0))
        raise DataError(
            f"'t' must be strictly increasing; t[{i}] = {t[i]} is followed by "
            f"t[{i + 1}] = {t[i + 1]}"
        )
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"'x' contains NaN or infinite values (first at trajectory {bad[0]}, step {bad[1]}); "
            f"drop or repair those trajectories"
        )
    if tr.params is not None:
        p = tr.params
        if p.ndim != 2 or p.shape[0] != x.shape[0]:
            raise DataError(
                f"'params' must have shape (N, p) with N = {x.shape[0]} trajectories; got {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            raise DataError("'params' contains NaN or infinite values")
        if tr.param_names is not None and len(tr.param_names) != p.shape[1]:
            raise DataError(
                f"'param_names' has {len(tr.param_names)} names for {p.shape[1]} parameter columns"
            )
    if tr.state_names is not None and len(tr.state_names) != x.shape[2]:
        raise DataError(f"'state_names' has {len(tr.state_names)} names for d = {x.shape[2]}")
    if tr.system is not None:
        check_system(tr, tr.system)


def check_system(tr: Trajectories, system: str) -> None:
    """The file's state size and declared system must agree with ``system``."""
    try:
        sys_ = systems.get_system(system)
    except KeyError as e:
        raise DataError(str(e.args[0])) from None
    if tr.dim != sys_.dim:
        raise DataError(
            f"state size d = {tr.dim} does not match system {sys_.name!r}, whose state is "
            f"{list(sys_.state_names)} (d = {sys_.dim})"
        )
    declared = None if tr.system is None else systems.get_system(tr.system)
    if declared is not None and declared.base == sys_.name:
        return  # data of a richer system, modelled in part by the asked one
    if tr.system is not None and tr.system != sys_.name:
        raise DataError(
            f"the file declares system {tr.system!r} but {sys_.name!r} was asked for"
        )


def simulate(
    system: str | None = None, n: int | None = None, split: str = "train", seed: int = 0, *,
    preset: str | None = None, device: str = "cpu",
    ranges: dict[str, tuple[float, float]] | None = None,
    method: str = "auto", rtol: float | None = None,
) -> Trajectories:
    """Simulate a split of a system or preset (see :func:`systems.sample`) as Trajectories.

    ``ranges`` (``{parameter name: (low, high)}``) overrides the split's parameter ranges;
    ``method`` and ``rtol`` choose the integrator (see :func:`systems.simulate`).
    """
    return Trajectories.from_simulation(
        systems.sample(system, n, split, seed, preset=preset, device=device, ranges=ranges,
                       method=method, rtol=rtol)
    )


def as_tensor(a, device="cpu", dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def add_noise(traj: Trajectories, sigma: float, seed: int = 0) -> Trajectories:
    """Gaussian observation noise: a copy of ``traj`` with ``sigma`` times each state's standard
    deviation (over all its trajectories and times) added to every state.

    ``sigma = 0`` returns an unchanged copy. The same ``traj``, ``sigma`` and ``seed`` give the
    same noise; times, parameters and names are kept (the noise is on the observations only).
    """
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise level must be a finite number >= 0, got {sigma}")
    scale = traj.x.reshape(-1, traj.dim).std(0)
    noise = np.random.default_rng(seed).standard_normal(traj.x.shape) * (sigma * scale)
    return replace(traj, x=traj.x + noise)
