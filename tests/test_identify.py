"""Standard errors of the refined estimate (``FittedModel.identify``,
``refine_context(covariance=True)``): calibrated against repeated observation noise, in float64,
and the combinations that the data do not determine left out."""

import numpy as np
import pytest
import torch

import systems
from warpphys import api
from warpphys.data import Trajectories, add_noise
from warpphys.physics import ClosedFormRoot, ODERoot
from warpphys.refine import combination_std, refine_context


def _noisy_fit(root_cls, system: str, n: int, K: int, noise: float, **kw):
    sim = systems.sample(system, n=n, split="train", seed=3)
    t, x, params = sim.t, sim.x, sim.params
    std = x.reshape(-1, x.shape[-1]).std(0)
    g = torch.Generator().manual_seed(7)
    noisy = x + noise * std * torch.randn(x.shape, generator=g, dtype=torch.float64)
    root = root_cls(system, **kw).double()
    root.set_scales(params.numpy())
    sys_ = systems.get_system(system)
    start = params * (1 + 0.05 * torch.randn(params.shape, generator=g, dtype=torch.float64))
    est, _, cov, free = refine_context(root, noisy[:, :K], t[:K], start.abs(), scale=std,
                                       covariance=True)
    sd = combination_std(sys_.identifiable, est, cov, free)
    return sys_.identifiable(est), sd, sys_.identifiable(params)


@pytest.mark.parametrize("root_cls, system, kw", [
    (ClosedFormRoot, "spring_mass", {}),
    (ODERoot, "pendulum", {"substeps": 2}),
])
def test_standard_errors_match_the_spread_over_observation_noise(root_cls, system, kw):
    est, sd, true = _noisy_fit(root_cls, system, n=300, K=40, noise=0.01, **kw)
    z = ((est - true) / sd).numpy()
    assert np.isfinite(z).all()
    rms = np.sqrt((z**2).mean(0))
    cover = (np.abs(z) < 1.96).mean(0)
    # 300 trajectories: a calibrated rms lies within about +-10% of 1 (a standard error 2x too
    # small or too large would give 2 or 0.5), and 95% intervals cover 92-98%
    assert np.all((rms > 0.85) & (rms < 1.2)), rms
    assert np.all((cover > 0.9) & (cover < 0.985)), cover


def test_standard_errors_shrink_with_the_noise_and_skip_the_undetermined_mass():
    est1, sd1, true = _noisy_fit(ClosedFormRoot, "spring_mass", n=40, K=40, noise=0.01)
    est2, sd2, _ = _noisy_fit(ClosedFormRoot, "spring_mass", n=40, K=40, noise=0.001)
    ratio = np.median((sd1 / sd2).numpy(), 0)
    np.testing.assert_allclose(ratio, 10.0, rtol=0.15)
    # the mass alone is not determined (only k/m and c/m are): the fit's covariance has no
    # variance along the common scale of (m, k, c), so k/m's standard error stays finite
    assert torch.isfinite(sd1).all() and (sd1 > 0).all()


def test_covariance_needs_the_shooting_stage():
    sim = systems.sample("spring_mass", n=2, split="train", seed=0)
    root = ClosedFormRoot("spring_mass").double()
    root.set_scales(sim.params.numpy())
    with pytest.raises(ValueError, match="shooting"):
        refine_context(root, sim.x[:, :10], sim.t[:10], sim.params, shooting_iterations=0,
                       covariance=True)


def test_identify_names_the_combinations_and_refuses_black_boxes(phys_run_id, fitted_run,
                                                                 user_file):
    fitted = api.load(phys_run_id)
    clean = Trajectories.load(user_file)
    noisy = add_noise(clean, 0.01, seed=1)
    res = fitted.identify(noisy, 5)
    assert res.names == ("k/m", "c/m")
    assert res.refined.shape == res.std.shape == res.amortised.shape == (clean.n, 2)
    sys_ = systems.get_system("spring_mass")
    np.testing.assert_allclose(res.refined,
                               sys_.identifiable(fitted.recover_params(noisy, 5)), rtol=1e-12)
    np.testing.assert_allclose(
        res.amortised, sys_.identifiable(fitted.recover_params(noisy, 5, estimate="amortised")),
        rtol=1e-12)
    assert np.isfinite(res.std).all() and (res.std > 0).all()
    with pytest.raises(api.RunError, match="identify needs physical parameters"):
        api.load(fitted_run).identify(clean, 5)


@pytest.fixture(scope="module")
def phys_run_id(tmp_path_factory, user_file):
    from warpphys import cli
    out = tmp_path_factory.mktemp("runs") / "phys"
    assert cli.main(["fit", "--model", "warp-phys", "--epochs", "1", "--context", "5",
                     "--width", "4", "--batch-size", "8", "--no-figures", "--quiet",
                     "--device", "cpu", "--data", str(user_file), "--out", str(out)]) == 0
    return out


def test_contexts_that_determine_nothing_get_infinite_errors_and_a_warning(phys_run_id,
                                                                           user_file):
    fitted = api.load(phys_run_id)
    noisy = add_noise(Trajectories.load(user_file), 0.01, seed=1)
    with pytest.warns(UserWarning, match="do not determine all of k/m, c/m"):
        short = fitted.identify(noisy, 2)  # 2 steps of 2 states: 4 numbers, 4 unknowns
    assert np.isinf(short.std).all()
    rest = Trajectories(t=noisy.t, x=np.zeros_like(noisy.x), system="spring_mass")
    with pytest.warns(UserWarning, match="no motion"):
        assert np.isinf(fitted.identify(rest, 5).std).all()
    whole = fitted.identify(noisy, noisy.n_times)  # the whole file as the context
    assert np.isfinite(whole.std).all() and (whole.std > 0).all()
