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

import torch

#: FLOPs of one GEMM (2 x batch x D^2 for the recurrence) below which one thread is fastest
PARALLEL_FLOPS = 2e9


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
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested}")
        return int(requested), "requested"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    if work_flops is None or work_flops < PARALLEL_FLOPS:
        return 1, "small work"
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = max(1, cores - int(load + 0.5))
    return free, "large work, idle cores"


def configure(requested: int | None = None, *, work_flops: float | None = None) -> int:
    """Set torch's intra-op threads by :func:`choose`; returns the number set."""
    n, _ = choose(requested, work_flops=work_flops)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
