"""Optional refinement of amortised parameter estimates on the context window.

WARP-Phys reads the physical parameters from its weights in one forward pass. A few batched
Levenberg-Marquardt steps through the same physics step (all trajectories at once) sharpen that
estimate:

* :func:`refine_params`: on the one-step prediction errors of the context (robust from a rough
  start; exact on clean data);
* :func:`refine_context`: that, then a multiple-step ("shooting") stage that also estimates the
  context's first state and simulates the whole context from it. Observation noise enters only
  the residuals, not the simulated states, so the estimates are not biased by noisy regressors
  (as one-step fits are) and the rollout starts from a denoised last state.

The gradient-free estimate stays the default; this is reported beside it.
"""

from __future__ import annotations

import torch


def _state_scale(x: torch.Tensor, scale) -> torch.Tensor:
    """Residual weights per state: the given (d,) scale (a model's training state std), else
    each trajectory's own context std (B, 1, d), so that no trajectory's estimate depends on
    which others share its batch."""
    if scale is not None:
        return torch.as_tensor(scale, dtype=x.dtype, device=x.device).clamp_min(1e-12)
    return x.std(1, keepdim=True).clamp_min(1e-12)


def _residuals(root, x, dt, log_params, theta, scale):
    """One-step residuals (B, (K-1)*d) of the physics step over the context, in state scales."""
    B, K, d = x.shape
    params = log_params.exp()
    xs = x[:, :-1].reshape(-1, d)
    rep = lambda a: a[:, None].expand(B, K - 1, *a.shape[1:]).reshape(B * (K - 1), *a.shape[1:])  # noqa: E731
    th = None if theta is None else rep(theta)
    pred = root.advance(xs, rep(params), dt.expand(B, -1).reshape(-1), th)
    return ((pred.view(B, K - 1, d) - x[:, 1:]) / scale).reshape(B, -1)


def _lm(residuals, z, iterations, damping, eps):
    """Batched Levenberg-Marquardt on unknowns ``z (B, q)`` of ``residuals(z) -> (B, R)``, with a
    central-difference Jacobian and a per-trajectory damping. Only improving steps are taken."""
    q = z.shape[1]
    lam = torch.full((z.shape[0],), damping, dtype=z.dtype, device=z.device)
    r = residuals(z)
    cost = (r**2).sum(1)
    eye = torch.eye(q, dtype=z.dtype, device=z.device)
    for _ in range(iterations):
        cols = []
        for j in range(q):
            step = torch.zeros_like(z)
            step[:, j] = eps
            cols.append((residuals(z + step) - residuals(z - step)) / (2 * eps))
        J = torch.stack(cols, -1)  # (B, R, q)
        JtJ = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        diag = torch.diagonal(JtJ, dim1=1, dim2=2).clamp_min(1e-12)
        H = JtJ + (lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye)
        delta = -torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
        delta = delta.clamp(-1.0, 1.0)  # at most a factor e per iteration in log-parameters
        trial = z + delta
        r_new = residuals(trial)
        cost_new = (r_new**2).sum(1)
        better = torch.isfinite(cost_new) & (cost_new < cost)
        z = torch.where(better[:, None], trial, z)
        r = torch.where(better[:, None], r_new, r)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    return z


def simulate(root, x0, dt, params, theta=None):
    """States (B, K+1, d) from x0 (B, d) through the physics step with fixed ``params``, one step
    per entry of ``dt (K,)`` (the first row is x0)."""
    out, state = [x0], x0
    for s in range(dt.shape[0]):
        state = root.advance(state, params, dt[s].expand(len(state)), theta)
        out.append(state)
    return torch.stack(out, 1)


@torch.no_grad()
def refine_context(root, x: torch.Tensor, t: torch.Tensor, params: torch.Tensor, *,
                   theta: torch.Tensor | None = None, iterations: int = 10,
                   shooting_iterations: int = 5, damping: float = 1e-3, eps: float = 1e-5,
                   scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-step refinement (:func:`refine_params`), then ``shooting_iterations`` LM steps on the
    log-parameters and the first context state together, the whole context simulated from it.

    Args and the parameters' return as in :func:`refine_params`; also returns the simulated last
    context state (B, d), from which a rollout should start (the observed one carries the
    observation noise). ``shooting_iterations=0`` skips the second stage (the last state is then
    the observed one).
    """
    params = refine_params(root, x, t, params, theta=theta, iterations=iterations,
                           damping=damping, eps=eps, scale=scale)
    if shooting_iterations <= 0:
        return params, x[:, -1]
    dt = t[1:] - t[:-1]
    B, K, d = x.shape
    p = params.shape[1]
    w = _state_scale(x, scale)  # (d,) or (B, 1, d): residual weights
    w0 = w.reshape(-1, d)  # (1, d) or (B, d): the unit of the first state's unknowns

    def residuals(z):
        sim = simulate(root, z[:, p:] * w0, dt, z[:, :p].exp(), theta)
        return ((sim - x) / w).reshape(B, -1)

    z = torch.cat([params.clamp_min(1e-12).log(), x[:, 0] / w0], 1)
    z = _lm(residuals, z, shooting_iterations, damping, eps)
    sim = simulate(root, z[:, p:] * w0, dt, z[:, :p].exp(), theta)
    return z[:, :p].exp(), sim[:, -1]


@torch.no_grad()
def refine_params(root, x: torch.Tensor, t: torch.Tensor, params: torch.Tensor, *,
                  theta: torch.Tensor | None = None, iterations: int = 10,
                  damping: float = 1e-3, eps: float = 1e-5,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
    """Levenberg-Marquardt on log-parameters, batched over trajectories.

    Args:
        root: a physics root (its ``advance`` is the model of one sample step).
        x: (B, K, d) context states in physical units (float64 recommended).
        t: (K,) their times.
        params: (B, p) initial estimates (e.g. WARP-Phys's amortised ones), positive.
        theta: (B, D) root weights, for roots whose step also uses them (hybrid correction).
        iterations: LM iterations; damping: initial lambda (adapted per trajectory);
        eps: finite-difference step in log-parameter space for the Jacobian.
        scale: (d,) weights of the states' residuals (e.g. the model's training state std);
            default: each trajectory's own context std.

    Returns (B, p) refined parameters. Directions the data do not determine (e.g. the mass of a
    spring-mass system, of which only k/m and c/m matter) stay where they started.
    """
    dt = t[1:] - t[:-1]
    logp = params.clamp_min(1e-12).log()
    w = _state_scale(x, scale)
    return _lm(lambda z: _residuals(root, x, dt, z, theta, w), logp, iterations, damping,
               eps).exp()
