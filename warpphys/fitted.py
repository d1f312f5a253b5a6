"""A trained model with what it needs to run on new data: :class:`FittedModel`, loaded from
or saved to a run directory (:mod:`warpphys.rundir`)."""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import systems
import warpphys.baselines  # noqa: F401  (registers the baselines in warpphys.registry)
from warpphys import checkpoint, metrics, progress, rundir
from warpphys.data import DataError, Trajectories, check_system, validate
from warpphys.errors import RunError
from warpphys.interface import Model
from warpphys.limits import check_memory
from warpphys.registry import CLASS_OF_MODEL, MODEL_CLASSES, MODELS
from warpphys.rundir import CONFIG_FILE, LAST_FILE, METRICS_FILE, MODEL_FILE, jsonable


def resolve_device(device: str) -> str:
    if not isinstance(device, str):
        raise RunError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise RunError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device


def relative_times(t, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Sample times as a tensor counted from ``t[0]``, subtracted in float64 before the cast:
    models depend on time differences only, and times like Unix timestamps (``1e9 + t``) keep
    their resolution in float32."""
    t = np.asarray(t, dtype=np.float64)
    return torch.as_tensor(t - t[0], dtype=dtype, device=device)


@dataclass
class Forecast:
    """One estimate's rollout: ``x_hat (N, K+H, d)`` (its first K rows the given context), the
    physical parameters ``params (N, p)`` it used (None for black-box models), and the seconds
    it took."""

    x_hat: np.ndarray
    params: np.ndarray | None = None
    seconds: float = 0.0


#: data whose states vary this many times more (or less) than the training data's, or lie
#: this many training stds from their mean, are warned of
SCALE_FACTOR = 30.0
#: refined estimates this many times beyond the training ranges (for most trajectories) are
#: warned of: data in other units, most likely
FAR_FACTOR = 10.0


@dataclass
class Identified:
    """Estimates of the identifiable parameter combinations ``names (q,)`` of N trajectories
    (:meth:`FittedModel.identify`): ``refined (N, q)`` with standard errors ``std (N, q)``, and
    the one-pass ``amortised (N, q)``."""

    names: tuple[str, ...]
    refined: np.ndarray
    std: np.ndarray
    amortised: np.ndarray


def extend_times(t: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` sample times, continuing ``t``'s last spacing past its end."""
    if length > len(t):
        t = np.concatenate([t, t[-1] + (t[-1] - t[-2]) * np.arange(1, length - len(t) + 1)])
    return t[:length]


def _count(value, name: str, unit: str = "steps") -> int:
    """A count given by a user as an int (numpy integers too), never a float or bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be a whole number of {unit}, got {value!r}")
    return int(value)


#: the most Levenberg-Marquardt iterations a refinement may be asked for (it converges in ten)
MAX_ITERATIONS = 1000


def _iterations(value) -> int:
    """A refinement's checked ``iterations``: a whole number from 0 to MAX_ITERATIONS."""
    n = _count(value, "iterations", "iterations")
    if not 0 <= n <= MAX_ITERATIONS:
        raise DataError(f"iterations must be from 0 to {MAX_ITERATIONS} (the refinement "
                        f"converges in about ten), got {value!r}")
    return n


def _batch_size(value) -> int:
    """A checked ``batch_size``: a whole number of trajectories, at least 1."""
    b = _count(value, "batch_size", "trajectories")
    if b < 1:
        raise DataError(f"batch_size must be at least 1, got {value!r}")
    return b


#: the fewest context steps from which a model reads physical parameters (it reads them from
#: how the states change)
MIN_PARAM_CONTEXT = 2

#: how far (a factor either way) the data's median sample spacing may differ from the training
#: data's before evaluate and predict warn
SPACING_TOLERANCE = 1.25


def check_param_context(context: int, has_params: bool, who: str) -> None:
    """Refuse a context too short for a model with physical parameters to read them."""
    if has_params and context < MIN_PARAM_CONTEXT:
        raise DataError(f"--context {context}: {who} reads physical parameters from how the "
                        f"context's states change, so it needs at least {MIN_PARAM_CONTEXT} "
                        f"steps")


#: states beyond this overflow when squared in float32, the arithmetic of the models; states
#: that vary by less than the floor underflow there (and their errors' squares with them)
FLOAT32_STATE_LIMIT = float(np.sqrt(np.finfo(np.float32).max)) / 10
FLOAT32_STATE_FLOOR = float(np.sqrt(np.finfo(np.float32).tiny)) * 10
#: the models take times relative to the first one, in float32: its span and spacing must be
#: far from overflow and underflow, and every spacing resolved at the span's scale
FLOAT32_TIME_RANGE = (1e-30, 1e30)
FLOAT32_TIME_RESOLUTION = 1e-6


def _check_times(t: np.ndarray, what: str) -> None:
    span, gap = float(t[-1] - t[0]), float(np.min(np.diff(t)))
    lo, hi = FLOAT32_TIME_RANGE
    fix = "rescale the time axis, e.g. to other units"
    if span > hi:
        raise DataError(f"{what}: the times span {span:.3g}, too long for the float32 "
                        f"arithmetic of the models (at most {hi:.0e}); {fix}")
    if gap < lo:
        raise DataError(f"{what}: the sample spacing falls to {gap:.3g}, too small for the "
                        f"float32 arithmetic of the models (at least {lo:.0e}); {fix}")
    if gap < FLOAT32_TIME_RESOLUTION * span:
        raise DataError(f"{what}: a sample spacing of {gap:.3g} within a span of {span:.3g} "
                        f"is below the float32 resolution of the models' times "
                        f"({FLOAT32_TIME_RESOLUTION:g} of the span); resample the trajectories "
                        f"onto a coarser grid, or cut them into shorter windows")


def check_model_data(traj: Trajectories, sys_, what: str) -> None:
    """Refuse data the models cannot use: states beyond float32's range (they overflow), times
    that float32 cannot span or resolve, and parameters a physical system cannot have
    (negative mass, length, ...)."""
    _check_times(np.asarray(traj.t, dtype=np.float64), what)
    top = float(np.abs(traj.x).max())
    if top > FLOAT32_STATE_LIMIT:
        raise DataError(
            f"{what}: states reach {top:.3g}, too large for the float32 arithmetic of the models "
            f"(squares overflow beyond {FLOAT32_STATE_LIMIT:.1g}); rescale the data, e.g. to "
            f"other units"
        )
    spread = float(np.ptp(traj.x)) if traj.x.size else 0.0
    if 0 < spread < FLOAT32_STATE_FLOOR:
        raise DataError(
            f"{what}: the states vary by only {spread:.3g}, too little for the float32 "
            f"arithmetic of the models (at least {FLOAT32_STATE_FLOOR:.1g}); rescale the data, "
            f"e.g. to other units"
        )
    if sys_ is not None and sys_.state_low is not None:
        _warn_below_state_low(traj, sys_, what)
    if sys_ is not None:
        check_system_params(traj, sys_, what)


#: how far below a system's ``state_low``, in the state's standard deviations, observation
#: noise can plausibly reach (1% noise reaches about 0.04)
NOISE_BELOW_LOW = 0.25


def _warn_below_state_low(traj: Trajectories, sys_, what: str) -> None:
    """Warn when states lie far below the bound the system's states cannot cross (e.g.
    populations below zero): standardised or shifted data, whose physics is then wrong. A
    little below it is only noise, and passes."""
    x = np.asarray(traj.x, dtype=np.float64).reshape(-1, traj.dim)
    low, least = np.asarray(sys_.state_low, dtype=np.float64), x.min(0)
    depth = (low - least) / np.maximum(x.std(0), 1e-300)
    far = [f"{name} to {m:.3g} ({d:.2g} of its std below {lo:g})"
           for name, lo, m, d in zip(sys_.state_names, low, least, depth, strict=True)
           if d > NOISE_BELOW_LOW]
    if far:
        warnings.warn(f"{what}: states fall far below what {sys_.name}'s states can reach: "
                      f"{', '.join(far)}; if they are standardised or shifted, give them in "
                      f"physical units", stacklevel=3)


def _check_trajectories(traj) -> None:
    if not isinstance(traj, Trajectories):
        raise DataError(
            f"expected trajectories (warpphys.data.Trajectories), got {type(traj).__name__}; "
            f"wrap arrays as Trajectories(t=t, x=x) with x of shape (N, T, d), or read a file "
            f"with Trajectories.load(path)"
        )
    try:  # again: its arrays may have been replaced or edited since it was made
        validate(traj)
    except DataError as e:
        raise DataError(f"the trajectories break a rule of the format (changed after they "
                        f"were made?): {e}") from None


def check_system_params(traj: Trajectories, sys_, what: str) -> None:
    """Refuse the parameters of ``traj`` where ``sys_`` cannot have them (a negative mass, ...);
    ``what`` begins the message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unmatched columns are reported where they are used
        params = traj.system_params(sys_)
    if params is not None:
        try:
            sys_.check_params(params)
        except systems.SystemInputError as e:
            raise DataError(f"{what}: {e}") from None
        tiny = (params != 0) & (np.abs(params) < 1 / systems.MAX_PARAM)
        if np.any(tiny):  # (fine for a float64 simulation, not for the float32 models)
            j = int(np.argwhere(tiny)[0, 1])
            raise DataError(
                f"{what}: {sys_.name} parameter {sys_.param_names[j]!r} is "
                f"{params[tiny][0]:.4g}, below {1 / systems.MAX_PARAM:.0g} (and not 0), the "
                f"smallest magnitude the float32 models resolve; express it in other units")


@dataclass
class FittedModel:
    """A trained model with what it needs to run on new data (loaded from a run directory).

    Attributes:
        model: the torch module (WARP or a baseline), in evaluation mode.
        info: the run's config (``config.json``): system, model name, context, training window,
            parameter ranges of the training data, ...
        metrics: the run's test metrics (``metrics.json``), if any.
        run_dir: where it was loaded from or saved to.
    """

    model: Model
    info: dict
    metrics: dict = field(default_factory=dict)
    run_dir: Path | None = None
    device: str = "cpu"

    @property
    def system(self) -> systems.System | None:
        name = self.info.get("system")
        return systems.get_system(name) if name else None

    @property
    def context(self) -> int:
        return int(self.info["context"])

    # -- estimates ----------------------------------------------------------------------------
    @property
    def estimates(self) -> tuple[str, ...]:
        """The estimates this model offers (:data:`warpphys.metrics.ESTIMATES` for models with
        physical parameters; black-box models have one, their own rollout, "amortised")."""
        return metrics.ESTIMATES if self.model.has_params else ("amortised",)

    @property
    def default_estimate(self) -> str | None:
        """The estimate used unless one is asked for: for models with physical parameters the
        one chosen at fit time (``info["estimate"]``), else the most accurate ("refined");
        None for black-box models."""
        if not self.model.has_params:
            return None
        return self.info.get("estimate") or metrics.ESTIMATES[-1]

    def resolve_estimate(self, estimate: str | None) -> str:
        """``estimate`` checked against what the model offers (None: the default)."""
        if estimate is None:
            return self.default_estimate or "amortised"
        if estimate not in metrics.ESTIMATES:
            raise RunError(f"unknown estimate {estimate!r}; choose one of: "
                           f"{', '.join(metrics.ESTIMATES)}")
        if estimate not in self.estimates:
            raise RunError(f"model {self.info.get('model')!r} has no physical parameters, so "
                           f"no {estimate} estimate; leave --estimate out (or use amortised)")
        return estimate

    # -- checks ---------------------------------------------------------------------------------
    def _check(self, traj: Trajectories, context: int, *, whole: bool = False) -> None:
        """``whole``: the context may be the whole file (a rollout past its end, predict)."""
        _check_trajectories(traj)
        self._check_system(traj)
        check_model_data(traj, self.system, "the trajectories")
        self._warn_spacing(traj)
        self._warn_scale(traj)
        if traj.dim != self.model.dim:
            raise DataError(
                f"the data have state size d = {traj.dim} but the model was trained on d = "
                f"{self.model.dim}"
            )
        if whole and not 1 <= context <= traj.n_times:
            raise DataError(
                f"--context {context} must be between 1 and the sequence length {traj.n_times}"
            )
        if not whole and not 1 <= context < traj.n_times:
            raise DataError(
                f"--context {context} must be at least 1 and smaller than the sequence length "
                f"T = {traj.n_times}"
            )
        self._check_param_context(context)

    def _check_system(self, traj: Trajectories) -> None:
        """Refuse trajectories of another system than the model's, or with parameters that
        system cannot have (a negative mass, ...): they would be scored as if they fit."""
        sys_ = self.system
        if sys_ is None:
            return
        declared = traj.system
        if declared is not None and sys_.name not in (declared,
                                                      systems.get_system(declared).base):
            raise DataError(f"the trajectories are of system {declared!r}, and this model "
                            f"was trained on {sys_.name!r}; give it {sys_.name} trajectories")
        try:  # (data of a richer system whose base is the model's pass: pendulum_drag)
            check_system(traj, sys_.name)
        except DataError as e:
            raise DataError(f"the trajectories do not fit this model of {sys_.name}: {e}") \
                from None
        check_system_params(traj, sys_, "the trajectories' parameters")

    def _check_param_context(self, context: int) -> None:
        check_param_context(context, self.model.has_params, "this model")

    def _warn_spacing(self, traj: Trajectories) -> None:
        """Warn when the data are sampled at another rate than the training data: WARP reads
        the dynamics step by step (its filters turn by fixed angles per step)."""
        dt = self.info.get("dt")
        if dt is None or traj.n_times < 2 or not self.model.reads_fixed_steps:
            return
        gaps = np.diff(np.asarray(traj.t, dtype=np.float64))
        ratio = float(np.median(gaps)) / dt
        if not 1 / SPACING_TOLERANCE <= ratio <= SPACING_TOLERANCE:
            warnings.warn(f"the data are sampled every {ratio * dt:.3g} (median), {ratio:.3g}x "
                          f"the training data's {dt:.3g}: the model reads the dynamics sample by "
                          f"sample, so its rollouts (and one-pass estimates) assume the training "
                          f"spacing; resample the data to it", stacklevel=3)
        elif gaps.max() > SPACING_TOLERANCE * dt or gaps.min() < dt / SPACING_TOLERANCE:
            i = int(np.argmax(np.abs(np.log(gaps / dt))))
            warnings.warn(f"the data's sample spacing is uneven: {gaps[i]:.3g} between samples "
                          f"{i} and {i + 1}, {gaps[i] / dt:.3g}x the training data's {dt:.3g} "
                          f"(missing samples?): the model reads the dynamics sample by sample, so "
                          f"its rollouts (and one-pass estimates) assume even steps; resample the "
                          f"data onto an even grid", stacklevel=3)

    def _warn_clipped(self, traj: Trajectories, K: int) -> None:
        """Warn when context states lie outside the box in which a physics root holds its
        rollout's states (the training mean +- ``state_bound`` training stds): the one-pass
        rollout of those trajectories is clipped there, not the physics."""
        root = getattr(self.model, "root", None)  # (black boxes hold no states in a box)
        box = getattr(root, "state_box", None)
        if box is None:
            return
        lo, hi = (b.double().cpu().numpy() for b in box(self.model.normalizer))
        x = traj.x[:, :K]
        out = ((x < lo) | (x > hi)).any((1, 2))
        if out.any():
            warnings.warn(f"the contexts of {int(out.sum())} of {len(out)} trajectories leave "
                          f"the states the one-pass rollout holds ({root.state_bound:g}"
                          f" training stds around the training mean): its predictions of them "
                          f"are clipped there, not the physics'; the refined estimate (the "
                          f"default) is not", stacklevel=4)

    def _warn_scale(self, traj: Trajectories) -> None:
        """Warn when the data's states vary on another scale than the training data's, or lie
        far from them (an offset): other units, or another regime, where neither the one-pass
        estimate nor the black boxes were trained (populations in thousands instead of ones)."""
        std0, mean0 = self.info.get("state_std"), self.info.get("state_mean")
        if std0 is None or mean0 is None or len(std0) != traj.dim:
            return
        std0, mean0 = np.asarray(std0, dtype=np.float64), np.asarray(mean0, dtype=np.float64)
        x = traj.x.reshape(-1, traj.dim)
        ratio = x.std(0) / std0
        shift = np.abs(x.mean(0) - mean0) / std0
        names = traj.state_names or (self.info.get("state_names") or
                                     [f"state {i}" for i in range(traj.dim)])
        far = [f"{n} {r:.3g}x as much" for n, r in zip(names, ratio, strict=True)
               if not 1 / SCALE_FACTOR <= r <= SCALE_FACTOR]
        moved = [f"{n} by {d:.3g} of its training std" for n, d in zip(names, shift, strict=True)
                 if d > SCALE_FACTOR]
        if far or moved:
            what = (f"vary {', '.join(far)} as the training data's" if far
                    else f"are shifted from the training data's mean: {', '.join(moved)}")
            warnings.warn(f"the data's states {what} (other units, an offset, or another "
                          f"regime?): the model was trained near its training data's scale; "
                          f"rescale the data, or fit on data like them", stacklevel=4)

    def _need_params(self, what: str) -> None:
        """Refuse ``what`` (a job on physical parameters) for a model that has none."""
        if not self.model.has_params:
            raise RunError(f"{what} needs physical parameters, and model "
                           f"{self.info.get('model')!r} has none; fit a physics model "
                           f"(--model warp-phys) for it")

    def _context(self, traj: Trajectories, context: int | None, *, whole: bool = False) -> int:
        """The context (the run's by default), checked against ``traj`` once (``whole``: see
        :meth:`_check`)."""
        K = self.context if context is None else _count(context, "--context")
        if (context is None and isinstance(traj, Trajectories)  # (not a number the user gave)
                and not K < traj.n_times + whole):
            raise DataError(f"the run's context of {K} steps (used when none is given) does "
                            f"not fit in these trajectories of {traj.n_times} steps; give a "
                            f"shorter one (--context K, or context=K)")
        self._check(traj, K, whole=whole)
        self._warn_context(K)
        return K

    def _warn_context(self, context: int) -> None:
        """Warn when the one-pass estimate is read after another number of steps than the
        context its read-out trained at (most of its batches score the end of the run's
        context: ``context_share``)."""
        root = getattr(self.model, "root", None)
        if (context != self.context and getattr(root, "param_head", False)
                and getattr(root, "context_share", 0.0) > 0):
            warnings.warn(f"--context {context}: this run's one-pass (amortised) estimate was "
                          f"trained mostly at the end of its {self.context}-step context and is "
                          f"less accurate after {context} steps (on the pendulum 2-7x the "
                          f"parameter error); the refined estimate refines it on the context. "
                          f"To read after {context} steps, fit with --context {context}",
                          stacklevel=3)

    def _span(self, traj: Trajectories, context: int | None, horizon: int | None
              ) -> tuple[int, int]:
        """(K, H) of a rollout of ``traj`` (the context may be the whole file, with a horizon
        past its end), checked, and its output's size against the memory."""
        K = self._context(traj, context, whole=True)
        H = self._horizon(traj, K, horizon)
        check_memory(8.0 * traj.n * (K + H) * traj.dim * 3,
                     f"predicting {traj.n} trajectories over {K + H} steps",
                     "use a smaller --horizon, or predict a few trajectories at a time")
        return K, H

    @staticmethod
    def _horizon(traj: Trajectories, K: int, horizon: int | None) -> int:
        if horizon is None:
            H = traj.n_times - K
            if H < 1:
                raise DataError(f"the context of {K} steps is the whole file: give a horizon "
                                f"(--horizon H) to roll out past its end")
            return H
        H = _count(horizon, "--horizon")
        if H < 1:
            raise DataError(f"--horizon must be at least 1, got {H}")
        return H

    # -- rollouts -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, traj: Trajectories, context: int | None = None, horizon: int | None = None,
                batch_size: int = 1024, keep_theta: bool = False, *,
                estimate: str | None = None):
        """Feed ``context`` true steps, roll out ``horizon`` more (default: to the file's end).

        ``estimate``: "amortised" (the model's own rollout, one forward pass) or "refined" (the
        parameters refined on the context, :meth:`predict_refined`); default
        :attr:`default_estimate` (the refined one for models with physical parameters).
        Times past the file's end continue its last spacing. Returns ``x_hat (N, K+H, d)`` in
        physical units (and, with ``keep_theta``, the weights ``theta (N, K+H-1, D)`` of the
        amortised rollout, which ``keep_theta`` then implies unless ``estimate`` says otherwise:
        "refined" is refused, its rollout has no such weights).
        """
        if keep_theta and estimate is None:
            estimate = "amortised"
        est = self.resolve_estimate(estimate)
        batch_size = _batch_size(batch_size)
        K, H = self._span(traj, context, horizon)
        if est == "refined":
            if keep_theta:
                raise RunError("keep_theta returns the weights of the one-pass rollout; ask "
                               "for estimate='amortised'")
            return self._rollout_refined(traj, K, H, self._refine(traj, K)[1:])
        return self._rollout(traj, K, H, batch_size, keep_theta)

    def _rollout(self, traj: Trajectories, K: int, H: int, batch_size: int = 1024,
                 keep_theta: bool = False):
        """The amortised rollout (the model's own), inputs already checked."""
        self._warn_clipped(traj, K)
        t = relative_times(extend_times(traj.t, K + H), torch.float32, self.device)
        outs, thetas = [], []
        self.model.eval()
        batches = -(-traj.n // batch_size)
        with progress.bar(batches * (K + H - 1), "rollout",  # (ticked by the model's steps)
                          work=traj.n * (K + H)):
            for i in range(0, traj.n, batch_size):
                xb = torch.as_tensor(traj.x[i:i + batch_size, :K], dtype=torch.float32,
                                     device=self.device)
                pred, theta = self.model.rollout(xb, t, K, keep_theta=keep_theta)
                outs.append(pred.double().cpu().numpy())
                if keep_theta:
                    thetas.append(theta.cpu().numpy())
        x_hat = np.concatenate(outs)
        x_hat[:, :K] = traj.x[:, :K]
        return (x_hat, np.concatenate(thetas)) if keep_theta else x_hat

    def score_rollout(self, truth: Trajectories, x_hat: np.ndarray, context: int):
        """Rollout metrics of a prediction ``x_hat`` of ``truth`` (see :mod:`warpphys.metrics`).

        Returns ``(metrics, params, ood)``: the params of ``truth`` in the system's order (or
        None) and the (N,) out-of-training-range flags (or None) that were used."""
        params, ood = self._truth(truth)
        return self._score(truth, x_hat, context, params, ood), params, ood

    def _truth(self, truth: Trajectories):
        """``(params (N, p) or None, ood (N,) flags or None)`` of ``truth``: the flags judge the
        identifiable combinations against their training ranges
        (:func:`warpphys.metrics.out_of_range`)."""
        sys_ = self.system
        params = truth.system_params(sys_) if sys_ is not None else None
        ood = None if params is None else metrics.out_of_range(sys_, params, self.info)
        return params, ood

    def _score(self, truth: Trajectories, x_hat: np.ndarray, K: int, params, ood) -> dict:
        return metrics.rollout_metrics(
            truth.x, x_hat, truth.t, K, window=float(self.info["window"]),
            state_std=np.asarray(self.info["state_std"]), system=self.system, params=params,
            ood=ood,
        )

    @torch.no_grad()
    def refine(self, traj: Trajectories, context: int | None = None, iterations: int = 10,
               batch_size: int = 4096):
        """Amortised estimates refined on the context (:func:`warpphys.refine.refine_context`):
        ``(params (N, p), last_state (N, d), theta (N, D))`` in float64, the last state being
        the refined (denoised) one from which :meth:`predict_refined` rolls out.
        ``iterations`` 0: the amortised estimates as they are."""
        self._need_params("refine")
        iterations, batch_size = _iterations(iterations), _batch_size(batch_size)
        return self._refine(traj, self._context(traj, context), iterations, batch_size)[1:]

    def _refine(self, traj: Trajectories, K: int, iterations: int = 10,
                batch_size: int = 4096, covariance: bool = False):
        """``(amortised params, refined params, last_state, theta)``, inputs already checked:
        each estimate computed once; with ``covariance``, also the refined parameters'
        covariance (N, p, p) (:func:`warpphys.refine.refine_context`)."""

        t = relative_times(traj.t[:K], torch.float64, self.device)
        scale = self.info.get("state_std")  # residual weights: the training data's state std
        parts = []
        with progress.bar(traj.n, "refinement", work=traj.n * K * (iterations + 5),
                          unit="trajectory"):
            for i in range(0, traj.n, batch_size):
                parts.append(self._refine_batch(traj.x[i:i + batch_size, :K], t, K, iterations,
                                                scale, covariance))
                progress.tick(len(parts[-1][0]), unit="trajectory")
        out = tuple(torch.cat(p) for p in zip(*parts, strict=True))
        self._warn_far_estimates(out[1])
        return out

    def _refine_batch(self, x: np.ndarray, t: torch.Tensor, K: int, iterations: int, scale,
                      covariance: bool) -> tuple:
        """:meth:`_refine` of one batch of contexts ``x (B, K, d)``."""
        from warpphys.refine import refine_context

        xk = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        est, theta = self.model.recover_params(xk.float(), t.float(), K, return_theta=True)
        refined = refine_context(self.model.root, xk, t, est.double(), theta=theta.double(),
                                 iterations=iterations, scale=scale, covariance=covariance)
        return (est.double(), *refined[:2], theta.double(), *refined[2:])

    def _warn_far_estimates(self, params: torch.Tensor) -> None:
        """Warn when most refined estimates lie far outside the training data's ranges of the
        identifiable combinations: the physics then fits the data only with parameters it was
        never shown, as when times or angles are in other units than the training data's."""
        sys_, ranges = self.system, self.info.get("identifiable_ranges") or {}
        if sys_ is None or len(params) == 0:
            return
        ident = np.abs(sys_.identifiable(params).cpu().numpy())
        # combinations that are 0 when the parameters allowed to be 0 are (no damping)
        zeroed = torch.tensor([[float(p.strict) for p in sys_.params]], dtype=torch.float64)
        may_vanish = sys_.identifiable(zeroed).numpy()[0] == 0
        for j, name in enumerate(sys_.identifiable_names):
            lo, hi = ranges.get(name) or (0.0, 0.0)
            if not hi > 0:
                continue
            far = ident[:, j] > FAR_FACTOR * hi
            if not may_vanish[j]:
                far |= ident[:, j] < lo / FAR_FACTOR
            if far.mean() > 0.5:
                warnings.warn(
                    f"the refined {name} of {int(far.sum())} of {len(far)} trajectories lies "
                    f"more than {FAR_FACTOR:g}x outside the training range {lo:.3g} to "
                    f"{hi:.3g} (median {np.median(ident[:, j]):.3g}): are the data in the "
                    f"training data's units (times, angles, ...), and of {sys_.name}? The "
                    f"model's estimates and rollouts hold only near its training ranges",
                    stacklevel=4)
                return

    @torch.no_grad()
    def identify(self, traj: Trajectories, context: int | None = None, *,
                 iterations: int = 10) -> Identified:
        """What the context window determines of the physics: the identifiable parameter
        combinations (the system's ``identifiable_names``, e.g. k/m and c/m of a spring-mass)
        of each trajectory, refined, with their standard errors, and the one-pass estimate.

        The standard errors are those of the refinement's least-squares fit of the physics to
        the whole context (Gauss-Newton, the noise level estimated from the fit's own residuals):
        about the spread of the estimates over repeated observation noise, when the model's
        physics is the data's. They do not cover a wrong model, and on noise-free data they are
        as small as the fit's rounding. Where a context does not determine a combination (too
        few steps for the unknowns, or a system at rest), its standard error is infinite, and
        said in a warning. The context may be the whole file."""
        from warpphys.refine import combination_std

        self._need_params("identify")
        K = self._context(traj, context, whole=True)
        amortised, refined, _, _, cov, free = self._refine(traj, K, _iterations(iterations),
                                                           covariance=True)
        sys_ = self.system
        std = combination_std(sys_.identifiable, refined, cov, free)
        unknown = ~torch.isfinite(std).all(1)
        if unknown.any():
            warnings.warn(f"the contexts of {int(unknown.sum())} of {len(std)} trajectories do "
                          f"not determine all of {', '.join(sys_.identifiable_names)} (too few "
                          f"steps for the unknowns, or no motion): their standard errors are "
                          f"infinite; give longer contexts", stacklevel=2)
        return Identified(names=tuple(sys_.identifiable_names),
                          refined=sys_.identifiable(refined).cpu().numpy(),
                          std=std.cpu().numpy(),
                          amortised=sys_.identifiable(amortised).cpu().numpy())

    @torch.no_grad()
    def predict_refined(self, traj: Trajectories, context: int | None = None,
                        horizon: int | None = None, iterations: int = 10,
                        refined: tuple | None = None) -> np.ndarray:
        """WARP-Phys followed by refinement: the parameters of ``recover_params(refine=True)``,
        held fixed, drive the root's physics step from the refined (denoised) last context state,
        in float64. Returns ``x_hat (N, K+H, d)`` like :meth:`predict` (its first K rows are the
        given context). ``refined``: the output of :meth:`refine`, if already computed."""
        self._need_params("predict_refined")
        iterations = _iterations(iterations)
        K, H = self._span(traj, context, horizon)
        if refined is not None:
            refined = _check_refined(refined, traj.n)
        return self._rollout_refined(traj, K, H,
                                     refined or self._refine(traj, K, iterations)[1:])

    def _rollout_refined(self, traj: Trajectories, K: int, H: int, refined: tuple) -> np.ndarray:
        from warpphys.refine import simulate

        t = relative_times(extend_times(traj.t, K + H), torch.float64, self.device)
        est, state, theta = refined
        with progress.bar(H, "refined rollout", work=len(state) * H):
            rollout = simulate(self.model.root, state, t[K:] - t[K - 1:-1], est, theta,
                               on_step=progress.tick)
        context = torch.as_tensor(traj.x[:, :K], dtype=torch.float64, device=self.device)
        return torch.cat([context, rollout[:, 1:]], 1).cpu().numpy()

    # -- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def forecasts(self, traj: Trajectories, context: int | None = None,
                  estimates: tuple[str, ...] | None = None, horizon: int | None = None
                  ) -> dict[str, Forecast]:
        """Each estimate's rollout of ``traj`` from ``context`` over ``horizon`` steps (default:
        to the file's end), computed once: {estimate: :class:`Forecast`} for ``estimates``
        (default: all the model offers), with the parameters each used."""
        K, H = self._span(traj, context, horizon)
        if isinstance(estimates, str):  # one estimate, named
            estimates = (estimates,)
        if estimates is not None and not estimates:
            raise RunError(f"no estimate asked for; name one or more of {self.estimates}, or "
                           f"leave estimates out for all")
        wanted = tuple(self.resolve_estimate(e) for e in (estimates or self.estimates))
        return self._forecasts(traj, K, H, wanted)

    def _forecasts(self, traj: Trajectories, K: int, H: int, wanted: tuple[str, ...]
                   ) -> dict[str, Forecast]:
        """:meth:`forecasts`, inputs already checked."""
        out = {}
        if "amortised" in wanted:
            t0 = time.perf_counter()
            x_hat = self._rollout(traj, K, H)
            out["amortised"] = Forecast(x_hat, None, time.perf_counter() - t0)
        if self.model.has_params:
            t0 = time.perf_counter()
            if "refined" in wanted:
                amortised, *refined = self._refine(traj, K)
                x_ref = self._rollout_refined(traj, K, H, refined)
                out["refined"] = Forecast(x_ref, refined[0].cpu().numpy(),
                                          time.perf_counter() - t0)
            else:  # (no refinement asked for: none computed)
                amortised = self._amortised_params(traj, K)
            if "amortised" in wanted:
                out["amortised"].params = amortised.cpu().numpy()
        return out

    def score(self, truth: Trajectories, forecasts: dict[str, Forecast], context: int, *,
              estimate: str | None = None) -> dict:
        """``metrics.json`` of ``forecasts`` (from :meth:`forecasts`) of ``truth``: every
        estimate scored, its values assembled by :func:`warpphys.metrics.assemble` (headline
        keys: ``estimate``, default :attr:`default_estimate`)."""
        est = self.resolve_estimate(estimate)
        _check_trajectories(truth)  # (the rest was checked when the forecasts were made)
        context = _count(context, "--context")
        if not 1 <= context < truth.n_times:
            raise DataError(f"--context {context} must be at least 1 and smaller than the "
                            f"sequence length T = {truth.n_times}")
        self._check_forecasts(forecasts, truth)
        params, ood = self._truth(truth)
        sys_ = self.system
        per = {}
        for name, f in forecasts.items():
            _warn_non_finite(f.x_hat[:, context:], name if self.model.has_params else "", sys_)
            per[name] = self._score(truth, f.x_hat, context, params, ood)
            if f.params is not None and params is not None and sys_ is not None:
                per[name].update(metrics.param_errors(sys_, params, f.params))
        m = metrics.assemble(per, default=est, physics=self.model.has_params,
                             minmax=self.info.get("minmax"))
        m["model"] = self.info["model"]
        return m

    def _check_forecasts(self, forecasts, truth: Trajectories) -> None:
        """``forecasts`` must be :meth:`forecasts`' output for ``truth``: {estimate: Forecast},
        each rollout of every trajectory to the file's end."""
        if not isinstance(forecasts, dict) or not forecasts:
            raise RunError(f"forecasts must be what FittedModel.forecasts returns, "
                           f"{{estimate: Forecast}}, got {type(forecasts).__name__}")
        for name, f in forecasts.items():
            self.resolve_estimate(name)
            shape = getattr(getattr(f, "x_hat", None), "shape", None)
            if shape != truth.x.shape:
                raise DataError(f"the {name} forecast has shape {shape}, the trajectories "
                                f"{truth.x.shape}: score forecasts of these trajectories, "
                                f"to their end (FittedModel.forecasts(traj, context))")

    def evaluate(self, traj: Trajectories, context: int | None = None, *,
                 estimate: str | None = None) -> dict:
        """Metrics of DESIGN.md on ``traj`` (rollout from ``context`` to the file's end), keys
        as in :mod:`warpphys.metrics`: headline keys hold ``estimate`` (default
        :attr:`default_estimate`: the refined one for models with physical parameters, which
        also report ``*_amortised`` and ``*_refined`` twins and ``estimate``)."""
        K = self._context(traj, context)
        est = self.resolve_estimate(estimate)
        forecasts = self._forecasts(traj, K, traj.n_times - K, self.estimates)
        return self.score(traj, forecasts, K, estimate=est)

    @torch.no_grad()
    def recover_params(self, traj: Trajectories, context: int | None = None, *,
                       estimate: str | None = None, iterations: int = 10,
                       refine: bool | None = None) -> np.ndarray:
        """Physical parameters (N, p) estimated from the context window.

        ``estimate`` (default :attr:`default_estimate`, the refined one): "amortised" is one
        forward pass of WARP-Phys (gradient-free); "refined" then takes ``iterations`` batched
        Levenberg-Marquardt steps on the context's one-step errors through the same physics
        step, and a few on the whole context simulated from its (estimated) first state (see
        :func:`warpphys.refine.refine_context`). ``refine``: the older spelling of the choice
        (True: "refined", False: "amortised").
        """
        self._need_params("recover_params")
        if refine is not None:
            if not isinstance(refine, bool | np.bool_):
                raise RunError(f"refine must be True or False, not {refine!r}")
            chosen = "refined" if refine else "amortised"
            if estimate is not None and estimate != chosen:
                raise RunError(f"refine={bool(refine)} asks for the {chosen} estimate, "
                               f"estimate={estimate!r} for another; give one of them")
            estimate = chosen
        est = self.resolve_estimate(estimate)
        K = self._context(traj, context)
        if est == "refined":
            return self._refine(traj, K, _iterations(iterations))[1].cpu().numpy()
        return self._amortised_params(traj, K).cpu().numpy()

    def _amortised_params(self, traj: Trajectories, K: int) -> torch.Tensor:
        """The one-pass estimate (N, p) in float64, inputs already checked."""
        x = torch.as_tensor(traj.x[:, :K], dtype=torch.float32, device=self.device)
        t = relative_times(traj.t[:K], torch.float32, self.device)
        return self.model.recover_params(x, t, K).double()

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu") -> FittedModel:
        """Load a run directory written by :func:`fit` (safe: ``weights_only=True``)."""
        if isinstance(run_dir, FittedModel):
            raise RunError("run_dir is a FittedModel already: call its methods (evaluate, "
                           "predict, ...) instead")
        if not isinstance(run_dir, str | os.PathLike):
            raise RunError(f"run_dir must be the path of a run directory, got "
                           f"{type(run_dir).__name__}")
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"{str(run_dir)!r} is a file, not a run directory; give the folder "
                           f"that `warpphys fit --out` wrote")
        if not run_dir.is_dir():
            raise RunError(f"run directory {str(run_dir)!r} does not exist")
        if not (run_dir / MODEL_FILE).exists() and (run_dir / CONFIG_FILE).is_file():
            unfinished = (f"continue it with `warpphys fit --resume {run_dir}`"
                          if (run_dir / LAST_FILE).exists() else "fit it again")
            raise RunError(f"{str(run_dir)!r} holds no {MODEL_FILE} yet: its fit is still "
                           f"running, or stopped before the end; wait for it, or {unfinished}")
        if not (run_dir / MODEL_FILE).exists() and (run_dir / "study.json").is_file():
            raise RunError(f"{str(run_dir)!r} is a reproduction study, not a run: its runs are "
                           f"in {str(run_dir / 'runs')!r}")
        ckpt = checkpoint.load(run_dir / MODEL_FILE)
        if ckpt.get("kind") != "model":
            raise checkpoint.CheckpointError(f"{run_dir / MODEL_FILE} is not a model checkpoint")
        try:
            model = _build(MODEL_CLASSES[ckpt["class"]], ckpt["model_config"],
                           ckpt["state_dict"])
        except (KeyError, RuntimeError, TypeError, ValueError, ArithmeticError, AttributeError,
                IndexError) as e:
            raise checkpoint.CheckpointError(
                f"{run_dir / MODEL_FILE} does not match this version of warpphys ({e})"
            ) from None
        try:
            info = rundir.loads(ckpt["info"])
            if not isinstance(info, dict) or "context" not in info:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise checkpoint.CheckpointError(
                f"{str(run_dir / MODEL_FILE)!r} has no run configuration of warpphys ('info' "
                f"is missing or not what `warpphys fit` writes); re-run `warpphys fit`"
            ) from None
        problem = (_info_problem(info, model.dim)
                   or _class_problem(info, ckpt["class"], model)
                   or _config_problem(info, run_dir / CONFIG_FILE))
        if problem:
            raise checkpoint.CheckpointError(
                f"{str(run_dir / MODEL_FILE)!r}: its run configuration is not what `warpphys "
                f"fit` writes ({problem}); the file was edited or damaged: re-run `warpphys fit`"
            )
        m = {}
        if (run_dir / METRICS_FILE).exists():  # the saved test metrics; nothing depends on them
            try:
                m = rundir.read_json(run_dir / METRICS_FILE)
            except (OSError, ValueError) as e:
                warnings.warn(f"ignoring {run_dir / METRICS_FILE}, which cannot be read ({e})",
                              stacklevel=2)
        device = resolve_device(device)
        return cls(model.to(device).eval(), info, m, run_dir, device)


#: the most layers of any network in a model's configuration; the configuration's sizes (its
#: keys ending so): none can exceed the number of weights
MAX_DEPTH = 1000
SIZE_KEYS = ("width", "size", "dim", "rank", "hidden", "augment", "d_model", "heads", "ff")


def _build(model_cls, config: dict, state_dict: dict):
    """The model of a checkpoint's ``config`` with its ``state_dict`` loaded, built only once
    the configuration is known to describe these weights: a width or depth edited into a file
    of a few megabytes would otherwise build a model of gigabytes, or take minutes, before any
    other check. Raises ValueError (or the error of loading the weights) otherwise."""
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise TypeError("its model configuration or weights are not mappings")
    tensors = list(state_dict.values())
    if not all(isinstance(v, torch.Tensor) and not v.is_complex() and not v.is_meta
               and v.layout == torch.strided for v in tensors):
        raise TypeError("its weights are not all real-valued tensors holding their values")
    total = sum(v.numel() for v in tensors)
    problem = _numbers_problem(config, max(total, 1))
    if problem:
        raise ValueError(problem)
    try:  # the sizes it would build, with no memory allocated
        with torch.device("meta"):
            size = sum(v.numel() for v in model_cls.from_config(config).state_dict().values())
    except NotImplementedError:  # (an operation without a meta kernel: built for real below)
        size = total
    if size != total:
        raise ValueError(f"its configuration builds {size:,} weights, its file holds {total:,}")
    model = model_cls.from_config(config)
    model.load_state_dict(state_dict)
    return model


def _numbers_problem(config, total: int, key: str = "") -> str | None:
    """A number in a model configuration that no model of ``total`` weights could have, or
    None: not finite, a size (:data:`SIZE_KEYS`) above ``total``, a depth (or number of
    layers) above :data:`MAX_DEPTH`."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list | tuple):
        items = ((key, v) for v in config)
    else:
        v = config
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        if not math.isfinite(v):
            return f"{key} {v!r} is not finite"
        if "depth" in key or key == "layers":
            if abs(v) > MAX_DEPTH:
                return f"{key} {v:,} is more than {MAX_DEPTH:,} layers"
        elif key.endswith(SIZE_KEYS) and abs(v) > total:
            return f"{key} {v:,} is larger than a model of {total:,} weights could have"
        return None
    for k, v in items:
        problem = _numbers_problem(v, total, str(k))
        if problem:
            return problem
    return None


def _check_refined(refined, n: int) -> tuple:
    """``predict_refined``'s ``refined``: the (params, last_state, theta) that :meth:`refine`
    returns, for the same ``n`` trajectories."""
    if not (isinstance(refined, tuple | list) and len(refined) == 3
            and all(isinstance(a, torch.Tensor) and a.dim() == 2 and a.shape[0] == n
                    for a in refined)):
        raise DataError(f"refined must be what refine() returns for these {n} trajectories "
                        f"(params, last_state, theta), from the same context")
    return tuple(refined)


def _class_problem(info: dict, class_name: str, model) -> str | None:
    """What is wrong between a checkpoint's run configuration and its weights, or None."""
    name = info.get("model")
    if name not in MODELS:
        return f"model {name!r} is not one of warpphys's ({', '.join(MODELS)})"
    if CLASS_OF_MODEL.get(name, class_name) != class_name:
        return (f"model {name!r} is built as {CLASS_OF_MODEL[name]}, but the weights are a "
                f"{class_name}")
    if not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values()
               if v.is_floating_point()):
        return "weights that are not finite (NaN or infinite)"
    return _scales_problem(info, model)


def _scales_problem(info: dict, model) -> str | None:
    """Where the scales in a model's weights (its normaliser; a WARP's time window) are not
    those its run configuration records, or None: an edited normaliser (a std of 0, say)
    would turn every rollout into NaN, and that would be blamed on the data."""
    norm = getattr(model, "normalizer", None)
    mean, std = info.get("state_mean"), info.get("state_std")
    if norm is not None and mean is not None and std is not None:
        std = np.asarray(std, dtype=np.float64)
        n = info.get("n_train", 0) * info.get("n_steps", 0) if all(
            isinstance(info.get(k), int) for k in ("n_train", "n_steps")) else 0
        if n > 1:  # torch's std (the normaliser's) divides by n - 1, numpy's by n
            std = std * math.sqrt(n / (n - 1))
        have_std = norm.std.detach().double().cpu().numpy()
        have_mean = norm.mean.detach().double().cpu().numpy()
        # (the same training data, summed in float32 and float64; states clipped at 1e-8)
        if (have_std.shape != std.shape
                or not np.all(np.abs(have_std - std) <= 0.01 * std + 1e-8)
                or not np.all(np.abs(have_mean - np.asarray(mean)) <= 0.01 * std + 1e-8)):
            return "its normaliser is not the run's state_mean and state_std"
    window = getattr(model, "window", None)
    if (isinstance(window, torch.Tensor) and window.numel() == 1
            and isinstance(info.get("window"), int | float)
            and not math.isclose(float(window), info["window"], rel_tol=1e-5)):
        return f"its time window {float(window)!r} is not the run's {info['window']!r}"
    return None


#: what identifies a run: a model.pt and config.json that disagree on any come from two runs
RUN_IDENTITY = ("model", "system", "protocol", "data", "seed", "context", "n_steps",
                "state_mean", "state_std")


def _config_problem(info: dict, config_file: Path) -> str | None:
    """Where the run directory's config.json (when it is readable) names another run than the
    checkpoint does (e.g. a model.pt copied in from elsewhere), or None."""
    try:
        config = rundir.read_json(config_file)
    except (OSError, ValueError):
        return None  # (the checkpoint carries its own configuration)
    if not isinstance(config, dict):
        return None
    for key in RUN_IDENTITY:
        if key in config and key in info and config[key] != info[key]:
            return (f"its {key} is {info[key]!r} where {config_file.name} beside it says "
                    f"{config[key]!r}: the two come from different runs")
    return None


def _finite_numbers(value, n: int | None = None) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n)
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in value))


def _info_problem(info: dict, dim: int | None) -> str | None:
    """What is wrong with a checkpoint's run configuration, or None: the keys that loading,
    evaluating and predicting read, each of the type ``fit`` writes (keys that runs saved by
    older versions lack may be absent)."""
    def whole(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    if not whole(info.get("context"), 1):
        return f"context {info.get('context')!r} is not a whole number >= 1"
    for key in ("model", "system", "data", "test_data", "protocol", "estimate"):
        if info.get(key) is not None and not isinstance(info[key], str):
            return f"{key} {info[key]!r} is not text"
    if not isinstance(info.get("model"), str):
        return "it names no model"
    if info.get("system") is not None and info["system"] not in systems.names():
        return f"system {info['system']!r} is not one of {', '.join(systems.names())}"
    if info.get("estimate") not in (None, "amortised", "refined"):
        return f"estimate {info['estimate']!r} is not amortised or refined"
    if whole(info.get("n_steps"), 2) and info["context"] >= info["n_steps"]:
        return f"context {info['context']} is not shorter than its {info['n_steps']} steps"
    if "seed" in info and not whole(info["seed"], 0):
        return f"seed {info['seed']!r} is not a whole number >= 0"
    for key in ("options", "param_name_map"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            return f"{key} is not a mapping"
    if info.get("minmax") is not None and not (_finite_numbers(info["minmax"], 2)
                                                and info["minmax"][0] < info["minmax"][1]):
        return "minmax is not two finite numbers, the lower first"
    for key in ("window", "state_std"):  # (every run has them; scoring reads them)
        if info.get(key) is None:
            return f"it has no {key}"
    for key in ("state_mean", "state_std"):
        if info.get(key) is not None and not _finite_numbers(info[key], dim):
            return f"{key} is not {dim} finite numbers"
    if info.get("state_std") is not None and min(info["state_std"]) <= 0:
        return "state_std is not positive"
    for key in ("window", "dt"):
        v = info.get(key)
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            return f"{key} {v!r} is not a positive number"
    for key in ("state_names", "param_names"):
        v = info.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(n, str) for n in v)):
            return f"{key} is not a list of names"
    for key in ("param_ranges", "identifiable_ranges", "fresh_ranges"):
        v = info.get(key)
        if v is not None and not (isinstance(v, dict) and all(
                isinstance(k, str) and _finite_numbers(r, 2) for k, r in v.items())):
            return f"{key} is not a mapping of names to [low, high]"
    return None


def save_model(fitted: FittedModel, run_dir: Path) -> None:
    checkpoint.save({
        "kind": "model",
        "class": type(fitted.model).__name__,
        "model_config": fitted.model.config(),
        "state_dict": {k: v.cpu() for k, v in fitted.model.state_dict().items()},
        "info": json.dumps(fitted.info, default=jsonable),
    }, run_dir / MODEL_FILE)


def _warn_non_finite(rolled: np.ndarray, estimate: str, sys_) -> None:
    """Say so when rollouts overflowed: the metrics over them are null, with no other sign."""
    bad = int((~np.isfinite(rolled)).reshape(len(rolled), -1).any(1).sum())
    if bad:
        what = f"{sys_.name}'s equations" if sys_ is not None else "the model"
        other = " (compare the other estimate's metrics)" if estimate else ""
        every = (" or, as it is every one, the model itself is broken (a training that "
                 "diverged, or an edited model.pt)" if bad == len(rolled) else "")
        warnings.warn(f"{bad} of {len(rolled)} {estimate + ' ' if estimate else ''}rollouts "
                      f"overflowed (states not finite), so the metrics over them are null: the "
                      f"data may not follow {what}{other}{every}", stacklevel=3)
