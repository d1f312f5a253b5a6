"""The package's jobs as Python functions: ``fit``, ``load``, ``evaluate``, ``predict``.

    >>> from warpphys import api
    >>> run = api.fit(system="pendulum", epochs=5, out="runs/demo")   # doctest: +SKIP
    >>> run.metrics["test_mse"]                                        # doctest: +SKIP

The pieces they use live in their own modules and are re-exported here: the model registry and
option defaults (:mod:`warpphys.registry`), the fitted model (:mod:`warpphys.fitted`) and the run
directory's files (:mod:`warpphys.rundir`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import systems
from warpphys import distributed
from warpphys.checkpoint import CheckpointError
from warpphys.checkpoint import load as load_checkpoint
from warpphys.data import DataError, Trajectories
from warpphys.data import simulate as simulate_data
from warpphys.errors import RunError
from warpphys.fitted import FittedModel, extend_times, resolve_device, save_model
from warpphys.metrics import ESTIMATES, global_minmax, identifiable_ranges
from warpphys.registry import (
    BASE_OPTIONS,
    MODEL_CLASSES,
    MODELS,
    default_model,
    model_option_names,
    register_model,
    resolve_options,
)
from warpphys.rundir import (
    CONFIG_FILE,
    LAST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    check_run_dir,
    default_out,
    jsonable,
    prepare_run_dir,
    write_json,
)
from warpphys.train import TrainConfig, Trainer

__all__ = [
    "BASE_OPTIONS", "CONFIG_FILE", "LAST_FILE", "METRICS_FILE", "MODELS", "MODEL_CLASSES",
    "MODEL_FILE", "FittedModel", "RunError", "default_model", "evaluate", "extend_times", "fit",
    "load", "predict", "register_model", "resolve_device", "save_model",
]

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
    estimate: str | None = None,
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
        estimate: for models with physical parameters, the estimate that the run's headline
            metrics and figures use and that it keeps as its default: "refined" (default, the
            most accurate) or "amortised" (one forward pass); both are always reported.
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
    unknown = set(options) - set(BASE_OPTIONS) - model_option_names(model)
    if unknown:
        raise RunError(f"unknown options {sorted(unknown)} for model {model!r}")
    test_file = Trajectories.load(test_data, system=system) if test_data is not None else None
    run_dir = Path(out or default_out(system, data, model))
    check_run_dir(run_dir, force=force)  # created (or emptied) only once all inputs are valid
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
    opts = resolve_options(model, options, epochs)
    if estimate is not None and estimate not in ESTIMATES:
        raise RunError(f"unknown estimate {estimate!r}; choose one of: {', '.join(ESTIMATES)}")
    info = _run_info(system, data, model, protocol, seed, K, dev, opts, train, val, test)
    if estimate == "refined" and not MODELS[model](train.dim, _system(system), opts).has_params:
        raise RunError(f"model {model!r} has no physical parameters, so no refined estimate; "
                       "leave --estimate out (or use amortised)")
    if estimate is not None:
        info["estimate"] = estimate
    return _train_and_report(run_dir, info, train, val, test, dev, progress=progress,
                             figures=figures, max_seconds=max_seconds, force=force)


def _system(name: str | None):
    return systems.get_system(name) if name else None


def _default_context(system, train: Trajectories, data) -> int:
    if system is not None:
        proto = systems.get_system(system).default
        if proto.context is not None and proto.context < train.n_times and data is None:
            return proto.context
    return max(1, train.n_times // 4)


def _run_info(system, data, model, protocol, seed, K, dev, opts, train, val, test) -> dict:
    sys_ = systems.get_system(system) if system else None
    ranges, ident_ranges = {}, {}
    params = train.system_params(sys_) if sys_ is not None else None
    if params is not None:
        ranges = {n: [float(params[:, j].min()), float(params[:, j].max())]
                  for j, n in enumerate(sys_.param_names)}
        ident_ranges = identifiable_ranges(sys_, params)
    return {
        "model": model, "system": system, "data": None if data is None else str(data),
        "protocol": protocol, "seed": seed, "context": K, "device": dev, "options": opts,
        "window": float(train.t[-1] - train.t[0]), "n_steps": train.n_times,
        "dt": float(np.median(np.diff(train.t))),
        "state_names": list(train.state_names or (sys_.state_names if sys_ else [])),
        "param_names": list(sys_.param_names) if sys_ else list(train.param_names or []),
        "param_ranges": ranges, "identifiable_ranges": ident_ranges,
        "minmax": global_minmax(train.x), "n_train": train.n, "n_val": val.n, "n_test": test.n,
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
    net = MODELS[info["model"]](train.dim, sys_, opts)
    x_tr, t_tr = _tensors(train, dev)
    net.normalizer.fit(x_tr)
    net.window.fill_(info["window"])
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
            prepare_run_dir(run_dir, force=force)
    if main:
        write_json(info, run_dir / CONFIG_FILE)
    trainer = Trainer(net, cfg, run_dir, extra={"info": json.dumps(info, default=jsonable)},
                      device=dev, progress=progress)
    if resume_state is not None:
        trainer.restore(resume_state)
    params_tr = None
    if sys_ is not None and net.has_params:
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
    write_json(info, run_dir / CONFIG_FILE)
    fitted.metrics = fitted.evaluate(test)
    fitted.metrics["fit_seconds"] = hist.seconds
    fitted.metrics["train_status"] = hist.status
    write_json(fitted.metrics, run_dir / METRICS_FILE)
    if figures:
        from warpphys import report

        report.write_figures(fitted, test, run_dir / "figures", history=asdict(hist))
    return fitted


def _resume(run_dir: Path, *, device, progress, figures, max_seconds) -> FittedModel:
    if not (run_dir / CONFIG_FILE).exists() or not (run_dir / LAST_FILE).exists():
        raise RunError(f"{str(run_dir)!r} has no {CONFIG_FILE} and {LAST_FILE} to resume from")
    info = json.loads((run_dir / CONFIG_FILE).read_text())
    state = load_checkpoint(run_dir / LAST_FILE)
    if state.get("kind") != "training":
        raise CheckpointError(f"{run_dir / LAST_FILE} is not a training checkpoint")
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


def evaluate(run_dir, data, context: int | None = None, *, estimate: str | None = None) -> dict:
    """Metrics of a run on an .npz file; ``estimate`` ("refined" or "amortised", default the
    run's: the most accurate) decides the headline keys (see :meth:`FittedModel.evaluate`)."""
    fitted = load(run_dir)
    return fitted.evaluate(Trajectories.load(data, system=fitted.info.get("system")), context,
                           estimate=estimate)


def predict(run_dir, data, context: int, horizon: int, out, *,
            estimate: str | None = None) -> Trajectories:
    """Roll out a run on an .npz file and write ``x (N, K+H, d)`` with the input's keys;
    ``estimate`` as in :func:`evaluate` (models with physical parameters: the refined rollout by
    default)."""
    fitted = load(run_dir)
    traj = Trajectories.load(data, system=fitted.info.get("system"))
    x_hat = fitted.predict(traj, context, horizon, estimate=estimate)
    res = Trajectories(t=extend_times(traj.t, x_hat.shape[1]), x=x_hat, params=traj.params,
                       state_names=traj.state_names, param_names=traj.param_names,
                       system=traj.system)
    res.save(out)
    return res

