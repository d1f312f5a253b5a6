"""Neural ODE baseline (torchdiffeq), the standard model of this field.

The context is encoded by a GRU into a latent vector ``a``; the ODE state is the augmented
``z = (x, a)``, started at the last context state ``z(t_{K-1}) = (x_{K-1}, a)`` and integrated
with one ``odeint`` call over the whole horizon (normalised state, normalised time tau):

    dz/dtau = rate_scale * MLP(z)

The field is autonomous (physical laws do not depend on the clock), so extrapolating past the
training window needs nothing new; ``a`` carries what the context says about this trajectory
(its parameters). ``rate_scale`` is the typical speed of the normalised training data (set from
the data), so that the MLP's outputs are of order one. With ``encoder="none"`` and
``augment=0`` the ODE state is the state alone (a single vector field for all trajectories).

The model rolls out from the context, so scheduled sampling does not apply (``p_forcing`` is
ignored); its "predictions" of the context steps are the given states, so the training loss is
the rolled-out error (up to the constant factor (T-K)/(T-1)). ``adjoint=True`` uses
``odeint_adjoint`` (memory independent of the horizon, at the cost of a backward solve).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from warpphys.baselines.base import Baseline
from warpphys.model import Output


class ODEField(nn.Module):
    """The learned vector field ``dz/dtau = rate_scale * MLP(z)`` (autonomous)."""

    def __init__(self, size: int, width: int, depth: int):
        super().__init__()
        layers, n = [], size
        for _ in range(depth):
            layers += [nn.Linear(n, width), nn.Tanh()]
            n = width
        layers.append(nn.Linear(n, size))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("rate_scale", torch.ones(size))
        self.nfe = 0

    def forward(self, tau, z):
        self.nfe += 1
        return self.rate_scale * self.mlp(z)


class NeuralODE(Baseline):
    """Latent-augmented neural ODE rolled out from the last context state.

    Args:
        dim: state size d.
        width, depth: the vector field's MLP.
        augment: latent dimensions added to the state (0: the state alone).
        encoder: "gru" (encode the context into the latent) or "none" (latent starts at zero).
        encoder_width: hidden units of the GRU encoder.
        method: torchdiffeq method; fixed-step methods ("rk4", default) step on the sample
            grid, adaptive ones ("dopri5") use ``rtol``/``atol``.
        adjoint: integrate gradients with the adjoint method (``odeint_adjoint``).
    """

    def __init__(self, dim: int, *, width: int = 64, depth: int = 2, augment: int = 8,
                 encoder: str = "gru", encoder_width: int = 64, method: str = "rk4",
                 adjoint: bool = False, rtol: float = 1e-4, atol: float = 1e-5):
        if encoder not in ("gru", "none"):
            raise ValueError(f"encoder must be 'gru' or 'none', got {encoder!r}")
        super().__init__(dim, width=int(width), depth=int(depth), augment=int(augment),
                         encoder=encoder, encoder_width=int(encoder_width), method=method,
                         adjoint=bool(adjoint), rtol=float(rtol), atol=float(atol))
        self.augment = int(augment)
        self.field = ODEField(dim + self.augment, int(width), int(depth))
        if encoder == "gru" and self.augment > 0:
            self.encoder = nn.GRU(1 + dim, int(encoder_width), batch_first=True)
            self.to_latent = nn.Linear(int(encoder_width), self.augment)
        else:
            self.encoder = None

    @torch.no_grad()
    def fit_data_scales(self, train, system=None) -> None:
        """``rate_scale`` of the state part: the RMS speed of the normalised training states
        per unit of tau; the latent part gets their mean."""
        x = (train.x - self.normalizer.mean.cpu().numpy()) / self.normalizer.std.cpu().numpy()
        dtau = np.diff(train.t) / float(self.window)
        rate = np.sqrt(((np.diff(x, axis=1) / dtau[None, :, None]) ** 2).mean((0, 1)))
        rate = torch.as_tensor(np.clip(rate, 1e-3, None), dtype=torch.float32)
        scale = torch.cat([rate, rate.mean().expand(self.augment)])
        self.field.rate_scale.copy_(scale)

    def initial_state(self, xn: torch.Tensor, tau: torch.Tensor, context: int) -> torch.Tensor:
        """z at the last context step, (B, d + augment)."""
        x_last = xn[:, context - 1]
        if self.augment == 0:
            return x_last
        if self.encoder is None:
            return torch.cat([x_last, x_last.new_zeros(x_last.shape[0], self.augment)], -1)
        B = xn.shape[0]
        inp = torch.cat([tau[:context].to(xn).view(1, -1, 1).expand(B, -1, 1),
                         xn[:, :context]], -1)
        _, h = self.encoder(inp)
        return torch.cat([x_last, self.to_latent(h[-1])], -1)

    def run(self, xn, t, *, context, p_forcing=0.0, generator=None, keep_theta=False) -> Output:
        self._check_run(xn, t, context, 0.0)
        T, K = t.shape[0], context
        tau = self.tau(t)
        z0 = self.initial_state(xn, tau, K)
        given = xn[:, 1:min(K, T)]  # the context steps 1..K-1 are given, not predicted
        parts, hidden = [given], [z0[:, None].expand(-1, given.shape[1], -1)]
        if K < T:
            grid = tau[K - 1:]
            hp = self.hparams
            kw = {"method": hp["method"]}
            if hp["method"] in ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2"):
                kw.update(rtol=hp["rtol"], atol=hp["atol"])
            if hp["adjoint"] and torch.is_grad_enabled():
                zs = odeint_adjoint(self.field, z0, grid, adjoint_params=tuple(
                    self.field.parameters()), **kw)
            else:
                zs = odeint(self.field, z0, grid, **kw)
            zs = zs[1:].transpose(0, 1)  # (B, T-K, d + augment)
            parts.append(zs[..., :self.dim])
            hidden.append(zs)
        theta = torch.cat(hidden, 1) if keep_theta else None
        return Output(torch.cat(parts, 1), None, theta)
