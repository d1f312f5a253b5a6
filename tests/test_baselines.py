"""Baselines (gru, lstm, transformer, node, classical): WARP's interface, so that the trainer,
``fit``, ``load`` and the metrics run them unchanged; their own methods (cached attention equal
to the parallel pass, causality, adjoint gradients, exact classical identification).

Fits are tiny (1 epoch, a few units) so that the module runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import systems
from warpphys import Trajectories, api, metrics
from warpphys.baselines import (
    BASELINES,
    CausalTransformer,
    ClassicalSysID,
    GRUBaseline,
    LSTMBaseline,
    NeuralODE,
    count_parameters,
    warp_param_count,
)
from warpphys.data import add_noise, simulate

DESIGN_KEYS = {"test_mse", "context", "extrapolation_mse", "ood_mse", "invariant_drift"}
TINY = {
    "gru": {"hidden": 8},
    "lstm": {"hidden": 8},
    "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16},
    "node": {"node_width": 8, "encoder_width": 8, "augment": 2},
    "classical": {},
}


# -- through fit / load --------------------------------------------------------------------------
@pytest.mark.parametrize("model", BASELINES)
def test_baseline_trains_through_fit_and_loads_back_with_identical_predictions(
        model, user_file, tmp_path):
    out = tmp_path / model
    run = api.fit(data=user_file, model=model, epochs=1, context=5, out=out, device="cpu",
                  batch_size=8, figures=False, progress=False, **TINY[model])
    saved = json.loads((out / "metrics.json").read_text())
    assert DESIGN_KEYS <= set(saved) and saved["model"] == model
    assert np.isfinite(saved["test_mse"]) and saved["train_status"] == "completed"
    back = api.load(out)
    assert type(back.model) is type(run.model)
    assert back.model.config() == run.model.config()
    traj = Trajectories.load(user_file)
    a, b = run.predict(traj, 5), back.predict(traj, 5, horizon=30)
    assert a.shape == traj.x.shape and b.shape == (traj.n, 35, traj.dim)
    np.testing.assert_array_equal(a, b[:, :traj.n_times])  # the same numbers, also past the end
    np.testing.assert_array_equal(a[:, :5], traj.x[:, :5])  # the context is copied
    assert np.isfinite(b).all()


def test_classical_has_nothing_to_train(user_file, tmp_path):
    run = api.fit(data=user_file, model="classical", epochs=5, context=5, out=tmp_path / "c",
                  device="cpu", figures=False, progress=False)
    assert run.info["options"]["epochs"] == 0 and run.info["epochs_run"] == 0
    assert run.info["fit_seconds"] < 1.0 and count_parameters(run.model) == 0
    assert run.metrics["param_rel_error"] < 1e-4


def test_classical_refuses_data_without_known_physics(user_file, tmp_path):
    with np.load(user_file) as f:
        bare = {k: f[k] for k in ("t", "x")}
    np.savez(tmp_path / "bare.npz", **bare)
    with pytest.raises(api.RunError, match="needs the system's equations"):
        api.fit(data=tmp_path / "bare.npz", model="classical", out=tmp_path / "run",
                figures=False, progress=False)
    assert not (tmp_path / "run").exists()


def test_fit_with_figures_works_for_a_baseline(user_file, tmp_path):
    out = tmp_path / "gru"
    api.fit(data=user_file, model="gru", epochs=1, context=5, out=out, device="cpu",
            batch_size=8, progress=False, hidden=4)
    assert sorted((out / "figures").glob("*.png"))


# -- sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["gru", "lstm"])
@pytest.mark.parametrize("opts", [{}, {"width": 32, "depth": 3}, {"hyper_width": 16}])
def test_recurrent_parameter_count_matches_warps_within_ten_percent(model, opts):
    options = {**api.BASE_OPTIONS, **api.MODELS[model].options, **opts}
    net = api.MODELS[model](2, None, options)
    warp = warp_param_count(2, options)
    assert abs(count_parameters(net) - warp) <= 0.1 * warp, (count_parameters(net), warp)


def test_a_given_hidden_size_overrides_the_matching():
    options = {**api.BASE_OPTIONS, **api.MODELS["gru"].options, "hidden": 10}
    assert api.MODELS["gru"](2, None, options).config()["hidden"] == 10


# -- the models' own methods ----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GRUBaseline, LSTMBaseline, CausalTransformer])
def test_step_by_step_pass_equals_the_parallel_pass(cls):
    """The cached one-token steps (autoregressive mode) compute what the teacher-forced parallel
    pass computes (for the Transformer: the key/value cache and its merged blocks)."""
    torch.manual_seed(0)
    model = cls(2) if cls is CausalTransformer else cls(2, hidden=6)
    xn, tau = torch.randn(3, 40, 2), torch.linspace(0, 1, 40)
    full, _, _ = model.sequence(xn, tau, None)
    parts, state = [], None
    for chunk in ([slice(0, 5)] + [slice(s, s + 1) for s in range(5, 40)]):
        out, state, _ = model.sequence(xn[:, chunk], tau[chunk], state)
        parts.append(out)
    steps = torch.cat(parts, 1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(full)  # and the same gradients (Transformer: checkpointed steps)
    grads = [torch.autograd.grad((out * weights).sum(), list(model.parameters()))
             for out in (full, steps)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_transformer_is_causal():
    torch.manual_seed(0)
    model = CausalTransformer(2)
    xn, t = torch.randn(2, 30, 2), torch.linspace(0, 1, 30)
    changed = xn.clone()
    changed[:, 20:] += 1.0
    a = model.run(xn, t, context=30).mean
    b = model.run(changed, t, context=30).mean
    torch.testing.assert_close(a[:, :20], b[:, :20])  # predictions of steps 1..20 use x_0..x_19
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_rollout_ignores_states_after_the_context():
    torch.manual_seed(0)
    model = GRUBaseline(2, hidden=6)
    x, t = torch.randn(2, 30, 2), torch.linspace(0, 1, 30)
    a, _ = model.rollout(x, t, 10)
    b, _ = model.rollout(x[:, :10], t, 10)
    torch.testing.assert_close(a, b)


def test_neural_ode_adjoint_gradients_match_direct_backpropagation():
    torch.manual_seed(0)
    kw = {"width": 8, "augment": 2, "encoder_width": 8, "method": "dopri5", "rtol": 1e-8,
          "atol": 1e-9}
    direct, adjoint = NeuralODE(2, **kw).double(), NeuralODE(2, adjoint=True, **kw).double()
    adjoint.load_state_dict(direct.state_dict())
    xn, t = torch.randn(3, 20, 2, dtype=torch.float64), torch.linspace(0, 1, 20,
                                                                       dtype=torch.float64)
    grads = []
    for model in (direct, adjoint):
        model.zero_grad()
        model.training_loss(xn, t, context=8)["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


def test_neural_ode_context_steps_are_given_not_predicted():
    model = NeuralODE(2, width=8, augment=2, encoder_width=8)
    xn, t = torch.randn(2, 20, 2), torch.linspace(0, 1, 20)
    out = model.run(xn, t, context=8)
    assert out.mean.shape == (2, 19, 2)
    torch.testing.assert_close(out.mean[:, :7], xn[:, 1:8])


# -- classical system identification ------------------------------------------------------------
@pytest.mark.parametrize("system", ["spring_mass", "pendulum", "lotka_volterra"])
def test_classical_recovers_exact_parameters_from_clean_data(system):
    """With clean data and exact physics the per-trajectory fit is exact up to the integrator:
    RK4 with the substeps chosen from the data errs by << 1e-4 per sample step."""
    sys_ = systems.get_system(system)
    sim = simulate(system, 8, "train", 0)
    train, test = sim.subset(slice(0, 4)), sim.subset(slice(4, 8))
    model = ClassicalSysID(sys_.dim, system=system)
    model.fit_data_scales(train, sys_)  # the starting guess: the first four's parameters
    K = sys_.default.context
    x, t = torch.as_tensor(test.x), torch.as_tensor(test.t)
    est = model.recover_params(x, t, K).numpy()
    true, ident = sys_.identifiable(test.params), sys_.identifiable(est)
    if system == "pendulum":  # a damping near zero has no useful relative error
        assert np.abs(est[:, 1] - test.params[:, 1]).max() < 1e-4
        true, ident = true[:, :1], ident[:, :1]
    assert np.abs(ident / true - 1).max() < 1e-4
    x_hat, _ = model.rollout(x, t, K)
    scale = test.x.reshape(-1, sys_.dim).std(0)
    assert np.abs((x_hat.numpy() - test.x) / scale).max() < 1e-3


def test_classical_shooting_is_more_robust_to_noise_than_one_step():
    """Noisy states are also the regressors of one-step residuals (a biased fit); shooting
    through the whole context averages the noise out (MSD protocol, 5% noise)."""
    sys_ = systems.get_system("spring_mass")
    sim = simulate(preset="msd", n=8, split="train", seed=0)
    train, test = sim.subset(slice(0, 4)), sim.subset(slice(4, 8))
    noisy = add_noise(test, 0.05, seed=0)
    errors = {}
    for residuals in ("one-step", "shooting"):
        model = ClassicalSysID(2, system="spring_mass", residuals=residuals)
        model.fit_data_scales(train, sys_)
        est = model.recover_params(torch.as_tensor(noisy.x), torch.as_tensor(noisy.t), 100)
        errors[residuals] = metrics.param_relative_error(
            sys_.identifiable(test.params), sys_.identifiable(est.numpy()))["median"]
    assert errors["shooting"] < 0.25 * errors["one-step"], errors
