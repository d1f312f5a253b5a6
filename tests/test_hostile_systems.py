"""Hostile inputs to the simulators of ``systems``: each is refused up front with a message that
names the argument and the fix (never a traceback from deep inside torch, numpy or scipy), and
runs too costly to finish are refused before any work (or stopped early), not left to swap."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import systems
import systems._simulate as simulate_module

T = np.linspace(0.0, 6.0, 97)
X0 = [[1.0, 0.0]]
PARAMS = [[1.0, 0.05]]
Error = systems.SystemInputError


def refused_quickly(words, call, error=Error, seconds=2.0):
    start = time.perf_counter()
    with pytest.raises(error, match=words):
        call()
    assert time.perf_counter() - start < seconds


# -- 1. cost --------------------------------------------------------------------------------------
def test_a_fixed_step_too_small_for_the_span_is_refused_before_any_step():
    # 6 s in steps of 1e-7: 60 million steps (it took 11 GB and more than a minute)
    refused_quickly(r"rk4 would take 60,000,000 steps.*use a step_size of at least.*adaptive",
                    lambda: systems.simulate("pendulum", T, X0, PARAMS, method="rk4",
                                             step_size=1e-7),
                    systems.SimulationCostError)
    refused_quickly(r"dopri5_fixed would take 6e\+307 steps",
                    lambda: systems.simulate("pendulum", T, X0, PARAMS, method="dopri5_fixed",
                                             step_size=1e-307))


def test_the_default_fixed_step_of_a_tiny_sample_gap_is_refused_naming_the_default():
    refused_quickly("the default step_size, the smallest sample spacing / 8",
                    lambda: systems.simulate("pendulum", [0.0, 1e-9, 1e3], X0, PARAMS,
                                             method="rk4"))


def test_a_fixed_step_within_the_budget_still_runs():
    x = systems.simulate("pendulum", T[:3], X0, PARAMS, method="rk4", step_size=1e-3)
    assert x.shape == (1, 3, 2)


def test_a_batch_bigger_than_memory_is_refused_without_allocating_it():
    # expanded views: ten billion initial states that take no memory until read
    x0 = torch.zeros(1, 2, dtype=torch.float64).expand(10**10, 2)
    params = torch.ones(1, 3, dtype=torch.float64).expand(10**10, 3)
    refused_quickly(r"10,000,000,000 trajectories of 97 sample times.*more than half of this "
                    r"machine's.*fewer trajectories",
                    lambda: systems.simulate("spring_mass", T, x0, params),
                    systems.SimulationCostError)
    refused_quickly("100,000,000,000 trajectories", lambda: systems.sample("pendulum", 10**11),
                    systems.SimulationCostError)


@pytest.mark.parametrize("t", [np.linspace(0.0, 1e3, 97), np.linspace(1e3, 0.0, 97)])
def test_an_adaptive_run_too_long_for_its_step_budget_stops_with_the_pace(monkeypatch, t):
    # the budget of a million steps, shrunk to 200 so that the test takes milliseconds: a
    # thousand seconds of the pendulum take dopri5 about 20,000 steps at rtol 1e-9
    monkeypatch.setattr(simulate_module, "MAX_ADAPTIVE_STEPS", 200)
    refused_quickly(r"dopri5 has taken \d+ steps .* would take about .* more than the 200 "
                    r"allowed.*shorter span, loosen rtol",
                    lambda: systems.simulate("pendulum", t, X0, PARAMS, method="dopri5"),
                    systems.SimulationCostError)
    assert systems.simulate("pendulum", T[:5], X0, PARAMS, method="dopri5").shape == (1, 5, 2)


# -- 2. numpy views with negative strides ---------------------------------------------------------
def test_reversed_numpy_views_are_accepted_and_integrate_backward():
    forward = systems.simulate("pendulum", T[:9], X0, PARAMS, method="rk4")
    end = forward[:, -1].numpy()
    backward = systems.simulate("pendulum", T[:9][::-1], end, PARAMS, method="rk4")
    # rk4 with steps of 1/128 s: local errors ~1e-10, far below 1e-6 over 0.5 s and back
    np.testing.assert_allclose(backward[0, -1].numpy(), X0[0], atol=1e-6)
    x0_rev = np.array([[0.0, 1.0]])[:, ::-1]
    params_rev = np.array([[0.05, 1.0]])[:, ::-1]
    same = systems.simulate("pendulum", T[:9], x0_rev, params_rev, method="rk4")
    torch.testing.assert_close(same, forward)
    ref = systems.simulate_scipy("pendulum", T[:9][::-1], end, params_rev)
    np.testing.assert_allclose(ref[0, -1], X0[0], atol=1e-8)


# -- 3. odd types ---------------------------------------------------------------------------------
@pytest.mark.parametrize("option, words", [
    ({"method": "dopri5", "rtol": "1e-6"}, r"rtol must be a positive finite number.*'1e-6' of "
                                           r"type str \(a number, not text\)"),
    ({"method": "dopri5", "rtol": "abc"}, "rtol must be a positive finite number"),
    ({"method": "dopri5", "rtol": True}, "rtol must be a positive finite number.*bool"),
    ({"method": "dopri5", "atol": float("nan")}, "atol must be a positive finite number"),
    ({"method": "dopri5", "atol": 1e-8j}, "atol must be a positive finite number.*complex"),
    ({"method": "rk4", "step_size": float("nan")}, "step_size must be a positive finite number"),
    ({"method": "rk4", "step_size": "0.1"}, "step_size must be a positive finite number.*str"),
    ({"method": "rk4", "step_size": -0.1}, "step_size must be a positive finite number"),
    ({"method": "dopri5_fixed", "step_size": -0.1}, "step_size must be a positive finite"),
    ({"method": "rk4", "step_size": float("inf")}, "step_size must be a positive finite"),
])
def test_tolerances_and_steps_must_be_positive_finite_numbers(option, words):
    refused_quickly(words, lambda: systems.simulate("pendulum", T, X0, PARAMS, **option))


def test_tolerances_and_steps_as_numpy_or_tensor_scalars_are_numbers():
    x = systems.simulate("pendulum", T[:3], X0, PARAMS, method="rk4",
                         step_size=np.float32(0.01))
    y = systems.simulate("pendulum", T[:3], X0, PARAMS, method="rk4",
                         step_size=torch.tensor(0.01))
    torch.testing.assert_close(x, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_initial_states_are_refused_naming_the_dtype(dtype):
    refused_quickly(f"x0's dtype is {dtype}, too coarse.*float32",
                    lambda: systems.simulate("pendulum", T, torch.tensor(X0, dtype=dtype),
                                             PARAMS))
    refused_quickly("dtype is torch.float16, too coarse",
                    lambda: systems.sample("pendulum", 2, dtype=torch.float16))


@pytest.mark.parametrize("which", ["t", "x0", "params"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_complex_arrays_are_refused_not_cut_to_their_real_part(which, kind):
    args = {"t": T[:5], "x0": np.array(X0), "params": np.array(PARAMS)}
    args[which] = args[which] + 1j
    if kind == "torch":
        args[which] = torch.as_tensor(args[which])
    words = f"{which} must hold real numbers.*got complex values"
    refused_quickly(words, lambda: systems.simulate("pendulum", **args))
    refused_quickly(words, lambda: systems.simulate_scipy("pendulum", **args))


def test_boolean_arrays_are_refused():
    refused_quickly("x0 must hold real numbers.*booleans",
                    lambda: systems.simulate("pendulum", T, np.array([[True, False]]), PARAMS))


def test_check_params_takes_any_real_tensor_and_refuses_complex():
    pend = systems.get_system("pendulum")
    pend.check_params(torch.tensor(PARAMS, dtype=torch.bfloat16))
    with pytest.raises(Error, match="pendulum parameters must hold real numbers"):
        pend.check_params(torch.tensor(PARAMS) + 1j)


def test_simulate_scipy_takes_a_name_like_simulate():
    ref = systems.simulate_scipy("pendulum", T[:5], X0, PARAMS)
    x = systems.simulate("pendulum", T[:5], X0, PARAMS)
    np.testing.assert_allclose(ref, x.numpy(), atol=1e-7)  # both far tighter than 1e-7
    with pytest.raises(systems.UnknownNameError, match="unknown system 'pendulm'"):
        systems.simulate_scipy("pendulm", T[:5], X0, PARAMS)


@pytest.mark.parametrize("args, words", [
    ((T, [[1.0, 0.0], [0.5, 0.0]], PARAMS), "1 parameter rows for 2 initial states"),
    ((T, [1.0, 0.0], PARAMS), r"x0 must have shape \(B, 2\)"),
    (("abc", X0, PARAMS), "t must be numbers"),
    ((T, [[np.nan, 0.0]], PARAMS), "x0 contains NaN"),
    (([0.0, 2.0, 1.0], X0, PARAMS), "strictly increasing"),
])
def test_simulate_scipy_refuses_what_simulate_refuses(args, words):
    refused_quickly(words, lambda: systems.simulate_scipy("pendulum", *args))
    refused_quickly(words, lambda: systems.simulate("pendulum", *args))


@pytest.mark.parametrize("option", [{"rtol": "abc"}, {"atol": -1.0}, {"rtol": None}])
def test_simulate_scipy_tolerances_must_be_positive_finite_numbers(option):
    refused_quickly(f"{next(iter(option))} must be a positive finite number",
                    lambda: systems.simulate_scipy("pendulum", T, X0, PARAMS, **option))


@pytest.mark.parametrize("n_steps", [-1, 1, 2.5, "10", True])
def test_sample_refuses_a_number_of_sample_times_that_is_not_a_count(n_steps):
    refused_quickly("n_steps must be a whole number of sample times >= 2",
                    lambda: systems.sample("pendulum", 2, n_steps=n_steps))


def test_sample_refuses_a_dtype_that_is_not_a_torch_float_dtype():
    refused_quickly("dtype must be a floating-point torch dtype",
                    lambda: systems.sample("pendulum", 2, dtype="float32"))


def test_substep_grid_refuses_a_step_that_is_not_a_positive_number():
    with pytest.raises(Error, match="step_size must be a positive finite number"):
        simulate_module.substep_grid(torch.linspace(0, 1, 3), float("nan"))


@pytest.mark.parametrize("device, words", [
    ("meta", "run on 'cpu' or 'cuda'"), ("mps", "run on 'cpu' or 'cuda'"),
    ("banana", "unknown device"),
])
def test_sample_refuses_devices_it_cannot_simulate_on(device, words):
    with pytest.raises(systems.SystemInputError, match=words):
        systems.sample("pendulum", 2, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sample_on_cuda_without_cuda_names_the_fix():
    with pytest.raises(systems.SystemInputError, match="CUDA is not available here"):
        systems.sample("pendulum", 2, device="cuda")
