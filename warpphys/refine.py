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


def _uses_theta(root, theta) -> bool:
    return theta is not None and getattr(root, "advance_uses_theta", True)


def _tile(a, n: int):
    """``a`` repeated ``n`` times along its first dimension (for stacked LM evaluations)."""
    return a if n == 1 or a is None else a.repeat(n, *([1] * (a.dim() - 1)))


def _residuals(root, x, dt, log_params, theta, scale):
    """One-step residuals (n B, (K-1)*d) of the physics step over the context, in state scales,
    for ``log_params (n B, p)``: n stacked sets of unknowns for the same B trajectories."""
    B, K, d = x.shape
    n = log_params.shape[0] // B
    params = log_params.exp()
    xs = _tile(x[:, :-1], n).reshape(-1, d)
    rep = lambda a: a[:, None].expand(a.shape[0], K - 1, *a.shape[1:]).reshape(  # noqa: E731
        a.shape[0] * (K - 1), *a.shape[1:])
    # roots whose step ignores theta get none: repeating (B, D) weights over every step of the
    # context would be the largest temporary of the refinement
    th = rep(_tile(theta, n)) if _uses_theta(root, theta) else None
    pred = root.advance(xs, rep(params), dt.expand(n * B, -1).reshape(-1), th)
    scale = _tile(scale, n) if scale.dim() == 3 else scale
    return ((pred.view(n * B, K - 1, d) - _tile(x[:, 1:], n)) / scale).reshape(n * B, -1)


def _jacobian(residuals, z, h):
    """Central-difference Jacobian (B, R, q) of ``residuals`` at ``z (B, q)``, with step ``h``
    along each unknown (a number, or (B, q)): the 2q shifted evaluations as one stacked call
    (rows ``i B + b`` of the stack belong to trajectory b)."""
    B, q = z.shape
    h = torch.as_tensor(h, dtype=z.dtype, device=z.device).expand(B, q)
    shift = torch.diag_embed(h)  # (B, q, q): +h then -h along each unknown
    stacked = torch.cat([z[:, None] + shift, z[:, None] - shift], 1).transpose(0, 1)
    out = residuals(stacked.reshape(2 * q * B, q)).view(2, q, B, -1)
    return ((out[0] - out[1]) / (2 * h.T[..., None])).permute(1, 2, 0)


def _lm(residuals, z, iterations, damping, eps):
    """Batched Levenberg-Marquardt on unknowns ``z (B, q)`` of ``residuals(z) -> (B, R)``, with a
    central-difference Jacobian and a per-trajectory damping. Only improving steps are taken.
    ``residuals`` must also take n stacked sets of unknowns ``(n B, q)`` (rows ``i B + b``
    belong to trajectory b), returning ``(n B, R)``: the Jacobian's 2q evaluations are one call."""
    B, q = z.shape
    lam = torch.full((B,), damping, dtype=z.dtype, device=z.device)
    r = residuals(z)
    cost = (r**2).sum(1)
    eye = torch.eye(q, dtype=z.dtype, device=z.device)
    for _ in range(iterations):
        J = _jacobian(residuals, z, eps)  # (B, R, q)
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


def simulate(root, x0, dt, params, theta=None, on_step=None):
    """States (B, K+1, d) from x0 (B, d) through the physics step with fixed ``params``, one step
    per entry of ``dt (K,)`` (the first row is x0); ``on_step()`` is called after each step (a
    progress bar's update)."""
    out, state = [x0], x0
    for s in range(dt.shape[0]):
        state = root.advance(state, params, dt[s].expand(len(state)), theta)
        out.append(state)
        if on_step is not None:
            on_step()
    return torch.stack(out, 1)


@torch.no_grad()
def refine_context(root, x: torch.Tensor, t: torch.Tensor, params: torch.Tensor, *,
                   theta: torch.Tensor | None = None, iterations: int = 10,
                   shooting_iterations: int = 5, damping: float = 1e-3, eps: float = 1e-5,
                   scale: torch.Tensor | None = None, covariance: bool = False) -> tuple:
    """One-step refinement (:func:`refine_params`), then ``shooting_iterations`` LM steps on the
    log-parameters and the first context state together, the whole context simulated from it.

    Args and the parameters' return as in :func:`refine_params`; also returns the simulated last
    context state (B, d), from which a rollout should start (the observed one carries the
    observation noise). ``shooting_iterations=0`` skips the second stage (the last state is then
    the observed one). With ``covariance``, also the parameters' covariance (B, p, p) of this
    least-squares fit and the directions it leaves free (B, p, p + d) (:func:`_covariance`),
    from the second stage (which is then required).
    """
    params = refine_params(root, x, t, params, theta=theta, iterations=iterations,
                           damping=damping, eps=eps, scale=scale)
    if shooting_iterations <= 0:
        if covariance:
            raise ValueError("the covariance comes from the shooting stage: give "
                             "shooting_iterations >= 1")
        return params, x[:, -1]
    dt = t[1:] - t[:-1]
    B, K, d = x.shape
    p = params.shape[1]
    w = _state_scale(x, scale)  # (d,) or (B, 1, d): residual weights
    w0 = w.reshape(-1, d)  # (1, d) or (B, d): the unit of the first state's unknowns

    th = theta if _uses_theta(root, theta) else None

    def misfit(params, first):  # (n B, p) parameters, (n B, d) first states in units w0
        n = params.shape[0] // B
        unit = _tile(w0, n) if w0.shape[0] == B else w0
        sim = simulate(root, first * unit, dt, params, _tile(th, n))
        return ((sim - _tile(x, n)) / (_tile(w, n) if w.dim() == 3 else w)).reshape(n * B, -1)

    z = torch.cat([params.clamp_min(1e-12).log(), x[:, 0] / w0], 1)
    z = _lm(lambda z: misfit(z[:, :p].exp(), z[:, p:]), z, shooting_iterations, damping, eps)
    sim = simulate(root, z[:, p:] * w0, dt, z[:, :p].exp(), th)
    if not covariance:
        return z[:, :p].exp(), sim[:, -1]
    u = torch.cat([z[:, :p].exp(), z[:, p:]], 1)  # natural units: a damping may be near 0
    h = torch.cat([parameter_steps(u[:, :p]), 1e-6 * torch.ones_like(u[:, p:])], 1)
    cov, free = _covariance(lambda u: misfit(u[:, :p], u[:, p:]), u, h)
    return u[:, :p], sim[:, -1], cov[:, :p, :p], free[:, :p]


def parameter_steps(params: torch.Tensor) -> torch.Tensor:
    """Central-difference steps (B, p) for parameters ``params (B, p)`` in natural units:
    1e-6 of each, floored for a parameter at 0 (no damping) by 1e-9 of the trajectory's
    largest parameter."""
    return 1e-6 * (params.abs() + 1e-3 * params.abs().amax(1, keepdim=True))


def _covariance(residuals, u, h, rtol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariance (B, q, q) of least-squares estimates ``u (B, q)`` (at the minimum of
    ``residuals``), Gauss-Newton: s^2 (J^T J)^+, with s^2 the residuals' mean square over their
    degrees of freedom (observations less determined directions), i.e. the observation noise
    estimated from the fit itself (infinite without a degree of freedom left). Directions the
    residuals do not determine are left out by the pseudo-inverse, and returned as the columns
    of ``free (B, q, q)`` (zero columns for the determined ones): combinations that do not change
    along them (k/m along a spring-mass's common scale of m, k and c) get their variance; the
    others are not determined at all (:func:`combination_std`)."""
    J = _jacobian(residuals, u, h)  # (B, R, q)
    r = residuals(u)
    norm = J.norm(dim=1).clamp_min(1e-300)  # (B, q): columns of comparable size
    Jn = J / norm[:, None, :]
    evals, evecs = torch.linalg.eigh(Jn.transpose(1, 2) @ Jn)
    keep = evals > rtol * evals[:, -1:].clamp_min(1e-300)
    inv_evals = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    pinv = (evecs * inv_evals[:, None, :]) @ evecs.transpose(1, 2)
    dof = r.shape[1] - keep.sum(1)
    s2 = torch.where(dof > 0, (r**2).sum(1) / dof.clamp_min(1), torch.inf)
    free = evecs * (~keep)[:, None, :] / norm[:, :, None]  # (back in u's units)
    return s2[:, None, None] * pinv / (norm[:, :, None] * norm[:, None, :]), free


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


def combination_std(fn, params: torch.Tensor, cov: torch.Tensor,
                    free: torch.Tensor | None = None) -> torch.Tensor:
    """Standard errors (B, q) of combinations ``fn(params) -> (B, q)`` of parameters
    ``params (B, p)`` with covariance ``cov (B, p, p)`` (delta method: the central-difference
    gradient of ``fn``, steps :func:`parameter_steps`, which ``fn`` must take stacked as
    :func:`_jacobian` does).
    ``free (B, p, k)``: directions the fit left undetermined; a combination that changes along
    one of them is not determined, and its standard error is infinite."""
    G = _jacobian(fn, params, parameter_steps(params))  # (B, q, p)
    std = torch.einsum("bip,bpr,bir->bi", G, cov, G).clamp_min(0).sqrt()
    std = torch.nan_to_num(std, nan=torch.inf)  # (no degree of freedom left: inf times 0)
    if free is not None:
        moves = torch.einsum("bip,bpk->bik", G, free).abs()
        scale = G.norm(dim=2, keepdim=True) * free.norm(dim=1, keepdim=True)
        std = torch.where((moves > 1e-6 * scale).any(-1), torch.inf, std)
    return std
