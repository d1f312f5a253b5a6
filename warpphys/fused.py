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
    """Whether ``model.run`` may take the fused path: a dense A, an MLP root of an activation
    in :data:`_ACTIVATIONS`, the ordinary input differences (no lift), a gradient to form, and
    nothing asked that only the plain path keeps (the weights of every step, a predicted std, a
    gradient of the data)."""
    root, A = model.root, getattr(model.transition, "A", None)
    return (isinstance(root, MLPRoot) and not root.probabilistic
            and root.mlp.activation in _ACTIVATIONS
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


def padded_transpose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``[A, B]^T`` (detached), its rows (the recurrence GEMM's inner dimension, D + d) padded
    with zeros to a multiple of 64: measured 120 -> 150 GFLOP/s for (64 x 704) @ (704 x 692)
    against 694 on one x86 core (MKL). The GEMM's input ``[theta, dx]`` is padded to match."""
    D, d = A.shape[0], B.shape[1]
    Wt = A.new_zeros(-(-(D + d) // 64) * 64, D)
    Wt[:D] = A.detach().t()
    Wt[D:D + d] = B.detach().t()
    return Wt


#: activation -> (in place, and the gradient of its input from that of its output g and the
#: output y): tanh' = 1 - y^2, relu' = [y > 0]
_ACTIVATIONS = {
    "tanh": (torch.tanh_, lambda g, y: torch.addcmul(g, g * y, y, value=-1.0)),
    "relu": (torch.relu_, lambda g, y: g * (y > 0)),
}


class _Rollout(torch.autograd.Function):
    """Tapes over the steps s: ``Z[s] = [theta_s, dx_s, 0]`` (the recurrence's GEMM input;
    theta_{s+1} is written into ``Z[s + 1]`` by that GEMM), ``H[s] = [tau_{s+1}, x_in_s]`` (the
    root's input), every hidden layer's output, and in the backward ``G[s]``, the gradient of
    theta_s. The root's layers are views of these tapes (``BatchedMLP.layers``), so that a
    step is a few selections, batched matmuls and element-wise operations."""

    @staticmethod
    def forward(ctx, theta0, A, B, xn, tau, force, context, root):
        nb, d, D, steps = xn.shape[0], root.dim, A.shape[0], tau.shape[0] - 1
        mlp, (activate, _) = root.mlp, _ACTIVATIONS[root.mlp.activation]
        Wt = padded_transpose(A, B)
        Z = theta0.new_empty(steps, nb, Wt.shape[0])
        Z[..., D:] = 0
        Z[0, :, :D] = theta0
        H = theta0.new_empty(steps, nb, 1 + (d if root.use_state else 0))
        H[..., 0] = tau[1:, None]
        X = H[..., 1:] if root.use_state else theta0.new_empty(steps, nb, d)  # x_in_s
        X[0] = xn[:, 0]
        # where x_in_s is the prediction mean_{s-1} (1) rather than a true state (0)
        fed = theta0.new_zeros(steps, nb, 1)
        if steps > context:
            fed[context:] = 1.0 if force is None else ~force[:, context:steps, None].transpose(0, 1)
        hidden = [theta0.new_empty(steps, nb, o, 1) for o, _ in mlp.shapes[:-1]]
        # every per-step view made once, in C++ (unbind), not by indexing inside the loop
        layers = [(w.unbind(0), b.unsqueeze(-1).unbind(0)) for w, b in mlp.layers(Z)]
        hidden_s = [h.unbind(0) for h in hidden]
        H_s, X_s, Z_s = H.unsqueeze(-1).unbind(0), X.unbind(0), Z.unbind(0)
        theta_s, dx_s = Z[..., :D].unbind(0), Z[..., D:D + d].unbind(0)
        means = theta0.new_empty(nb, steps, d)
        mean_s, x_s = means.unbind(1), xn.unbind(1)
        force_s = None if force is None else force.unsqueeze(-1).unbind(1)
        n_hidden = len(hidden)
        w_out, b_out = layers[n_hidden]
        for s in range(steps):
            h = H_s[s]
            for j in range(n_hidden):  # as BatchedMLP.forward
                w, b = layers[j]
                h = activate(torch.baddbmm(b[s], w[s], h, out=hidden_s[j][s]))
            out = torch.baddbmm(b_out[s], w_out[s], h).squeeze(-1)
            mean = (torch.add(X_s[s], out, out=mean_s[s]) if root.residual
                    else mean_s[s].copy_(out))
            if s == steps - 1:
                break
            if s + 1 < context:
                X_s[s + 1].copy_(x_s[s + 1])
            elif force is not None:
                torch.where(force_s[s + 1], x_s[s + 1], mean, out=X_s[s + 1])
            else:
                X_s[s + 1].copy_(mean)
            torch.sub(X_s[s + 1], X_s[s], out=dx_s[s])
            torch.mm(Z_s[s], Wt, out=theta_s[s + 1])
        ctx.save_for_backward(A, B)
        ctx.tape = Z, H, hidden, fed, root
        return means

    @staticmethod
    @once_differentiable
    def backward(ctx, g_means):
        A, B = ctx.saved_tensors
        Z, H, hidden, fed, root = ctx.tape  # (kept: a graph may be differentiated again)
        steps, nb, width = Z.shape
        D, d = A.shape[0], root.dim
        A, B = A.detach(), B.detach()
        _, back_through = _ACTIVATIONS[root.mlp.activation]
        G = g_means.new_empty(steps, nb, D)
        weights = [w.transpose(-1, -2).unbind(0) for w, _ in root.mlp.layers(Z)]  # every W^T
        grads = [(w.unbind(0), b.unsqueeze(-1).unbind(0)) for w, b in root.mlp.layers(G)]
        inputs = [H.unsqueeze(-1)] + hidden  # every layer's input, (steps, nb, in, 1)
        inputs_T = [a.transpose(-1, -2).unbind(0) for a in inputs]
        inputs = [a.unbind(0) for a in inputs]
        G_s, fed_s, g_means_s = G.unbind(0), fed.unbind(0), g_means.unbind(1)
        no_state = g_means.new_zeros(nb, d)  # (never written: the gradient where x is no input)
        g_fed = g_dx = None  # the gradients of x_in_{s+1} and of dx_s
        for s in range(steps - 1, -1, -1):
            g_mean = g_means_s[s]
            if s < steps - 1:  # theta_{s+1} = A theta_s + B (x_in_{s+1} - x_in_s)
                g_dx = G_s[s + 1] @ B
                # the prediction, where it was fed on, receives the fed state's gradient
                g_mean = torch.addcmul(g_mean, fed_s[s + 1], g_fed + g_dx)
            g = g_mean.unsqueeze(-1)
            for j in range(len(weights) - 1, -1, -1):  # the root, layer by layer
                g_w, g_b = grads[j]
                torch.mul(g, inputs_T[j][s], out=g_w[s])
                g_b[s].copy_(g)
                g = torch.bmm(weights[j][s], g)
                if j > 0:
                    g = back_through(g, inputs[j][s])
            if s < steps - 1:
                G_s[s].addmm_(G_s[s + 1], A)
            # the gradient of x_in_s: as the root's input, through the residual, and in dx
            g_fed = g[:, 1:, 0] if root.use_state else no_state
            if root.residual:
                g_fed = g_fed + g_mean
            if s < steps - 1:
                g_fed = g_fed - g_dx
        grad_A = grad_B = None  # (none either without a step of the recurrence, T = 2)
        if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) and steps > 1:
            # sum over steps and trajectories of g_{s+1} [theta_s, dx_s]^T: one GEMM
            grad_W = G[1:].reshape(-1, D).t() @ Z[:-1].reshape(-1, width)
            grad_A, grad_B = grad_W[:, :D], grad_W[:, D:D + d]
        return (G[0], grad_A if ctx.needs_input_grad[1] else None,
                grad_B if ctx.needs_input_grad[2] else None, None, None, None, None, None)
