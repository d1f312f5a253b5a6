"""Checkpoints: plain tensors and data only, written atomically, read with weights_only=True.

A checkpoint is a dict ``{"format": "warpphys", "version": 1, "kind": ..., ...}`` of tensors,
numbers, strings, lists and dicts. It is never unpickled as arbitrary objects: a file that holds
anything else is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from warpphys.errors import WarpphysError
from warpphys.rundir import MAX_CHECKPOINT_BYTES, atomic_open, read_bytes

FORMAT, VERSION = "warpphys", 1


class CheckpointError(WarpphysError):
    """A checkpoint is missing, corrupt, foreign or unsafe; the message says which."""


def save(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` atomically: to a temporary file in the same folder, then renamed."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **obj}
    with atomic_open(path, binary=True, fsync=True) as fh:
        torch.save(payload, fh)
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a warpphys checkpoint safely (``weights_only=True``), or raise CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; is this a warpphys run directory?")
    try:
        raw = read_bytes(path, MAX_CHECKPOINT_BYTES, CheckpointError)
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} cannot be read ({e.strerror or e})") from None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own text advises weights_only=False; name only the refused object, if any
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{str(path)!r} contains objects other than tensors and plain data{what}, so it was "
            f"not loaded: loading it could run arbitrary code; use a run directory written by "
            f"`warpphys fit`"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{str(path)!r} is corrupt or not a PyTorch checkpoint ({reason}); "
            f"re-run `warpphys fit` or point to another run directory"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a warpphys checkpoint (no 'format': 'warpphys' entry)"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {obj.get('version')}, this warpphys reads "
            f"version {VERSION}"
        )
    return obj
