"""WARP-Phys's parameter read-out head, its fixed filter bank and fresh training data (float64
where physics is checked)."""

import math

import numpy as np
import pytest
import torch

import systems
from warpphys.model import WARP, data_angle_range, filter_bank
from warpphys.physics import ClosedFormRoot, ODERoot

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("name", systems.names())
def test_parameters_rebuilt_from_their_identifiable_combinations_have_those_combinations(name):
    sys_ = systems.get_system(name)
    g = torch.Generator().manual_seed(0)
    p = systems.sample_params(sys_, sys_.default.train_ranges, 16, g)
    ident = sys_.identifiable(p)
    rebuilt = sys_.from_identifiable(ident, p.mean(0))
    torch.testing.assert_close(sys_.identifiable(rebuilt), ident, rtol=1e-12, atol=0)
    # the rebuilt parameters drive the same physics
    x = torch.randn(16, sys_.dim, generator=g).abs() + 0.1
    torch.testing.assert_close(sys_.vector_field(None, x, rebuilt),
                               sys_.vector_field(None, x, p), rtol=1e-10, atol=1e-12)


def test_the_spectral_transition_steps_like_its_matrix():
    root = ClosedFormRoot("spring_mass", readout="head", state_size=20)
    m = WARP(2, root, transition="spectral")
    theta, drive = torch.randn(3, 20), torch.randn(3, 20)
    A = m.transition.matrix()
    torch.testing.assert_close(m.transition.step(theta, drive), theta @ A.T + drive,
                               rtol=1e-12, atol=1e-12)
    # a damped rotation per pair: eigenvalues of modulus the radii
    eig = torch.linalg.eigvals(A[:20, :20]).abs().sort().values
    radii = m.transition.radii.repeat_interleave(2).sort().values
    torch.testing.assert_close(eig, radii, rtol=1e-10, atol=1e-12)
    assert not list(m.transition.parameters())  # fixed: nothing to train


def test_the_filter_bank_covers_each_radius_over_the_angle_range():
    angles, radii = filter_bank(64, (0.05, 0.5))
    assert angles.shape == radii.shape == (64,)
    for r in radii.unique():
        a = angles[radii == r]
        assert math.isclose(float(a.min()), 0.05, rel_tol=1e-6)
        assert math.isclose(float(a.max()), 0.5, rel_tol=1e-6)


def test_the_data_angle_range_brackets_the_frequencies_of_the_data():
    T = 256
    t = torch.arange(T, dtype=torch.float64)
    omegas = torch.linspace(0.1, 0.3, 50)  # rad per step
    x = torch.stack([torch.sin(omegas[:, None] * t), torch.cos(omegas[:, None] * t)], -1)
    lo, hi = data_angle_range(x, t)
    assert lo < 0.1 and hi > 0.3
    assert lo > 0.1 / 4 and hi < 0.3 * 4  # widened about 3x, not to everything


def _head_model(system="spring_mass", lift="none"):
    torch.manual_seed(0)
    cls = ClosedFormRoot if systems.get_system(system).linear else ODERoot
    root = cls(system, readout="head", state_size=32, head_width=16)
    return WARP(systems.get_system(system).dim, root, transition="spectral", hyper_width=8,
                freeze_params=True, lift=lift)


def test_a_head_trained_on_parameters_learns_from_the_parameter_loss_alone():
    m = _head_model()
    x = torch.randn(4, 20, 2)
    t = torch.linspace(0, 1, 20)
    p = torch.tensor([[0.03, 10.0, 0.1]]).expand(4, -1)
    logs = m.training_loss(x, t, context=8, params=p, mode="parallel")
    assert set(logs) == {"loss", "param_loss"}
    logs["loss"].backward()
    head_grads = [q.grad for q in m.root.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert m.B.grad is not None and m.B.grad.abs().sum() > 0


def test_the_head_reads_the_parameters_once_at_the_end_of_the_context():
    m = _head_model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 12, 2, generator=g)
    t = torch.linspace(0, 1, 24)
    est = m.recover_params(x, t, 12)
    a, _ = m.rollout(x, t, 12)
    # the rollout is the physics with the context-end estimate, from the last context state
    root = m.root
    state = x[:, 11]
    for s in range(12, 24):
        state = root.advance(state, est, (t[s] - t[s - 1]).expand(3), None)
        torch.testing.assert_close(a[:, s], state, rtol=1e-9, atol=1e-9)


def test_the_quadratic_lift_feeds_the_monomials():
    m = _head_model(lift="quadratic")
    x = torch.tensor([[2.0, 3.0]])
    torch.testing.assert_close(m.lifted(x), torch.tensor([[2.0, 3.0, 4.0, 6.0, 9.0]]))
    assert m.B.shape == (32, 5)


def test_the_log_lift_feeds_the_log_heights_of_positive_states_floored():
    m = _head_model("lotka_volterra", lift="log")
    m.normalizer.mean.fill_(0.5)
    m.normalizer.std.fill_(0.25)
    x = torch.tensor([[1.0, 1e-8], [0.5, 0.0], [2.0, -0.01]])  # physical (LV state_low: 0)
    got = m.lifted(m.normalizer.encode(x))
    floor = m.log_floor * 0.25
    want = torch.log(torch.tensor([[1.0, 1e-8], [0.5, floor], [2.0, floor]]).clamp_min(floor))
    torch.testing.assert_close(got[:, 2:], want)
    torch.testing.assert_close(got[:, :2], m.normalizer.encode(x))
    assert m.B.shape == (32, 4)
    # the recurrence sees the growth rate: log differences, whatever the population's size
    big, small = torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1e-3, 1.0], [2e-3, 1.0]])
    step = lambda x: (lambda z: z[1] - z[0])(m.lifted(m.normalizer.encode(x)))  # noqa: E731
    torch.testing.assert_close(step(big)[2], step(small)[2])
    assert WARP.from_config(m.config()).log_floor == m.log_floor


def test_the_log_lift_needs_positive_states_and_auto_takes_it_where_they_are():
    from warpphys.registry import MODELS, resolve_options

    with pytest.raises(ValueError, match="positive states"):
        _head_model("pendulum", lift="log")
    opts = resolve_options("warp-phys", {"lift": "auto"})
    lifts = {name: MODELS["warp-phys"](2, systems.get_system(name), opts).lift
             for name in ("lotka_volterra", "pendulum", "spring_mass")}
    assert lifts == {"lotka_volterra": "log", "pendulum": "none", "spring_mass": "none"}
    lv = systems.get_system("lotka_volterra")
    floor = {(lf, nz): MODELS["warp-phys"](2, lv, resolve_options(
        "warp-phys", {"log_floor": lf, "fresh_noise": nz})).log_floor
        for lf, nz in ((1e-6, 0.0), (1e-6, 0.01))}
    assert floor == {(1e-6, 0.0): 1e-6, (1e-6, 0.01): pytest.approx(0.03)}  # noise: 3 x it


def test_fresh_training_data_are_new_each_epoch_and_the_same_for_the_same_seed():
    from warpphys import api

    info = {"system": "pendulum", "n_train": 8, "seed": 3, "dt": 0.1}
    m = _head_model("pendulum")
    sys_ = systems.get_system("pendulum")
    a = api._fresh_training_data(info, m, sys_, "cpu", 10)
    x1, p1 = a(1)
    x1b, p1b = a(1)
    x2, p2 = a(2)
    assert x1.shape == (8, 10, 2) and p1.shape == (8, 2)
    assert torch.equal(x1, x1b) and torch.equal(p1, p1b)
    assert not torch.allclose(p1, p2)
    lo, hi = sys_.default.train_ranges["length"]
    assert float(p1[:, 0].min()) >= lo and float(p1[:, 0].max()) <= hi
    assert np.isfinite(x1.numpy()).all()


def test_the_filter_bank_holds_a_hybrid_roots_correction_weights():
    from warpphys.physics import HybridRoot

    torch.manual_seed(0)
    root = HybridRoot("pendulum", readout="head", state_size=16, head_width=8)
    m = WARP(2, root, transition="spectral", hyper_width=8)
    D = root.num_weights
    assert D > 16 and m.transition.bank == 16
    assert torch.all(m.B[16:] == 0)  # the correction starts at rest, as with a dense A
    theta, drive = torch.randn(3, D), torch.zeros(3, D)
    out = m.transition.step(theta, drive)
    torch.testing.assert_close(out[:, 16:], theta[:, 16:], rtol=0, atol=0)  # held
    assert not torch.allclose(out[:, :16], theta[:, :16])  # rotated


def test_the_head_loss_on_a_random_subset_of_steps_estimates_the_full_loss():
    m = _head_model()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 40, 2, generator=g)
    t = torch.linspace(0, 1, 40)
    p = torch.tensor([[0.03, 10.0, 0.1]]).expand(6, -1)
    with torch.no_grad():
        theta = m.teacher_forced_weights(x)
        full = m.root.param_loss(theta, x, t, p, m.normalizer, m, context=16)
    m.root.loss_steps = 100  # more than there are: every step, the same loss
    torch.testing.assert_close(m.root.param_loss(theta, x, t, p, m.normalizer, m, context=16),
                               full, rtol=1e-12, atol=0)
    m.root.loss_steps = 5  # a random subset: unbiased, so the mean over many draws is close
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([m.root.param_loss(theta, x, t, p, m.normalizer, m, context=16)
                             for _ in range(400)])
    assert abs(float(draws.mean() / full) - 1) < 0.05
    assert float(draws.std()) > 0  # and the subsets do differ


def test_a_share_of_the_head_batches_is_scored_at_the_end_of_the_context():
    root = _head_model().root
    root.loss_steps = 1
    torch.manual_seed(0)
    for share, low, high in ((0.0, 0, 30), (1.0, 400, 400), (0.5, 160, 250)):
        root.context_share = share
        draws = [root.loss_steps_of(47, 16) for _ in range(400)]
        at_end = sum(d.tolist() == [15] for d in draws)
        assert low <= at_end <= high  # (a uniform draw lands on step 15 once in 40)
        assert all(len(d) == 1 and 7 <= int(d[0]) < 47 for d in draws)
    root.loss_steps = 4  # the other batches keep their number of steps
    assert {len(root.loss_steps_of(47, 16)) for _ in range(100)} == {1, 4}
    assert root.loss_steps_of(47, None).numel() == 4  # no context: no end to score at
    assert root.config()["context_share"] == 0.5


@pytest.mark.parametrize("name", systems.names())
def test_simulating_the_first_steps_only_gives_the_prefix_of_the_whole_run(name):
    # fresh training data simulate only the steps training sees: same draws, same states
    whole = systems.sample(name, 6, "train", 3, method="rk4")
    head = systems.sample(name, 6, "train", 3, method="rk4", n_steps=10)
    assert head.x.shape[1] == 10
    assert torch.equal(head.params, whole.params)
    torch.testing.assert_close(head.x, whole.x[:, :10], rtol=0, atol=0)


@pytest.mark.parametrize("root", ["closed_form", "hybrid"])
def test_the_banks_closed_form_weights_equal_the_recurrence_and_its_gradients(root):
    # training reads the weights of a few steps in closed form (powers of the damped
    # rotations); they, and the gradients through them, are the step-by-step recurrence's
    from warpphys.registry import MODELS, resolve_options

    torch.manual_seed(0)
    sys_ = systems.get_system("spring_mass" if root == "closed_form" else "pendulum")
    m = MODELS["warp-phys"](sys_.dim, sys_, resolve_options(
        "warp-phys", {"root": root, "state_size": 24, "head_width": 8, "hyper_width": 8}))
    assert m.transition.kind == "spectral"
    held = m.num_weights - m.transition.bank  # the hybrid's correction weights are held
    assert (held > 0) == (root == "hybrid")
    with torch.no_grad():  # drive the held weights too
        m.B[m.transition.bank:] = 0.1 * torch.randn(held, sys_.dim)
    x = torch.randn(3, 60, sys_.dim).cumsum(1) * 0.1
    steps = torch.tensor([0, 1, 7, 30, 58])
    weights = [m.B, *m.hypernet.parameters()]
    slow = m.teacher_forced_weights(x)[:, steps]
    grads_slow = torch.autograd.grad((slow * torch.cos(slow)).sum(), weights)
    fast = m.weights_at(x, steps)
    grads_fast = torch.autograd.grad((fast * torch.cos(fast)).sum(), weights)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_weights_at_a_few_steps_of_other_transitions_are_the_recurrences():
    root = ClosedFormRoot("spring_mass", readout="head", state_size=12, head_width=8)
    m = WARP(2, root, transition="diagonal", hyper_width=8)
    with torch.no_grad():
        m.transition.a.uniform_(0.8, 1.0)
        m.B.normal_()
    x = torch.randn(3, 30, 2).cumsum(1)
    steps = torch.tensor([2, 9, 28])
    torch.testing.assert_close(m.weights_at(x, steps), m.teacher_forced_weights(x)[:, steps],
                               rtol=1e-12, atol=1e-12)


def test_fresh_data_come_in_the_runs_fresh_n_and_agree_with_the_accurate_solver():
    from warpphys import api

    info = {"system": "lotka_volterra", "n_train": 8, "seed": 3, "options": {"fresh_n": 12}}
    sys_ = systems.get_system("lotka_volterra")
    m = _head_model("lotka_volterra")
    x, p = api._fresh_training_data(info, m, sys_, "cpu", 20)(1)
    assert x.shape == (12, 20, 2) and p.shape == (12, 4)
    # the fixed float32 RK4 steps agree with the adaptive float64 solver on the same draws
    from systems._simulate import simulate as integrate

    xs = m.normalizer.decode(x).double()
    t = sys_.default.times("train")[:20]
    ref = integrate(sys_, t, xs[:, 0], p.double(), method="dopri5", rtol=1e-10)
    np.testing.assert_allclose(xs.numpy(), ref.numpy(), rtol=2e-3, atol=1e-4)


def test_fresh_data_and_the_heads_loss_steps_follow_where_the_data_come_from(tmp_path):
    # fresh trajectories (one scored step each) from the protocol, or from a file's parameter
    # ranges when it gives them; else the file alone, 16 scored steps per trajectory
    from warpphys import api
    from warpphys.data import simulate

    def fit(name, **kw):
        f = api.fit(epochs=2, out=tmp_path / name, figures=False, progress=False, **kw)
        assert f.model.root.loss_steps == f.info["options"]["loss_steps"]
        # fresh data (cosine schedule): the run ends with its last weights, else its best
        assert f.info["kept_weights"] == ("last" if f.info["fresh_data"] else "best")
        return f.info["fresh_data"], f.info["options"]["loss_steps"]

    assert fit("a", system="spring_mass", n_train=32, fresh_n=64) == ("protocol", 1)
    train = simulate("spring_mass", 40, "train", 0)
    train.save(tmp_path / "train.npz")
    assert fit("b", data=tmp_path / "train.npz", fresh_n=64) == ("file", 1)
    assert fit("c", data=tmp_path / "train.npz", fresh_data=False) == (None, 16)
    train.__class__(t=train.t, x=train.x, system="spring_mass").save(tmp_path / "bare.npz")
    assert fit("d", data=tmp_path / "bare.npz") == (None, 16)


def test_fresh_data_from_a_file_keep_to_its_parameter_ranges_and_initial_states():
    from warpphys import api
    from warpphys.data import simulate

    train = simulate("pendulum", 20, "train", 0)
    info = {"system": "pendulum", "n_train": 20, "seed": 1, "options": {"fresh_n": 50}}
    m = _head_model("pendulum")
    sys_ = systems.get_system("pendulum")
    x, p = api._fresh_training_data(info, m, sys_, "cpu", 30, train)(3)
    assert x.shape == (50, 30, 2) and p.shape == (50, 2)
    lo, hi = train.params.min(0), train.params.max(0)
    assert np.all(p.numpy() >= lo - 1e-6) and np.all(p.numpy() <= hi + 1e-6)
    x0 = m.normalizer.decode(x[:, 0]).double().numpy()
    dist = np.abs(x0[:, None] - train.x[None, :, 0]).max(-1).min(1)
    assert dist.max() < 1e-5  # every initial state is one of the file's


def test_fresh_ranges_widen_the_datas_ranges_in_log_space_or_linearly_to_the_minimum():
    from warpphys import api

    pend, sm = systems.get_system("pendulum"), systems.get_system("spring_mass")
    _, x0, t = api._source_ranges(pend)
    (l_lo, l_hi), (c_lo, c_hi) = api.fresh_ranges(pend, [(0.5, 2.0), (0.0, 0.15)], x0, t,
                                                  widen=0.25)
    assert (l_lo, l_hi) == pytest.approx((0.5 / 4**0.25, 2.0 * 4**0.25))  # a quarter of ln 4
    assert (c_lo, c_hi) == pytest.approx((0.0, 0.1875))  # a damping never below 0
    _, x0s, ts = api._source_ranges(sm)
    m, k, c = api.fresh_ranges(sm, [(0.03, 0.03), (4.0, 5.0), (0.5, 0.7)], x0s, ts, widen=4)
    assert m == (0.03, 0.03)  # a fixed parameter stays fixed
    assert k == pytest.approx((4.0 / 2, 9.0))  # narrow: linear; k > 0: halfway down to 0
    assert c == pytest.approx((0.0, 1.5))  # c >= 0: down to 0
    assert api.fresh_ranges(pend, [(0.5, 2.0), (0.0, 0.15)], x0, t, widen=0) == [(0.5, 2.0),
                                                                              (0.0, 0.15)]
    # widened into lengths too short (too fast) to simulate cheaply: the data's own ranges
    short = [(0.01, 1.0), (0.0, 0.1)]
    assert api.fresh_ranges(pend, short, x0, t, widen=1.0) == short


def test_fresh_data_keep_to_the_runs_fresh_ranges(tmp_path):
    from warpphys import api

    f = api.fit(system="pendulum", epochs=1, n_train=16, fresh_n=32, out=tmp_path / "run",
                figures=False, progress=False)
    ranges = f.info["fresh_ranges"]
    assert ranges["length"] == pytest.approx([0.5 / 4**0.25, 2.0 * 4**0.25])  # fresh_widen 0.25
    sys_ = systems.get_system("pendulum")
    _, p = api._fresh_training_data({**f.info, "options": {"fresh_n": 400}}, f.model, sys_,
                                    "cpu", 20)(0)
    lo, hi = np.array(list(ranges.values())).T
    assert np.all(p.numpy() >= lo - 1e-6) and np.all(p.numpy() <= hi + 1e-6)
    assert np.any(p[:, 0].numpy() > 2.0) and np.any(p[:, 0].numpy() < 0.5)  # beyond the data's
    g = api.fit(system="pendulum", epochs=1, n_train=16, fresh_n=32, fresh_widen=0,
                out=tmp_path / "narrow", figures=False, progress=False)
    assert g.info["fresh_ranges"]["length"] == pytest.approx([0.5, 2.0])


def test_fresh_noise_observes_the_fresh_trajectories_as_add_noise_would():
    from warpphys import api
    from warpphys.data import simulate

    train = simulate("spring_mass", 20, "train", 0)
    m = _head_model("spring_mass")
    m.normalizer.fit(torch.as_tensor(train.x))
    sys_ = systems.get_system("spring_mass")
    info = {"system": "spring_mass", "n_train": 20, "seed": 1, "options": {"fresh_n": 400}}

    def draw(noise, source):
        opts = {**info["options"], "fresh_noise": noise}
        return api._fresh_training_data({**info, "options": opts}, m, sys_, "cpu", 30,
                                        source)(2)

    for source in (None, train):  # the protocol and a file
        (clean, p0), (noisy, p1) = draw(0.0, source), draw(0.05, source)
        torch.testing.assert_close(p0, p1)  # the same trajectories, observed with noise
        diff = (noisy - clean).reshape(-1, 2)  # normalised units: noise * std / std
        assert diff.std(0).sub(0.05).abs().max() < 0.003 and diff.mean(0).abs().max() < 0.003


def test_a_file_too_fast_to_simulate_cheaply_trains_on_the_file_alone():
    from warpphys import api
    from warpphys.data import Trajectories

    sys_ = systems.get_system("pendulum")
    t = np.linspace(0, 6, 96)
    x = np.zeros((4, 96, 2))
    x[:, :, 0] = 0.1 * np.cos(np.outer(np.ones(4), t))
    opts = {"fresh_data": True}
    ok = Trajectories(t=t, x=x, params=np.array([[1.0, 0.1]] * 4), system="pendulum")
    assert api.fresh_source(opts, None, ok, sys_) == "file"
    fast = Trajectories(t=t, x=x, params=np.array([[1.0, 0.1]] * 3 + [[1e-4, 0.1]]),
                        system="pendulum")  # sqrt(g / L) = 313 rad/s: 80 substeps per sample
    with pytest.warns(UserWarning, match="file alone"):
        assert api.fresh_source(opts, None, fast, sys_) is None
    assert api.fresh_source({"fresh_data": False}, None, ok, sys_) is None


@pytest.mark.parametrize("option, value, words", [
    ("fresh_n", -1, "fresh_n must be a whole number"),
    ("val_every", 0, "val_every must be a whole number"),
    ("head_depth", 1.5, "head_depth must be a whole number"),
    ("loss_steps", "many", "loss_steps must be a whole number"),
    ("batch_size", True, "batch_size must be a whole number"),
    ("fresh_n", 10**12, "fresh_n must be a whole number from 0 to 2,147,483,648"),
    ("fresh_n", 10**9, "fresh_n=1000000000 trajectories per epoch"),
    ("context_share", 1.5, "context_share must be a number from 0 to 1"),
    ("fresh_widen", -0.1, "fresh_widen must be a number from 0 to 4"),
    ("fresh_noise", 2.0, "fresh_noise must be a number from 0 to 1"),
    ("context_share", "half", "context_share must be a number from 0 to 1"),
])
def test_bad_read_out_options_are_refused_before_training(tmp_path, option, value, words):
    from warpphys import api
    from warpphys.errors import WarpphysError

    with pytest.raises(WarpphysError, match=words):
        api.fit(system="spring_mass", epochs=1, n_train=16, out=tmp_path / "run",
                figures=False, progress=False, **{option: value})
    assert not (tmp_path / "run").exists()
