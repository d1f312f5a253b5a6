"""Physical properties of the systems and of their simulation (hypothesis over the OOD ranges).

Every test runs in float64 on CPU. Parameters are drawn from each system's *test* (out-of-
distribution) ranges, the widest ranges it declares, and initial states from its initial-state box
(or wider). The physics tests integrate with the fixed-step RK4 of ``systems.simulate``, whose
error we can bound in advance from the step and the fastest rate of the drawn parameters; each
tolerance comes with that bound in a comment. Tests of the default adaptive path (dopri5) against
closed forms and scipy are in test_systems_simulate.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import systems
from systems.pendulum import GRAVITY

F64 = torch.float64
PENDULUM = systems.get_system("pendulum")
SPRING_MASS = systems.get_system("spring_mass")
LOTKA_VOLTERRA = systems.get_system("lotka_volterra")


# -- strategies ----------------------------------------------------------------------------------
def in_range(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def param_rows(system: systems.System, n_max: int = 4, **fixed: float):
    """1..n_max parameter rows drawn from the system's OOD ranges; ``fixed`` pins some columns."""
    cols = [
        st.just(fixed[p.name]) if p.name in fixed else in_range(*p.test) for p in system.params
    ]
    return st.lists(st.tuples(*cols), min_size=1, max_size=n_max)


@st.composite
def states(draw, box_low, box_high, min_first: float = 0.0):
    """A state in the box; ``|first component| >= min_first`` keeps mechanical energy > 0."""
    first = draw(in_range(max(min_first, box_low[0]), box_high[0]))
    if box_low[0] < 0 and draw(st.booleans()):
        first = -draw(in_range(min_first, -box_low[0]))
    rest = [draw(in_range(lo, hi)) for lo, hi in zip(box_low[1:], box_high[1:], strict=True)]
    return (first, *rest)


@st.composite
def batches(draw, system, box, n_max=4, **fixed):
    """(x0 (B, d), params (B, p)) as float64 tensors; ``box = (low, high, min_first)``."""
    rows = draw(param_rows(system, n_max, **fixed))
    x0 = [draw(states(*box)) for _ in rows]
    return torch.tensor(x0, dtype=F64), torch.tensor(rows, dtype=F64)


# Initial-state boxes (low, high, smallest |first component|). Pendulum angles reach 2.5 rad,
# beyond the 2.2 rad of the default protocol; mechanical states keep |q0| >= 0.1 so that the
# energy, the denominator of relative drifts, is never zero.
PENDULUM_BOX = ((-2.5, -1.5), (2.5, 1.5), 0.1)
SPRING_BOX = ((-1.5, -1.5), (1.5, 1.5), 0.1)
LV_BOX = ((0.8, 0.8), (1.2, 1.2), 0.8)  # around the protocol's (1, 1)
BOXES = {"pendulum": PENDULUM_BOX, "pendulum_drag": PENDULUM_BOX, "spring_mass": SPRING_BOX,
         "lotka_volterra": LV_BOX}
#: every registered system (a new one is tested by registering it before collection)
NAMES = systems.names()


def state_box(name: str):
    """The initial-state box of ``name``: the one above, else its default protocol's."""
    if name in BOXES:
        return BOXES[name]
    init = systems.get_system(name).default.initial_state
    return init.low, init.high, 0.0


# -- helpers -------------------------------------------------------------------------------------
def rk4(system, t, x0, params, z: float, rate: float):
    """Fixed-step RK4 with step ``z / rate`` (``rate``: the fastest rate of the batch, 1/s)."""
    return systems.simulate(system, t, x0, params, method="rk4", step_size=z / rate)


def rk4_energy_bound(z: float, t_end: float, rate: float) -> float:
    """Relative energy error of RK4 on a harmonic oscillator after t_end: per step the amplitude
    factor is |R(iz)|^2 = 1 - z^6/72 + O(z^8), so N = rate * t_end / z steps lose N z^6 / 72."""
    return rate * t_end / z * z**6 / 72


def spring_rate(params: torch.Tensor) -> float:
    """Largest |eigenvalue| of dx/dt = M x over the batch: sqrt(k/m) (+ c/m with damping)."""
    m, k, c = params.T
    return float((torch.sqrt(k / m) + c / m).max())


def pendulum_rate(params: torch.Tensor) -> float:
    """Small-oscillation frequency sqrt(g/L) (+ c): the largest rate of the pendulum's Jacobian."""
    return float((torch.sqrt(GRAVITY / params[:, 0]) + params[:, 1]).max())


def relative_drift(system, x, params) -> torch.Tensor:
    """max_t |I(t) - I(0)| / |I(0)| per trajectory."""
    inv = system.invariant(x, params[:, None, :])
    return ((inv - inv[:, :1]).abs() / inv[:, :1].abs()).amax(1)


# -- the invariant and its rate, without integrating ---------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_invariant_rate_is_the_derivative_of_the_invariant_along_the_field(name, data):
    # dI/dt = grad I(x) . f(x) must equal the stated invariant_rate exactly (autograd, no
    # integration): only float64 rounding, relative 1e-12 of the terms' size, separates them.
    system = systems.get_system(name)
    x, params = data.draw(batches(system, state_box(name), n_max=8))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(system.invariant(x, params).sum(), x)
    field = system.vector_field(0.0, x, params)
    along = (grad * field).sum(-1).detach()
    rate = torch.as_tensor(system.invariant_rate(x.detach(), params), dtype=F64)
    scale = (grad.abs() * field.detach().abs()).sum(-1) + 1e-300
    assert torch.all((along - rate).abs() <= 1e-12 * scale + 1e-300)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_invariant_rate_is_never_positive(name, data):
    # Every system's invariant is conserved or dissipated (DESIGN.md): the stated rates
    # (-c L^2 w^2, -c v^2, LV's 0, ...) are <= 0 for every admissible state and parameter.
    system = systems.get_system(name)
    x, params = data.draw(batches(system, state_box(name), n_max=8))
    assert torch.all(torch.as_tensor(system.invariant_rate(x, params)) <= 0)


# -- conservation --------------------------------------------------------------------------------
@given(batches(PENDULUM, PENDULUM_BOX, damping=0.0))
def test_undamped_pendulum_conserves_energy(batch):
    x0, params = batch
    t_end, z = 2.0, 0.05
    rate = pendulum_rate(params)
    x = rk4(PENDULUM, torch.linspace(0, t_end, 21, dtype=F64), x0, params, z, rate)
    # RK4 at z = rate * h = 0.05 over <= 2 small-oscillation periods: the harmonic-oscillator
    # bound N z^6/72 is <= 4.6e-8 (the pendulum is slower than its linearisation at large
    # amplitude, which only helps). Tolerance 1e-6, 20x the bound.
    assert rk4_energy_bound(z, t_end, rate) < 5e-8
    assert torch.all(relative_drift(PENDULUM, x, params) < 1e-6)


@given(batches(SPRING_MASS, SPRING_BOX, c=0.0))
def test_undamped_spring_mass_conserves_energy(batch):
    x0, params = batch
    t_end, z = 0.25, 0.05
    rate = spring_rate(params)
    x = rk4(SPRING_MASS, torch.linspace(0, t_end, 26, dtype=F64), x0, params, z, rate)
    # Relative energy loss of RK4 on this oscillator: N z^6/72 (see rk4_energy_bound), <= 2.3e-8
    # for the fastest OOD spring (sqrt(k/m) = 42/s, N = 212 steps); rounding adds ~N * 1e-16.
    # The test checks the loss stays within 2x that bound.
    bound = rk4_energy_bound(z, t_end, rate)
    assert torch.all(relative_drift(SPRING_MASS, x, params) <= 2 * bound + 1e-12)


LV_T_END, LV_STEPS = 0.15, 200  # about one period of the fastest OOD orbit (2 pi / sqrt(a d))


@given(batches(LOTKA_VOLTERRA, LV_BOX))
def test_lotka_volterra_conserves_its_first_integral(batch):
    x0, params = batch
    x = systems.simulate(
        LOTKA_VOLTERRA, torch.linspace(0, LV_T_END, 16, dtype=F64), x0, params,
        method="rk4", step_size=LV_T_END / LV_STEPS,
    )
    assert torch.all(x > 0), "populations must stay positive"
    # No closed-form step bound here: the orbits of the OOD ranges swing the populations down
    # to 1e-10 and back, and the rates b y and c x follow. The tolerance is order-based: RK4's
    # drift is O(h^4) (measured: it falls 2.5x from T/150 to T/200 steps, (4/3)^4 = 3.2), and
    # at T/200 its worst over 500 draws and all corners of the OOD ranges is 4e-6. Tolerance
    # 4e-5 (10x); a wrong invariant or field drifts by O(1).
    assert torch.all(relative_drift(LOTKA_VOLTERRA, x, params) < 4e-5)


# -- dissipation ---------------------------------------------------------------------------------
DAMPED = {
    "pendulum": (PENDULUM, PENDULUM_BOX, pendulum_rate, 2.0),
    "spring_mass": (SPRING_MASS, SPRING_BOX, spring_rate, 0.2),
}


@given(name=st.sampled_from(sorted(DAMPED)), data=st.data())
def test_damped_energy_never_increases(name, data):
    system, box, rate_of, t_end = DAMPED[name]
    x0, params = data.draw(batches(system, box))
    z = 0.05
    rate = rate_of(params)
    x = rk4(system, torch.linspace(0, t_end, 41, dtype=F64), x0, params, z, rate)
    energy = system.invariant(x, params[:, None, :])
    # The true energy is non-increasing; RK4 itself only loses energy on oscillators, and its
    # error in E is <= N z^6/72 (about 5e-8) of E(0), so we allow 1e-7 E(0) of increase.
    rises = energy[:, 1:] - energy[:, :-1]
    assert torch.all(rises <= 1e-7 * energy[:, :1] + 1e-15)


def simpson(y: torch.Tensor, h: float) -> torch.Tensor:
    """Composite Simpson integral over the last axis (odd number of samples)."""
    inner = 4 * y[..., 1:-1:2].sum(-1) + 2 * y[..., 2:-1:2].sum(-1)
    return h / 3 * (y[..., 0] + y[..., -1] + inner)


@given(name=st.sampled_from(sorted(DAMPED)), data=st.data())
def test_damped_energy_loss_matches_the_dissipation_identity(name, data):
    # E(T) - E(0) = integral_0^T rate(x(t)) dt (spring-mass: rate = -c v^2; pendulum:
    # -c L^2 w^2), the rate integrated by Simpson's rule over the simulated samples.
    system, box, rate_of, t_end = DAMPED[name]
    x0, params = data.draw(batches(system, box))
    t_end = t_end / 2
    rate = rate_of(params)
    n_samples = 2 * math.ceil(rate * t_end / 0.2) + 1  # rate * dt <= 0.1
    t = torch.linspace(0, t_end, n_samples, dtype=F64)
    x = rk4(system, t, x0, params, 0.05, rate)
    energy = system.invariant(x, params[:, None, :])
    loss = energy[:, -1] - energy[:, 0]
    integral = simpson(system.invariant_rate(x, params[:, None, :]), float(t[1] - t[0]))
    # Simpson's error is T dt^4 max|d^4 rate/dt^4| / 180; the integrand oscillates at <= 2 rate
    # and |rate(x)| <= 2 (c/m) E(0) <= 2 rate E(0) (pendulum: 2 c E(0)), so the error is
    # <= T (2 rate dt)^4 * 2 rate / 180 * E(0) <= 1.3e-4 E(0) with rate dt <= 0.1 and
    # T * rate <= 7. RK4's own error (z = 0.05) is ~1e-7 E(0). Tolerance 3e-4 E(0).
    assert torch.all((loss - integral).abs() <= 3e-4 * energy[:, 0] + 1e-12)


# -- closed form ---------------------------------------------------------------------------------
@given(batches(SPRING_MASS, SPRING_BOX))
def test_spring_mass_simulation_equals_the_closed_form(batch):
    x0, params = batch
    t_end, z = 0.25, 0.05
    rate = spring_rate(params)
    t = torch.linspace(0, t_end, 26, dtype=F64)
    x = rk4(SPRING_MASS, t, x0, params, z, rate)
    exact = SPRING_MASS.exact_solution(t, x0, params)
    # RK4's local error on y' = lambda y is z^5/120 of |y| per step (z = |lambda| h); over
    # N = rate T / z steps: rate T z^4 / 120 <= 9.4e-7 (rate <= 72/s with damping, T = 0.25).
    # Errors are relative to each trajectory's largest state component; tolerance 2x the bound.
    scale = exact.abs().amax((1, 2)) + 1e-12
    err = (x - exact).abs().amax((1, 2)) / scale
    assert torch.all(err <= 2 * rate * t_end * z**4 / 120 + 1e-12)


def test_rk4_converges_at_fourth_order_to_the_closed_form():
    # The method itself: halving the step divides RK4's error by 2^4 = 16 (within 20%).
    params = torch.tensor([[0.02, 10.0, 0.1], [0.04, 16.0, 0.0]], dtype=F64)
    x0 = torch.tensor([[1.0, 0.0], [0.5, -1.0]], dtype=F64)
    t = torch.linspace(0, 1, 11, dtype=F64)
    exact = SPRING_MASS.exact_solution(t, x0, params)
    errs = [
        float((systems.simulate(SPRING_MASS, t, x0, params, method="rk4", step_size=h) - exact)
              .abs().max())
        for h in (0.01, 0.005)
    ]
    assert 16 * 0.8 < errs[0] / errs[1] < 16 * 1.2


# -- time reversal -------------------------------------------------------------------------------
# system, initial box, parameters fixed to make it conservative, window T, step(params)
CONSERVATIVE = {
    "pendulum": (PENDULUM, PENDULUM_BOX, {"damping": 0.0}, 1.0,
                 lambda p: 0.05 / pendulum_rate(p)),
    "spring_mass": (SPRING_MASS, SPRING_BOX, {"c": 0.0}, 0.15, lambda p: 0.05 / spring_rate(p)),
    "lotka_volterra": (LOTKA_VOLTERRA, LV_BOX, {}, LV_T_END, lambda p: LV_T_END / LV_STEPS),
}


@given(name=st.sampled_from(sorted(CONSERVATIVE)), data=st.data())
def test_conservative_systems_are_time_reversible(name, data):
    # Integrating forward over [0, T] and then backward (the reversed time grid) returns to x0.
    system, box, fixed, t_end, step = CONSERVATIVE[name]
    x0, params = data.draw(batches(system, box, **fixed))
    t = torch.linspace(0, t_end, 16, dtype=F64)
    h = step(params)
    forward = systems.simulate(system, t, x0, params, method="rk4", step_size=h)
    back = systems.simulate(system, t.flip(0), forward[:, -1], params, method="rk4", step_size=h)
    # The backward leg must pass through every forward sample. Each leg carries RK4's global
    # error: rate T z^4 / 120 <= 4e-7 of the state scale for pendulum and spring (z = 0.05);
    # for LV (no step bound) the worst measured over the OOD ranges is 9e-6. Tolerances 10x.
    tol = 1e-4 if name == "lotka_volterra" else 4e-6
    scale = forward.abs().amax((1, 2), keepdim=True)
    assert torch.all((back.flip(1) - forward).abs() <= tol * scale)


@given(name=st.sampled_from(["pendulum", "spring_mass"]), data=st.data())
def test_mechanical_systems_are_reversible_under_velocity_flip(name, data):
    # The physical symmetry of undamped mechanics: if (q0, p0) flows to (q1, p1) in time T, then
    # (q1, -p1) flows to (q0, -p0) in the same time. Both legs run forward in time.
    system, box, fixed, t_end, step = CONSERVATIVE[name]
    x0, params = data.draw(batches(system, box, **fixed))
    t = torch.linspace(0, t_end, 2, dtype=F64)
    h = step(params)
    flip = torch.tensor([1.0, -1.0], dtype=F64)
    end = systems.simulate(system, t, x0, params, method="rk4", step_size=h)[:, -1]
    again = systems.simulate(system, t, end * flip, params, method="rk4", step_size=h)[:, -1]
    # RK4's error on each leg is <= rate T z^4 / 120 <= 4e-7 of the state scale (z = 0.05);
    # tolerance 2e-6.
    scale = x0.abs().amax(1) + end.abs().amax(1) + 1e-12
    assert torch.all((again * flip - x0).abs().amax(1) <= 2e-6 * scale)


# -- numpy and torch share one vector field ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_vector_field_and_invariant_agree_on_numpy_and_torch(name, data):
    # The scipy reference path calls the same code on numpy arrays; both must give the same
    # numbers (same float64 operations, at most a few ulp apart in sin/log).
    system = systems.get_system(name)
    x, params = data.draw(batches(system, state_box(name)))
    np.testing.assert_allclose(
        system.vector_field(0.0, x.numpy(), params.numpy()),
        system.vector_field(0.0, x, params).numpy(), rtol=1e-13, atol=1e-13,
    )
    np.testing.assert_allclose(
        system.invariant(x.numpy(), params.numpy()), system.invariant(x, params).numpy(),
        rtol=1e-13, atol=1e-13,
    )
