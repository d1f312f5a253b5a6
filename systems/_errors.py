"""The errors of the systems package: every refusal of an input is a SystemInputError (a
ValueError), whose message says which rule the input breaks and what to pass instead."""

from __future__ import annotations


class SystemInputError(ValueError):
    """An invalid input to a system (parameters, ranges, split, number of trajectories); the
    message says which rule it breaks."""


class UnknownNameError(SystemInputError, KeyError):
    """A system, preset or parameter name that is not registered; the message lists the known
    ones."""


class SimulationCostError(SystemInputError):
    """A simulation that would take more solver steps, or more memory, than this package
    allows; the message gives the count and what to change (the step, the span, the batch)."""
