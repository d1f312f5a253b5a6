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

import itertools
import math
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import systems
from warpphys.errors import WarpphysError
from warpphys.limits import ResourceError, check_memory
from warpphys.rundir import atomic_open, file_kind


class DataError(WarpphysError):
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
        self.t = _real_array("t", self.t)
        self.x = _real_array("x", self.x)
        if self.params is not None:
            self.params = _real_array("params", self.params)
            p = self.params
            if p.ndim == 2 and len(p) == len(self.x) and not np.isfinite(p).all():
                # (a user who knows the parameters of some trajectories only: the data are
                # still usable, without parameter metrics)
                missing = int((~np.isfinite(p)).any(1).sum())
                warnings.warn(f"'params' is missing (NaN or infinite) for {missing} of {len(p)} "
                              f"trajectories: the parameters are left out, and with them the "
                              f"parameter metrics, which need every trajectory's",
                              stacklevel=3)
                self.params = self.param_names = None
        if self.state_names is not None:
            self.state_names = tuple(_text(s) for s in np.atleast_1d(self.state_names))
        if self.param_names is not None:
            self.param_names = tuple(_text(s) for s in np.atleast_1d(self.param_names))
        if self.system is not None:
            self.system = _text(self.system)
            if self.system not in systems.names() and self.system in systems.PRESETS:
                self.system = systems.PRESETS[self.system].system  # ('lv': lotka_volterra)
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

    def windows(self, n_windows: int) -> Trajectories:
        """Each trajectory cut into ``n_windows`` consecutive windows of ``T // n_windows`` steps
        (the last ``T mod n_windows`` steps dropped): ``N * n_windows`` trajectories, each
        window's times shifted to start at ``t[0]`` and its parameters repeated. Valid for the
        autonomous systems of ``systems`` (time shifts change nothing). Needs regular sampling
        (the windows must share their sample times) and at least 4 steps per window."""
        if isinstance(n_windows, bool) or not isinstance(n_windows, int | np.integer) \
                or n_windows < 1:
            raise DataError(f"the number of windows must be a whole number >= 1, got "
                            f"{n_windows!r}")
        n_windows = int(n_windows)
        L = self.n_times // n_windows
        fix = ("store several trajectories sharing one time grid, x of shape (N, T, d) with "
               "N >= 3")
        if L < 4:
            raise DataError(
                f"{self.n} trajectories of {self.n_times} steps are too few to cut into "
                f"{n_windows} windows of at least 4 steps; {fix}"
            )
        t = self.t[:n_windows * L].reshape(n_windows, L)
        rel = t - t[:, :1]
        if not np.allclose(rel, rel[0], rtol=1e-6, atol=1e-9 * abs(self.t[-1] - self.t[0])):
            raise DataError(
                f"{self.n} trajectories are too few to split into train, validation and test; "
                f"cutting them into windows needs regular sampling, but 't' is irregular: {fix}"
            )
        x = self.x[:, :n_windows * L].reshape(self.n * n_windows, L, self.dim)
        params = None if self.params is None else np.repeat(self.params, n_windows, axis=0)
        return replace(self, t=rel[0] + self.t[0], x=x, params=params)

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

    def reorder_states(self, system: str) -> Trajectories:
        """This, or where ``state_names`` name ``system``'s states in another order (e.g.
        ``("omega", "theta")`` for the pendulum's ``("theta", "omega")``), a copy with the state
        columns in the system's order: the models read the states by position."""
        try:
            wanted = tuple(systems.get_system(system).state_names)
        except KeyError as e:
            raise DataError(str(e.args[0])) from None
        order = _state_order(self.state_names, wanted)
        if order is None:
            return self
        return replace(self, x=self.x[..., order], state_names=wanted)

    def rename_params(self, mapping: dict[str, str] | None, system: str | None = None, *,
                      strict: bool = True) -> Trajectories:
        """A copy whose ``param_names`` are renamed by ``mapping`` ({name in the file: the
        system's parameter name}), so that :meth:`system_params` matches them; e.g.
        ``{"mass": "m", "stiffness": "k"}``. ``system`` defaults to the file's.

        Raises DataError when a target is not a parameter of the system, two names map onto one,
        or (``strict``) a name is not among the file's ``param_names``; without ``strict`` such
        names are skipped (a recorded mapping applied to another file)."""
        if mapping is None:
            return self
        if not isinstance(mapping, Mapping):
            raise DataError(
                f"param_names maps the file's parameter names onto the system's, a dict such as "
                f"{{'mass': 'm', 'stiffness': 'k'}} (on the command line: --param-name mass=m); "
                f"got {type(mapping).__name__} {mapping!r:.80}. Names in the file's own order "
                f"belong in the file's 'param_names' array"
            )
        odd = [f"{k!r}: {v!r}" for k, v in mapping.items()
               if not (isinstance(k, str) and isinstance(v, str))]
        if odd:
            raise DataError(f"param_names maps names (text) onto names, e.g. {{'mass': 'm'}}; "
                            f"got {', '.join(odd)[:120]}")
        if not mapping:
            return self
        name = system or self.system
        where = "pass --system NAME (or a file whose 'system' key names one)"
        if name is None:
            raise DataError(f"--param-name maps onto a system's parameters: {where}")
        sys_ = systems.get_system(name)
        wrong = sorted(v for v in mapping.values() if v not in sys_.param_names)
        if wrong:
            raise DataError(
                f"--param-name: {wrong} not parameters of {sys_.name}, whose parameters are "
                f"{list(sys_.param_names)}"
            )
        if len(set(mapping.values())) < len(mapping):
            raise DataError(f"--param-name maps two names onto one parameter: {mapping}")
        have = self.param_names or ()
        absent = sorted(k for k in mapping if k not in have)
        if strict and absent:
            raise DataError(
                f"--param-name: {absent} not in the file's param_names "
                f"{list(have) if have else '(it has none)'}"
            )
        names = tuple(mapping.get(n, n) for n in have)
        clash = sorted(n for n in set(names) if names.count(n) > 1)
        if clash:
            raise DataError(
                f"--param-name: the file would have two columns named {clash}; map the other "
                f"one away too"
            )
        return replace(self, param_names=names or None)

    # -- torch ------------------------------------------------------------------------------
    @classmethod
    def from_simulation(cls, sim: systems.Simulation) -> Trajectories:
        sys_ = systems.get_system(sim.system)
        return cls(
            t=sim.t.cpu().numpy(), x=sim.x.cpu().numpy(), params=sim.params.cpu().numpy(),
            state_names=sys_.state_names, param_names=sys_.param_names, system=sys_.name,
        )

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: Mapping[str, np.ndarray] | None = None
             ) -> Path:
        """Write an .npz file atomically (a temporary file renamed into place); ``extra``:
        further arrays of :data:`PREDICTION_KEYS` to write beside the format's."""
        extra = dict(extra or {})
        if set(extra) - set(PREDICTION_KEYS):
            raise ValueError(f"extra arrays may only be {PREDICTION_KEYS}, got {sorted(extra)}")
        arrays = {"t": self.t, "x": self.x}
        if self.params is not None:
            arrays["params"] = self.params
        if self.state_names is not None:
            arrays["state_names"] = np.array(self.state_names)
        if self.param_names is not None:
            arrays["param_names"] = np.array(self.param_names)
        if self.system is not None:
            arrays["system"] = np.array(self.system)
        path = _data_path(path)
        if path.suffix != ".npz":
            raise DataError(f"trajectory files end in .npz, got {path.name!r}")
        if path.is_dir():
            raise DataError(f"{str(path)!r} is a folder; name the .npz file to write")
        try:
            validate(self)  # (its arrays may have been replaced since it was made)
        except DataError as e:
            raise DataError(f"not saved to {str(path)!r}: {e}") from None
        try:
            with atomic_open(path, binary=True) as fh:
                np.savez(fh, **arrays, **extra)
        except OSError as e:
            raise DataError(f"cannot write {str(path)!r}: {e.strerror or e}; choose a "
                            f"writable place") from None
        return path

    @staticmethod
    def path_of(path) -> Path:
        """The path a data file is read from (bytes decoded, ``~`` expanded)."""
        return _data_path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, system: str | None = None, *,
             param_names: dict[str, str] | None = None) -> Trajectories:
        """Read and validate an .npz file; ``system`` (if given) must match its state size.
        ``param_names`` ({name in the file: the system's name}) renames parameter columns
        (see :meth:`rename_params`)."""
        path = _data_path(path)
        if not path.exists():
            if path.is_symlink():
                raise DataError(f"data file {str(path)!r} is a symbolic link to nothing "
                                f"readable (a missing target, or a loop of links)")
            raise DataError(f"data file {str(path)!r} does not exist")
        if not path.is_file():  # before it is opened: reading a FIFO or a device never ends
            raise DataError(f"data file {str(path)!r} is {file_kind(path)}, not a regular "
                            f"file; name an .npz trajectory file")
        hint = "write one with numpy.savez(path, t=..., x=...) or `warpphys simulate`"
        try:
            loaded = np.load(path, allow_pickle=False, mmap_mode="r")  # (.npy: not read)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DataError(_bare_array_message(path, loaded.shape, hint))
            with loaded as f:
                raw = _read_keys(f, path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            if isinstance(e, WarpphysError):
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
            raise DataError(_no_x_message(path, raw))
        if "t" not in raw:
            raise DataError(f"{str(path)!r} has no array 't': add the (T,) sample times")
        unknown = set(raw.pop(_UNREAD)) - set(PREDICTION_KEYS)
        if unknown:
            warnings.warn(f"{path.name}: ignoring unknown keys {sorted(unknown)}", stacklevel=2)
        sysname = raw.get("system")
        if sysname is not None and sysname.size == 1:
            sysname = _text(sysname.reshape(()).item())
        _reorder_states(raw, system or sysname)
        traj = _build(
            path.name,
            t=raw["t"], x=raw["x"], params=raw.get("params"),
            state_names=raw.get("state_names"), param_names=raw.get("param_names"),
            system=None if sysname is None else str(sysname),
        )
        if system is not None:
            try:
                check_system(traj, system)
            except DataError as e:
                raise DataError(f"{str(path)!r}: {e}") from None
        if param_names is not None:
            try:
                traj = traj.rename_params(param_names, system)
            except DataError as e:
                raise DataError(f"{path.name}: {e}") from None
        return traj


def _reorder_states(raw: dict, system) -> None:
    """Put a file's state columns (``raw``: its arrays) in ``system``'s order where its
    ``state_names`` name that system's states in another order (a user's own convention, as
    parameter columns are matched by ``param_names``)."""
    if not isinstance(system, str) or raw.get("state_names") is None:
        return
    try:
        wanted = tuple(systems.get_system(system).state_names)
    except KeyError:
        return  # (an unknown system is refused by the checks that follow)
    order = _state_order(raw["state_names"], wanted)
    x = raw["x"]
    if order is not None and getattr(x, "ndim", 0) == 3 and x.shape[2] == len(order):
        raw["x"], raw["state_names"] = np.asarray(x)[..., order], np.array(wanted)


def _state_order(names, wanted: tuple[str, ...]) -> list[int] | None:
    """Where ``names`` are the names ``wanted`` in another order, the columns that put them in
    that order; else None."""
    if names is None:
        return None
    names = [_text(n) for n in np.asarray(names).reshape(-1).tolist()]
    if tuple(names) == wanted or sorted(names) != sorted(wanted):
        return None
    return [names.index(n) for n in wanted]


def _data_path(path) -> Path:
    """``path`` (text, bytes or a path object) as a Path; DataError where it is empty or not a
    path at all."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str | os.PathLike):
        raise DataError(f"the data file must be named by a path (str or pathlib.Path), got "
                        f"{type(path).__name__} {path!r:.60}")
    if not os.fspath(path).strip():  # (Path('') is '.', the current folder)
        raise DataError(f"the data file's path is empty ({os.fspath(path)!r}); name an .npz "
                        f"trajectory file")
    return Path(path).expanduser()  # ("~/data.npz" in a notebook means the home folder)


def _convert_command(path: Path, key: str | None, *, single: bool = False,
                     times: bool = False) -> str:
    """A shell line that writes ``path``'s states (the array ``key`` of an .npz, or the
    whole .npy) as a trajectory file beside it, with times evenly spaced on [0, 1] (or, with
    ``times``, the archive's own 't'); ``single``: the array is one trajectory (T, d)."""
    out = path.with_name(f"{path.stem}_traj.npz")
    read = f"np.load({str(path)!r})"
    if key is not None:
        read = f"f = {read}; x = f[{key!r}]"
    else:
        read = f"x = {read}"
    t = "f['t']" if times else "np.linspace(0, 1, x.shape[1])"
    return (f'python -c "import numpy as np; {read}{"[None]" if single else ""}; '
            f'np.savez({str(out)!r}, x=x, t={t})"')


def _no_x_message(path: Path, raw: dict) -> str:
    """Why an archive without 'x' is refused: the keys a trajectory file needs, and, where an
    array is shaped like states (numbers, (N, T, d), else one trajectory's (T, d)), the line
    that writes it as a trajectory file (the archive's 't' as its times where they fit)."""
    unread = raw[_UNREAD]
    keys = sorted(k for k in raw if k != _UNREAD) + sorted(unread)
    need = (f"{str(path)!r} has no array 'x' (keys: {keys}); a trajectory file needs 'x' of "
            f"shape (N, T, d) and 't' of shape (T,)")

    def numeric(header) -> bool:
        return header is not None and (np.issubdtype(header[1], np.number)
                                       and not np.issubdtype(header[1], np.complexfloating))

    # arrays shaped like states (N, T, d), e.g. the WARP authors' Lotka-Volterra files, which
    # hold 'full' and 'clipped' ones; failing those, one trajectory (T, d)
    for rank in (3, 2):
        states = sorted(k for k, h in unread.items() if numeric(h) and len(h[0]) == rank)
        if states:
            break
    if not states:
        return f"{need}; no array of this file is shaped like states"
    first = states[0]
    single = rank == 2
    n_times = unread[first][0][0 if single else 1]
    t = raw.get("t")
    times = t is not None and t.ndim == 1 and len(t) == n_times and n_times >= 2
    what = "one trajectory's states, shape (T, d)" if single else "the states"
    when = "" if times else ", with times evenly spaced on [0, 1]"
    convert = (f"; if {first!r} holds {what}{when}: "
               f"{_convert_command(path, first, single=single, times=times)}")
    if len(states) > 1:
        shown = "; ".join(f"{k!r} has shape {unread[k][0]}" for k in states)
        convert = (f" ({shown}: check which holds the states as they evolve, then name it "
                   f"'x'){convert}")
    return f"{need}{convert}"


def _bare_array_message(path: Path, shape: tuple, hint: str) -> str:
    """Why a bare .npy array is refused, with the line that converts one of states (N, T, d),
    such as the WARP authors' data files (sampled evenly on t in [0, 1]), when the times are
    known."""
    if len(shape) != 3:
        return (f"{str(path)!r} holds a single array of shape {shape}, not an .npz archive "
                f"of named arrays; {hint}")
    return (f"{str(path)!r} holds a single array of shape {shape} and no sample times; a "
            f"trajectory file holds both. If its times are evenly spaced on [0, 1] (as in the "
            f"WARP authors' data files), convert it with: {_convert_command(path, None)} "
            f"(else pass your own times as t)")


#: the keys of a trajectory file; others are never read
KEYS = ("t", "x", "params", "state_names", "param_names", "system")
#: what ``warpphys predict`` adds to its output file for models with physical parameters: the
#: parameters of the estimate that drove each rollout (N, p), their names (the system's order)
#: and which estimate it was; reading such a file back ignores them without a warning
PREDICTION_KEYS = ("params_estimated", "params_estimated_names", "estimate")
_UNREAD = "\0unread"


def _real_array(key: str, value) -> np.ndarray:
    """``value`` as a float64 array; DataError where it is not an array of real numbers
    (text, complex numbers, booleans, ragged nested lists, objects)."""
    if np.ma.isMaskedArray(value):  # (asarray would drop the mask: its fill values as data)
        masked = int(np.ma.count_masked(value))
        if masked:
            raise DataError(f"'{key}' is a masked array with {masked} masked entries; the "
                            f"format has no missing values: drop those trajectories or steps, "
                            f"or fill them in, before use")
        value = np.ma.getdata(value)
    try:
        a = np.asarray(value)
        if a.dtype == object:  # (a list of Python numbers and arrays: numbers, if it can be)
            a = a.astype(np.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"'{key}' must be an array of real numbers, got "
                        f"{type(value).__name__} ({first[:120]})") from None
    if a.dtype.kind in "mM":  # (numpy counts durations as numbers; their unit would be lost)
        raise DataError(f"'{key}' holds dates or durations (dtype {a.dtype}); store numbers, "
                        f"e.g. seconds: (t - t[0]) / np.timedelta64(1, 's')")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        got = f" such as {value!r}" if isinstance(value, str | bytes) and len(value) < 40 else ""
        raise DataError(f"'{key}' must hold real numbers, got dtype {a.dtype}{got}")
    # (contiguous: torch takes no views with negative strides, e.g. x[:, ::-1])
    return np.ascontiguousarray(a, dtype=np.float64)


def _text(value) -> str:
    """A name as text: bytes (``np.bytes_``, from files written with ``dtype='S'``) decoded."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _header(f: np.lib.npyio.NpzFile, key: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of the array ``key`` in ``f``, from its header alone."""
    member_name = f"{key}.npy" if f"{key}.npy" in f.zip.namelist() else key
    with f.zip.open(member_name) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


def _header_or_none(f: np.lib.npyio.NpzFile, key: str) -> tuple[tuple, np.dtype] | None:
    """The shape and dtype of an array that is not read (for messages); None where its header
    is not that of an array (it is never needed)."""
    try:
        return _header(f, key)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError):
        return None


def _read_keys(f: np.lib.npyio.NpzFile, path: Path) -> dict:
    """The arrays of :data:`KEYS` in ``f`` (the shapes and dtypes of the others by name under
    ``_UNREAD``), each refused before it is read when its header declares more data than
    memory can hold."""
    raw: dict = {_UNREAD: {k: _header_or_none(f, k) for k in f.files if k not in KEYS}}
    for key in KEYS:
        if key not in f.files:
            continue
        shape, dtype = _header(f, key)
        n_items = 1
        for size in shape:
            n_items *= int(size)
        check_memory(float(n_items) * max(dtype.itemsize, 8) * 2,
                     f"{str(path)!r}: array {key!r} of shape {tuple(shape)}",
                     "load a smaller file (split it into several), or check that it is not "
                     "corrupt")
        raw[key] = f[key]
    return raw


def _build(source: str, **fields) -> Trajectories:
    try:  # (Trajectories checks the arrays: _real_array)
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
        rounded = ("; times this large round onto each other in float32 (7 digits, e.g. "
                   "Unix timestamps): store them in float64, or relative to the first"
                   if t[i] == t[i + 1] and abs(t[i]) > 1e6 * np.median(np.abs(np.diff(t)))
                   else "")
        raise DataError(
            f"'t' must be strictly increasing; t[{i}] = {t[i]} is followed by "
            f"t[{i + 1}] = {t[i + 1]}{rounded}"
        )
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        gone = ~np.isfinite(x).all(2)  # (N, T): steps without a finite state
        # padding: every non-finite step lies after the trajectory's last finite one
        ends = np.where(gone.all(1), 0, x.shape[1] - np.argmin(gone[:, ::-1], 1))
        padded = gone.any(1) & (ends > 1) & (gone.sum(1) == x.shape[1] - ends)
        if padded.any() and (padded | ~gone.any(1)).all():
            shortest = int(ends.min())
            raise DataError(
                f"'x' ends in NaN in {int(padded.sum())} of {x.shape[0]} trajectories (padding "
                f"of trajectories of different lengths?), the shortest after {shortest} steps; "
                f"the format has no missing values: cut them all to that length, "
                f"x[:, :{shortest}] and t[:{shortest}], or save each length in its own file")
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
    for key in ("state_names", "param_names"):
        names = getattr(tr, key)
        twice = sorted({n for n in names or () if names.count(n) > 1})
        if twice:  # which column is which would be a guess
            raise DataError(f"'{key}' names {twice[0]!r} more than once; give every column "
                            f"its own name")
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
    names, wanted = tr.state_names, tuple(sys_.state_names)
    order = _state_order(names, wanted)
    if order is not None:
        raise DataError(
            f"the states are named {list(names)}: {sys_.name}'s {list(wanted)} in another "
            f"order; reorder them with traj.reorder_states({sys_.name!r}) (x[..., {order}]), "
            f"as reading the file with system={sys_.name!r} does"
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
    method: str = "auto", rtol: float | None = None, step_size: float | None = None,
    dtype: torch.dtype = torch.float64, n_steps: int | None = None,
) -> Trajectories:
    """Simulate a split of a system or preset (see :func:`systems.sample`) as Trajectories.

    ``ranges`` (``{parameter name: (low, high)}``) overrides the split's parameter ranges;
    ``method``, ``rtol``, ``step_size`` and ``dtype`` choose the integrator, ``n_steps`` how many
    leading sample times to simulate (see :func:`systems.sample`).
    Refused before any work (:class:`~warpphys.limits.ResourceError`) when the result would not
    fit in memory, or when the parameters make the system so stiff or fast that the explicit
    solver would need more than :data:`MAX_SOLVER_STEPS` steps.
    """
    check_simulation_cost(system, n, split, preset=preset, ranges=ranges, step_size=step_size)
    return Trajectories.from_simulation(
        systems.sample(system, n, split, seed, preset=preset, device=device, ranges=ranges,
                       method=method, rtol=rtol, step_size=step_size, dtype=dtype,
                       n_steps=n_steps)
    )


#: the most steps an explicit solver is allowed over a simulation's time span (a stiff
#: pendulum, damping 4e4 over 6 s, took minutes with its estimated 80,000; 20,000 take seconds)
MAX_SOLVER_STEPS = 20_000


def check_simulation_cost(system: str | None, n: int | None, split: str = "train", *,
                          preset: str | None = None,
                          ranges: dict[str, tuple[float, float]] | None = None,
                          step_size: float | None = None) -> None:
    """Refuse a simulation that would not fit in memory, or whose explicit solver would need
    more than :data:`MAX_SOLVER_STEPS` steps (stiff or fast dynamics).

    The step count is estimated from the spectral radius of the vector field's Jacobian at the
    corners of the parameter ranges and a few initial states, times the time span, over the
    stability bound of an explicit Runge-Kutta method (about 3). Invalid names and ranges are
    left to :func:`systems.sample` to report.
    """
    try:
        proto = systems.get_protocol(system, preset)
        sys_ = systems.get_system(proto.system)
        chosen = {**proto.ranges(split), **systems.numeric_ranges(ranges or {})}
        sys_.check_ranges(chosen)
        t = proto.times(split)
    except (systems.SystemInputError, KeyError, ValueError, TypeError, AttributeError):
        return  # (systems.sample says what is wrong)
    n_traj = proto.default_n(split) if n is None else n
    if isinstance(n_traj, int) and n_traj > 0:
        # states and the solver's stages (dopri8: 13) in float64, and the float64 file copy
        check_memory(8.0 * n_traj * len(t) * sys_.dim * 3 + 8.0 * n_traj * sys_.dim * 16,
                     f"simulating {n_traj} trajectories of {len(t)} steps",
                     "use a smaller --n (--n-train for fit), or simulate several files with "
                     "different --seed")
    lo_hi = [chosen.get(p.name, p.train) for p in sys_.params]
    rho = fastest_rate(sys_, proto.initial_state.sample(4, torch.Generator().manual_seed(0)),
                       lo_hi)
    span = float(t[-1] - t[0])
    if step_size is not None and step_size > 0 and span / step_size > MAX_SOLVER_STEPS:
        raise ResourceError(f"step size {step_size:g} would take {span / step_size:.2g} steps "
                            f"over t in [0, {span:g}] (budget {MAX_SOLVER_STEPS}); choose a "
                            f"step of at least {span / MAX_SOLVER_STEPS:.2g}")
    steps = rho * span / 3.0
    if not steps <= MAX_SOLVER_STEPS:
        fast = ", ".join(f"{p.name}={lo:g}:{hi:g}" for p, (lo, hi) in zip(
            sys_.params, lo_hi, strict=True) if p.name in (ranges or {}))
        raise ResourceError(
            f"{sys_.name} with {fast or 'these parameters'} is too stiff or fast to simulate: "
            f"its time scale is about {1 / rho:.2g}, so an explicit solver would need about "
            f"{steps:.2g} steps over t in [0, {span:g}] (budget {MAX_SOLVER_STEPS}); choose "
            f"a range closer to the defaults {dict(proto.ranges(split))}"
        )


def fastest_rate(sys_: systems.System, x0: torch.Tensor, lo_hi: list) -> float:
    """The largest rate (1/time) of ``sys_``'s dynamics: the spectral radius of its vector
    field's Jacobian at the corners of the parameter ranges ``lo_hi`` ((low, high) per
    parameter) and at the states ``x0 (n, d)`` (a few initial states)."""
    corners = torch.tensor(list(itertools.product(*lo_hi)), dtype=torch.float64)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    return _spectral_radius(sys_, x0.repeat(len(corners), 1),
                            corners.repeat_interleave(len(x0), 0))


def _spectral_radius(sys_: systems.System, x: torch.Tensor, params: torch.Tensor) -> float:
    """The largest |eigenvalue| of the vector field's Jacobian over the rows of ``x`` and
    ``params`` (central differences, float64)."""
    d = x.shape[1]
    cols = []
    with torch.no_grad():
        for j in range(d):
            h = 1e-6 * (1.0 + x[:, j].abs())
            e = torch.zeros_like(x)
            e[:, j] = h
            f_plus = sys_.vector_field(0.0, x + e, params)
            f_minus = sys_.vector_field(0.0, x - e, params)
            cols.append((f_plus - f_minus) / (2 * h[:, None]))
        jac = torch.stack(cols, -1)
        rho = torch.linalg.eigvals(jac).abs().max()
    return float(rho) if torch.isfinite(rho) else float("inf")


def as_tensor(a, device="cpu", dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def add_noise(traj: Trajectories, sigma: float, seed: int = 0) -> Trajectories:
    """Gaussian observation noise: a copy of ``traj`` with ``sigma`` times each state's standard
    deviation (over all its trajectories and times) added to every state.

    ``sigma = 0`` returns an unchanged copy. The same ``traj``, ``sigma`` and ``seed`` give the
    same noise; times, parameters and names are kept (the noise is on the observations only).
    """
    if not isinstance(traj, Trajectories):
        raise DataError(f"add_noise takes Trajectories (e.g. Trajectories.load(path)), got "
                        f"{type(traj).__name__}")
    try:
        level = math.nan if isinstance(sigma, bool) else float(sigma)
    except (TypeError, ValueError):
        level = math.nan
    if not np.isfinite(level) or level < 0:
        raise ValueError(f"the noise level must be a finite number >= 0, got {sigma!r}")
    sigma = level
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"the noise's seed must be a whole number >= 0, got {seed!r}")
    scale = traj.x.reshape(-1, traj.dim).std(0)
    noise = np.random.default_rng(seed).standard_normal(traj.x.shape) * (sigma * scale)
    return replace(traj, x=traj.x + noise)
