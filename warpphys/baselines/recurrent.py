"""GRU and LSTM baselines (the paper's), sized to WARP's parameter count by default.

Input of step s: ``(tau_{s+1}, x_s)`` (normalised time and state); a linear read-out of the
hidden state predicts the residual ``x_{s+1} - x_s``. The hidden state starts at zero.
"""

from __future__ import annotations

import torch
from torch import nn

from warpphys.baselines.base import StepBaseline


def recurrent_param_count(kind: str, dim: int, hidden: int, layers: int = 1) -> int:
    """Trainable scalars of a ``kind`` ("gru" or "lstm") baseline with ``hidden`` units."""
    gates = {"gru": 3, "lstm": 4}[kind]
    n_in = 1 + dim
    first = gates * (hidden * n_in + hidden * hidden + 2 * hidden)
    rest = (layers - 1) * gates * (2 * hidden * hidden + 2 * hidden)
    return first + rest + hidden * dim + dim


def hidden_for_params(kind: str, dim: int, target: int, layers: int = 1) -> int:
    """The hidden size whose parameter count is closest to ``target``."""
    best, best_gap = 1, None
    h = 1
    while True:
        gap = abs(recurrent_param_count(kind, dim, h, layers) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = h, gap
        elif recurrent_param_count(kind, dim, h, layers) > target:
            return best
        h += 1


class RecurrentBaseline(StepBaseline):
    """A GRU or LSTM (``cell``) over inputs ``(tau, x_prev)`` with a residual read-out.

    Args:
        dim: state size d.
        hidden: hidden units per layer.
        layers: stacked recurrent layers.
    """

    cell: type = nn.GRU

    def __init__(self, dim: int, *, hidden: int = 64, layers: int = 1):
        super().__init__(dim, hidden=int(hidden), layers=int(layers))
        self.rnn = self.cell(1 + dim, int(hidden), num_layers=int(layers), batch_first=True)
        self.readout = nn.Linear(int(hidden), dim)
        with torch.no_grad():  # start close to "stay where you are", like WARP's residual root
            self.readout.weight.mul_(0.1)
            self.readout.bias.zero_()

    def sequence(self, x_in, tau, state):
        B, S, _ = x_in.shape
        inp = torch.cat([tau.to(x_in).view(1, S, 1).expand(B, S, 1), x_in], -1)
        h, state = self.rnn(inp, state)
        return self.readout(h), state, h


class GRUBaseline(RecurrentBaseline):
    """GRU baseline (see :class:`RecurrentBaseline`)."""

    cell = nn.GRU


class LSTMBaseline(RecurrentBaseline):
    """LSTM baseline (see :class:`RecurrentBaseline`)."""

    cell = nn.LSTM
