"""Closed-form flows of linear systems with two states (no matrix-exponential routine needed)."""

from __future__ import annotations

import torch


def expm2_apply(M: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``expm(M t) x0`` for 2x2 generators, every trajectory at every time, in closed form.

    With ``tr = trace M``, ``N = M - tr/2 I`` satisfies ``N^2 = disc I`` (``disc = tr^2/4 - det
    M``), so ``expm(M t) = e^{tr t/2} (C(t) I + S(t) N)`` with ``C = cosh(q t)``,
    ``S = sinh(q t)/q`` for ``q = sqrt(disc)`` (cos and sin of ``sqrt(-disc) t`` when disc < 0,
    a series when ``disc t^2`` is tiny). Overdamped flows are written with the exponential of the
    dominant real eigenvalue and ``expm1`` of the gap, so that nothing cancels or overflows
    where the flow itself is finite (strongly damped systems included).

    Args:
        M: (B, 2, 2) generators; t: (T,) times from the start; x0: (B, 2).
    Returns:
        (B, T, 2).
    """
    a, b, c, d = M[:, 0, 0], M[:, 0, 1], M[:, 1, 0], M[:, 1, 1]
    half = 0.5 * (a + d)  # (B,)
    disc = (0.5 * (a - d)) ** 2 + b * c  # tr^2/4 - det, without cancellation in tr^2/4 - ad
    tt = t[None, :]  # (1, T)
    h, dsc = half[:, None], disc[:, None]
    z = dsc * tt * tt
    # oscillating (disc < 0)
    w = torch.sqrt((-dsc).clamp_min(0.0))
    w_safe = torch.where(w > 0, w, torch.ones_like(w))
    eh = torch.exp(h * tt)
    c_osc = eh * torch.cos(w * tt)
    s_osc = eh * torch.sin(w * tt) / w_safe
    # real eigenvalues (disc > 0): half +- q. Each flow is written through the exponential of
    # the eigenvalue that dominates at that time (the larger for t > 0, the smaller for t < 0)
    # and expm1 of minus the gap, in [-1, 0]: finite wherever the flow is, even when a stiff
    # eigenvalue's exponential underflows (a product of 0 and inf otherwise). The eigenvalue
    # of larger magnitude is half + sign(half) q (no cancellation), the other det / it.
    q = torch.sqrt(dsc.clamp_min(0.0))
    q_safe = torch.where(q > 0, q, torch.ones_like(q))
    sgn = torch.where(h < 0, -torch.ones_like(h), torch.ones_like(h))
    big = h + sgn * q
    det = (a * d - b * c)[:, None]
    small_eig = det / torch.where(big != 0, big, torch.ones_like(big))
    lam_hi, lam_lo = torch.maximum(big, small_eig), torch.minimum(big, small_eig)
    dom = torch.exp(torch.where(tt >= 0, lam_hi, lam_lo) * tt)
    gap = torch.expm1(-2.0 * q * tt.abs())  # e^{-2 q |t|} - 1
    c_real = dom * (1.0 + 0.5 * gap)
    s_real = -torch.sign(tt) * dom * gap / (2.0 * q_safe)
    # near-critical: series in z = disc t^2 (error below z^3 / 5040)
    c_ser = eh * (1.0 + z / 2 + z * z / 24 + z * z * z / 720)
    s_ser = eh * tt * (1.0 + z / 6 + z * z / 120 + z * z * z / 5040)
    small = z.abs() < 1e-3
    C = torch.where(small, c_ser, torch.where(dsc < 0, c_osc, c_real))
    S = torch.where(small, s_ser, torch.where(dsc < 0, s_osc, s_real))
    # N x0
    n0 = (a - half) * x0[:, 0] + b * x0[:, 1]
    n1 = c * x0[:, 0] + (d - half) * x0[:, 1]
    return torch.stack([C * x0[:, :1] + S * n0[:, None], C * x0[:, 1:] + S * n1[:, None]], -1)
