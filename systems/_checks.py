"""Checks shared by every simulator's entry point: arrays of real numbers, settings that must be
positive finite numbers (tolerances, step sizes), floating-point dtypes fine enough to simulate
in, and the memory a batch of trajectories needs, all checked before any work starts."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch

from ._errors import SimulationCostError, SystemInputError

#: dtypes too coarse to integrate in (about three significant digits: the sample times alone
#: round onto each other)
TOO_COARSE = (torch.float16, torch.bfloat16)


def real_array(a, name: str, shape: str, *, noun: str = "numbers") -> np.ndarray:
    """``a`` (a tensor, array, list or number) as a C-contiguous float64 numpy array (views with
    negative strides included); SystemInputError where it holds text, complex or boolean
    values, or is ragged. ``shape`` is the expected shape, for the message, e.g. "(B, 2)"."""
    if isinstance(a, torch.Tensor):
        _check_real(a, name, shape)
        return a.detach().to("cpu", torch.float64).numpy()
    try:
        if isinstance(a, str | bytes):
            raise TypeError
        arr = np.asarray(a)
    except (TypeError, ValueError, RuntimeError):
        arr = None
    if arr is not None:
        _check_real(arr, name, shape)
    if arr is None or arr.dtype.kind not in "iuf":  # (text, objects, ragged lists)
        got = type(a).__name__ + (f" of dtype {arr.dtype}" if arr is not None else "")
        raise SystemInputError(f"{name} must be {noun}, shape {shape}; got {got}")
    return np.asarray(arr, dtype=np.float64, order="C")  # (a 0-dim array stays 0-dim)


def real_tensor(a, name: str, shape: str, dtype: torch.dtype, device, *,
                noun: str = "numbers") -> torch.Tensor:
    """``a`` as a tensor of ``dtype`` on ``device`` (a tensor keeps its autograd graph); the
    refusals of :func:`real_array`."""
    if isinstance(a, torch.Tensor):
        _check_real(a, name, shape)
        return a.to(dtype=dtype, device=device)
    return torch.from_numpy(real_array(a, name, shape, noun=noun)).to(dtype=dtype, device=device)


def _check_real(a: torch.Tensor | np.ndarray, name: str, shape: str) -> None:
    """Refuse complex and boolean arrays, which convert to floats without an error (complex
    ones losing their imaginary part)."""
    if isinstance(a, torch.Tensor):
        what = "complex" if a.is_complex() else "boolean" if a.dtype == torch.bool else None
    else:
        what = {"c": "complex", "b": "boolean"}.get(a.dtype.kind)
    if what == "complex":
        raise SystemInputError(f"{name} must hold real numbers, shape {shape}; got complex "
                               f"values (dtype {a.dtype}): pass the real part (.real) if that "
                               f"is what you mean")
    if what == "boolean":
        raise SystemInputError(f"{name} must hold real numbers, shape {shape}; got booleans "
                               f"(dtype {a.dtype})")


def check_dtype(dtype, name: str) -> None:
    """Refuse a ``dtype`` to simulate in that is not torch's float32 or float64."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise SystemInputError(f"{name} must be a floating-point torch dtype, torch.float64 or "
                               f"torch.float32; got {dtype!r}")
    if dtype in TOO_COARSE:
        raise SystemInputError(
            f"{name} is {dtype}, too coarse to simulate in (eps "
            f"{torch.finfo(dtype).eps:.1g}: about three significant digits, and close sample "
            f"times round onto each other); use torch.float32 or torch.float64, e.g. x0.float()")


def check_device(device) -> torch.device:
    """``device`` as a torch device that can simulate here: the CPU, or an available CUDA
    device; SystemInputError naming the fix otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SystemInputError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemInputError(f"device {device!r} was asked for, but CUDA is not "
                                   f"available here; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SystemInputError(f"device {device!r}: this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise SystemInputError(f"simulations run on 'cpu' or 'cuda', not {device!r}")
    return dev


def positive_number(value, name: str, example: str) -> float:
    """``value`` as a float; SystemInputError naming ``name`` unless it is a finite real number
    above zero (text, booleans, complex numbers, NaN and infinities are refused). A 0-dim
    tensor or array of a real number counts as that number."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        value = value.item()  # (a Python bool, int, float or complex: judged below)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        hint = " (a number, not text)" if isinstance(value, str | bytes) else ""
        raise SystemInputError(f"{name} must be a positive finite number, e.g. {example}; got "
                               f"{value!r:.40} of type {type(value).__name__}{hint}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise SystemInputError(f"{name} must be a positive finite number, e.g. {example}; got "
                               f"{value!r}")
    return number


def memory_bytes(device) -> int | None:
    """The memory of ``device`` in bytes: the machine's physical memory for the CPU, the GPU's
    for CUDA; None where it cannot be told (then nothing is refused for memory)."""
    try:
        device = torch.device(device)
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
    except (ValueError, OSError, AttributeError, RuntimeError):
        pass
    return None


def human_size(nbytes: float) -> str:
    """``nbytes`` as a short human-readable size, e.g. ``'1.5 TB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    raise AssertionError  # unreachable


def check_memory(n: int, n_times: int, dim: int, dtype: torch.dtype, device,
                 copies: int) -> None:
    """Refuse a batch of ``n`` trajectories of ``n_times`` samples of ``dim`` states when
    ``copies`` arrays of that size would need more than half of ``device``'s memory."""
    total = memory_bytes(device)
    nbytes = float(n) * n_times * dim * torch.finfo(dtype).bits / 8 * copies
    if total is not None and nbytes > total / 2:
        raise SimulationCostError(
            f"{n:,} trajectories of {n_times:,} sample times ({dim} states, {dtype}) would "
            f"need about {human_size(nbytes)} of memory, more than half of this machine's "
            f"{human_size(total)}; simulate fewer trajectories or sample times at once (in "
            f"batches)")
