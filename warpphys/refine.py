"""Optional refinement of amortised parameter estimates on the context window.

WARP-Phys reads the physical parameters from its weights in one forward pass. Where the physics
is exact and the data clean, a few batched Levenberg-Marquardt steps on the one-step prediction
error of the context (through the same differentiable physics step, all trajectories at once)
sharpen that estimate. The gradient-free estimate stays the default; this is reported beside it.
"""

from __future__ import annotations

import torch


def _residuals(root, x, dt, log_params, theta):
    """One-step residuals (B, (K-1)*d) of the physics step over the context, in state scales."""
    B, K, d = x.shape
    params = log_params.exp()
    xs = x[:, :-1].reshape(-1, d)
    rep = lambda a: a[:, None].expand(B, K - 1, *a.shape[1:]).reshape(B * (K - 1), *a.shape[1:])  # noqa: E731
    th = None if theta is None else rep(theta)
    pred = root.advance(xs, rep(params), dt.expand(B, -1).reshape(-1), th)
    scale = x.reshape(-1, d).std(0).clamp_min(1e-12)
    return ((pred.view(B, K - 1, d) - x[:, 1:]) / scale).reshape(B, -1)


@torch.no_grad()
def refine_params(root, x: torch.Tensor, t: torch.Tensor, params: torch.Tensor, *,
                  theta: torch.Tensor | None = None, iterations: int = 10,
                  damping: float = 1e-3, eps: float = 1e-5) -> torch.Tensor:
    """Levenberg-Marquardt on log-parameters, batched over trajectories.

    Args:
        root: a physics root (its ``advance`` is the model of one sample step).
        x: (B, K, d) context states in physical units (float64 recommended).
        t: (K,) their times.
        params: (B, p) initial estimates (e.g. WARP-Phys's amortised ones), positive.
        theta: (B, D) root weights, for roots whose step also uses them (hybrid correction).
        iterations: LM iterations; damping: initial lambda (adapted per trajectory);
        eps: finite-difference step in log-parameter space for the Jacobian.

    Returns (B, p) refined parameters. Directions the data do not determine (e.g. the mass of a
    spring-mass system, of which only k/m and c/m matter) stay where they started.
    """
    dt = t[1:] - t[:-1]
    logp = params.clamp_min(1e-12).log().clone()
    p = logp.shape[1]
    lam = torch.full((logp.shape[0],), damping, dtype=x.dtype, device=x.device)
    r = _residuals(root, x, dt, logp, theta)
    cost = (r**2).sum(1)
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        cols = []
        for j in range(p):
            step = torch.zeros_like(logp)
            step[:, j] = eps
            cols.append((_residuals(root, x, dt, logp + step, theta)
                         - _residuals(root, x, dt, logp - step, theta)) / (2 * eps))
        J = torch.stack(cols, -1)  # (B, R, p)
        JtJ = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        diag = torch.diagonal(JtJ, dim1=1, dim2=2).clamp_min(1e-12)
        H = JtJ + (lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye)
        delta = -torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
        delta = delta.clamp(-1.0, 1.0)  # at most a factor e per iteration
        trial = logp + delta
        r_new = _residuals(root, x, dt, trial, theta)
        cost_new = (r_new**2).sum(1)
        better = torch.isfinite(cost_new) & (cost_new < cost)
        logp = torch.where(better[:, None], trial, logp)
        r = torch.where(better[:, None], r_new, r)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-9, 1e9)
    return logp.exp()
