"""Run directories and the one atomic file write every writer of the package uses.

A run directory (written by :func:`warpphys.api.fit`) holds ``config.json``, ``model.pt``,
``metrics.json``, ``last.pt`` (the training checkpoint, for ``--resume``) and ``figures/``.
Every file is written atomically: to a hidden temporary file in the same folder, renamed into
place only once complete, so an interrupted job never leaves half a file.
"""

from __future__ import annotations

import json
import os
import shutil
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jsonable(o):
    """``json.dump``'s ``default``: numpy scalars and arrays, and paths, as plain data."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(obj, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON (numpy values as plain numbers), written atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, default=jsonable)
        fh.write("\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    """``text`` written atomically."""
    with atomic_open(path) as fh:
        fh.write(text)


def check_run_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an --out that is a file, or a non-empty directory without ``force``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(
            f"--out {str(run_dir)!r} is a file, not a run directory; choose another --out"
        )
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise RunError(
            f"run directory {str(run_dir)!r} exists already; choose another --out, continue "
            f"it with --resume {run_dir}, or replace it with --force"
        )


def prepare_run_dir(run_dir: Path, *, force: bool) -> Path:
    """Create the run directory (emptying it with ``force``); only once the inputs are valid."""
    check_run_dir(run_dir, force=force)
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def default_out(system: str | None, data, model: str) -> Path:
    """``runs/<system or data file stem>-<model>-<date-time>``."""
    stem = system or Path(data).stem
    return Path("runs") / f"{stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
