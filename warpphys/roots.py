"""Root networks: functions whose weights are WARP's hidden state ``theta``.

A root receives, for every trajectory in the batch, its own flat weight vector ``theta (B, D)``
and evaluates one prediction step, vectorised over the batch (batched matmuls, no Python loop
over trajectories):

    mean, log_std = root(theta, tau, x_prev, dt, normalizer)

with ``tau (B,)`` the normalised time of the predicted step (1.0 at the end of the training
window), ``x_prev (B, d)`` the previous state in normalised units, ``dt (B,)`` the time step in
physical units. ``mean (B, d)`` is the next state in normalised units; ``log_std`` is ``None``
unless the root predicts an uncertainty. Physics roots live in :mod:`warpphys.physics`.

Every kind of root is registered in :data:`ROOTS` under its ``kind`` (where it is defined: the
physics roots in :mod:`warpphys.physics`), so that saved models rebuild it by name
(:func:`build_root`) and the command line's ``--root`` offers it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Root(nn.Module):
    """Interface of a root network (see the module docstring)."""

    #: the name the root is registered and saved under
    kind: str
    #: whether the root reads physical parameters out of its weights (physics roots)
    has_params: bool = False
    #: flat weight count D
    num_weights: int
    #: whether the root outputs a log standard deviation
    probabilistic: bool = False
    #: whether training needs the weights theta of every step (physics roots' parameter loss)
    wants_theta: bool = False
    #: whether a trained read-out head maps the weights to physical parameters (physics roots
    #: with ``readout="head"``): such a root trains on the parameter loss when it has one
    param_head: bool = False
    #: how many leading weights a fixed filter bank (``WARP(transition="spectral")``) may
    #: rotate; None: all of them. The rest (e.g. a hybrid root's correction) are held.
    bank_weights: int | None = None

    def param_loss(self, theta, xn, t, params, normalizer, model, context=None, steps=None):
        """Auxiliary loss on known physical parameters (physics roots); None for others."""
        return None

    def fit_scales(self, train, window: float) -> None:
        """Take the root's scales from the training data (``Trajectories``) and the training
        time span ``window``; nothing for a root without data scales."""

    def initial_weights(self) -> torch.Tensor:
        """A good flat starting point ``theta (D,)`` (the hypernetwork starts near it)."""
        raise NotImplementedError

    def config(self) -> dict:
        """Plain-data constructor arguments, saved in checkpoints."""
        raise NotImplementedError


def _activation(name: str):
    acts = {"tanh": torch.tanh, "gelu": nn.functional.gelu, "relu": torch.relu,
            "softplus": nn.functional.softplus, "sin": torch.sin}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(acts)}")
    return acts[name]


class BatchedMLP(nn.Module):
    """An MLP evaluated with a different flat weight vector per batch row.

    ``sizes = [in, h1, ..., out]``; weights are laid out layer by layer as W (out, in) then b.
    """

    def __init__(self, sizes: list[int], activation: str = "tanh"):
        super().__init__()
        self.sizes = list(sizes)
        self.activation = activation
        self._act = _activation(activation)
        self.shapes = [(o, i) for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=False)]
        self.num_weights = sum(o * i + o for o, i in self.shapes)
        self._split_sizes = [n for o, i in self.shapes for n in (o * i, o)]

    def initial_weights(self, last_scale: float = 1.0, generator=None) -> torch.Tensor:
        """Glorot-like random weights, zero biases; the last layer scaled by ``last_scale``."""
        parts = []
        for j, (o, i) in enumerate(self.shapes):
            w = torch.randn(o, i, generator=generator) * math.sqrt(1.0 / i)
            if j == len(self.shapes) - 1:
                w = w * last_scale
            parts += [w.flatten(), torch.zeros(o)]
        return torch.cat(parts)

    def forward(self, theta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """theta: (..., D), h: (..., in) -> (..., out); leading dims are broadcast-free equal."""
        lead = h.shape[:-1]
        theta = theta.reshape(-1, theta.shape[-1])
        h = h.reshape(-1, h.shape[-1])
        # one split (its backward is one concatenation) instead of a slice per weight and bias
        parts = theta.split(self._split_sizes, -1)
        for j, (o, i) in enumerate(self.shapes):
            w, b = parts[2 * j].view(-1, o, i), parts[2 * j + 1]
            h = torch.baddbmm(b.unsqueeze(-1), w, h.unsqueeze(-1)).squeeze(-1)
            if j < len(self.shapes) - 1:
                h = self._act(h)
        return h.reshape(*lead, h.shape[-1])

    def layers(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views ``(W (..., out, in), b (..., out))`` of every layer in ``flat (..., >= D)``,
        whose last dimension holds flat weight vectors in this network's layout (weights or
        their gradients; for :mod:`warpphys.fused`, which keeps them on tapes over time)."""
        views, start = [], 0
        for o, i in self.shapes:
            views.append((flat[..., start:start + o * i].unflatten(-1, (o, i)),
                          flat[..., start + o * i:start + o * i + o]))
            start += o * i + o
        return views


class MLPRoot(Root):
    """Black-box root: an MLP of (tau, x_prev) predicting the next state.

    Args:
        dim: state size d.
        width, depth: hidden layer width and number of hidden layers.
        use_state: feed the previous state x_prev (else the root sees only tau and represents the
            trajectory as a function of time, as in the original WARP).
        residual: predict x_prev + output (only with ``use_state``).
        probabilistic: also output a log std for a Gaussian negative log-likelihood.
        activation: tanh, gelu, relu, softplus or sin.
    """

    kind = "mlp"

    def __init__(self, dim: int, *, width: int = 16, depth: int = 2, use_state: bool = True,
                 residual: bool = True, probabilistic: bool = False, activation: str = "tanh"):
        super().__init__()
        self.dim, self.width, self.depth = dim, width, depth
        self.use_state, self.residual = use_state, residual and use_state
        self.probabilistic = probabilistic
        n_in = 1 + (dim if use_state else 0)
        n_out = dim * (2 if probabilistic else 1)
        self.mlp = BatchedMLP([n_in] + [width] * depth + [n_out], activation)
        self.num_weights = self.mlp.num_weights

    def initial_weights(self) -> torch.Tensor:
        # a small last layer: the residual root starts close to "stay where you are"
        return self.mlp.initial_weights(last_scale=0.1 if self.residual else 1.0)

    def config(self) -> dict:
        return {"type": "mlp", "dim": self.dim, "width": self.width, "depth": self.depth,
                "use_state": self.use_state, "residual": self.residual,
                "probabilistic": self.probabilistic, "activation": self.mlp.activation}

    def forward(self, theta, tau, x_prev, dt=None, normalizer=None):
        h = tau.unsqueeze(-1)
        if self.use_state:
            h = torch.cat([h, x_prev], -1)
        out = self.mlp(theta, h)
        mean = out[..., : self.dim]
        if self.residual:
            mean = x_prev + mean
        log_std = out[..., self.dim:] if self.probabilistic else None
        return mean, log_std


# -- roots by name ---------------------------------------------------------------------------
#: kind -> root class; physics roots are added by :mod:`warpphys.physics`
ROOTS: dict[str, type[Root]] = {}


def register_root(cls: type[Root]) -> type[Root]:
    """Register a root class under its ``kind`` (usable as a class decorator)."""
    ROOTS[cls.kind] = cls
    return cls


def physics_root_names() -> list[str]:
    """The registered roots that read physical parameters (the choices of ``--root``)."""
    return [k for k, cls in ROOTS.items() if cls.has_params]


def build_root(config: dict) -> Root:
    """Rebuild a root from its ``config()`` (plain data, as saved in checkpoints)."""
    config = dict(config)
    kind = config.pop("type")
    if kind not in ROOTS:
        raise ValueError(f"unknown root type {kind!r}; known: {sorted(ROOTS)}")
    return ROOTS[kind](**config)


register_root(MLPRoot)
