"""Batched simulation with torchdiffeq, and the scipy reference path used by the tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torchdiffeq import odeint
from torchdiffeq._impl.odeint import SOLVERS  # the solvers (orders, tableaux) torchdiffeq has

from ._base import System, SystemInputError, xp
from ._checks import check_dtype, check_memory, positive_number, real_array, real_tensor
from ._errors import SimulationCostError

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: equal steps in every sample interval, as many as every step's error test needs (see simulate)
UNIFORM_METHODS = ("dopri8_uniform",)
FIXED_METHODS = ("rk4", "dopri5_fixed", "dopri8_fixed", "midpoint", "euler", "explicit_adams",
                 "implicit_adams")
#: methods stepped by :func:`_runge_kutta` with the Butcher tableau of a torchdiffeq method
TABLEAU_OF = {"dopri5_fixed": "dopri5", "dopri8_fixed": "dopri8", "dopri8_uniform": "dopri8"}
#: "exact": the system's closed form (linear systems); "auto": that where it exists, else
#: dopri8_uniform
METHODS = ("auto", "exact", *UNIFORM_METHODS, *ADAPTIVE_METHODS, *FIXED_METHODS)
#: most steps dopri8_uniform takes over a whole run before it hands over to adaptive dopri5
MAX_UNIFORM_STEPS = 20_000
#: sample intervals on which dopri8_uniform finds its step before the whole run
PROBE_INTERVALS = 16
#: most steps a fixed-step method may take over a run (the batch steps together): ten million
#: take hours, and their grid of step times alone fills half a gigabyte
MAX_FIXED_STEPS = 10_000_000
#: most steps an adaptive method may take over a run (about as long as MAX_FIXED_STEPS of a
#: fixed-step method: each tries 6 to 13 vector-field calls); a run is stopped at that count,
#: or earlier once a tenth of them show the pace of a longer run
MAX_ADAPTIVE_STEPS = 1_000_000
#: arrays of the result's size a simulation holds at once (the result, its transpose, the
#: solver's); the closed form's intermediates are about 16 of them
COPIES, COPIES_EXACT = 4, 16


def has_closed_form(system: System) -> bool:
    """Whether the system overrides :meth:`System.exact_solution`."""
    return type(system).exact_solution is not System.exact_solution


def _max_norm(ratio: torch.Tensor) -> torch.Tensor:
    # Step control on the worst trajectory, so that every trajectory meets the tolerance
    # (torchdiffeq's default RMS norm would let a few stiff trajectories hide behind the rest).
    return ratio.abs().max()


def substep_counts(gaps: torch.Tensor, step_size: float) -> torch.Tensor:
    """Steps per sample interval: ``ceil(|gap| / step_size)``, at least 1 (long tensor)."""
    # The small slack keeps an interval of exactly k steps (up to rounding) at k, not k + 1.
    return torch.ceil(gaps.abs() / step_size - 1e-9).clamp(min=1).long()


def substep_grid(t: torch.Tensor, step_size: float) -> torch.Tensor:
    """The integration grid of fixed-step methods: every sample interval of ``t`` cut into
    ``ceil(|interval| / step_size)`` equal steps (``t`` increasing or decreasing).

    The sample times are grid points, so fixed-step solutions are returned at the sample times
    themselves (never interpolated between steps), on uniform and non-uniform grids alike.
    """
    step_size = positive_number(step_size, "step_size", "0.01")
    if len(t) < 2:
        return t
    gaps = t[1:] - t[:-1]
    counts = substep_counts(gaps, step_size)
    interval = torch.repeat_interleave(torch.arange(len(gaps), device=t.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(interval), device=t.device) - starts[interval]
    inner = t[:-1][interval] + gaps[interval] * (within.to(t.dtype) / counts[interval].to(t.dtype))
    return torch.cat([inner, t[-1:]])


def _tableau(method: str, dtype, device, *, error: bool):
    """The Butcher tableau of torchdiffeq's explicit Runge-Kutta ``method``: stage matrix a
    (S, S), nodes c (S,), solution weights b (S,) and error weights e (S,), as many stages S as
    the step needs (a last stage that only the next step's first would repeat is dropped, and
    kept where ``error`` and the error estimate uses it)."""
    tab = SOLVERS[method].tableau
    f64 = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731 (lists or tensors)
    n = len(tab.alpha) + 1
    a = torch.zeros(n, n, dtype=torch.float64)
    for i, row in enumerate(tab.beta):
        a[i + 1, :len(row)] = f64(row)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), f64(tab.alpha)])
    b, e = f64(tab.c_sol), f64(tab.c_error)
    if b[-1] == 0 and not (error and e[-1] != 0):
        n -= 1
    return tuple(v[..., :n].to(dtype=dtype, device=device) for v in (a[:n], c, b, e))


def _runge_kutta(system, t, x0, params, method, counts, tolerance=None):
    """An explicit Runge-Kutta method with the tableau of torchdiffeq's ``method``, taking
    ``counts[i]`` equal steps in the sample interval from ``t[i]`` to ``t[i+1]``, so that the
    states are computed at the sample times. The batch is one flat state: each stage is one
    vector-field call and one matrix-vector product with the earlier stages, which is what keeps
    the per-step cost of a batched high-order method low.

    ``tolerance`` (rtol, atol): also the largest ratio, over every step and state, of the
    method's embedded error estimate to ``atol + rtol * max(|y0|, |y1|)`` (torchdiffeq's error
    test, in its max norm): at most 1 where every step passes it. Returns (x (B, T, d), that
    ratio as a 0-dim tensor or None).
    """
    a, c, b, e = _tableau(method, x0.dtype, x0.device, error=tolerance is not None)
    n_stages = len(c)
    shape = x0.shape
    stages = x0.new_empty(n_stages, x0.numel())
    out = x0.new_empty(len(t), x0.numel())
    out[0] = x0.reshape(-1)
    y = out[0]
    worst = x0.new_zeros(())
    rtol, atol = tolerance if tolerance is not None else (None, None)

    def f(time, state):
        return system.vector_field(time, state.view(shape), params).reshape(-1)

    for i, n in enumerate(counts.tolist()):
        h = (t[i + 1] - t[i]) / n
        ah, bh, eh = a * h, b * h, e * h
        for s in range(n):
            times = t[i] + (s + c) * h  # the stage times, (S,)
            stages[0] = f(times[0], y)
            for j in range(1, n_stages):
                stages[j] = f(times[j], torch.addmv(y, stages[:j].T, ah[j, :j]))
            y1 = torch.addmv(y, stages.T, bh)
            if tolerance is not None:
                scale = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
                worst = torch.maximum(worst, ((eh @ stages).abs_() / scale).max())
            y = y1
        out[i + 1] = y
    x = out.view(len(t), *shape).transpose(0, 1).contiguous()
    return x, (worst if tolerance is not None else None)


def _dopri8_uniform(system, t, x0, params, rtol, atol):
    """dopri8 on equal steps within each sample interval, every step's error test passed; None
    where that would take steps too short or the vector field is not smooth enough for it.

    The step is found on the first PROBE_INTERVALS sample intervals (one step per interval to
    begin with): where a step fails the test, the run is repeated with steps shortened by the
    error's eighth root (dopri8's error estimate grows as h^8 on a smooth field), at least 30%
    shorter (4x where the run blew up). Then the rest of the run, continued from the probe;
    where it fails, the whole run again, at shorter steps. Past
    MAX_UNIFORM_STEPS steps, or where shorter steps do not shrink a small error at least as h^4
    (a kink in the field, as quadratic drag has at zero speed, where only a few steps need to
    be short), None: the caller hands over to an adaptive method.
    """
    gaps = t[1:] - t[:-1]
    probe = min(len(gaps), PROBE_INTERVALS)
    h = float(gaps[:probe].abs().max())
    spans = [probe] * 8 + [len(gaps)] * 3 if probe < len(gaps) else [len(gaps)] * 8
    last = None  # (span, h, ratio) of the last failed run
    passed = None  # (h, states) of a probe that passed: the whole run at h continues from it
    i = 0
    while i < len(spans):
        span = spans[i]
        counts = substep_counts(gaps[:span], h)
        if int(counts.sum()) * len(gaps) / span > MAX_UNIFORM_STEPS:
            return None
        start = passed[1].shape[1] - 1 if passed is not None and passed[0] == h else 0
        x, worst = _runge_kutta(system, t[start:span + 1],
                                passed[1][:, -1] if start else x0, params, "dopri8",
                                counts[start:], (rtol, atol))
        ratio = float(worst)  # (one synchronisation per run)
        if ratio <= 1.0:
            if span == len(gaps):
                return torch.cat([passed[1], x[:, 1:]], 1) if start else x
            passed = (h, x)
            i = spans.index(len(gaps))  # the probe passed: the whole run at this step
            continue
        if not math.isfinite(ratio):
            h *= 0.25
        else:
            # (the order shows only once steps are short enough for the error to be small:
            # both runs' errors below 1e-3 of the states, a million times the tolerance)
            if last is not None and last[0] == span and max(last[2], ratio) < 1e6:
                order = math.log(last[2] / ratio) / math.log(last[1] / h)
                if order < 4.0:
                    return None
            last = (span, h, ratio)
            h *= min(0.9 * ratio ** (-1 / 8), 0.7)
        i += 1
    return None


#: most steps an adaptive method may need per time scale of the dynamics at its rtol,
#: about rtol ** (-1 / order): a low-order method at a tight rtol would run for hours
MAX_STEPS_PER_SCALE = 1e4


def _check_tolerance(method: str, rtol: float, dtype: torch.dtype) -> None:
    """Refuse an rtol that no step can reach in ``dtype`` (below its machine epsilon, where
    steps shrink until they underflow) or that ``method``'s order would reach only with
    more than MAX_STEPS_PER_SCALE steps per time scale of the dynamics."""
    eps = torch.finfo(dtype).eps
    if rtol < eps:
        raise SystemInputError(f"rtol {rtol:g} is below the machine epsilon of {dtype} "
                               f"({eps:.2g}): no step is that accurate; use rtol >= "
                               f"{10.0 ** math.ceil(math.log10(eps)):.0e}")
    order = SOLVERS[TABLEAU_OF.get(method, method)].order
    if rtol ** (-1 / order) > MAX_STEPS_PER_SCALE:
        loosest = MAX_STEPS_PER_SCALE ** -order
        raise SystemInputError(
            f"{method} is a method of order {order}: at rtol {rtol:g} it would take about "
            f"{rtol ** (-1 / order):.1g} steps per time scale of the dynamics; use rtol >= "
            f"{loosest:.0e} with it, or a method of higher order (dopri8_uniform, dopri5)")


def simulate(
    system: System | str,
    t: torch.Tensor,
    x0: torch.Tensor,
    params: torch.Tensor,
    *,
    method: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | None = None,
) -> torch.Tensor:
    """Integrate a whole batch at once, each trajectory with its own parameters.

    Args:
        system: the physical system, or its registered name.
        t: (T,) strictly increasing sample times (strictly decreasing integrates backward in
            time from ``t[0]``).
        x0: (B, d) initial states; its device and dtype are used throughout (an array that is
            not a floating-point tensor, e.g. numpy or a list: float64 on the CPU). ``t`` and
            ``params`` may be arrays of numbers too.
        params: (B, p) physical parameters, one row per trajectory.
        method: "auto" (default: "exact" for systems with a closed form, else
            "dopri8_uniform"; "dopri5" where gradients must flow through the simulation);
            "exact": the system's closed form (``system.exact_solution``; round-off accuracy,
            no step at all); "dopri8_uniform": torchdiffeq's dopri8 tableau with the same
            number of equal steps in every sample interval, as many as make every step of
            every trajectory pass dopri8's error test at rtol/atol (a run in which one fails is
            repeated with shorter steps), so that states are computed at the sample times and
            the batch's per-step cost stays low; a torchdiffeq method, adaptive ("dopri5",
            "dopri8") or fixed-step ("rk4", ...); or "dopri5_fixed"/"dopri8_fixed": those
            tableaux on fixed steps. The tableau methods run without autograd.
        rtol, atol: tolerances of adaptive methods and dopri8_uniform; default 1e-9/1e-11 in
            float64 and 1e-6/1e-8 in float32 (atol: rtol / 100 when only rtol is given).
        step_size: largest step of fixed-step methods: every sample interval is cut into
            ``ceil(interval / step_size)`` equal steps, so that states are computed at the
            sample times, never interpolated (default: the smallest sample spacing / 8).
            Fixed steps make a trajectory's result exactly independent of the rest of its
            batch; adaptive steps are chosen for the whole batch (the worst trajectory).

    Returns:
        x: (B, T, d) states at the sample times, ``x[:, 0] == x0``.

    Raises:
        SystemInputError: an input that breaks a rule (the message names it and the fix);
        SimulationCostError (one of them): a run refused before it starts, whose result would
        take more than half the device's memory or whose fixed steps would number more than
        MAX_FIXED_STEPS, or an adaptive run stopped at MAX_ADAPTIVE_STEPS steps (or earlier,
        once its pace shows it would take more).
    """
    system = _system(system)
    if isinstance(x0, torch.Tensor) and x0.is_floating_point():
        check_dtype(x0.dtype, "x0's dtype")
    else:
        # numpy arrays, lists, integer tensors: float64 on the CPU (a float32 or GPU
        # computation needs x0 as a tensor of that dtype and device)
        x0 = real_tensor(x0, "x0", f"(B, {system.dim})", torch.float64, "cpu",
                         noun="an array of numbers")
    t = real_tensor(t, "t", "(T,) sample times", x0.dtype, x0.device)
    params = real_tensor(params, "params", _params_shape(system), x0.dtype, x0.device)
    gaps = _check_shapes(system, t, x0, params)
    # the user's choices: SystemInputError (a ValueError), one line on the command line
    if method not in METHODS:
        raise SystemInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    rtol = None if rtol is None else positive_number(rtol, "rtol", "1e-6")
    atol = None if atol is None else positive_number(atol, "atol", "1e-8")
    step_size = None if step_size is None else positive_number(step_size, "step_size", "0.01")
    if rtol is not None and rtol >= 1:  # a relative error of 100%: no accuracy at all
        raise SystemInputError(f"rtol is a relative error and must be below 1 (e.g. 1e-6), "
                               f"got {rtol!r}")
    asked = method
    differentiable = torch.is_grad_enabled() and (x0.requires_grad or params.requires_grad)
    if method == "auto":
        method = ("exact" if has_closed_form(system)
                  else "dopri5" if differentiable else "dopri8_uniform")
    if method in TABLEAU_OF and differentiable:
        raise SystemInputError(f"{method} runs without autograd, and x0 or params require "
                               f"gradients; use a torchdiffeq method, e.g. dopri5")
    # a setting the chosen method would ignore is refused, not silently dropped (but the
    # closed form chosen by "auto" needs no tolerance: that is only said)
    tolerance = rtol is not None or atol is not None
    if tolerance and method == "exact" and asked == "auto":
        warnings.warn(f"{system.name} is solved by its closed form, exact to round-off and "
                      f"faster than any tolerance: rtol/atol are not used (method dopri5 would "
                      f"use them)", stacklevel=2)
        rtol = atol = None
    elif tolerance and method not in ADAPTIVE_METHODS + UNIFORM_METHODS:
        how = (f"{system.name} is solved by its closed form" if method == "exact"
               else f"{method} is a fixed-step method")
        raise SystemInputError(f"rtol/atol set the accuracy of adaptive methods (dopri8_uniform, "
                               f"dopri5, dopri8, ...), but {how}; choose one, e.g. method "
                               f"dopri8_uniform")
    if step_size is not None and method not in FIXED_METHODS:
        how = "takes none" if method == "exact" else "adapts its steps"
        raise SystemInputError(f"step_size sets fixed-step methods (rk4, midpoint, ...), and "
                               f"{method} {how}; choose one, e.g. rk4")
    # the cost, before any work (the closed form's intermediates are many (B, T) arrays)
    check_memory(len(x0), len(t), system.dim, x0.dtype, x0.device,
                 copies=COPIES_EXACT if method == "exact" else COPIES)
    if method in FIXED_METHODS:
        h = step_size if step_size is not None else float(gaps.abs().min()) / 8
        _check_fixed_steps(method, t, gaps, h, step_size is None)
    _check_values(system, x0, params)
    if x0.shape[0] == 0:  # (no trajectory: nothing to integrate)
        return x0.new_empty(0, len(t), system.dim)
    if method == "exact":
        if not has_closed_form(system):
            raise SystemInputError(
                f"{system.name} has no closed form; use an integrator, e.g. dopri5"
            )
        return system.exact_solution(t, x0, params).contiguous()
    _check_finite_start(system, t, x0, params)
    double = x0.dtype == torch.float64
    options = {}
    if method in ADAPTIVE_METHODS + UNIFORM_METHODS:
        if atol is None:  # states are O(1): atol two decades below rtol
            atol = rtol * 1e-2 if rtol is not None else (1e-11 if double else 1e-8)
        rtol = rtol if rtol is not None else (1e-9 if double else 1e-6)
        _check_tolerance(method, rtol, x0.dtype)
        options["norm"] = _max_norm
        if method == "dopri8_uniform":
            with torch.no_grad():
                x = _dopri8_uniform(system, t, x0, params, rtol, atol)
            if x is not None:
                return x
            method = "dopri5"  # (steps of very different lengths needed)
    else:
        rtol, atol = 1e-7, 1e-9  # unused by fixed-step solvers
        if method in TABLEAU_OF:
            with torch.no_grad():
                return _runge_kutta(system, t, x0, params, TABLEAU_OF[method],
                                    substep_counts(gaps, h))[0]
        # torchdiffeq calls this with the sample times as given (also when they decrease).
        options["grid_constructor"] = lambda func, y0, t_: substep_grid(t_, h)

    def rhs(time, x):
        return system.vector_field(time, x, params)

    if method in ADAPTIVE_METHODS:  # (torchdiffeq calls it before every step it tries)
        rhs.callback_step = _step_budget(system, method, t, rtol)
    try:
        x = odeint(rhs, x0, t, method=method, rtol=rtol, atol=atol, options=options)
    except AssertionError as e:  # torchdiffeq's adaptive step control gave up
        if "underflow" not in str(e):
            raise
        raise SystemInputError(
            f"{system.name}: the solution blew up, so {method}'s step shrank to nothing "
            f"({e}); the initial states or parameters are probably far too large, or outside "
            f"the system's domain (largest |x0| {float(x0.abs().max()):.3g}, smallest x0 "
            f"{float(x0.min()):.3g}, largest |params| "
            f"{float(params.abs().max()) if params.numel() else 0.0:.3g}): "
            f"choose values of the system's usual scale"
        ) from None
    return x.transpose(0, 1).contiguous()


def _system(system) -> System:
    """``system``, or the registered system of that name."""
    if isinstance(system, System):
        return system
    from . import get_system  # (the registry imports this module)

    return get_system(system)


def _params_shape(system: System) -> str:
    return f"(B, {system.n_params}) for {list(system.param_names)}"


def _check_shapes(system: System, t, x0, params):
    """Refuse sample times that are not finite and strictly monotonic, and initial states or
    parameters of the wrong shapes (torch tensors or numpy arrays); returns the gaps of ``t``.
    Nothing here reads more than ``t``: the batch is read after its size is checked."""
    if t.ndim != 1 or len(t) < 2:
        raise SystemInputError(f"t must have shape (T,) with T >= 2 sample times, got "
                               f"{tuple(t.shape)}")
    if not bool(xp(t).isfinite(t).all()):
        raise SystemInputError("t contains NaN or infinite values")
    gaps = t[1:] - t[:-1]
    if not (bool((gaps > 0).all()) or bool((gaps < 0).all())):
        raise SystemInputError("t must be strictly increasing (or strictly decreasing, to go "
                               "backward)")
    if x0.ndim != 2 or x0.shape[1] != system.dim:
        raise SystemInputError(f"x0 must have shape (B, {system.dim}), got {tuple(x0.shape)}")
    if params.ndim != 2:
        raise SystemInputError(f"params must have shape {_params_shape(system)}, got "
                               f"{tuple(params.shape)}")
    if params.shape[0] != x0.shape[0]:
        raise SystemInputError(f"{params.shape[0]} parameter rows for {x0.shape[0]} initial "
                               f"states; give one row of params per initial state")
    return gaps


def _check_values(system: System, x0, params) -> None:
    """Refuse initial states that are not finite, and physically invalid parameters."""
    if not bool(xp(x0).isfinite(x0).all()):
        raise SystemInputError("x0 contains NaN or infinite values; every initial state must "
                               "be finite")
    system.check_params(params)


def _check_fixed_steps(method: str, t, gaps, h: float, default: bool) -> None:
    """Refuse a fixed-step run of more than MAX_FIXED_STEPS steps of at most ``h``."""
    steps = float(torch.ceil(gaps.abs() / h).clamp(min=1).sum())  # (in floats: no overflow)
    if steps <= MAX_FIXED_STEPS:
        return
    span = float((t[-1] - t[0]).abs())
    how = (f"the default step_size, the smallest sample spacing / 8, is {h:.3g}" if default
           else f"step_size {h:.3g}")
    # (each sample interval takes a whole number of steps: up to one more than span / h)
    least = span / max(MAX_FIXED_STEPS - len(gaps), 1)
    raise SimulationCostError(
        f"{method} would take {_count(steps)} steps over the span of {span:.4g} ({how}), more than "
        f"the {MAX_FIXED_STEPS:,} allowed; use a step_size of at least {least:.2g}, or an "
        f"adaptive method (dopri5, dopri8_uniform), which chooses its own steps")


def _count(n: float) -> str:
    """A count of steps for messages: 12,345,678, or 1.2e+20 where digits would run on."""
    return f"{n:,.0f}" if n < 1e13 else f"{n:.2g}"


def _step_budget(system: System, method: str, t: torch.Tensor, rtol: float):
    """A torchdiffeq ``callback_step`` that stops an adaptive run bound to take more than
    MAX_ADAPTIVE_STEPS steps: once it has taken that many, or once a tenth of them show that
    pace (the steps per unit of time so far, over the whole span)."""
    limit = MAX_ADAPTIVE_STEPS
    every = max(1, min(1000, limit // 10))  # (reading the time synchronises a GPU)
    start, end = float(t[0]), float(t[-1])
    taken = 0

    def count(t_now, y, dt):
        nonlocal taken
        taken += 1
        if taken % every:
            return
        done = abs(float(t_now) - start) / abs(end - start)
        pace = taken / done if done > 0 else math.inf
        if taken >= limit or (taken >= limit // 10 and pace > limit):
            raise SimulationCostError(
                f"{system.name}: {method} has taken {taken:,} steps and reached t = "
                f"{float(t_now):.6g} on the way from {start:g} to {end:g}; at that pace the "
                f"run would take about {max(pace, taken):.2g} steps, more than the {limit:,} "
                f"allowed (the span is very long for the time scale of the dynamics, or the "
                f"system is stiff): simulate a shorter span, loosen rtol (now {rtol:g}), or "
                f"use a fixed-step method with a step_size you choose (e.g. method='rk4')")

    return count


def _check_finite_start(system: System, t, x0, params) -> None:
    """Refuse initial states where the vector field overflows (or is NaN): no step, however
    short, integrates from there (one vector-field call, before the integrator's thousands)."""
    with torch.no_grad():
        f0 = system.vector_field(t[0], x0, params)
        bad = ~torch.isfinite(f0).reshape(len(x0), -1).all(-1)
        if not bool(bad.any()):
            return
        i = int(bad.nonzero()[0, 0])
    raise SystemInputError(
        f"{system.name}: the vector field overflows at the initial state of trajectory {i} "
        f"(x0 {[float(v) for v in x0[i]]}, params {[float(v) for v in params[i]]}), so the "
        f"solution blows up at once; the initial states or parameters are probably far too "
        f"large: choose values of the system's usual scale"
    )


def simulate_scipy(
    system: System | str,
    t,
    x0,
    params,
    *,
    method: str = "DOP853",
    rtol: float = 1e-11,
    atol: float = 1e-13,
) -> np.ndarray:
    """Reference solution: one ``scipy.integrate.solve_ivp`` call per trajectory (float64).

    Same arguments as :func:`simulate` (a system or its name; arrays, lists or tensors);
    returns (B, T, d) as a numpy array.
    """
    system = _system(system)
    t = real_array(t, "t", "(T,) sample times")
    x0 = real_array(x0, "x0", f"(B, {system.dim})", noun="an array of numbers")
    params = real_array(params, "params", _params_shape(system))
    _check_shapes(system, t, x0, params)
    rtol = positive_number(rtol, "rtol", "1e-11")
    atol = positive_number(atol, "atol", "1e-13")
    check_memory(len(x0), len(t), system.dim, torch.float64, "cpu", copies=2)
    _check_values(system, x0, params)
    out = np.empty((x0.shape[0], t.shape[0], system.dim))
    for i in range(x0.shape[0]):
        p = params[i]
        sol = solve_ivp(
            lambda time, y, p=p: system.vector_field(time, y, p),
            (t[0], t[-1]), x0[i], method=method, t_eval=t, rtol=rtol, atol=atol,
        )
        if not sol.success:
            raise RuntimeError(f"scipy failed on trajectory {i}: {sol.message}")
        out[i] = sol.y.T
    return out
