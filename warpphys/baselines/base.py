"""The common part of the baselines, on the interface they share with WARP
(:class:`warpphys.interface.Model`: normaliser, ``window``, ``tau``, rollout, run checks), so
that :class:`~warpphys.train.Trainer` and :class:`~warpphys.fitted.FittedModel` run a baseline
exactly as they run WARP. :class:`Baseline` adds plain-data configuration (``hparams``) and the
mean-squared-error training loss.

:class:`StepBaseline` adds WARP's autoregressive scheme for sequence models: the input of step s
is ``(tau_{s+1}, x_s)``; the model predicts the residual ``x_{s+1} - x_s`` (normalised units). The
first ``context`` inputs are the true states; beyond them each input is the true state with
probability ``p_forcing`` (scheduled sampling), else the previous prediction. Runs of true inputs
(the context, and the whole sequence when ``p_forcing >= 1``) go through the model in one
parallel pass; a subclass implements only :meth:`StepBaseline.sequence`.
"""

from __future__ import annotations

import torch
from torch import nn

from warpphys import progress
from warpphys.interface import Model, Output


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Baseline(Model):
    """Common part of the baselines: normalisation, time, rollout, loss and configuration.

    Subclasses call ``super().__init__(dim, **hparams)`` with every constructor argument other
    than ``dim`` (plain data), and implement :meth:`run`.
    """

    #: baselines read no physical parameters from their state (only WARP-Phys and classical do)
    has_params = False

    def __init__(self, dim: int, **hparams):
        super().__init__(dim)
        self.hparams = dict(hparams)

    # -- configuration ----------------------------------------------------------------------
    def config(self) -> dict:
        return {"dim": self.dim, **self.hparams}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**dict(config))

    @property
    def n_params(self) -> int:
        return count_parameters(self)

    # -- the interface ----------------------------------------------------------------------
    def run(self, xn: torch.Tensor, t: torch.Tensor, *, context: int, p_forcing: float = 0.0,
            generator: torch.Generator | None = None, keep_theta: bool = False) -> Output:
        """Autoregressive run in normalised units (see the module docstring).

        Args:
            xn: (B, T_x, d) normalised states; the first ``context`` are always fed.
            t: (T,) times of the whole run, T >= context; T may exceed T_x (pure rollout there).
            context: number of true steps fed before rolling out (>= 1).
            p_forcing: beyond the context, probability of feeding the true state.
            keep_theta: also return the model's hidden state at every step in ``Output.theta``.
        Returns:
            Output with ``mean (B, T-1, d)``, ``log_std`` None, ``theta`` None or
            ``(B, T-1, H)`` hidden states.
        """
        raise NotImplementedError

    def training_loss(self, xn, t, *, context, p_forcing=1.0, generator=None, params=None,
                      mode="autoregressive", param_weight=1.0) -> dict:
        """Mean squared error of the predictions of steps 1..T-1 of ``xn (B, T, d)``
        (normalised units). ``mode="parallel"`` is teacher forcing (``p_forcing = 1``);
        ``params``/``param_weight`` are accepted for the common interface and unused."""
        if mode == "parallel":
            p_forcing = 1.0
        elif mode != "autoregressive":
            raise ValueError(f"unknown training mode {mode!r}: autoregressive or parallel")
        out = self.run(xn, t, context=context, p_forcing=p_forcing, generator=generator)
        loss = ((xn[:, 1:] - out.mean) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


class StepBaseline(Baseline):
    """A sequence model run with WARP's autoregressive scheme (see the module docstring).

    Subclasses implement :meth:`sequence`.
    """

    def sequence(self, x_in: torch.Tensor, tau: torch.Tensor, state):
        """Advance the model over ``S`` inputs at once (teacher forcing within the chunk).

        Args:
            x_in: (B, S, d) normalised input states x_s.
            tau: (S,) normalised times of the predicted steps s+1.
            state: the model's state after the previous chunk (None at the start).
        Returns:
            ``(delta (B, S, d), state, hidden (B, S, H))``: predicted residuals
            ``x_{s+1} - x_s``, the new state, and hidden features (for ``keep_theta``).
        """
        raise NotImplementedError

    def run(self, xn, t, *, context, p_forcing=0.0, generator=None, keep_theta=False) -> Output:
        self._check_run(xn, t, context, p_forcing)
        T, B = t.shape[0], xn.shape[0]
        tau = self.tau(t)
        # inputs 0..P-1 are true states: the context, or everything under full teacher forcing
        P = T - 1 if (p_forcing >= 1.0 and xn.shape[1] >= T) else min(context, T - 1)
        delta, state, hidden = self.sequence(xn[:, :P], tau[1:P + 1], None)
        means, hiddens = [xn[:, :P] + delta], [hidden]
        mean = means[0][:, -1]
        if P < T - 1:
            xs = xn.unbind(1)
            force = None
            if p_forcing > 0:
                force = self.forcing_mask(B, T, p_forcing, generator, xn.device)
            steps = []
            progress.tick(P)
            for s in range(P, T - 1):
                progress.tick()  # (a long rollout's bar, when one is open)
                x_in = mean if force is None else torch.where(force[:, s, None], xs[s], mean)
                d, state, h = self.sequence(x_in[:, None], tau[s + 1:s + 2], state)
                mean = x_in + d[:, 0]
                steps.append(mean)
                if keep_theta:
                    hiddens.append(h)
            means.append(torch.stack(steps, 1))
        theta = torch.cat(hiddens, 1) if keep_theta else None
        return Output(torch.cat(means, 1), None, theta)
