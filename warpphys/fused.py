"""The autoregressive run of a black-box WARP (dense A, MLP root) as one autograd node.

Autograd through :meth:`warpphys.model.WARP.run` records some forty small operations per time
step (the root's batched matmuls and their views, the choice of the fed state, the recurrence)
and replays each of them in the backward; at a training step's sizes (batch 64, D about 700)
that bookkeeping costs about as much as the arithmetic. Here the forward runs the same
operations unrecorded, keeping only what the backward needs (every step's ``[theta_s, dx_s]``
and the root's layer inputs), and the backward is written out: one pass back in time that
carries the gradients of the weights theta_s and of the state fed at each step, then the
gradient of ``[A, B]`` as one GEMM over all steps and trajectories (inner dimension batch x
steps). Same numbers as the plain path up to the order of float sums
(``tests/test_fast_recurrence.py``).

Forward, for s = 0 .. T-2 (x_in_0 = x_0, theta_0 from the hypernetwork):

    mean_s      = x_in_s + mlp(theta_s; tau_{s+1}, x_in_s)          (the root's prediction)
    x_in_{s+1}  = x_{s+1} inside the context or where forced, else mean_s
    theta_{s+1} = A theta_s + B (x_in_{s+1} - x_in_s)
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from warpphys.roots import MLPRoot


def applies(model, xn: torch.Tensor, keep_theta) -> bool:
    """Whether ``model.run`` may take the fused path: a dense A and an MLP root whose
    activation :meth:`~warpphys.roots.BatchedMLP.backward` differentiates, the ordinary input
    differences (no lift), a gradient to form, and nothing asked that only the plain path keeps
    (the weights of every step, a predicted std, a gradient of the data)."""
    root, A = model.root, getattr(model.transition, "A", None)
    return (isinstance(root, MLPRoot) and not root.probabilistic and root.mlp.has_backward
            and model.transition.kind == "dense" and model.diff == "input"
            and model.lift == "none" and not keep_theta and torch.is_grad_enabled()
            and A is not None and not xn.requires_grad
            and not torch.is_autocast_enabled(xn.device.type)
            and any(p.requires_grad for p in model.parameters()))


def rollout(model, xn: torch.Tensor, tau: torch.Tensor, context: int,
            force: torch.Tensor | None) -> torch.Tensor:
    """The predictions ``(B, T-1, d)`` of steps 1..T-1 (``tau (T,)``), as ``model.run`` makes
    them; ``force (B, T)``: where scheduled sampling feeds the true state (None: nowhere)."""
    theta0 = model.theta0(xn[:, 0])
    return _Rollout.apply(theta0, model.transition.A, model.B, xn, tau, force, context,
                          model.root)


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta0, A, B, xn, tau, force, context, root):
        nb, d, D, steps = xn.shape[0], root.dim, A.shape[0], tau.shape[0] - 1
        # [A, B]^T with its inner dimension padded with zeros to a multiple of 64 (MKL's GEMMs
        # are faster there), and the tape of every step's GEMM input z_s = [theta_s, dx_s, 0]
        width = -(-(D + d) // 64) * 64
        Wt = A.new_zeros(width, D)
        Wt[:D] = A.detach().t()
        Wt[D:D + d] = B.detach().t()
        Z = theta0.new_empty(steps, nb, width)
        Z[..., D:] = 0
        # the root's input [tau_{s+1}, x_in_s] of every step; X: the fed states x_in_s
        H = theta0.new_empty(steps, nb, 1 + (d if root.use_state else 0))
        H[..., 0] = tau[1:, None]
        X = H[..., 1:] if root.use_state else theta0.new_empty(steps, nb, d)
        X[0] = xn[:, 0]
        # where x_in_s is the prediction mean_{s-1} (1) rather than a true state (0)
        fed = theta0.new_zeros(steps, nb, 1)
        if steps > context:
            fed[context:] = 1.0 if force is None else ~force[:, context:steps, None].transpose(0, 1)
        means = theta0.new_empty(nb, steps, d)
        kept = []  # the root's layer inputs of every step
        theta = theta0.detach()
        for s in range(steps):
            Z[s, :, :D] = theta
            layers = []
            out = root.mlp(theta, H[s], keep=layers)
            kept.append(layers)
            mean = torch.add(X[s], out, out=means[:, s]) if root.residual else out
            if not root.residual:
                means[:, s] = out
            if s == steps - 1:
                break
            if s + 1 < context:
                X[s + 1] = xn[:, s + 1]
            elif force is not None:
                torch.where(force[:, s + 1, None], xn[:, s + 1], mean, out=X[s + 1])
            else:
                X[s + 1] = mean
            torch.sub(X[s + 1], X[s], out=Z[s, :, D:D + d])
            theta = Z[s] @ Wt
        ctx.save_for_backward(A, B)
        ctx.tape = Z, kept, fed, root
        return means

    @staticmethod
    @once_differentiable
    def backward(ctx, g_means):
        A, B = ctx.saved_tensors
        Z, kept, fed, root = ctx.tape  # (kept: a graph may be differentiated again)
        steps, nb, width = Z.shape
        D, d = A.shape[0], root.dim
        A, B = A.detach(), B.detach()
        # G[s]: the gradient of theta_{s+1}; g_fed: that of the state fed after step s
        G = g_means.new_empty(steps - 1, nb, D)
        g_theta0 = g_means.new_empty(nb, D)
        g_fed = g_dx = None
        for s in range(steps - 1, -1, -1):
            g_mean = g_means[:, s]
            if s < steps - 1:  # theta_{s+1} = A theta_s + B (x_in_{s+1} - x_in_s)
                g_dx = G[s] @ B
                # the prediction, where it was fed on, receives the fed state's gradient
                g_mean = torch.addcmul(g_mean, fed[s + 1], g_fed + g_dx)
            g_theta = G[s - 1] if s > 0 else g_theta0
            g_h = root.mlp.backward(Z[s, :, :D], kept[s], g_mean, g_theta)
            if s < steps - 1:
                g_theta.addmm_(G[s], A)
            # the gradient of x_in_s: as the root's input, through the residual, and in dx
            g_fed = g_h[:, 1:] if root.use_state else torch.zeros_like(g_mean)
            if root.residual:
                g_fed = g_fed + g_mean
            if s < steps - 1:
                g_fed = g_fed - g_dx
        # the gradient of [A, B]: sum over steps and trajectories of g_{s+1} z_s^T, one GEMM
        grad_W = G.reshape(-1, D).t() @ Z[: steps - 1].reshape(-1, width)
        return (g_theta0, grad_W[:, :D] if ctx.needs_input_grad[1] else None,
                grad_W[:, D:D + d] if ctx.needs_input_grad[2] else None,
                None, None, None, None, None)
