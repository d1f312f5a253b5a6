"""Run directories and the one atomic file write every writer of the package uses.

A run directory (written by :func:`warpphys.api.fit`) holds ``config.json``, ``model.pt``,
``metrics.json``, ``last.pt`` (the training checkpoint, for ``--resume``) and ``figures/``.
Every file is written atomically: to a hidden temporary file in the same folder, renamed into
place only once complete, so an interrupted job never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from warpphys.errors import RunError

MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"
METRICS_FILE, LAST_FILE = "metrics.json", "last.pt"
FIGURES_DIR = "figures"


@contextmanager
def atomic_open(path: str | os.PathLike, *, binary: bool = False,
                fsync: bool = False) -> Iterator:
    """Open a hidden temporary file next to ``path`` for writing; on leaving the block it
    replaces ``path`` (``os.replace``, atomic within a folder), or is removed if the block
    raised. The folder is created if needed. The temporary file is opened exclusively ("x"), so
    it gets the usual permissions (umask) and never clobbers another writer's file. ``fsync``:
    flush to disk before the rename (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb" if binary else "x") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is not None and os.fspath(e.filename) == str(tmp):
            # name the file asked for, not the temporary one
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: the largest files of a run directory read whole: a checkpoint (at the paper's sizes about
#: 100 MB of weights, three times that with Adam's moments) and a JSON file warpphys writes
MAX_CHECKPOINT_BYTES, MAX_JSON_BYTES = 2**32, 2**26


def file_kind(path: str | os.PathLike) -> str:
    """What ``path``, which exists and is not a regular file, is: 'a folder', 'a FIFO (named
    pipe)', ... (links followed)."""
    mode = os.stat(path).st_mode
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def read_bytes(path: str | os.PathLike, limit: int, error: type[Exception] = RunError) -> bytes:
    """The contents of the regular file ``path`` (links followed), of at most ``limit`` bytes.

    Anything else raises ``error`` naming the problem: a device, FIFO or folder in its place (a
    link to /dev/zero would fill the memory, a FIFO block forever) or a file too large to be
    one warpphys wrote. A missing file raises FileNotFoundError as usual."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{str(path)!r} is {file_kind(path)}, not a regular file; put back the "
                    f"file that `warpphys fit` wrote")
    if info.st_size > limit:
        raise error(f"{str(path)!r} is {info.st_size:,} bytes, larger than any file warpphys "
                    f"writes there ({limit:,} at most); it is not one of a run's files")
    with open(path, "rb") as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:  # (grew while being read)
        raise error(f"{str(path)!r} is larger than {limit:,} bytes; it is not one of a run's "
                    f"files")
    return raw


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's contents (hex), read in chunks: what a run records of its data
    files, so that a resume notices a file replaced since."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def loads(text: str | bytes):
    """``json.loads``, with JSON nested too deeply for Python (a RecursionError) reported as
    the ValueError of any other invalid JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to be one warpphys wrote") from None


def read_json(path: str | os.PathLike):
    """A JSON file of a run or study (see :func:`read_bytes` and :func:`loads`): RunError for a
    file that is not regular or too large, OSError where it cannot be read, ValueError where it
    is not JSON."""
    return loads(read_bytes(path, MAX_JSON_BYTES))


def jsonable(o):
    """``json.dump``'s ``default``: numpy scalars and arrays, and paths, as plain data."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def finite_json(obj):
    """``obj`` with every NaN or infinite number replaced by None (JSON's null), numpy values
    and paths as plain data: strict JSON has no NaN or Infinity."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic, Path)):
        return finite_json(jsonable(obj))
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj, path: str | os.PathLike) -> None:
    """``obj`` as indented strict JSON (numpy values as plain numbers, NaN and infinities as
    null), written atomically."""
    with atomic_open(path) as fh:
        json.dump(finite_json(obj), fh, indent=2, default=jsonable, allow_nan=False)
        fh.write("\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    """``text`` written atomically."""
    with atomic_open(path) as fh:
        fh.write(text)


#: what a run directory of warpphys holds (and the hidden temporary files of atomic writes)
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, MODEL_FILE, LAST_FILE, FIGURES_DIR)
#: the figures `warpphys fit` writes (warpphys.report.write_figures); any other file in
#: figures/ is the user's, and --force never deletes it
FIGURE_FILES = ("trajectories.png", "phase_portraits.png", "error_vs_time.png", "weights.png",
                "invariant.png", "param_recovery.png", "training.png")


def foreign_entries(run_dir: Path) -> list[str]:
    """Entries of ``run_dir`` that warpphys does not write (a user's own files), sorted."""
    found = []
    for p in run_dir.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            continue  # an interrupted atomic write
        if p.name == FIGURES_DIR and p.is_dir() and not p.is_symlink():
            found += [f"{FIGURES_DIR}/{q.name}" for q in p.iterdir()
                      if q.name not in FIGURE_FILES or not q.is_file() or q.is_symlink()]
        elif p.name not in RUN_ENTRIES or p.is_symlink() or (p.name != FIGURES_DIR
                                                             and not p.is_file()):
            found.append(p.name)
    return sorted(found)


def is_run_dir(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a run directory written by ``warpphys fit``: its config.json is
    one warpphys writes (a fit interrupted before its first checkpoint leaves only that), and
    it holds nothing but the files of a run."""
    try:
        config = read_json(run_dir / CONFIG_FILE)
    except (OSError, ValueError):  # (RunError is a ValueError)
        return False
    if not (isinstance(config, dict) and {"model", "options", "versions"} <= set(config)):
        return False
    return not foreign_entries(run_dir)


def check_run_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an --out that is a file, or a non-empty directory without ``force``; with
    ``force``, anything but a run directory of warpphys (a folder of the user's files is never
    replaced), and the current folder or one that holds it."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise RunError(f"--out {str(run_dir)!r} is a symbolic link to nothing usable (a missing "
                       f"target, or a loop of links); choose another --out")
    if force and run_dir.is_symlink():
        raise RunError(f"--out {str(run_dir)!r} is a symbolic link (to "
                       f"{os.readlink(run_dir)!r}); --force replaces run directories, not "
                       f"links: name the run directory itself")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(
            f"--out {str(run_dir)!r} is a file, not a run directory; choose another --out"
        )
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not force:
        resume = (f"continue it with --resume {run_dir}, " if (run_dir / LAST_FILE).exists()
                  else "")
        raise RunError(
            f"run directory {str(run_dir)!r} exists already; choose another --out, {resume}or "
            f"replace it with --force"
        )
    here = Path.cwd().resolve()
    if run_dir.resolve() == here or run_dir.resolve() in here.parents:
        raise RunError(
            f"--out {str(run_dir)!r} is the current folder (or holds it); --force never "
            f"replaces it: name a run directory inside it, e.g. --out runs/new"
        )
    if not is_run_dir(run_dir):
        foreign = foreign_entries(run_dir)
        listed = ", ".join(repr(n) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        why = (f"it holds files warpphys did not write ({listed})" if foreign and
               (run_dir / CONFIG_FILE).exists() else "it is not a run directory of warpphys "
               f"(no {CONFIG_FILE} written by `warpphys fit`)")
        raise RunError(
            f"--force replaces only a run directory made by `warpphys fit`, and {str(run_dir)!r} "
            f"is not one: {why}; nothing was changed. Choose another --out"
        )


def check_out_file(out, *, force: bool, inputs: tuple = (), suffix: str | None = None) -> None:
    """Refuse, before any work is done, an output file that does not end in ``suffix``, is a
    folder, cannot be written, or would replace one of ``inputs`` (always) or another existing
    file (unless ``force``)."""
    path = Path(out)
    if suffix is not None and path.suffix != suffix:
        raise RunError(f"--out must name an {suffix} file, got {str(out)!r}")
    if path.is_dir():
        raise RunError(f"--out {str(out)!r} is a folder; name a file, e.g. "
                       f"{str(path / ('data' + (suffix or '')))!r}")
    for folder in path.absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise RunError(f"--out {str(out)!r} cannot be written: {str(folder)!r} is a file")
            if not os.access(folder, os.W_OK):
                raise RunError(f"--out {str(out)!r} cannot be written: no permission in "
                               f"{str(folder)!r}")
            break
    if not path.exists():
        return
    for given in inputs:
        if Path(given).exists() and path.samefile(given):
            raise RunError(f"--out {str(out)!r} is the input file --data {str(given)!r}; name "
                           f"another file, the input is never overwritten")
    if not force:
        raise RunError(f"--out {str(out)!r} exists already; name another file, or replace it "
                       f"with --force (force=True in Python)")


def staging_dir(run_dir: Path, *, force: bool) -> Path:
    """Where to build the run for ``--out run_dir``: ``run_dir`` itself when it is new (or
    empty); with ``force`` over an existing run, a new hidden folder beside it, swapped in by
    :func:`swap_in` once the new run has succeeded (until then the old run is untouched)."""
    check_run_dir(run_dir, force=force)
    if run_dir.exists() and any(run_dir.iterdir()):
        return run_dir.with_name(f".{run_dir.name}.new-{uuid.uuid4().hex[:8]}")
    return run_dir


def swap_in(build: Path, run_dir: Path) -> None:
    """Replace the run directory ``run_dir`` by the finished run in ``build`` (see
    :func:`staging_dir`): two renames within one folder, then the old run is removed."""
    if build == run_dir or not build.exists():
        return
    old = run_dir.with_name(f".{run_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(run_dir, old)
    try:
        os.rename(build, run_dir)
    except BaseException:
        os.rename(old, run_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def prepare_run_dir(run_dir: Path, *, force: bool) -> Path:
    """Create the run directory (refused unless new, empty, or a run replaced with ``force``,
    see :func:`check_run_dir`); a staging folder of :func:`staging_dir` is created as is."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    check_run_dir(run_dir, force=force)
    shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def default_out(system: str | None, data, model: str) -> Path:
    """``runs/<system or data file stem>-<model>-<date-time>``."""
    stem = system or Path(data).stem
    return Path("runs") / f"{stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
