"""Physics roots: root networks that embed the known ODE of a registered system (WARP-Phys).

Written once for every system of :mod:`systems`. The weights ``theta`` of each trajectory give
the system's physical parameters, and the known physics advances x_prev by one sample step dt.
How the parameters are read from the weights (``readout``):

* ``"head"`` (the default of ``warpphys fit``): ``theta`` is the state of a fixed bank of damped
  rotations driven by the state differences (``WARP(transition="spectral")``), and a trained
  read-out network maps it (normalised; with the log power of every rotation pair and where
  that power lies along the bank's frequencies) to the identifiable combinations in log space
  (k/m and c/m for spring-mass). The estimate is read once, at the end of the context, and held
  for the rollout (``freeze_params``). The head learns from the parameter loss, teacher-forced:
  most batches (``context_share``, 0.9 by default) at the end of the context, the others at
  steps from half the context to twice it (``loss_steps``), so that other context lengths
  give estimates too.
* ``"root"`` (the paper's): a root MLP, evaluated with ``theta`` as its weights, maps
  (tau, x_prev) to the parameters at every step.

The physics step:

* :class:`ODERoot`: one step of the system's vector field, integrated with a torchdiffeq
  fixed-step solver (RK4 with substeps by default: stable and accurate over the whole parameter
  range, including the stiff end of the MSD test ranges where an explicit Euler step fails).
* :class:`ClosedFormRoot`: exact propagation ``expm(M dt) x`` for linear systems (those with a
  ``generator_matrix``), so that errors come only from the parameters.
* :class:`HybridRoot`: the known vector field plus a small neural correction (also carried in
  theta), for physics known only in part.

Parameters are positive: ``scale * exp(z)``, with ``z`` softly bounded to ``+-log_range`` and
``scale`` (for the head: of the identifiable combinations) taken from the training data (the
geometric mean of its parameters when the file has
them, else a global least-squares fit of the physics to the data), never from default ranges.

States are kept inside a box of ``+-state_bound`` training standard deviations around the
training mean, and above the system's ``state_low`` (populations are never negative), inside
the solver's stages too: far outside it the physics with a wrong parameter estimate can blow up
in finite time (Lotka-Volterra; also from a noisy observation of a small population that is
below zero), and one infinite state would turn a whole batch's loss, or a rollout, into NaN.
Real trajectories never leave the box.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

import systems
from warpphys.model import BANK_RADII
from warpphys.roots import BatchedMLP, Root, register_root

#: torchdiffeq's fixed-step methods, those a physics step may use
FIXED_METHODS = tuple(sorted(name for name, solver in SOLVERS.items()
                             if issubclass(solver, FixedGridODESolver)))


def _clip(x, lo, hi):
    """x limited to [lo, hi] elementwise (tensor bounds, broadcast over the batch)."""
    return torch.minimum(torch.maximum(x, lo), hi)


#: the fixed filter bank's layout (model.filter_bank): groups of one radius each, their
#: angles log-spaced in the same order
BANK_GROUPS = len(BANK_RADII)
CENTROID_SHARPNESS = (1.0, 3.0, 10.0)


def _centroids(log_power: torch.Tensor) -> torch.Tensor:
    """Where each group's power lies along its log-spaced angles (0 at the lowest, 1 at the
    highest), as power-weighted means at a few sharpnesses: a shift of the spectrum shifts these
    linearly, so that a read-out built on them extrapolates to frequencies outside training."""
    n = log_power.shape[-1] // BANK_GROUPS
    g = log_power[..., : n * BANK_GROUPS].unflatten(-1, (BANK_GROUPS, n))
    pos = torch.linspace(0, 1, n, device=g.device, dtype=g.dtype)
    feats = [(torch.softmax(k * g, -1) * pos).sum(-1) for k in CENTROID_SHARPNESS]
    return torch.cat(feats, -1)


#: how the physical parameters are read from the weights (see :meth:`PhysicsRoot.params`)
READOUTS = ("root", "head")


class PhysicsRoot(Root):
    """Common part of the physics roots: the parameter MLP and the parameter loss."""

    wants_theta = True
    has_params = True
    #: whether ``advance`` reads the weights theta (else refinement does not copy them per step)
    advance_uses_theta = False
    #: states are clamped to the training mean +- this many training standard deviations
    state_bound = 50.0
    #: a state fed at or below the system's ``state_low`` is raised this many training stds
    #: above it (see :meth:`lift_off_low`)
    low_floor = 1e-3

    def __init__(self, system: str, *, width: int = 16, depth: int = 2, log_range: float = 5.0,
                 activation: str = "tanh", readout: str = "root", state_size: int = 256,
                 head_width: int = 128, head_depth: int = 2, loss_steps: int = 0,
                 context_share: float = 0.0):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown parameter read-out {readout!r}; use one of {READOUTS}")
        self.system_name = system
        self.system = systems.get_system(system)
        self.dim = self.system.dim
        self.width, self.depth, self.log_range = width, depth, log_range
        self.readout = readout
        q = len(self.system.identifiable_names)
        if readout == "root":
            self.param_mlp = BatchedMLP([1 + self.dim] + [width] * depth + [self.system.n_params],
                                        activation)
            self.param_weights = self.param_mlp.num_weights
        else:
            self.state_size, self.head_width, self.head_depth = state_size, head_width, head_depth
            self.loss_steps = int(loss_steps)
            self.context_share = float(context_share)
            self.param_weights = state_size
            self.bank_weights = state_size
            self.theta_norm = nn.LayerNorm(state_size)
            self.power_norm = nn.LayerNorm(state_size // 2)
            n_centroids = len(CENTROID_SHARPNESS) * BANK_GROUPS
            sizes = [state_size + state_size // 2 + n_centroids + 1] + [head_width] * head_depth
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                layers += [nn.Linear(a, b), nn.GELU()]
            self.head = nn.Sequential(*layers, nn.Linear(sizes[-1], q))
            # a linear path beside the MLP, which carries trends past the training ranges
            self.head_linear = nn.Linear(sizes[0], q, bias=False)
            with torch.no_grad():  # every trajectory starts at the data's typical parameters
                self.head[-1].weight.mul_(0.1)
                self.head[-1].bias.zero_()
                self.head_linear.weight.zero_()
        self.num_weights = self.param_weights
        self.register_buffer("log_scale", torch.zeros(self.system.n_params))
        # scale of the identifiable combinations (the parameter loss, the read-out's centre)
        self.register_buffer("ident_scale", torch.ones(q))
        if self.param_head:  # the head's parameter loss is relative to |true value| + this
            self.register_buffer("ident_floor", 0.05 * torch.ones(q))

    @property
    def param_head(self) -> bool:
        return self.readout == "head"

    def config(self) -> dict:
        cfg = {"type": self.kind, "system": self.system_name, "width": self.width,
               "depth": self.depth, "log_range": self.log_range, "readout": self.readout}
        if self.readout == "root":
            cfg["activation"] = self.param_mlp.activation
        else:
            cfg.update(state_size=self.state_size, head_width=self.head_width,
                       head_depth=self.head_depth, loss_steps=self.loss_steps,
                       context_share=self.context_share)
        return cfg

    def initial_weights(self) -> torch.Tensor:
        if self.readout == "head":  # a generic starting state of the filter bank
            return 0.1 * torch.randn(self.state_size)
        # small last layer: every trajectory starts at the data's typical parameters
        return self.param_mlp.initial_weights(last_scale=0.01)

    # -- parameters ---------------------------------------------------------------------------
    def params(self, theta, tau, x_prev) -> torch.Tensor:
        """Physical parameters (B, p) from weights (B, D), tau (B,), normalised x_prev (B, d).

        ``readout="root"`` (the paper's): the root MLP, evaluated with the weights, maps
        (tau, x_prev) to the parameters. ``readout="head"``: a trained read-out network (slow
        weights) maps the normalised weights and tau to the identifiable combinations in log
        space (e.g. log k/m and log c/m), whatever the previous state; parameters that no
        trajectory determines (the mass) are the training data's typical values."""
        if self.readout == "root":
            z = self.param_mlp(theta[..., : self.param_weights],
                               torch.cat([tau.unsqueeze(-1), x_prev], -1))
            z = self.log_range * torch.tanh(z / self.log_range)
            return torch.exp(self.log_scale + z)
        w = theta[..., : self.param_weights]
        # log power of each pair of weights: a damped rotation's response magnitude (its
        # pattern over the filter bank shifts with frequency, whatever the amplitude)
        pairs = w[..., : 2 * (w.shape[-1] // 2)].unflatten(-1, (-1, 2))
        power = torch.log(pairs.pow(2).sum(-1) + 1e-6)
        h = torch.cat([self.theta_norm(w), self.power_norm(power), _centroids(power),
                       tau.unsqueeze(-1).to(w)], -1)
        z = self.head(h) + self.head_linear(h)
        z = self.log_range * torch.tanh(z / self.log_range)
        ident = self.ident_scale * torch.exp(z)
        return self.system.from_identifiable(ident, torch.exp(self.log_scale))

    @torch.no_grad()
    def set_scales(self, params: np.ndarray) -> None:
        """Scales from known parameters (N, p): geometric means (positive part); the
        identifiable combinations' mean absolute values."""
        p = torch.as_tensor(params, dtype=self.log_scale.dtype)
        pos = p.clamp_min(1e-12)
        self.log_scale.copy_(pos.log().mean(0))
        ident = self.system.identifiable(p)
        self.ident_scale.copy_(ident.abs().mean(0).clamp_min(1e-12))
        # 5% of the typical size, or 25% for a combination whose range reaches zero (a
        # damping): relative errors of values near zero would otherwise swamp the loss
        if self.param_head:
            near_zero = ident.abs().min(0).values < 0.05 * self.ident_scale
            self.ident_floor.copy_(torch.where(near_zero, 0.25, 0.05) * self.ident_scale)

    def fit_scales(self, train, window: float) -> None:
        """Parameter scales from training Trajectories: their parameters when the file has
        them (and they are positive), else one global least-squares fit of the physics."""
        params = train.system_params(self.system)
        if params is None or np.any(params < 0):
            params = fit_global_params(self.system, train.x, train.t)[None, :]
        self.set_scales(params)

    def loss_steps_of(self, n_steps: int, context: int | None, device=None) -> torch.Tensor:
        """The steps (of ``n_steps`` weights theta_0..) whose estimates the parameter loss
        scores. ``readout="root"``: every step. ``readout="head"``: a share ``context_share``
        of the batches (drawn at random) at the end of the context only, the estimate that the
        run's own context gives; the others from half the context on (the estimates that a
        context of that length or longer would give), ``loss_steps`` of those drawn at random
        for every batch (0: all), which makes a step several times cheaper at the same signal.
        (On the pendulum, half the batches at the context's end took the median damping error
        from 1.9-2.1% to 1.0%, with length and the rollouts better too; 90% to 0.8-0.9%.)"""
        if (self.readout == "head" and context is not None and self.context_share > 0
                and context - 1 < n_steps and float(torch.rand(())) < self.context_share):
            return torch.tensor([context - 1], device=device)
        first = 0 if self.readout == "root" or context is None else max(context // 2 - 1, 0)
        steps = torch.arange(first, n_steps)
        n_sub = self.loss_steps if self.readout == "head" else 0
        if n_sub and len(steps) > n_sub:  # a random subset of the steps, new every batch
            steps = steps[torch.randperm(len(steps))[:n_sub].sort().values]
        return steps.to(device)

    def param_loss(self, theta, xn, t, params, normalizer, model, context=None, steps=None):
        """Squared error of the identifiable parameter combinations.

        ``readout="root"``: at every step, relative to their typical size in the training data
        (robust to zero damping). ``readout="head"``: relative to each trajectory's own value
        (plus a floor: 5% of the typical size, 25% for a damping whose range reaches zero),
        at the steps of :meth:`loss_steps_of`. ``theta``: the weights of every step (B, S, D),
        or with ``steps`` those of these steps only."""
        if steps is None:
            steps = self.loss_steps_of(theta.shape[1], context, theta.device)
            theta = theta[:, steps]
        B, S, D = theta.shape
        tau = model.tau(t)[steps + 1].expand(B, -1)
        x_prev = xn[:, steps]
        est = self.params(theta.reshape(-1, D), tau.reshape(-1), x_prev.reshape(-1, self.dim))
        ident_est = self.system.identifiable(est).view(B, S, -1)
        ident_true = self.system.identifiable(params)[:, None, :]
        if self.readout == "root":
            return (((ident_est - ident_true) / self.ident_scale) ** 2).mean()
        return (((ident_est - ident_true) / (ident_true.abs() + self.ident_floor)) ** 2).mean()

    # -- stepping -------------------------------------------------------------------------------
    def advance(self, x, params, dt, theta, bounds=None):
        """Physical state (B, d) after one step dt (B,); ``bounds``: optional (low, high) (d,)
        box for the intermediate states of a solver."""
        raise NotImplementedError

    def forward(self, theta, tau, x_prev, dt, normalizer, params=None):
        """Next normalised state; ``params``: use these (B, p) instead of reading them from
        ``theta`` (WARP's rollout with frozen parameters)."""
        p = self.params(theta, tau, x_prev) if params is None else params
        x = self.lift_off_low(normalizer.decode(x_prev), normalizer)
        lo, hi = self.state_box(normalizer)
        x_next = self.advance(_clip(x, lo, hi), p, dt, theta, (lo, hi))
        return normalizer.encode(_clip(x_next, lo, hi)), None

    def state_low_as(self, like: torch.Tensor) -> torch.Tensor | None:
        """The system's ``state_low`` (d,) with ``like``'s dtype and device, or None."""
        low = self.system.state_low
        return None if low is None else torch.as_tensor(low).to(like)

    def lift_off_low(self, x, normalizer):
        """Physical states ``x`` with every value at or below the system's ``state_low`` raised
        to ``low_floor`` training stds above it.

        Such a value can only be noise on a small population, and the bound itself is a fixed
        point: a predator fed as exactly 0 never returns, and its prey grows without limit
        (measured on Lotka-Volterra with 1% noise: 12% of the contexts end below zero, and their
        rollouts had MSE near 200 against a median of 0.11). Values above the bound, however
        small, pass unchanged."""
        low = self.state_low_as(x)
        if low is None:
            return x
        return torch.where(x <= low, low + self.low_floor * normalizer.std, x)

    def state_box(self, normalizer):
        """(low, high) physical bounds of the states: the training mean +- ``state_bound``
        training stds, and never below the system's ``state_low`` (e.g. populations >= 0)."""
        b = self.state_bound
        lo, hi = normalizer.mean - b * normalizer.std, normalizer.mean + b * normalizer.std
        low = self.state_low_as(lo)
        return (lo if low is None else torch.maximum(lo, low)), hi


class ODERoot(PhysicsRoot):
    """One step of the system's own vector field, integrated with torchdiffeq.

    Args:
        system: registered system name.
        method: a torchdiffeq fixed-step method ("rk4", "midpoint", "euler", ...).
        substeps: solver steps per sample step; "auto" picks 1-8 from the training data's
            largest step-to-step changes (saved with the model).
        width, depth: the parameter MLP. log_range: bound of log(param / scale).
    """

    kind = "ode"
    #: the most solver steps per sample interval ("auto" picks 1-8)
    max_substeps = 1000

    def __init__(self, system: str, *, method: str = "rk4", substeps: int | str = "auto", **kw):
        super().__init__(system, **kw)
        if method not in FIXED_METHODS:
            raise ValueError(f"unknown fixed-step method {method!r} for the physics step; use "
                             f"one of {', '.join(FIXED_METHODS)}")
        self.substeps_auto = substeps == "auto"
        if not self.substeps_auto and not (
                isinstance(substeps, numbers.Integral) and not isinstance(substeps, bool)
                and 1 <= substeps <= self.max_substeps):
            raise ValueError(f"substeps must be 'auto' or a whole number from 1 to "
                             f"{self.max_substeps}, got {substeps!r}")
        self.method = method
        self.substeps = 4 if self.substeps_auto else int(substeps)
        self.register_buffer("_unit", torch.tensor([0.0, 1.0]))

    def config(self) -> dict:
        return {**super().config(), "method": self.method, "substeps": self.substeps}

    def fit_scales(self, train, window: float) -> None:
        super().fit_scales(train, window)
        if self.substeps_auto:
            # enough RK substeps that one substep moves a state by at most ~1/4 of its spread
            spread = np.maximum(train.x.reshape(-1, train.dim).std(0), 1e-8)  # (a constant
            rel = np.abs(np.diff(train.x, axis=1)) / spread  # state moves nothing)
            self.substeps = int(np.clip(np.ceil(4 * np.quantile(rel, 0.99)), 1, 8))

    def vector_field(self, x, params, theta):
        return self.system.vector_field(None, x, params)

    def advance(self, x, params, dt, theta, bounds=None):
        # integrate in the unit interval s = (t - t_prev) / dt, so each row keeps its own dt
        scale = dt.to(x.dtype).unsqueeze(-1)

        def rhs(s, y):
            if bounds is not None:
                y = _clip(y, *bounds)
            return scale * self.vector_field(y, params, theta)

        ys = odeint(rhs, x, self._unit.to(x), method=self.method,
                    options={"step_size": 1.0 / self.substeps})
        return ys[-1]


def expm(gen: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of a batch ``(..., n, n)``; for n = 2 in closed form (exact, and an
    order of magnitude faster than ``torch.linalg.matrix_exp`` on large batches of 2 x 2).

    With M = s I + N, s = tr(M) / 2 and N^2 = q I (q = s^2 - det M):
    expm(M) = e^s (cosh(sqrt q) I + sinh(sqrt q) / sqrt q N), with cos / sin when q < 0, written
    through exp(s +- sqrt q) so that it overflows only where the exponential itself does.
    """
    if gen.shape[-1] != 2:
        return torch.linalg.matrix_exp(gen)
    a, b = gen[..., 0, 0], gen[..., 0, 1]
    c, d = gen[..., 1, 0], gen[..., 1, 1]
    s = 0.5 * (a + d)
    q = 0.25 * (a - d) ** 2 + b * c
    small = q.abs() < 1e-8
    r_safe = torch.where(small, torch.ones_like(q), q.abs()).sqrt()  # finite gradients at q = 0
    es = torch.exp(s)
    # real eigenvalues (q >= 0): cosh and sinh / r through exp(s +- r)
    ep, em = torch.exp(s + r_safe), torch.exp(s - r_safe)
    ch_real, sh_real = 0.5 * (ep + em), 0.5 * (ep - em) / r_safe
    # complex pair (q < 0): cos and sin / r
    ch_cplx, sh_cplx = es * torch.cos(r_safe), es * torch.sin(r_safe) / r_safe
    ch = torch.where(q >= 0, ch_real, ch_cplx)
    sh = torch.where(q >= 0, sh_real, sh_cplx)
    # |q| tiny: series, cosh ~ 1 + q/2, sinh(r)/r ~ 1 + q/6
    ch = torch.where(small, es * (1 + 0.5 * q), ch)
    sh = torch.where(small, es * (1 + q / 6), sh)
    n00, n11 = a - s, d - s
    row0 = torch.stack([ch + sh * n00, sh * b], -1)
    row1 = torch.stack([sh * c, ch + sh * n11], -1)
    return torch.stack([row0, row1], -2)


class ClosedFormRoot(PhysicsRoot):
    """Exact propagation of a linear system: ``x_next = expm(M(params) dt) x_prev``."""

    kind = "closed_form"

    def __init__(self, system: str, **kw):
        super().__init__(system, **kw)
        if not self.system.linear:
            raise ValueError(
                f"system {system!r} is not linear (no generator_matrix); use the ODE root"
            )

    def advance(self, x, params, dt, theta, bounds=None):
        gen = self.system.generator_matrix(params) * dt.to(x.dtype)[:, None, None]
        return torch.einsum("bij,bj->bi", expm(gen), x)


class HybridRoot(ODERoot):
    """Known vector field plus a neural correction: dx/dt = f(x, params) + g_theta(x).

    The correction MLP's weights are part of theta (after the parameter MLP's), so it adapts to
    each trajectory like the rest. Its last layer starts at zero: the hybrid root then equals the
    ODE root exactly.
    """

    kind = "hybrid"
    advance_uses_theta = True

    def __init__(self, system: str, *, correction_width: int = 16, **kw):
        super().__init__(system, **kw)
        self.correction_width = correction_width
        self.correction = BatchedMLP([self.dim, correction_width, self.dim], "tanh")
        self.num_weights = self.param_weights + self.correction.num_weights
        self.register_buffer("x_mean", torch.zeros(self.dim))
        self.register_buffer("x_scale", torch.ones(self.dim))
        self.register_buffer("rate_scale", torch.ones(self.dim))

    def config(self) -> dict:
        return {**super().config(), "correction_width": self.correction_width}

    def initial_weights(self) -> torch.Tensor:
        return torch.cat([super().initial_weights(),
                          self.correction.initial_weights(last_scale=0.0)])

    def fit_scales(self, train, window: float) -> None:
        super().fit_scales(train, window)
        self.set_state_scales(train.x, window)

    @torch.no_grad()
    def set_state_scales(self, x: np.ndarray, window: float) -> None:
        """Input normalisation of the correction, and its output scale (state std / window)."""
        flat = torch.as_tensor(x.reshape(-1, x.shape[-1]), dtype=self.x_mean.dtype)
        self.x_mean.copy_(flat.mean(0))
        self.x_scale.copy_(flat.std(0).clamp_min(1e-8))
        self.rate_scale.copy_(self.x_scale / window)

    def vector_field(self, x, params, theta):
        known = self.system.vector_field(None, x, params)
        w = theta[..., self.param_weights:]
        return known + self.rate_scale * self.correction(w, (x - self.x_mean) / self.x_scale)


for _cls in (ODERoot, ClosedFormRoot, HybridRoot):  # in warpphys.roots.ROOTS, by kind
    register_root(_cls)


@torch.enable_grad()  # its own optimisation: callers may hold torch.no_grad() (fit_data_scales)
def fit_global_params(system: systems.System, x: np.ndarray, t: np.ndarray, steps: int = 300,
                      seed: int = 0) -> np.ndarray:
    """One parameter vector (p,) for all trajectories, by least squares of one-step predictions
    (RK4 through the vector field), starting from 1 in log space. Used to scale the physics
    roots when the data carry no parameters. Works under ``torch.no_grad()`` too."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.as_tensor(x, dtype=torch.float64)
    idx = torch.randperm(xs.shape[0], generator=gen)[:256]
    xs = xs[idx]
    dt = torch.as_tensor(np.diff(t), dtype=torch.float64)
    std = xs.reshape(-1, xs.shape[-1]).std(0).clamp_min(1e-8)
    logp = torch.zeros(system.n_params, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logp], lr=0.1)
    unit = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x0, x1 = xs[:, :-1].reshape(-1, xs.shape[-1]), xs[:, 1:].reshape(-1, xs.shape[-1])
    h = dt.expand(xs.shape[0], -1).reshape(-1, 1)
    for _ in range(steps):
        p = logp.exp().expand(x0.shape[0], -1)
        pred = odeint(lambda s, y, p=p: h * system.vector_field(None, y, p), x0, unit, method="rk4",
                      options={"step_size": 0.25})[-1]
        loss = (((pred - x1) / std) ** 2).mean()
        if not torch.isfinite(loss):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logp.detach().exp().numpy()
