"""A trained model with what it needs to run on new data: :class:`FittedModel`, loaded from
or saved to a run directory (:mod:`warpphys.rundir`)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import systems
from warpphys import checkpoint, metrics
from warpphys.data import DataError, Trajectories
from warpphys.errors import RunError
from warpphys.interface import Model
from warpphys.limits import check_memory
from warpphys.registry import MODEL_CLASSES
from warpphys.rundir import METRICS_FILE, MODEL_FILE, jsonable


def resolve_device(device: str) -> str:
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


def extend_times(t: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` sample times, continuing ``t``'s last spacing past its end."""
    if length > len(t):
        t = np.concatenate([t, t[-1] + (t[-1] - t[-2]) * np.arange(1, length - len(t) + 1)])
    return t[:length]



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

    def _check(self, traj: Trajectories, context: int) -> None:
        if traj.dim != self.model.dim:
            raise DataError(
                f"the data have state size d = {traj.dim} but the model was trained on d = "
                f"{self.model.dim}"
            )
        if not 1 <= context < traj.n_times:
            raise DataError(
                f"--context {context} must be at least 1 and smaller than the sequence length "
                f"T = {traj.n_times}"
            )

    @torch.no_grad()
    def predict(self, traj: Trajectories, context: int | None = None, horizon: int | None = None,
                batch_size: int = 1024, keep_theta: bool = False):
        """Feed ``context`` true steps, roll out ``horizon`` more (default: to the file's end).

        Times past the file's end continue its last spacing. Returns ``x_hat (N, K+H, d)`` in
        physical units (and the weights ``theta (N, K+H-1, D)`` when ``keep_theta``).
        """
        K = self.context if context is None else int(context)
        if not 1 <= K <= traj.n_times:
            raise DataError(
                f"--context {K} must be between 1 and the sequence length {traj.n_times}"
            )
        if traj.dim != self.model.dim:
            self._check(traj, K)
        H = traj.n_times - K if horizon is None else int(horizon)
        if H < 1:
            raise DataError(f"--horizon must be at least 1, got {H}")
        check_memory(8.0 * traj.n * (K + H) * traj.dim * 3,
                     f"predicting {traj.n} trajectories over {K + H} steps",
                     "use a smaller --horizon, or predict a few trajectories at a time")
        t = relative_times(extend_times(traj.t, K + H), torch.float32, self.device)
        outs, thetas = [], []
        self.model.eval()
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
        sys_ = self.system
        params = truth.system_params(sys_) if sys_ is not None else None
        ood = None
        if params is not None and self.info.get("param_ranges"):
            ood = metrics.outside_ranges(params, self.info["param_ranges"], sys_.param_names)
        m = metrics.rollout_metrics(
            truth.x, x_hat, truth.t, context, window=float(self.info["window"]),
            state_std=np.asarray(self.info["state_std"]), system=sys_, params=params, ood=ood,
        )
        return m, params, ood

    @torch.no_grad()
    def refine(self, traj: Trajectories, context: int | None = None, iterations: int = 10,
               batch_size: int = 4096):
        """Amortised estimates refined on the context (:func:`warpphys.refine.refine_context`):
        ``(params (N, p), last_state (N, d), theta (N, D))`` in float64, the last state being
        the refined (denoised) one from which :meth:`predict_refined` rolls out."""
        from warpphys.refine import refine_context

        K = self.context if context is None else int(context)
        self._check(traj, K)
        t = relative_times(traj.t[:K], torch.float64, self.device)
        scale = self.info.get("state_std")  # residual weights: the training data's state std
        parts = []
        for i in range(0, traj.n, batch_size):
            xk = torch.as_tensor(traj.x[i:i + batch_size, :K], dtype=torch.float64,
                                 device=self.device)
            est, theta = self.model.recover_params(xk.float(), t.float(), K, return_theta=True)
            est, last = refine_context(self.model.root, xk, t, est.double(),
                                       theta=theta.double(), iterations=iterations,
                                       scale=scale)
            parts.append((est, last, theta.double()))
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))

    @torch.no_grad()
    def predict_refined(self, traj: Trajectories, context: int | None = None,
                        horizon: int | None = None, iterations: int = 10,
                        refined: tuple | None = None) -> np.ndarray:
        """WARP-Phys followed by refinement: the parameters of ``recover_params(refine=True)``,
        held fixed, drive the root's physics step from the refined (denoised) last context state,
        in float64. Returns ``x_hat (N, K+H, d)`` like :meth:`predict` (its first K rows are the
        given context). ``refined``: the output of :meth:`refine`, if already computed."""
        K = self.context if context is None else int(context)
        self._check(traj, K)
        H = traj.n_times - K if horizon is None else int(horizon)
        t = relative_times(extend_times(traj.t, K + H), torch.float64, self.device)
        from warpphys.refine import simulate

        est, state, theta = refined or self.refine(traj, K, iterations)
        rollout = simulate(self.model.root, state, t[K:] - t[K - 1:-1], est, theta)
        context = torch.as_tensor(traj.x[:, :K], dtype=torch.float64, device=self.device)
        return torch.cat([context, rollout[:, 1:]], 1).cpu().numpy()

    def evaluate(self, traj: Trajectories, context: int | None = None) -> dict:
        """Metrics of DESIGN.md on ``traj`` (rollout from ``context`` to the file's end).

        Physics models with known parameters also report ``param_rel_error_refined`` and the
        rollout errors of :meth:`predict_refined` (keys ending in ``_refined``)."""
        K = self.context if context is None else int(context)
        self._check(traj, K)
        m, params, ood = self.score_rollout(traj, self.predict(traj, K), K)
        if self.model.has_params:
            refined = self.refine(traj, K)
            m.update(self.param_metrics(traj, K, params, refined[0]))
            ref, _, _ = self.score_rollout(traj, self.predict_refined(traj, K, refined=refined),
                                           K)
            m.update({f"{k}_refined": ref.get(k) for k in (
                "test_mse", "extrapolation_mse", "ood_mse", "invariant_drift",
                "valid_prediction_time")})
        m["model"] = self.info["model"]
        return m

    def param_metrics(self, traj: Trajectories, context: int, params, refined) -> dict:
        """Median relative errors of the identifiable parameters recovered from ``traj``'s
        context against the true ``params (N, p)``: ``param_rel_error`` (one forward pass) and
        ``param_rel_error_refined`` (``refined (N, p)``, e.g. ``refine(...)[0]``), each also
        per parameter. Empty without true parameters."""
        K = context
        if params is None or self.system is None:
            return {}
        sys_ = self.system
        true = sys_.identifiable(params)
        out = {}
        for key, est in (("param_rel_error", self.recover_params(traj, K)),
                         ("param_rel_error_refined", refined.cpu().numpy())):
            err = metrics.param_relative_error(true, sys_.identifiable(est))
            out[key] = err["median"]
            out[key + "_per_param"] = dict(
                zip(sys_.identifiable_names, err["per_param_median"], strict=True))
        return out

    @torch.no_grad()
    def recover_params(self, traj: Trajectories, context: int | None = None, *,
                       refine: bool = False, iterations: int = 10) -> np.ndarray:
        """Physical parameters (N, p) estimated from the context window.

        By default in one forward pass of WARP-Phys (amortised, gradient-free). With ``refine``,
        the estimate then seeds ``iterations`` batched Levenberg-Marquardt steps on the context's
        one-step errors through the same physics step, then a few on the whole context simulated
        from its (estimated) first state (see :func:`warpphys.refine.refine_context`).
        """
        K = self.context if context is None else int(context)
        self._check(traj, K)
        if refine:
            return self.refine(traj, K, iterations)[0].cpu().numpy()
        x = torch.as_tensor(traj.x[:, :K], dtype=torch.float32, device=self.device)
        t = relative_times(traj.t[:K], torch.float32, self.device)
        return self.model.recover_params(x, t, K).double().cpu().numpy()

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu") -> FittedModel:
        """Load a run directory written by :func:`fit` (safe: ``weights_only=True``)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunError(f"run directory {str(run_dir)!r} does not exist")
        ckpt = checkpoint.load(run_dir / MODEL_FILE)
        if ckpt.get("kind") != "model":
            raise checkpoint.CheckpointError(f"{run_dir / MODEL_FILE} is not a model checkpoint")
        try:
            model_cls = MODEL_CLASSES[ckpt["class"]]
            model = model_cls.from_config(ckpt["model_config"])
            model.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"{run_dir / MODEL_FILE} does not match this version of warpphys ({e})"
            ) from None
        try:
            info = json.loads(ckpt["info"])
            if not isinstance(info, dict) or "context" not in info:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise checkpoint.CheckpointError(
                f"{str(run_dir / MODEL_FILE)!r} has no run configuration of warpphys ('info' "
                f"is missing or not what `warpphys fit` writes); re-run `warpphys fit`"
            ) from None
        m = {}
        if (run_dir / METRICS_FILE).exists():  # the saved test metrics; nothing depends on them
            try:
                m = json.loads((run_dir / METRICS_FILE).read_text())
            except (OSError, ValueError) as e:
                warnings.warn(f"ignoring {run_dir / METRICS_FILE}, which cannot be read ({e})",
                              stacklevel=2)
        device = resolve_device(device)
        return cls(model.to(device).eval(), info, m, run_dir, device)


def save_model(fitted: FittedModel, run_dir: Path) -> None:
    checkpoint.save({
        "kind": "model",
        "class": type(fitted.model).__name__,
        "model_config": fitted.model.config(),
        "state_dict": {k: v.cpu() for k, v in fitted.model.state_dict().items()},
        "info": json.dumps(fitted.info, default=jsonable),
    }, run_dir / MODEL_FILE)
