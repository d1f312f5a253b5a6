"""Progress of long rollouts: a bar (tqdm, on stderr) that the models' time loops advance.

A rollout of many steps runs for minutes (one step of a batch takes milliseconds), and each
model has its own time loop. :func:`bar` opens a bar for a rollout that is long enough to need
one; inside it, every time loop calls :func:`tick` once a step, which costs nothing when no bar
is open. The open bar is held per thread and task (a context variable), so rollouts running
side by side do not advance each other's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm

#: jobs of at least this many steps (over all batches) show a bar, or of at least this many
#: trajectory-steps (many trajectories, each batch one step of the bar: seconds to minutes)
PROGRESS_STEPS = 10_000
PROGRESS_WORK = 2_000_000

_open: ContextVar = ContextVar("warpphys_progress_bar", default=None)


@contextmanager
def bar(steps: int, what: str, *, work: float = 0, unit: str = "step") -> Iterator:
    """A tqdm bar over ``steps`` steps of ``what`` when they are at least
    :data:`PROGRESS_STEPS`, or the ``work`` (trajectories times steps) at least
    :data:`PROGRESS_WORK` (and stderr is open), else None; :func:`tick` advances it until the
    block ends."""
    big = steps >= PROGRESS_STEPS or work >= PROGRESS_WORK
    if not big or sys.stderr is None:  # (no stderr: started with 2>&-)
        yield None
        return
    shown = tqdm(total=steps, desc=what, unit=unit, leave=False)
    token = _open.set((shown, unit))
    try:
        yield shown
    finally:
        _open.reset(token)
        shown.close()


def tick(n: int = 1, unit: str = "step") -> None:
    """Advance the open bar by ``n`` of its ``unit`` (none open, or one counting other units,
    e.g. a refinement's trajectories while its model steps through a context: nothing)."""
    opened = _open.get()
    if opened is not None and opened[1] == unit:
        opened[0].update(n)
