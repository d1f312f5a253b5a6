"""How many CPU threads torch uses: chosen by the size of the work, unless the user said.

warpphys's CPU work is a long chain of small GEMMs (a batch of 64 trajectories times weight
vectors of a few thousand), run step by step: too small to split across threads with profit, and
a multi-threaded step waits at every barrier for its slowest thread, so that one competing
process on a 2-core machine slows it several times (measured in issue 13: ``fit`` 42 s with
torch's default threads and 26 s with one on an idle 2-core machine; with one busy process
beside it, 159 s against 45 s). Threads pay only for large GEMMs, and only on idle cores.

The order of precedence: an explicit request (``--threads N``, :func:`configure(N)`), then the
user's ``OMP_NUM_THREADS``, then the rule of :func:`choose`.
"""

from __future__ import annotations

import os
import warnings

import torch

#: FLOPs of one GEMM (2 x batch x D^2 for the recurrence) below which one thread is fastest.
#: Measured on an idle 2-core machine: the default black-box WARP (D = 370, batch 128: 3.5e7)
#: gains nothing from a second thread (1.00x), the issue-13 step (D = 692, batch 64: 6.1e7)
#: runs 1.4x faster with two (0.49 s against 0.70 s per step)
PARALLEL_FLOPS = 5e7

#: whether the thread count was chosen by the rule (not by --threads or OMP_NUM_THREADS), so
#: that a job may adapt it to its work once it knows its size (:func:`adapt`)
_automatic = False


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose(requested: int | None = None, *, work_flops: float | None = None,
           cores: int | None = None, load: float | None = None) -> tuple[int, str]:
    """The number of threads and why.

    Args:
        requested: an explicit number (wins over everything).
        work_flops: FLOPs of the typical GEMM of the job (None: warpphys's usual CPU sizes,
            which are below :data:`PARALLEL_FLOPS`).
        cores: cores available (default: this process's CPU affinity).
        load: the machine's 1-minute load average (default: ``os.getloadavg``), so that cores
            busy with other processes are not counted on.
    """
    cores = available_cores() if cores is None else cores
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested}")
        if requested > cores:  # (each thread would wait at every barrier for another's core)
            warnings.warn(f"--threads {requested} is more than the {cores} CPU cores this "
                          f"process may use; using {cores}", stacklevel=3)
            return cores, "requested"
        return int(requested), "requested"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        if int(env) > cores:  # (as --threads: 99999 of them exhausted the memory)
            warnings.warn(f"OMP_NUM_THREADS={env} is more than the {cores} CPU cores this "
                          f"process may use; using {cores}", stacklevel=3)
            return cores, "OMP_NUM_THREADS"
        return int(env), "OMP_NUM_THREADS"
    if work_flops is None or work_flops < PARALLEL_FLOPS:
        return 1, "small work"
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = max(1, cores - int(load + 0.5))
    return free, "large work, idle cores"


def configure(requested: int | None = None, *, work_flops: float | None = None) -> int:
    """Set torch's intra-op threads by :func:`choose`; returns the number set."""
    global _automatic
    n, why = choose(requested, work_flops=work_flops)
    _automatic = why not in ("requested", "OMP_NUM_THREADS")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def adapt(work_flops: float) -> int:
    """Once a job knows the FLOPs of its typical GEMM: re-choose the threads by the rule, if
    the rule chose them (:func:`configure` without a request or OMP_NUM_THREADS; the command
    line does so); else leave them. Returns the number of threads in use."""
    if _automatic:
        return configure(work_flops=work_flops)
    return torch.get_num_threads()
