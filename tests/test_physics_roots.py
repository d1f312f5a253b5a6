"""Physics roots (WARP-Phys): exact with the true parameters, gradients, hybrid reduction."""

import math

import numpy as np
import pytest
import torch

import systems
from warpphys.model import WARP, Normalizer
from warpphys.physics import ClosedFormRoot, HybridRoot, ODERoot
from warpphys.roots import ROOTS, physics_root_names

pytestmark = pytest.mark.usefixtures("float64")

#: every registered system, and those whose equations are linear (closed-form root)
SYSTEMS = systems.names()
LINEAR = [name for name in SYSTEMS if systems.get_system(name).linear]


def _true_run(name, n=4, seed=0):
    """Reference trajectories, integrated far more accurately (dopri8, rtol 1e-12) than any
    root step compared with them."""
    sim = systems.sample(name, n=n, split="train", seed=seed)
    x = systems.simulate(systems.get_system(name), sim.t, sim.x[:, 0], sim.params,
                         method="dopri8", rtol=1e-12, atol=1e-13)
    return sim.t, x, sim.params


def _theta_for(root, params):
    """Root weights whose parameter MLP outputs ``params`` (zero weights, last bias set)."""
    theta = torch.zeros(params.shape[0], root.num_weights)
    z = (params.log() - root.log_scale).clamp(-root.log_range + 1e-9, root.log_range - 1e-9)
    raw = root.log_range * torch.atanh(z / root.log_range)
    p = root.system.n_params
    end = root.param_mlp.num_weights
    theta[:, end - p:end] = raw
    return theta


def _unit_normalizer(d):
    return Normalizer(d).double()


def _step_all(root, t, x, params):
    """Advance the true x_t by one root step for every t; returns predictions of x_{t+1}."""
    norm = _unit_normalizer(x.shape[-1])
    theta = _theta_for(root, params)
    preds = []
    for s in range(x.shape[1] - 1):
        dt = (t[s + 1] - t[s]).expand(x.shape[0])
        mean, _ = root(theta, torch.zeros(x.shape[0]), x[:, s], dt, norm)
        preds.append(mean)
    return torch.stack(preds, 1)


@pytest.mark.parametrize("name", SYSTEMS)
def test_ode_root_reproduces_the_true_trajectory_with_true_parameters(name):
    t, x, params = _true_run(name)
    root = ODERoot(name, substeps=8).double()
    root.set_scales(params.numpy())
    pred = _step_all(root, t, x, params)
    # one RK4 step of size h = dt/8 has local error O(h^5): relative 1e-6 over one sample step
    scale = x.abs().amax(dim=(0, 1))
    err = ((pred - x[:, 1:]).abs() / scale).max()
    assert err < 1e-5, err


def test_ode_root_converges_at_fourth_order():
    t, x, params = _true_run("pendulum")
    t, x = t[::4], x[:, ::4]  # large steps, so that errors stay far above the reference's 1e-12
    errs = []
    for n in (1, 2, 4):
        root = ODERoot("pendulum", substeps=n).double()
        root.set_scales(params.numpy())
        errs.append(float((_step_all(root, t, x, params) - x[:, 1:]).abs().max()))
    orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    # RK4's local error is O(h^5); a one-step comparison shows order 4-5
    assert all(3.5 < o < 5.5 for o in orders), orders


def test_ode_root_is_stable_at_the_stiff_end_of_the_msd_test_ranges():
    sim = systems.sample(preset="msd", n=16, split="test", seed=3,
                         ranges={"m": (0.01, 0.01), "k": (18.0, 18.0), "c": (0.3, 0.3)})
    root = ODERoot("spring_mass").double()
    root.set_scales(sim.params.numpy())
    pred = _step_all(root, sim.t, sim.x, sim.params)
    assert torch.isfinite(pred).all()
    assert float((pred - sim.x[:, 1:]).abs().max()) < 1e-3 * float(sim.x.abs().max())


@pytest.mark.parametrize("name", LINEAR)
def test_closed_form_root_is_exact_for_every_linear_system(name):
    t, x, params = _true_run(name)
    root = ClosedFormRoot(name).double()
    root.set_scales(params.numpy())
    pred = _step_all(root, t, x, params)
    # the data were integrated with dopri5 at rtol 1e-9: agreement to that tolerance
    assert float((pred - x[:, 1:]).abs().max()) < 1e-6 * float(x.abs().max())


@pytest.mark.parametrize("name", SYSTEMS)
def test_hybrid_root_with_zero_correction_equals_the_ode_root(name):
    t, x, params = _true_run(name)
    ode = ODERoot(name).double()
    hyb = HybridRoot(name).double()
    ode.set_scales(params.numpy())
    hyb.set_scales(params.numpy())
    theta = _theta_for(hyb, params)  # the correction's weights: initial values, zero last layer
    theta[:, ode.num_weights:] = hyb.initial_weights()[ode.num_weights:]
    norm = _unit_normalizer(x.shape[-1])
    dt = (t[1] - t[0]).expand(x.shape[0])
    tau = torch.zeros(x.shape[0])
    a, _ = ode(theta[:, : ode.num_weights], tau, x[:, 3], dt, norm)
    b, _ = hyb(theta, tau, x[:, 3], dt, norm)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", physics_root_names())
def test_gradients_reach_the_recurrence_through_the_physics(kind):
    # spring_mass: linear, so every physics root (closed form included) applies to it
    t, x, params = _true_run("spring_mass", n=3)
    root = ROOTS[kind]("spring_mass").double()
    root.set_scales(params.numpy())
    model = WARP(2, root, hyper_width=8, diff="innovation").double()
    model.normalizer.fit(x)
    with torch.no_grad():
        model.B.normal_(0.0, 0.01)
    xn = model.normalizer.encode(x[:, :20])
    logs = model.training_loss(xn, t[:20], context=5, p_forcing=0.0, params=params)
    logs["loss"].backward()
    for p in (model.transition.A, model.B, model.hypernet[0].weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_parameters_are_positive_and_scaled_to_the_data():
    root = ODERoot("lotka_volterra").double()
    params = np.array([[30.0, 100.0, 90.0, 40.0], [25.0, 110.0, 95.0, 35.0]])
    root.set_scales(params)
    theta = root.initial_weights().expand(5, -1)
    p = root.params(theta, torch.rand(5), torch.randn(5, 2))
    assert (p > 0).all()
    # starts at the data's geometric mean, whatever the units
    typical = np.exp(np.log(params).mean(0))
    np.testing.assert_allclose(p.detach().numpy(), typical[None].repeat(5, 0), rtol=0.1)


@pytest.mark.parametrize("name,root_cls", [("spring_mass", ClosedFormRoot),
                                           ("pendulum", ODERoot),
                                           ("lotka_volterra", ODERoot)])
def test_refinement_recovers_the_true_parameters_from_a_rough_start(name, root_cls):
    from warpphys.refine import refine_params

    t, x, params = _true_run(name, n=4)
    root = root_cls(name, substeps=8) if root_cls is ODERoot else root_cls(name)
    root = root.double()
    root.set_scales(params.numpy())
    g = torch.Generator().manual_seed(0)
    start = params * torch.exp(0.3 * torch.randn(params.shape, generator=g, dtype=torch.float64))
    K = 30
    est = refine_params(root, x[:, :K], t[:K], start, iterations=12)
    sys_ = root.system
    rel = ((sys_.identifiable(est) - sys_.identifiable(params)).abs()
           / sys_.identifiable(params).abs().clamp_min(1e-3))
    # clean data and a physics step accurate to ~1e-8 per step: the least-squares optimum lies
    # within ~1e-5 of the truth (zero damping, pendulum's c can be ~0: absolute 1e-3 floor)
    assert float(rel.max()) < 1e-4, rel


@pytest.mark.parametrize("name,root_cls", [("spring_mass", ClosedFormRoot),
                                           ("lotka_volterra", ODERoot)])
def test_shooting_stage_removes_the_bias_of_one_step_fits_on_noisy_data(name, root_cls):
    """With 1% observation noise the one-step fit regresses on noisy states (biased); the shooting
    stage, which simulates the context from an estimated first state, must do better on the
    parameters and give a last state closer to the clean one than the observation."""
    from warpphys.refine import refine_context, refine_params

    t, x, params = _true_run(name, n=32, seed=3)
    root = root_cls(name, substeps=8) if root_cls is ODERoot else root_cls(name)
    root = root.double()
    g = torch.Generator().manual_seed(1)
    K = 60
    noisy = x[:, :K] + 0.01 * x.reshape(-1, x.shape[-1]).std(0) * torch.randn(
        x[:, :K].shape, generator=g, dtype=torch.float64)
    start = params * torch.exp(0.2 * torch.randn(params.shape, generator=g, dtype=torch.float64))
    sys_ = root.system

    def err(est):
        return float(((sys_.identifiable(est) - sys_.identifiable(params)).abs()
                      / sys_.identifiable(params).abs()).median())

    one_step = refine_params(root, noisy, t[:K], start, iterations=10)
    shot, last = refine_context(root, noisy, t[:K], start, iterations=10, shooting_iterations=5)
    assert err(shot) < 0.75 * err(one_step), (err(shot), err(one_step))
    assert err(shot) < 0.01
    clean_last = x[:, K - 1]
    assert (last - clean_last).norm(dim=-1).median() < (noisy[:, -1] - clean_last).norm(
        dim=-1).median()
    # no shooting: the observed last state, and the one-step parameters
    p0, l0 = refine_context(root, noisy, t[:K], start, iterations=10, shooting_iterations=0)
    torch.testing.assert_close(p0, one_step)
    torch.testing.assert_close(l0, noisy[:, -1])


@pytest.mark.parametrize("scale", [1e-7, 1e-3, 0.3, 3.0, 15.0])
def test_closed_form_2x2_exponential_matches_torch(scale):
    from warpphys.physics import expm

    g = torch.Generator().manual_seed(int(scale * 1e7) % 2**31)
    M = scale * torch.randn(2000, 2, 2, generator=g, dtype=torch.float64)
    # also the boundary cases: repeated eigenvalue (q = 0), pure rotation, real pair
    M[0] = torch.tensor([[scale, 1.0], [0.0, scale]])
    M[1] = torch.tensor([[0.0, scale], [-scale, 0.0]])
    M[2] = torch.tensor([[0.0, scale], [scale, 0.0]])
    ref = torch.linalg.matrix_exp(M)
    rel = (expm(M) - ref).abs().amax((1, 2)) / ref.abs().amax((1, 2))
    assert float(rel.max()) < 1e-12
    # finite, correct gradients, also at q = 0 (M = 0: d sum(expm) / dM = all ones)
    Z = torch.zeros(1, 2, 2, dtype=torch.float64, requires_grad=True)
    expm(Z).sum().backward()
    torch.testing.assert_close(Z.grad, torch.ones(1, 2, 2, dtype=torch.float64))
    P = M[3:6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(expm, (P,))


def test_physics_root_stays_finite_where_the_physics_blows_up():
    """Lotka-Volterra with the largest parameters the root can output, from states far outside
    the data: the unbounded physics overflows within one step; the root's outputs stay finite
    (inside +-state_bound training stds) and so do the gradients."""
    root = ODERoot("lotka_volterra", substeps=2).double()
    root.set_scales(np.array([[40.0, 100.0, 100.0, 40.0]]))
    norm = _unit_normalizer(2)
    norm.mean.fill_(0.3)
    norm.std.fill_(0.4)
    theta = _theta_for(root, torch.full((3, 4), 1e6)).requires_grad_(True)  # clipped to the max
    x_prev = torch.tensor([[30.0, 30.0], [1e3, 1e3], [0.5, 0.5]], dtype=torch.float64)
    with torch.no_grad():  # the unbounded physics: overflow
        p = root.params(theta, torch.ones(3), x_prev)
        raw = root.advance(norm.decode(x_prev), p, torch.full((3,), 0.5), None)
    assert not torch.isfinite(raw).all()
    out, _ = root(theta, torch.ones(3), x_prev, torch.full((3,), 0.5), norm)
    assert torch.isfinite(out).all() and out.abs().max() <= root.state_bound
    out.sum().backward()
    assert torch.isfinite(theta.grad).all()


def test_frozen_parameters_roll_out_the_physics_with_the_context_end_estimate():
    """freeze_params: past the context every step uses the parameters read at the last context
    step, so the rollout equals stepping the physics with those parameters; without freezing the
    weights, driven by the model's own predictions, change them (B != 0)."""
    t, x, params = _true_run("spring_mass", n=4)
    K = 20
    torch.manual_seed(0)
    models = {}
    for freeze in (False, True):
        root = ClosedFormRoot("spring_mass").double()
        root.set_scales(params.numpy())
        m = WARP(2, root, freeze_params=freeze).double()
        torch.manual_seed(1)
        with torch.no_grad():
            m.B.normal_(0.0, 0.5)  # weights that move with the inputs
        models[freeze] = m
    models[True].load_state_dict(models[False].state_dict())
    m = models[True]
    xn = m.normalizer.encode(x)
    out = m.run(xn[:, :K], t, context=K, keep_theta=True)
    theta_k = out.theta[:, K - 1]
    p_k = root.params(theta_k, m.tau(t)[K].expand(4), xn[:, K - 1])
    state, ref = x[:, K - 1], []
    for s in range(K - 1, len(t) - 1):
        state = root.advance(state, p_k, (t[s + 1] - t[s]).expand(4), None)
        ref.append(state)
    pred = m.normalizer.decode(out.mean[:, K - 1:])
    torch.testing.assert_close(pred, torch.stack(ref, 1), rtol=1e-9, atol=1e-9)
    # the same weights without freezing give another rollout (the context part is identical)
    other = models[False].run(xn[:, :K], t, context=K)
    torch.testing.assert_close(other.mean[:, :K - 1], out.mean[:, :K - 1])
    assert (other.mean[:, K:] - out.mean[:, K:]).abs().max() > 1e-3
    # saved with the model; refused on a root without physical parameters
    assert WARP.from_config(m.config()).freeze_params
    from warpphys.roots import MLPRoot

    with pytest.raises(ValueError, match="physics root"):
        WARP(2, MLPRoot(2), freeze_params=True)


def test_populations_stay_positive_in_the_physics_root():
    """A noisy observation of a small population can be at or below zero. Below zero the
    Lotka-Volterra field makes the prey grow without bound (x' = x (a - b y) < 0 with a > b y);
    at zero the population never returns (zero is a fixed point) and its prey then grows without
    bound. The root feeds such a value as ``low_floor`` training stds above zero; positive
    values, however small, pass unchanged, and it never predicts a negative population."""
    root = ODERoot("lotka_volterra", substeps=4).double()
    true = torch.tensor([[40.0, 100.0, 100.0, 40.0]] * 3)
    root.set_scales(true.numpy())
    norm = _unit_normalizer(2)  # (std 1)
    x_prev = torch.tensor([[-0.05, 0.1], [0.001, -0.02], [0.5, 0.0]], dtype=torch.float64)
    theta = _theta_for(root, true)
    dt = torch.full((3,), 0.05)

    def step(x):
        return root(theta, torch.zeros(3), x, dt, norm)[0]

    out = step(x_prev)
    assert (out > 0).all()
    lifted = torch.where(x_prev <= 0, torch.full_like(x_prev, root.low_floor), x_prev)
    torch.testing.assert_close(out, step(lifted))
    tiny = x_prev.clamp_min(1e-9)  # positive: fed as it is, not raised to the floor
    assert (step(tiny) - out).abs().max() > 1e-6
    # rolled out from a predator observed below zero, the predator comes back and the prey
    # stays on a cycle (its first integral's scale), as from the floor itself
    dt = torch.full((3,), 0.005)
    path = [torch.tensor([[0.5, -0.003]] * 3, dtype=torch.float64)]
    for _ in range(400):
        path.append(step(path[-1]))
    path = torch.stack(path[1:], 1)
    assert path[:, :, 1].max() > 1.0 and path[:, :, 0].max() < 10.0
    assert (path > 0).all()
    assert systems.get_system("spring_mass").state_low is None  # positions may be negative


@pytest.mark.parametrize("scale", [None, torch.tensor([0.5, 4.0], dtype=torch.float64)])
def test_a_trajectorys_refined_estimate_does_not_depend_on_its_batch(scale):
    """Residual weights are per trajectory (its own context std) or fixed (a model's training
    std), never batch statistics: refining 2 noisy trajectories alone or among 8 agrees."""
    from warpphys.refine import refine_context

    t, x, params = _true_run("spring_mass", n=8, seed=5)
    root = ClosedFormRoot("spring_mass").double()
    K = 40
    g = torch.Generator().manual_seed(2)
    noisy = x[:, :K] + 0.02 * torch.randn(x[:, :K].shape, generator=g, dtype=torch.float64)
    start = params * 1.1
    p_all, last_all = refine_context(root, noisy, t[:K], start, scale=scale)
    p_two, last_two = refine_context(root, noisy[:2], t[:K], start[:2], scale=scale)
    torch.testing.assert_close(p_two, p_all[:2], rtol=1e-9, atol=0)
    torch.testing.assert_close(last_two, last_all[:2], rtol=1e-9, atol=1e-12)


def test_a_state_that_never_changes_leaves_the_substeps_finite():
    """A file whose velocity column is constant (spread 0) still gets a whole number of RK
    substeps, from the states that move (it divided by the zero spread: NaN)."""
    from warpphys.data import Trajectories

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 20, 2))
    x[..., 1] = 0.5
    root = ODERoot("pendulum")
    root.fit_scales(Trajectories(t=np.linspace(0, 1, 20), x=x, system="pendulum"), 1.0)
    assert isinstance(root.substeps, int) and 1 <= root.substeps <= 8
