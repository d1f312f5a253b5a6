"""The interface every model declares: WARP (:mod:`warpphys.model`) and the baselines
(:mod:`warpphys.baselines`) extend :class:`Model`, so that :class:`~warpphys.train.Trainer`,
:class:`~warpphys.fitted.FittedModel`, the reports and the studies run any of them alike, with no
probing of what a model happens to have.

The base owns what all models share: the state normaliser (statistics of the training data,
saved with the model), the training time span ``window`` and the normalised time ``tau``, the
rollout in physical units, the checks of a run's arguments and the scheduled-sampling mask. A
model supplies :meth:`Model.run`, :meth:`Model.training_loss` and its configuration.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn


class Normalizer(nn.Module):
    """Per-state affine normalisation ``(x - mean) / std``, fitted on training data."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> Normalizer:
        """x: (N, T, d) physical states."""
        flat = x.reshape(-1, x.shape[-1]).to(self.mean)
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-8))
        return self

    def encode(self, x):
        return (x - self.mean) / self.std

    def decode(self, z):
        return z * self.std + self.mean


@dataclass
class Output:
    """Predictions of a run: ``mean (B, T-1, d)`` of x_1..x_{T-1} (normalised units),
    ``log_std`` (same shape, or None), and optionally ``theta (B, T-1, D)``, the weights that
    made each prediction."""

    mean: torch.Tensor
    log_std: torch.Tensor | None = None
    theta: torch.Tensor | None = None


class Model(nn.Module, abc.ABC):
    """A sequence model of a dynamical system, in the package's common interface.

    Subclasses call ``super().__init__(dim)`` first and implement :meth:`run`,
    :meth:`training_loss`, :meth:`config` and :meth:`from_config`.
    """

    #: whether the model estimates physical parameters (``recover_params``; WARP with a physics
    #: root, classical system identification): evaluation then also scores the parameters
    has_params: bool = False
    #: whether the model reads the dynamics sample by sample, as spaced in its training data
    #: (evaluation then warns of data sampled otherwise); False for models that integrate
    #: their equations over each interval as it is (classical system identification)
    reads_fixed_steps: bool = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.normalizer = Normalizer(self.dim)
        self.register_buffer("window", torch.ones(()))  # training time span, for tau

    # -- configuration ----------------------------------------------------------------------
    @abc.abstractmethod
    def config(self) -> dict:
        """Plain-data constructor arguments, saved in checkpoints."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict) -> Model:
        """Rebuild the model from :meth:`config`."""

    def fit_data_scales(self, train, system) -> None:
        """Take scales other than the normaliser's from the training ``Trajectories`` (after
        ``normalizer`` and ``window`` are set); nothing by default."""

    def step_gemm_flops(self, batch: int) -> float:
        """FLOPs of the largest matrix product of one time step for ``batch`` trajectories
        (what decides whether a second CPU thread pays); 0: nothing large."""
        return 0.0

    # -- time and runs -------------------------------------------------------------------------
    def tau(self, t: torch.Tensor) -> torch.Tensor:
        """Normalised time (T,): 0 at the first sample, 1 at the end of the training window."""
        return (t - t[0]) / self.window

    @staticmethod
    def _check_run(xn: torch.Tensor, t: torch.Tensor, context: int, p_forcing: float) -> None:
        if not 1 <= context <= xn.shape[1]:
            raise ValueError(f"context must be between 1 and {xn.shape[1]}, got {context}")
        if p_forcing > 0 and xn.shape[1] < t.shape[0]:
            raise ValueError("scheduled sampling needs the true states of every step")

    @staticmethod
    def forcing_mask(batch: int, steps: int, p_forcing: float, generator, device) -> torch.Tensor:
        """Scheduled sampling: ``(batch, steps)`` booleans, True where the true state is fed
        (probability ``p_forcing``), drawn on the generator's device (the Trainer's: CPU)."""
        gdev = device if generator is None else generator.device
        draw = torch.rand(batch, steps, generator=generator, device=gdev).to(device)
        return draw < p_forcing

    @abc.abstractmethod
    def run(self, xn: torch.Tensor, t: torch.Tensor, *, context: int, p_forcing: float = 0.0,
            generator: torch.Generator | None = None, keep_theta: bool = False) -> Output:
        """Autoregressive run in normalised units: ``Output.mean (B, T-1, d)`` predicts steps
        1..T-1 of ``t (T,)`` from the first ``context`` states of ``xn (B, T_x, d)``."""

    @abc.abstractmethod
    def training_loss(self, xn, t, *, context, p_forcing=1.0, generator=None, params=None,
                      mode="autoregressive", param_weight=1.0) -> dict:
        """``{"loss", "mse", ...}`` on one batch of normalised trajectories ``xn (B, T, d)``."""

    @torch.no_grad()
    def rollout(self, x: torch.Tensor, t: torch.Tensor, context: int,
                keep_theta: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference in physical units: feed ``context`` true steps of ``x (B, >=K, d)``, then
        roll out to every time in ``t (K+H,)``, also past the training window (tau > 1).

        Returns ``(x_hat (B, K+H, d), theta or hidden states (B, K+H-1, H) or None)``; the
        first K rows of ``x_hat`` are the given context.
        """
        xn = self.normalizer.encode(x[:, :context])
        out = self.run(xn, t, context=context, keep_theta=keep_theta)
        pred = self.normalizer.decode(out.mean[:, context - 1:])
        return torch.cat([x[:, :context], pred], 1), out.theta
