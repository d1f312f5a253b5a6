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

#: rollouts of at least this many steps (over all batches) show a bar
PROGRESS_STEPS = 10_000

_open: ContextVar = ContextVar("warpphys_progress_bar", default=None)


@contextmanager
def bar(steps: int, what: str) -> Iterator:
    """A tqdm bar over ``steps`` steps of ``what`` when they are at least
    :data:`PROGRESS_STEPS` (and stderr is open), else None; :func:`tick` advances it until
    the block ends."""
    if steps < PROGRESS_STEPS or sys.stderr is None:  # (no stderr: started with 2>&-)
        yield None
        return
    shown = tqdm(total=steps, desc=what, unit="step", leave=False)
    token = _open.set(shown)
    try:
        yield shown
    finally:
        _open.reset(token)
        shown.close()


def tick(n: int = 1) -> None:
    """Advance the open bar by ``n`` steps (none open: nothing)."""
    shown = _open.get()
    if shown is not None:
        shown.update(n)
