"""WARP's recurrence, its three ways to run, shapes and the black-box root (float64)."""

import pytest
import torch

from warpphys.model import WARP
from warpphys.roots import BatchedMLP, MLPRoot

pytestmark = pytest.mark.usefixtures("float64")


def _model(diff="input", transition="dense", seed=0, perturb=True, probabilistic=False):
    torch.manual_seed(seed)
    m = WARP(2, MLPRoot(2, width=8, probabilistic=probabilistic), hyper_width=16, diff=diff,
             transition=transition).double()
    if perturb:  # move A and B away from their (degenerate) initial values
        with torch.no_grad():
            for p in m.transition.parameters():
                p.add_(0.01 * torch.randn_like(p))
            m.B.normal_(0.0, 0.1)
    return m


def _data(B=4, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 2, generator=g), torch.linspace(0.0, 1.0, T)


@pytest.mark.parametrize("transition", ["dense", "diagonal", "lowrank"])
def test_parallel_mode_equals_sequential_teacher_forcing(transition):
    m = _model(transition=transition)
    x, t = _data()
    seq = m.run(x, t, context=x.shape[1], keep_theta=True)
    par = m.run_parallel(x, t, keep_theta=True)
    # same arithmetic in another order: agreement to float64 round-off
    torch.testing.assert_close(par.mean, seq.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(par.theta, seq.theta, rtol=1e-10, atol=1e-12)


def test_theta_stays_at_theta0_when_B_is_zero():
    m = _model(perturb=False)  # A = I, B = 0: the initial state of every WARP
    x, t = _data()
    out = m.run(x, t, context=5, keep_theta=True)
    theta0 = m.theta0(x[:, 0])
    assert torch.equal(out.theta, theta0[:, None].expand_as(out.theta))


def test_recurrence_is_linear_in_the_input_differences():
    m = _model()
    x, t = _data(B=1)
    A, B = m.transition.matrix(), m.B
    out = m.run(x, t, context=x.shape[1], keep_theta=True)
    theta = m.theta0(x[:, 0])[0]
    for s in range(1, x.shape[1] - 1):
        theta = A @ theta + B @ (x[0, s] - x[0, s - 1])
        torch.testing.assert_close(out.theta[0, s], theta, rtol=1e-10, atol=1e-12)


def test_gradients_reach_A_B_and_the_hypernetwork():
    m = _model()
    x, t = _data()
    m.training_loss(x, t, context=3, p_forcing=0.5)["loss"].backward()
    for name in ("transition.A", "B", "hypernet.0.weight", "hypernet.4.bias"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradients_match_finite_differences():
    m = _model()
    x, t = _data(B=2, T=6)
    b0 = m.B.detach().clone()
    del m.B  # B becomes a plain tensor argument

    def loss(b):
        m.B = b
        return m.training_loss(x, t, context=2, p_forcing=0.0)["loss"]

    assert torch.autograd.gradcheck(loss, (b0.requires_grad_(),), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_learned_initial_vector_option():
    torch.manual_seed(0)
    m = WARP(2, MLPRoot(2, width=8), hypernet=False).double()
    x, t = _data()
    th = m.theta0(x[:, 0])
    assert torch.equal(th[0], th[1])


@pytest.mark.parametrize("diff", ["input", "prediction", "innovation"])
def test_rollout_shapes_and_extrapolation_past_the_window(diff):
    m = _model(diff=diff)
    x, _ = _data(B=3, T=10)
    t_long = torch.linspace(0.0, 3.0, 30)  # window is 1: tau reaches 3
    x_hat, theta = m.rollout(x, t_long, context=4, keep_theta=True)
    assert x_hat.shape == (3, 30, 2) and theta.shape == (3, 29, m.num_weights)
    assert torch.equal(x_hat[:, :4], x[:, :4])
    assert torch.isfinite(x_hat).all()


def test_rollout_depends_only_on_the_context():
    m = _model()
    x, t = _data(B=2, T=10)
    y = x.clone()
    y[:, 4:] += 100.0  # change the future: the rollout from 4 steps must not see it
    torch.testing.assert_close(m.rollout(x, t, 4)[0], m.rollout(y, t, 4)[0])


def test_scheduled_sampling_extremes():
    m = _model()
    x, t = _data()
    forced = m.run(x, t, context=3, p_forcing=1.0)
    teacher = m.run(x, t, context=x.shape[1])
    torch.testing.assert_close(forced.mean, teacher.mean)
    free = m.run(x, t, context=3, p_forcing=0.0)
    assert not torch.allclose(free.mean, teacher.mean)


def test_batched_mlp_equals_per_trajectory_evaluation():
    mlp = BatchedMLP([3, 5, 5, 2])
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4, mlp.num_weights, generator=g)
    h = torch.randn(4, 3, generator=g)
    batched = mlp(theta, h)
    for i in range(4):
        k, z = 0, h[i]
        for j, (o, n_in) in enumerate(mlp.shapes):
            w = theta[i, k:k + o * n_in].view(o, n_in)
            k += o * n_in
            z = w @ z + theta[i, k:k + o]
            k += o
            z = torch.tanh(z) if j < len(mlp.shapes) - 1 else z
        torch.testing.assert_close(batched[i], z)


def test_gaussian_head_gives_nll_loss():
    m = _model(probabilistic=True)
    x, t = _data()
    logs = m.training_loss(x, t, context=3)
    assert torch.isfinite(logs["loss"]) and logs["loss"] != logs["mse"]


def test_normalizer_round_trip_and_physical_units():
    m = _model()
    x, t = _data()
    x = 50.0 + 3.0 * x
    m.normalizer.fit(x)
    torch.testing.assert_close(m.normalizer.decode(m.normalizer.encode(x)), x)
    assert abs(float(m.normalizer.encode(x).mean())) < 1e-10


def test_context_must_fit_the_sequence():
    m = _model()
    x, t = _data(T=5)
    with pytest.raises(ValueError, match="context"):
        m.run(x, t, context=6)


def test_parallel_mode_refuses_prediction_driven_recurrence():
    m = _model(diff="innovation")
    x, t = _data()
    with pytest.raises(ValueError, match="diff='input'"):
        m.run_parallel(x, t)
