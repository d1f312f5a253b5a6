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


# -- the fused autoregressive run of a black box (warpphys.fused) --------------------------------
def _uses_fused(m, monkeypatch, **kw):
    """Whether ``training_loss(**kw)`` took the fused run (counted, then restored)."""
    from warpphys import fused

    calls = []
    real = fused.rollout
    monkeypatch.setattr(fused, "rollout", lambda *a: calls.append(1) or real(*a))
    m.fast_recurrence = True
    kw = dict(kw)
    if "seed" in kw:
        kw["generator"] = torch.Generator().manual_seed(kw.pop("seed"))
    m.training_loss(*_data(), **kw)["loss"].backward()
    monkeypatch.undo()
    return bool(calls)


@pytest.mark.parametrize("root_kw, model_kw, run_kw", [
    ({}, {}, {"context": 4, "p_forcing": 0.0}),
    ({}, {}, {"context": 4, "p_forcing": 1.0, "seed": 5}),
    ({}, {}, {"context": 14, "p_forcing": 0.0}),  # teacher-forced throughout
    ({}, {}, {"context": 1, "p_forcing": 0.5, "seed": 7}),
    ({"residual": False}, {}, {"context": 3, "p_forcing": 0.25, "seed": 3}),
    ({"use_state": False}, {}, {"context": 3, "p_forcing": 0.25, "seed": 3}),
    ({"activation": "relu"}, {}, {"context": 8, "p_forcing": 0.5, "seed": 3}),
    ({"depth": 1}, {"hypernet": False}, {"context": 3, "p_forcing": 0.25, "seed": 3}),
])
def test_fused_run_gradients_equal_plain_autograd(root_kw, model_kw, run_kw, monkeypatch):
    torch.manual_seed(0)
    root = MLPRoot(2, **{"width": 8, "depth": 2, **root_kw})
    m = WARP(2, root, hyper_width=16, **model_kw).double()
    with torch.no_grad():  # (a small move: a relu root's rollout grows without bound)
        m.transition.A.add_(0.02 * torch.randn_like(m.transition.A))
        m.B.normal_(0.0, 0.03)
    assert _uses_fused(m, monkeypatch, **run_kw)
    _assert_same(m, **run_kw)


def test_fused_run_of_two_steps_leaves_the_recurrence_without_a_gradient(monkeypatch):
    # one prediction from x_0: A and B are not used, so they get no gradient (as in autograd),
    # not a zero one that Adam's momentum would still act on
    from warpphys import fused

    calls = []
    real = fused.rollout
    monkeypatch.setattr(fused, "rollout", lambda *a: calls.append(1) or real(*a))
    m = _model()
    x, t = _data(B=3, T=2)
    m.zero_grad(set_to_none=True)
    m.training_loss(x, t, context=1, p_forcing=0.0)["loss"].backward()
    assert calls  # the fused run made the prediction
    assert m.transition.A.grad is None and m.B.grad is None
    assert m.hypernet[0].weight.grad is not None


def test_fused_run_needs_a_differentiated_activation_and_plain_outputs(monkeypatch):
    # what only the plain path can do: another activation, a predicted std, a diff on the
    # predictions, every step's weights
    for root_kw, model_kw in [({"activation": "gelu"}, {}), ({"probabilistic": True}, {}),
                              ({}, {"diff": "prediction"}), ({}, {"transition": "diagonal"})]:
        m = WARP(2, MLPRoot(2, width=8, **root_kw), hyper_width=16, **model_kw).double()
        assert not _uses_fused(m, monkeypatch, context=3, p_forcing=0.25, seed=1)
    m = _model()
    x, t = _data()
    from warpphys import fused
    assert fused.applies(m, x, keep_theta=False)
    assert not fused.applies(m, x, keep_theta=True)
    with torch.no_grad():
        assert not fused.applies(m, x, keep_theta=False)


def test_fused_run_in_float32_is_as_close_to_float64_as_plain_autograd():
    # the root (23 x 2) on smooth data; in float64, fused and plain agree to round-off
    # (above), so float64 is the reference for both float32 paths
    torch.manual_seed(0)
    m = WARP(2, MLPRoot(2, width=23, depth=2), hyper_width=32)
    with torch.no_grad():
        m.transition.A.add_(0.002 * torch.randn_like(m.transition.A))
        m.B.normal_(0.0, 0.01)
    g = torch.Generator().manual_seed(1)
    t = torch.linspace(0.0, 1.0, 40)
    phase, omega = 6 * torch.rand(16, 1, generator=g), 2 + 4 * torch.rand(16, 1, generator=g)
    x = torch.stack([torch.sin(omega * t + phase), torch.cos(omega * t + phase)], -1)
    grads = {}
    for dtype, fast in [(torch.float64, False), (torch.float32, False), (torch.float32, True)]:
        m.to(dtype).fast_recurrence = fast
        m.zero_grad(set_to_none=True)
        m.training_loss(x.to(dtype), t.to(dtype), context=8, p_forcing=0.25,
                        generator=torch.Generator().manual_seed(2))["loss"].backward()
        grads[dtype, fast] = {n: p.grad.double() for n, p in m.named_parameters()}
    for name, ref in grads[torch.float64, False].items():
        err = {fast: float((grads[torch.float32, fast][name] - ref).abs().max() / ref.abs().max())
               for fast in (False, True)}
        assert err[True] < 4 * err[False] + 1e-6, (name, err)
