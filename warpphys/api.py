"""The package's jobs as Python functions: ``fit``, ``load``, ``evaluate``, ``predict``.

    >>> import warpphys
    >>> run = warpphys.fit(system="pendulum", epochs=5, out="runs/demo")   # doctest: +SKIP
    >>> run.metrics["test_mse"]                                             # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import systems
from warpphys import checkpoint, distributed, metrics
from warpphys.data import DataError, Trajectories
from warpphys.data import simulate as simulate_data
from warpphys.model import WARP
from warpphys.roots import MLPRoot
from warpphys.train import TrainConfig, Trainer

MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"
METRICS_FILE, LAST_FILE = "metrics.json", "last.pt"


class RunError(ValueError):
    """A run directory problem (exists already, missing, incompatible); says what to do."""


# -- models by name ----------------------------------------------------------------------------
def _build_warp(dim, system, opts, data_info):
    root = MLPRoot(dim, width=opts["width"], depth=opts["depth"])
    return WARP(dim, root, transition=opts["transition"], hyper_width=opts["hyper_width"],
                diff=opts["diff"], a_init=opts["a_init"])


_build_warp.options = {"diff": "input", "a_init": "identity"}


def _build_warp_phys(dim, system, opts, data_info):
    from warpphys.physics import ROOTS

    if system is None:
        raise RunError(
            "warp-phys needs the system's equations: pass --system NAME (or a file whose "
            "'system' key names one), or use --model warp"
        )
    kind = opts.get("root", "auto")
    if kind == "auto":
        kind = "closed_form" if hasattr(system, "generator_matrix") else "ode"
    if kind not in ROOTS:
        raise RunError(f"unknown physics root {kind!r}; choose one of {sorted(ROOTS)} or auto")
    kw = {"width": opts["width"], "depth": opts["depth"]}
    if kind in ("ode", "hybrid"):
        kw["substeps"] = opts.get("substeps", "auto")
    root = ROOTS[kind](system.name, **kw)
    a_init = opts["a_init"] if opts["transition"] == "dense" else "identity"  # filter bank: dense
    return WARP(dim, root, transition=opts["transition"], hyper_width=opts["hyper_width"],
                diff=opts["diff"], a_init=a_init, freeze_params=opts["freeze_params"])


_build_warp_phys.options = {"root": "auto", "substeps": "auto", "param_weight": 1.0,
                            "diff": "input", "a_init": "spectral", "parallel_warmup": 0.0,
                            "freeze_params": False}


#: model name -> builder(dim, system or None, options, data_info) -> nn.Module
MODELS = {"warp": _build_warp, "warp-phys": _build_warp_phys}
#: class name -> class with ``from_config`` (to rebuild saved models)
MODEL_CLASSES = {"WARP": WARP}


def register_model(name: str, builder, cls=None) -> None:
    MODELS[name] = builder
    if cls is not None:
        MODEL_CLASSES[cls.__name__] = cls


def default_model(system: str | None) -> str:
    """The physics-informed WARP whenever the system is known, else the black box."""
    return "warp-phys" if system is not None and "warp-phys" in MODELS else "warp"


# -- defaults sized for a 2-core CPU -----------------------------------------------------------
BASE_OPTIONS = {
    "width": 16, "depth": 2, "hyper_width": 64, "transition": "dense",
    "epochs": 30, "batch_size": 128, "lr": 2e-3, "lr_transition": 0.01, "mode": "autoregressive",
    "p_forcing_end": 0.0, "precision": "fp32",
}
SYSTEM_OPTIONS = {
    "pendulum": {},
    "spring_mass": {},
    "lotka_volterra": {},
}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise RunError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device


def extend_times(t: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` sample times, continuing ``t``'s last spacing past its end."""
    if length > len(t):
        t = np.concatenate([t, t[-1] + (t[-1] - t[-2]) * np.arange(1, length - len(t) + 1)])
    return t[:length]


# -- a fitted model ------------------------------------------------------------------------------
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

    model: torch.nn.Module
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
        t = torch.as_tensor(extend_times(traj.t, K + H), dtype=torch.float32, device=self.device)
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
        t = torch.as_tensor(traj.t[:K], dtype=torch.float64, device=self.device)
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
        t = torch.as_tensor(extend_times(traj.t, K + H), dtype=torch.float64, device=self.device)
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
        if getattr(self.model, "has_params", False):
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
        t = torch.as_tensor(traj.t[:K], dtype=torch.float32, device=self.device)
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
        import warpphys.physics  # noqa: F401  (registers the physics roots the model may use)

        try:
            model_cls = MODEL_CLASSES[ckpt["class"]]
            model = model_cls.from_config(ckpt["model_config"])
            model.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"{run_dir / MODEL_FILE} does not match this version of warpphys ({e})"
            ) from None
        info = json.loads(ckpt["info"])
        m = {}
        if (run_dir / METRICS_FILE).exists():
            m = json.loads((run_dir / METRICS_FILE).read_text())
        device = resolve_device(device)
        return cls(model.to(device).eval(), info, m, run_dir, device)


def _write_json(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, default=_jsonable)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def save_model(fitted: FittedModel, run_dir: Path) -> None:
    checkpoint.save({
        "kind": "model",
        "class": type(fitted.model).__name__,
        "model_config": fitted.model.config(),
        "state_dict": {k: v.cpu() for k, v in fitted.model.state_dict().items()},
        "info": json.dumps(fitted.info, default=_jsonable),
    }, run_dir / MODEL_FILE)


# -- the fit job ---------------------------------------------------------------------------------
def _split_file(traj: Trajectories, seed: int) -> tuple[Trajectories, Trajectories, Trajectories]:
    """Seeded 80/10/10 split of a user's file into train, validation and test trajectories."""
    if traj.n < 3:
        raise DataError(f"need at least 3 trajectories to train, validate and test; got {traj.n}")
    perm = np.random.default_rng(seed).permutation(traj.n)
    n_val = max(1, traj.n // 10)
    n_test = max(1, traj.n // 10)
    return (traj.subset(np.sort(perm[n_val + n_test:])), traj.subset(np.sort(perm[:n_val])),
            traj.subset(np.sort(perm[n_val:n_val + n_test])))


def _check_run_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse an --out that is a file, or a non-empty directory without ``force``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(
            f"--out {str(run_dir)!r} is a file, not a run directory; choose another --out"
        )
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise RunError(
            f"run directory {str(run_dir)!r} exists already; choose another --out, continue "
            f"it with --resume {run_dir}, or replace it with --force"
        )


def _prepare_run_dir(run_dir: Path, *, force: bool) -> Path:
    """Create the run directory (emptying it with ``force``); only once the inputs are valid."""
    _check_run_dir(run_dir, force=force)
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _default_out(system, data, model) -> Path:
    stem = system or Path(data).stem
    return Path("runs") / f"{stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(
    *,
    system: str | None = None,
    data: str | os.PathLike | None = None,
    model: str | None = None,
    epochs: int | None = None,
    context: int | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    force: bool = False,
    resume: str | os.PathLike | None = None,
    n_train: int | None = None,
    test_data: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    figures: bool = True,
    progress: bool = True,
    **options,
) -> FittedModel:
    """Train a model and write a run directory (config.json, model.pt, metrics.json, figures/).

    Args:
        system: a registered system. Alone, it simulates train/val/test data from the system's
            default protocol (test: wider parameter ranges, twice the training window).
        data: an .npz trajectory file (DESIGN.md format), split 80/10/10 into train/val/test
            with ``seed``; with ``system`` also given (or declared in the file) the physics
            is known.
        model: "warp-phys" (default when the system is known), "warp", or a registered baseline.
        epochs: training epochs (default 30). context: true steps fed before rolling out
            (default: the protocol's, else a quarter of the sequence).
        out: run directory (default ``runs/<system>-<model>-<time>``); must not exist unless
            ``force`` (replace it). resume: continue an interrupted run directory.
        device: "auto", "cpu" or "cuda". seed: seeds data, initialisation and batching.
        n_train: number of simulated training trajectories (with ``system`` alone).
        test_data: an .npz file to evaluate on instead of the held-out split.
        max_seconds: training time budget; figures/progress: write figures, show a progress bar.
        **options: model and training options: width, depth, hyper_width, transition
            (dense|diagonal|lowrank), batch_size, lr, mode (autoregressive|parallel),
            precision (fp32|tf32|bf16, of the training steps), and model-specific ones.
            Under ``torchrun`` (WORLD_SIZE > 1) training is data-parallel over the processes
            (see :mod:`warpphys.distributed`); only rank 0 writes the run directory.
    Returns:
        the FittedModel, with ``metrics`` on the test data.
    """
    if resume is not None:
        return _resume(Path(resume), device=device, progress=progress, figures=figures,
                       max_seconds=max_seconds)
    if system is None and data is None:
        raise RunError("name a system with --system or a data file with --data")
    if system is not None and system not in systems.names():
        raise RunError(f"unknown system {system!r}; choose one of: {', '.join(systems.names())}")
    traj_all = Trajectories.load(data, system=system) if data is not None else None
    if system is None and traj_all is not None and traj_all.system is not None:
        system = traj_all.system
    model = model or default_model(system)
    if model not in MODELS:
        raise RunError(f"unknown model {model!r}; choose one of: {', '.join(sorted(MODELS))}")
    unknown = set(options) - set(BASE_OPTIONS) - _model_option_names(model)
    if unknown:
        raise RunError(f"unknown options {sorted(unknown)} for model {model!r}")
    test_file = Trajectories.load(test_data, system=system) if test_data is not None else None
    run_dir = Path(out or _default_out(system, data, model))
    _check_run_dir(run_dir, force=force)  # created (or emptied) only once all inputs are valid
    dev = resolve_device(device)
    torch.manual_seed(seed)

    # data
    if traj_all is not None:
        train, val, test = _split_file(traj_all, seed)
        protocol = None
    else:
        proto = systems.get_system(system).default
        train = simulate_data(system, n_train or proto.n_train, "train", seed)
        val = simulate_data(system, proto.n_val, "val", seed)
        test = simulate_data(system, proto.n_test, "test", seed)
        protocol = proto.name
    if test_file is not None:
        test = test_file
    K = context if context is not None else _default_context(system, train, data)
    if not 1 <= K < train.n_times:
        raise DataError(
            f"--context {K} must be at least 1 and smaller than the sequence length "
            f"T = {train.n_times}"
        )
    opts = {**BASE_OPTIONS, **getattr(MODELS[model], "options", {}),
            **SYSTEM_OPTIONS.get(system or "", {}), **options}
    if epochs is not None:
        opts["epochs"] = int(epochs)
    info = _run_info(system, data, model, protocol, seed, K, dev, opts, train, val, test)
    return _train_and_report(run_dir, info, train, val, test, dev, progress=progress,
                             figures=figures, max_seconds=max_seconds, force=force)


def _model_option_names(model: str) -> set:
    extra = getattr(MODELS[model], "options", {})
    return set(extra)


def _default_context(system, train: Trajectories, data) -> int:
    if system is not None:
        proto = systems.get_system(system).default
        if proto.context is not None and proto.context < train.n_times and data is None:
            return proto.context
    return max(1, train.n_times // 4)


def _run_info(system, data, model, protocol, seed, K, dev, opts, train, val, test) -> dict:
    sys_ = systems.get_system(system) if system else None
    ranges = {}
    params = train.system_params(sys_) if sys_ is not None else None
    if params is not None:
        ranges = {n: [float(params[:, j].min()), float(params[:, j].max())]
                  for j, n in enumerate(sys_.param_names)}
    return {
        "model": model, "system": system, "data": None if data is None else str(data),
        "protocol": protocol, "seed": seed, "context": K, "device": dev, "options": opts,
        "window": float(train.t[-1] - train.t[0]), "n_steps": train.n_times,
        "dt": float(np.median(np.diff(train.t))),
        "state_names": list(train.state_names or (sys_.state_names if sys_ else [])),
        "param_names": list(sys_.param_names) if sys_ else list(train.param_names or []),
        "param_ranges": ranges, "n_train": train.n, "n_val": val.n, "n_test": test.n,
        "state_mean": train.x.reshape(-1, train.dim).mean(0).tolist(),
        "state_std": train.x.reshape(-1, train.dim).std(0).clip(1e-8).tolist(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def _tensors(traj: Trajectories, dev: str):
    return (torch.as_tensor(traj.x, dtype=torch.float32, device=dev),
            torch.as_tensor(traj.t, dtype=torch.float32, device=dev))


def _on_every_rank(train_and_report):
    """Under torchrun, join the process group for the training job (and leave it after)."""
    @functools.wraps(train_and_report)
    def wrapper(run_dir, info, train, val, test, dev, **kw):
        dev, started = distributed.init_from_env(dev)
        try:
            info = {**info, "world_size": distributed.world_size()}
            return train_and_report(run_dir, info, train, val, test, dev, **kw)
        finally:
            if started:
                distributed.shutdown()
    return wrapper


@_on_every_rank
def _train_and_report(run_dir, info, train, val, test, dev, *, progress, figures, max_seconds,
                      resume_state=None, force=False) -> FittedModel:
    sys_ = systems.get_system(info["system"]) if info["system"] else None
    opts = info["options"]
    torch.manual_seed(info["seed"])
    net = MODELS[info["model"]](train.dim, sys_, opts, info)
    x_tr, t_tr = _tensors(train, dev)
    net.normalizer.fit(x_tr)
    net.window.fill_(info["window"])
    if hasattr(net, "fit_data_scales"):
        net.fit_data_scales(train, sys_)
    net.to(dev)
    cfg = TrainConfig(
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
        context=info["context"], mode=opts["mode"], seed=info["seed"], max_seconds=max_seconds,
        **{k: opts[k] for k in ("param_weight", "lr_transition", "p_forcing_end",
                                "parallel_warmup", "precision") if k in opts},
    )
    main = distributed.is_main()  # rank 0 alone writes the run directory
    if resume_state is None:
        distributed.barrier()  # every rank has checked --out before rank 0 creates it
        if main:
            _prepare_run_dir(run_dir, force=force)
    if main:
        _write_json(info, run_dir / CONFIG_FILE)
    trainer = Trainer(net, cfg, run_dir, extra={"info": json.dumps(info, default=_jsonable)},
                      device=dev, progress=progress)
    if resume_state is not None:
        trainer.restore(resume_state)
    params_tr = None
    if sys_ is not None and getattr(net, "has_params", False):
        p = train.system_params(sys_)
        params_tr = None if p is None else torch.as_tensor(p, dtype=torch.float32, device=dev)
    xn_tr = net.normalizer.encode(x_tr)
    x_va, t_va = _tensors(val, dev)
    hist = trainer.fit(xn_tr, t_tr, net.normalizer.encode(x_va), t_va, params_tr)
    if hist.status == "diverged":
        warnings.warn(hist.message, stacklevel=2)
    info = {**info, "fit_seconds": hist.seconds, "status": hist.status,
            "status_message": hist.message, "epochs_run": len(hist.epoch),
            "best_val_mse": trainer.best_val if math.isfinite(trainer.best_val) else None}
    fitted = FittedModel(net.eval(), info, {}, run_dir, dev)
    if not main:
        return fitted
    save_model(fitted, run_dir)
    _write_json(info, run_dir / CONFIG_FILE)
    fitted.metrics = fitted.evaluate(test)
    fitted.metrics["fit_seconds"] = hist.seconds
    fitted.metrics["train_status"] = hist.status
    _write_json(fitted.metrics, run_dir / METRICS_FILE)
    if figures:
        from warpphys import report

        report.write_figures(fitted, test, run_dir / "figures", history=asdict(hist))
    return fitted


def _resume(run_dir: Path, *, device, progress, figures, max_seconds) -> FittedModel:
    if not (run_dir / CONFIG_FILE).exists() or not (run_dir / LAST_FILE).exists():
        raise RunError(f"{str(run_dir)!r} has no {CONFIG_FILE} and {LAST_FILE} to resume from")
    info = json.loads((run_dir / CONFIG_FILE).read_text())
    state = checkpoint.load(run_dir / LAST_FILE)
    if state.get("kind") != "training":
        raise checkpoint.CheckpointError(f"{run_dir / LAST_FILE} is not a training checkpoint")
    if info["data"] is not None:
        traj = Trajectories.load(info["data"], system=info["system"])
        train, val, test = _split_file(traj, info["seed"])
    else:
        proto = systems.get_system(info["system"]).default
        seed = info["seed"]
        train = simulate_data(info["system"], info["n_train"], "train", seed)
        val = simulate_data(info["system"], proto.n_val, "val", seed)
        test = simulate_data(info["system"], proto.n_test, "test", seed)
    dev = resolve_device(device)
    return _train_and_report(run_dir, info, train, val, test, dev, progress=progress,
                             figures=figures, max_seconds=max_seconds, resume_state=state)


# -- convenience ---------------------------------------------------------------------------------
def load(run_dir, device: str = "cpu") -> FittedModel:
    """Load a run directory (see :meth:`FittedModel.load`)."""
    return FittedModel.load(run_dir, device)


def evaluate(run_dir, data, context: int | None = None) -> dict:
    """Metrics of a run on an .npz file."""
    fitted = load(run_dir)
    return fitted.evaluate(Trajectories.load(data, system=fitted.info.get("system")), context)


def predict(run_dir, data, context: int, horizon: int, out) -> Trajectories:
    """Roll out a run on an .npz file and write ``x (N, K+H, d)`` with the input's keys."""
    fitted = load(run_dir)
    traj = Trajectories.load(data, system=fitted.info.get("system"))
    x_hat = fitted.predict(traj, context, horizon)
    res = Trajectories(t=extend_times(traj.t, x_hat.shape[1]), x=x_hat, params=traj.params,
                       state_names=traj.state_names, param_names=traj.param_names,
                       system=traj.system)
    res.save(out)
    return res


# the baselines (gru, lstm, transformer, node, classical) register themselves in MODELS and
# MODEL_CLASSES; imported last because they build on this module
import warpphys.baselines  # noqa: E402,F401  isort: skip
