"""The fused dense recurrence (WARP.fast_recurrence) gives the gradients of plain autograd
through every step (float64: agreement to round-off)."""

import pytest
import torch

from warpphys.model import WARP
from warpphys.physics import ODERoot
from warpphys.roots import MLPRoot


def _model(root=None, diff="input", freeze=False, seed=0):
    torch.manual_seed(seed)
    root = root if root is not None else MLPRoot(2, width=8, depth=2)
    m = WARP(2, root, hyper_width=16, diff=diff, freeze_params=freeze).double()
    with torch.no_grad():  # move A and B away from their (degenerate) initial values
        m.transition.A.add_(0.05 * torch.randn_like(m.transition.A))
        m.B.normal_(0.0, 0.1)
    return m


def _data(B=5, T=14, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.cumsum(0.1 * torch.randn(B, T, 2, generator=g, dtype=torch.float64), 1)
    return x, torch.linspace(0.0, 1.0, T, dtype=torch.float64)


def _grads(m, fast, **kw):
    m.fast_recurrence = fast
    m.zero_grad(set_to_none=True)
    seed = kw.pop("seed", None)
    if seed is not None:  # the same scheduled-sampling masks in both runs
        kw["generator"] = torch.Generator().manual_seed(seed)
    logs = m.training_loss(*_data(), **kw)
    logs["loss"].backward()
    return float(logs["loss"].detach()), {n: p.grad.clone() for n, p in m.named_parameters()
                                 if p.grad is not None}


def _assert_same(m, **kw):
    loss_plain, plain = _grads(m, False, **dict(kw))
    loss_fast, fast = _grads(m, True, **dict(kw))
    assert loss_fast == pytest.approx(loss_plain, rel=1e-13)
    assert plain.keys() == fast.keys() and "transition.A" in fast and "B" in fast
    for name in plain:
        # the same sums in another order: round-off relative to the gradient's size
        scale = float(plain[name].abs().max())
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-9, atol=1e-12 * scale,
                                   msg=name)


@pytest.mark.parametrize("diff", ["input", "prediction", "innovation"])
def test_fused_recurrence_gradients_equal_plain_autograd(diff):
    _assert_same(_model(diff=diff), context=4, p_forcing=0.25, seed=3)


def test_fused_recurrence_gradients_equal_plain_autograd_in_parallel_mode():
    _assert_same(_model(), context=4, mode="parallel")


def test_fused_recurrence_gradients_equal_plain_autograd_for_a_physics_root():
    m = _model(ODERoot("spring_mass", width=8), freeze=True)
    params = torch.tensor([[1.0, 20.0, 0.5]], dtype=torch.float64).expand(5, -1)
    _assert_same(m, context=4, p_forcing=0.0, params=params)


def test_fused_recurrence_runs_the_same_forward():
    m = _model()
    x, t = _data()
    m.fast_recurrence = False
    plain = m.run(x, t, context=3, keep_theta=True)
    m.fast_recurrence = True
    fast = m.run(x, t, context=3, keep_theta=True)
    torch.testing.assert_close(fast.mean, plain.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.theta, plain.theta, rtol=1e-10, atol=1e-12)
