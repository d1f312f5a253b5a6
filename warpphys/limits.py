"""Size limits checked before allocating: a job that cannot fit in memory is refused up front,
with a message that says what is too big and what to do, instead of failing deep inside numpy
or torch (or swapping the machine to a halt)."""

from __future__ import annotations

import systems
from warpphys.errors import WarpphysError


class ResourceError(WarpphysError):
    """A job would need more memory (or steps) than this machine has; says what to shrink."""


def memory_bytes() -> int:
    """This machine's physical memory in bytes (16 GiB if the system does not say)."""
    return systems.memory_bytes("cpu") or 16 * 2**30


human = systems.human_size


def check_memory(nbytes: float, what: str, advice: str) -> None:
    """Refuse a job needing ``nbytes`` when that exceeds half this machine's memory.

    ``what`` names the job and its sizes ("--n 10 trajectories of 96 steps"), ``advice`` what
    to do instead ("use a smaller --n")."""
    limit = memory_bytes() // 2
    if nbytes > limit:
        raise ResourceError(
            f"{what} would need about {human(nbytes)} of memory, more than half of this "
            f"machine's {human(memory_bytes())}; {advice}"
        )
