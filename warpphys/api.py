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
import numbers
import os
import platform
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

import systems
from systems import simulate as integrate
from warpphys import _threads, distributed, rundir
from warpphys.checkpoint import CheckpointError
from warpphys.checkpoint import load as load_checkpoint
from warpphys.data import DataError, Trajectories, fastest_rate
from warpphys.data import simulate as simulate_data
from warpphys.errors import RunError, WarpphysError
from warpphys.fitted import (
    MIN_PARAM_CONTEXT,
    FittedModel,
    check_model_data,
    check_param_context,
    extend_times,
    relative_times,
    resolve_device,
    save_model,
)
from warpphys.limits import ResourceError, check_memory
from warpphys.metrics import ESTIMATES, global_minmax, identifiable_ranges
from warpphys.registry import (
    BASE_OPTIONS,
    FIXED_OPTIONS,
    IGNORED_OPTIONS,
    MODEL_CLASSES,
    MODELS,
    default_model,
    head_loss_steps,
    model_option_names,
    register_model,
    resolve_options,
)
from warpphys.rundir import (
    CONFIG_FILE,
    LAST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_ENTRIES,
    check_out_file,
    check_run_dir,
    default_out,
    jsonable,
    prepare_run_dir,
    staging_dir,
    swap_in,
    write_json,
)
from warpphys.train import TrainConfig, Trainer, checkpoint_count

#: the options that are training settings
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"context", "seed", "max_seconds", "keep"}

__all__ = [
    "BASE_OPTIONS", "CONFIG_FILE", "LAST_FILE", "METRICS_FILE", "MODELS", "MODEL_CLASSES",
    "MODEL_FILE", "FittedModel", "RunError", "default_model", "evaluate", "extend_times", "fit",
    "load", "predict", "register_model", "resolve_device", "save_model",
]

# -- the fit job ---------------------------------------------------------------------------------
#: data files with fewer trajectories (after any cut into windows) are warned of
MIN_TRAIN_FILE = 8


def _split_file(traj: Trajectories, seed: int) -> tuple[Trajectories, Trajectories, Trajectories]:
    """Seeded 80/10/10 split of a user's file into train, validation and test trajectories.
    A file of fewer than 3 trajectories (one long measurement) is first cut into about 10
    consecutive windows (:meth:`Trajectories.windows`), with a warning."""
    if traj.n < 3:
        n = traj.n
        traj = traj.windows(-(-10 // n))
        warnings.warn(f"{n} trajectories are too few to split: cut into {traj.n} windows of "
                      f"{traj.n_times} steps for training, validation and test", stacklevel=2)
    if traj.n < MIN_TRAIN_FILE:
        warnings.warn(f"--data holds only {traj.n} trajectories: too few to learn dynamics "
                      f"from, or to test on; expect poor, noisy metrics", stacklevel=2)
    distinct = len(np.unique(traj.x.reshape(traj.n, -1), axis=0))
    if distinct < traj.n:  # (copies may land in training and test both)
        warnings.warn(f"{traj.n - distinct} of the {traj.n} trajectories repeat others exactly: "
                      f"copies may fall into both the training and the test split, so that "
                      f"the test metrics flatter the model; drop the repeats", stacklevel=2)
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
    seed: int | None = None,
    force: bool = False,
    resume: str | os.PathLike | None = None,
    n_train: int | None = None,
    test_data: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    figures: bool = True,
    progress: bool = True,
    param_names: dict[str, str] | None = None,
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
        epochs: training epochs (default: the model's, e.g. 160 for warp-phys, 30 for warp).
        context: true steps fed before rolling out (default: the protocol's, else a quarter of
            the sequence).
        out: run directory (default ``runs/<system>-<model>-<time>``); must not exist unless
            ``force`` (replace a run directory of warpphys, only once the new run has
            succeeded; never another folder). resume: continue an interrupted run
            directory, with nothing else but ``epochs`` (train longer), ``device``,
            ``max_seconds``, ``figures`` and ``progress``.
        device: "auto", "cpu" or "cuda". seed: seeds data, initialisation and batching
            (default 0).
        n_train: number of simulated training trajectories (with ``system`` alone).
        test_data: an .npz file to evaluate on instead of the held-out split.
        max_seconds: training time budget; figures/progress: write figures, show a progress bar.
        param_names: ``{name in the data file: the system's parameter name}``, for files whose
            parameter columns carry their own names (recorded in the run's config as
            ``param_name_map``; ``evaluate`` and ``resume`` apply it).
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
        given = {"--system": system, "--data": data, "--model": model, "--context": context,
                 "--out": out, "--seed": seed, "--n-train": n_train, "--test-data": test_data,
                 "--force": force or None, "--param-name": param_names or None,
                 "--estimate": estimate,
                 **{f"--{k.replace('_', '-')}": v for k, v in options.items()}}
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise RunError(
                f"--resume continues {str(resume)!r} with the options it was made with; "
                f"{', '.join(extra)} cannot change on resume (allowed: --epochs to train longer, "
                f"--max-minutes, --device); to change them start a new run with --out"
            )
        _check_switches(figures=figures, progress=progress)
        _check_path("resume", resume)
        return _resume(Path(resume), epochs=epochs, device=device, progress=progress,
                       figures=figures, max_seconds=max_seconds)
    seed = 0 if seed is None else seed
    counts = {"epochs": epochs, "context": context, "n_train": n_train}
    _check_switches(force=force, figures=figures, progress=progress)
    _check_run_options(seed, max_seconds, {**options, **counts})
    seed, options = int(seed), _whole_numbers(options)
    counts = _whole_numbers(counts)
    epochs, context, n_train = counts["epochs"], counts["context"], counts["n_train"]
    if estimate is not None and estimate not in ESTIMATES:
        raise RunError(f"unknown estimate {estimate!r}; choose one of: {', '.join(ESTIMATES)}")
    if system is None and data is None:
        raise RunError("name a system with --system or a data file with --data")
    for key, path in (("data", data), ("test_data", test_data)):
        _check_path(key, path)
    if system is not None and system not in systems.names():
        raise RunError(systems.unknown_system_message(system))
    if param_names and data is None:
        raise RunError("--param-name renames the parameters of a --data file; pass --data FILE")
    if n_train is not None and data is not None:
        raise RunError("--n-train sets how many training trajectories are simulated, but "
                       "--data gives them; leave --n-train out (or drop --data)")
    traj_all = (Trajectories.load(data, system=system, param_names=param_names)
                if data is not None else None)
    if system is None and traj_all is not None and traj_all.system is not None:
        system = traj_all.system
    model = model or default_model(system)
    if model not in MODELS:
        raise RunError(f"unknown model {model!r}; choose one of: {', '.join(sorted(MODELS))}")
    unknown = set(options) - set(BASE_OPTIONS) - model_option_names(model)
    if unknown:
        def named(key):  # as the Python keyword and, where there is one, the command's flag
            flag = "--no-fresh-data" if key == "fresh_data" else "--" + key.replace("_", "-")
            takers = [m for m in sorted(MODELS) if key in model_option_names(m)]
            return f"{key} ({flag}; {'for ' + ', '.join(takers) if takers else 'no model'})"

        raise RunError(f"model {model!r} takes no option "
                       f"{', '.join(named(k) for k in sorted(unknown))}; leave it out, or choose "
                       f"a model that takes it")
    unread = sorted((set(options) | ({"epochs"} if epochs is not None else set()))
                    & IGNORED_OPTIONS.get(model, set()))
    if unread:
        flags = ", ".join("--" + k.replace("_", "-") for k in unread)
        warnings.warn(f"model {model!r} does not use {flags} (they size or train other "
                      f"models): ignored", stacklevel=2)
        options = {k: v for k, v in options.items() if k not in unread}
    test_file = Trajectories.load(test_data, system=system) if test_data is not None else None
    if test_file is not None:
        test_file = test_file.rename_params(param_names, system, strict=False)
    sys_ = systems.get_system(system) if system else None
    for what, path, traj in (("--data", data, traj_all), ("--test-data", test_data, test_file)):
        if traj is not None:
            check_model_data(traj, sys_, f"{what} {str(path)!r}")
    if traj_all is not None and not np.diff(traj_all.x, axis=1).any():
        raise DataError(f"--data {str(data)!r}: no trajectory changes over time (each state is "
                        f"constant along every trajectory), so there are no dynamics to learn; "
                        f"check that x is ordered (trajectories, time, state)")
    _check_path("out", out)
    if out is not None and not str(out).strip():
        raise RunError("out (--out) is empty: name the run directory to write, or leave it "
                       "out for runs/<system>-<model>-<time>")
    run_dir = Path(out if out is not None else default_out(system, data, model))
    check_run_dir(run_dir, force=force)  # nothing is changed before the new run has succeeded
    dev = resolve_device(device)
    torch.manual_seed(seed)

    # data
    if traj_all is not None:
        train, val, test = _split_file(traj_all, seed)
        protocol = None
    else:
        proto = systems.get_system(system).default
        if n_train is not None and n_train < MIN_TRAIN_FILE:
            warnings.warn(f"--n-train {n_train}: too few trajectories to learn dynamics from; "
                          f"expect poor metrics", stacklevel=2)
        train = simulate_data(system, n_train or proto.n_train, "train", seed)
        val = simulate_data(system, proto.n_val, "val", seed)
        test = simulate_data(system, proto.n_test, "test", seed)
        protocol = proto.name
    if test_file is not None:
        if test_file.dim != train.dim:
            raise DataError(
                f"--test-data {str(test_data)!r} has state size d = {test_file.dim}, the "
                f"training data d = {train.dim}"
            )
        test = test_file
    K = context if context is not None else _default_context(system, train, data)
    # (a file of one or two trajectories is cut into windows: say so where their length counts)
    cut = (f" (the {traj_all.n} trajectories of {traj_all.n_times} steps in --data are cut into "
           f"windows of {train.n_times} steps, to be split into training, validation and test; "
           f"give at least 3 trajectories to keep them whole)"
           if traj_all is not None and traj_all.n < 3 else "")
    for what, traj in (("", train), ("--test-data ", test_file)):
        if traj is not None and not 1 <= K < traj.n_times:
            raise DataError(
                f"--context {K} must be at least 1 and smaller than the sequence length "
                f"T = {traj.n_times}" + (f" of {what}{str(test_data)!r}" if what else cut)
            )
    opts = resolve_options(model, options, epochs)
    source = fresh_source(opts, protocol, train, sys_)  # decided once, kept in config.json
    if "loss_steps" in opts:
        opts["loss_steps"] = head_loss_steps(opts["loss_steps"], fresh=source is not None)
    if source is not None:  # one epoch's fresh trajectories, float32, with the solver's stages
        n_fresh = int(opts.get("fresh_n") or train.n)
        check_memory(4.0 * 8 * n_fresh * train.n_times * train.dim,
                     f"fresh_n={n_fresh} trajectories per epoch of {train.n_times} steps",
                     "train on the data alone (--no-fresh-data; fresh_data=False in Python), "
                     "or give shorter trajectories")
    has_params = _check_model_size(model, train, sys_, opts)
    if context is None and has_params and K < MIN_PARAM_CONTEXT:
        raise DataError(
            f"the data have {train.n_times} time steps, too few for model {model!r}: its "
            f"default context, a quarter of them ({K}), must hold at least {MIN_PARAM_CONTEXT} "
            f"steps to read physical parameters; give longer trajectories"
            + (f", or --context {MIN_PARAM_CONTEXT}" if train.n_times > MIN_PARAM_CONTEXT
               else "") + cut)
    check_param_context(K, has_params, f"model {model!r}")
    if estimate == "refined" and not has_params:
        raise RunError(f"model {model!r} has no physical parameters, so no refined "
                       "estimate; leave --estimate out (or use amortised)")
    info = _run_info(system, data, model, protocol, seed, K, dev, opts, train, val, test)
    info["param_name_map"] = dict(param_names or {})
    for key, path in (("data", data), ("test_data", test_data)):  # (what a resume checks)
        if path is not None:
            info[f"{key}_file"] = {"path": os.path.abspath(Trajectories.path_of(path)),
                                   "sha256": rundir.file_digest(Trajectories.path_of(path))}
    if test_data is not None and info["test_data_file"]["sha256"] == info["data_file"]["sha256"]:
        warnings.warn(f"--test-data {str(test_data)!r} holds the same trajectories as --data: "
                      f"the model is trained on the ones it is tested on, so its test metrics "
                      f"say how well it fits, not how well it predicts new data",
                      stacklevel=2)
    info["fresh_data"] = source
    if source is not None:
        lo_hi = fresh_ranges(sys_, *_source_ranges(sys_, train if source == "file" else None),
                             widen=float(opts.get("fresh_widen", 0.0)))
        info["fresh_ranges"] = {p.name: [lo, hi]
                                for p, (lo, hi) in zip(sys_.params, lo_hi, strict=True)}
    if estimate is not None:
        info["estimate"] = estimate
    info.update(test_data=None if test_data is None else str(test_data), max_seconds=max_seconds)
    build = staging_dir(run_dir, force=force)  # the old run stays until the new one is done
    try:
        fitted = _train_and_report(build, info, train, val, test, dev, progress=progress,
                                   figures=figures, max_seconds=max_seconds, force=force)
    except KeyboardInterrupt:
        raise _interrupted(build, run_dir) from None
    except BaseException:
        if build != run_dir:
            shutil.rmtree(build, ignore_errors=True)
        raise
    if build != run_dir and fitted.info.get("status") == "diverged":
        # --force swaps a run in only once it has succeeded: a diverged one replaces nothing
        shutil.rmtree(build, ignore_errors=True)
        raise RunError(f"training diverged ({fitted.info.get('status_message')}), so "
                       f"{str(run_dir)!r}, which --force would have replaced, is unchanged; "
                       f"fit into a new --out to look at the diverged run")
    swap_in(build, run_dir)
    fitted.run_dir = run_dir
    return fitted


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fit; the message says where the last checkpoint is and how to resume."""


def _interrupted(build: Path, run_dir: Path) -> FitInterrupted:
    if not (build / LAST_FILE).exists():
        if build != run_dir:
            shutil.rmtree(build, ignore_errors=True)
        else:  # (a new or empty folder: what the run wrote so far, nothing to resume from)
            for name in RUN_ENTRIES:
                entry = run_dir / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        kept = f"; {str(run_dir)!r} is unchanged" if build != run_dir else ""
        return FitInterrupted(f"interrupted before the first checkpoint was written (nothing "
                              f"to resume){kept}")
    kept = (f" (the run {str(run_dir)!r} you asked to replace is unchanged)"
            if build != run_dir else "")
    return FitInterrupted(
        f"interrupted; the last checkpoint is {str(build / LAST_FILE)!r}{kept}: continue with "
        f"`warpphys fit --resume {build}`"
    )


#: options that count something, and their least value
INTEGER_OPTIONS = {"epochs": 1, "batch_size": 1, "val_every": 1, "width": 1, "depth": 1,
                   "hyper_width": 1, "state_size": 2, "head_width": 1, "head_depth": 1,
                   "fresh_n": 0, "loss_steps": 0, "context": 1, "n_train": 1, "substeps": 1,
                   "train_steps": 1, "patience": 0, "hidden": 1, "layers": 1, "heads": 1,
                   "d_model": 1, "ff": 1, "node_width": 1, "node_depth": 1, "augment": 0,
                   "encoder_width": 1, "max_nfev": 1}
#: the most a counting option may be: depths (a deeper network is only a slower build to
#: refuse), else 2**31 (beyond, torch's sizes overflow)
INTEGER_MAX = {"depth": 100, "head_depth": 100, "layers": 100, "node_depth": 100}
MAX_COUNT = 2**31
#: counting options that also take "auto" (chosen from the data)
AUTO_OPTIONS = ("loss_steps", "substeps", "train_steps", "hidden")


#: options that are fractions, factors or weights: their least and largest values, and what
#: they mean
BOUNDED_OPTIONS = {
    "context_share": (0.0, 1.0, "the share of batches scored at the end of the context"),
    "fresh_widen": (0.0, 4.0, "how far fresh parameter ranges reach past the data's, in "
                              "spans"),
    "fresh_noise": (0.0, 1.0, "a share of each state's standard deviation, e.g. 0.01"),
    "p_forcing_end": (0.0, 1.0, "the probability of feeding the true state at the end"),
    "parallel_warmup": (0.0, 1.0, "the share of the epochs trained teacher-forced first"),
    "param_weight": (0.0, 1e6, "the weight of the parameter loss"),
    "bound": (1e-6, 1e6, "how many training standard deviations a state may leave"),
    "log_floor": (1e-12, 1.0, "the height above zero, in training stds, below which a "
                              "population's log is not read"),
}
#: options that are switches: True or False, nothing else (a string "no" would read as True)
BOOLEAN_OPTIONS = ("freeze_params", "fresh_data", "adjoint")


def _whole_numbers(options: dict) -> dict:
    """``options`` with its counting values as Python ints (numpy integers are welcome, and
    config.json stays plain JSON); call after :func:`_check_run_options`."""
    def plain(k, v):  # (and fractions or numpy floats as Python floats)
        if k in INTEGER_OPTIONS and isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, numbers.Real) and not isinstance(v, bool | numbers.Integral):
            return float(v)
        return v

    return {k: plain(k, v) for k, v in options.items()}


#: the least learning rate (a denormal one, 1e-320, trained nothing and reported "completed")
MIN_LR = 1e-12


def _check_switches(**switches) -> None:
    """Refuse a switch of ``fit`` that is not True or False (the string "no" reads as True)."""
    for key, value in switches.items():
        if not isinstance(value, bool | np.bool_):
            raise RunError(f"{key} must be True or False, got {value!r}")


def _check_run_options(seed, max_seconds, options: dict) -> None:
    """Refuse a seed, time budget or learning rate that cannot give a meaningful run."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise RunError(f"--seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    if max_seconds is not None and (isinstance(max_seconds, bool)
                                    or not isinstance(max_seconds, numbers.Real)):
        raise RunError(f"the time budget (max_seconds) must be a number of seconds, got "
                       f"{type(max_seconds).__name__} {max_seconds!r}")
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise RunError(f"the time budget (--max-minutes) must be a positive number, got "
                       f"{max_seconds / 60 if math.isfinite(max_seconds) else max_seconds}")
    for key, low in INTEGER_OPTIONS.items():
        value = options.get(key)
        if value is None or (key in AUTO_OPTIONS and value == "auto"):
            continue
        high = INTEGER_MAX.get(key, MAX_COUNT)
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low
                or value > high):
            auto = " or 'auto'" if key in AUTO_OPTIONS else ""
            raise RunError(f"{key} must be a whole number from {low} to {high:,}{auto}, got "
                           f"{value!r}")
    for key, (low, high, what) in BOUNDED_OPTIONS.items():
        value = options.get(key)
        if value is not None and not (isinstance(value, numbers.Real)
                                      and not isinstance(value, bool) and low <= value <= high):
            raise RunError(f"{key} must be a number from {low:g} to {high:g} ({what}), "
                           f"got {value!r}")
    for key in BOOLEAN_OPTIONS:
        value = options.get(key)
        if value is not None and not isinstance(value, bool | np.bool_):
            raise RunError(f"{key} must be True or False, got {value!r}")
    for key in ("lr", "lr_transition"):  # (lr_transition 0: A stays as initialised)
        value = options.get(key)
        if value is not None and not (isinstance(value, numbers.Real)
                                      and not isinstance(value, bool) and math.isfinite(value)
                                      and (value >= MIN_LR
                                           or key == "lr_transition" and value == 0)):
            got = (f"the text {value!r} (convert it with float())" if isinstance(value, str)
                   else f"{type(value).__name__} {value!r}")
            raise RunError(f"--{key.replace('_', '-')} must be a positive finite learning "
                           f"rate of at least {MIN_LR:g}, e.g. 1e-3; got {got}")


def _check_model_size(model: str, train: Trajectories, sys_, opts: dict) -> bool:
    """Refuse a model too big for this machine before building it (counted on the meta
    device, which allocates nothing); returns whether it has physical parameters."""
    sizes = f"--model {model} with --width {opts['width']}, --depth {opts['depth']}"
    try:
        with torch.device("meta"):
            net = MODELS[model](train.dim, sys_, opts)
        n_weights = sum(p.numel() for p in net.parameters())
    except WarpphysError:
        raise
    except ValueError as e:  # an option the model refuses (e.g. lift="log" for a pendulum)
        raise RunError(f"--model {model}: {e}") from None
    except RuntimeError as e:
        if "overflow" not in str(e):
            raise
        raise ResourceError(f"{sizes} would have more weights than memory can hold; use a "
                            f"smaller --width or --depth") from None
    # weights, gradients, Adam's two moments and the best and last good copies: 6 float32 each,
    # and the backward's temporaries (a 500-state file peaked at 1.2x the 24 bytes): 32 bytes
    check_memory(32.0 * n_weights, f"{sizes} ({n_weights:.3g} weights)",
                 "use a smaller --width or --depth")
    return bool(getattr(net, "has_params", False))


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
            relative_times(traj.t, torch.float32, dev))


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
    # every option that names a training setting (TrainConfig's fields), and the run's own
    # (runs saved before the source was recorded had fresh data from their protocol only)
    legacy = "protocol" if opts.get("fresh_data") and info["protocol"] is not None else None
    source = info.get("fresh_data", legacy)
    cfg = TrainConfig(**{k: v for k, v in opts.items() if k in TRAIN_FIELDS},
                      context=info["context"], seed=info["seed"], max_seconds=max_seconds)
    if source is not None and cfg.schedule == "cosine":
        cfg.keep = "last"  # never the same data twice: the annealed end, not a noisy best
    # a second thread pays for a large dense recurrence on an idle core (--threads, or
    # OMP_NUM_THREADS, keep what the user chose)
    _threads.adapt(net.step_gemm_flops(cfg.batch_size))
    main = distributed.is_main()  # rank 0 alone writes the run directory
    if resume_state is None:
        distributed.barrier()  # every rank has checked --out before rank 0 creates it
        if main:
            prepare_run_dir(run_dir, force=force)
    if main and resume_state is None:
        write_json(info, run_dir / CONFIG_FILE)
    trainer = Trainer(net, cfg, run_dir, extra={"info": json.dumps(info, default=jsonable)},
                      device=dev, progress=progress)
    if resume_state is not None:
        trainer.restore(resume_state)  # (a damaged checkpoint stops here, the run unchanged)
        if main:
            write_json(info, run_dir / CONFIG_FILE)
    params_tr = None
    if sys_ is not None and net.has_params:
        p = train.system_params(sys_)
        params_tr = None if p is None else torch.as_tensor(p, dtype=torch.float32, device=dev)
    steps = _train_steps(opts, info["context"], t_tr.shape[0])
    xn_tr, t_tr = net.normalizer.encode(x_tr)[:, :steps], t_tr[:steps]
    x_va, t_va = _tensors(val, dev)
    resample = None
    if source is not None:
        resample = _fresh_training_data(info, net, sys_, dev, steps,
                                        train if source == "file" else None)
    hist = trainer.fit(xn_tr, t_tr, net.normalizer.encode(x_va), t_va, params_tr,
                       resample=resample)
    if hist.status == "diverged":
        warnings.warn(hist.message, stacklevel=2)
    info = {**info, "fresh_data": source, "fit_seconds": hist.seconds, "status": hist.status,
            "status_message": hist.message, "epochs_run": len(hist.epoch),
            "best_val_mse": trainer.best_val if math.isfinite(trainer.best_val) else None,
            "kept_weights": cfg.keep}  # best_val_mse: the kept weights' validation MSE
    fitted = FittedModel(net.eval(), info, {}, run_dir, dev)
    if not main:
        return fitted
    save_model(fitted, run_dir)
    write_json(info, run_dir / CONFIG_FILE)
    forecasts = fitted.forecasts(test)  # computed once, for the metrics and the figures
    fitted.metrics = fitted.score(test, forecasts, fitted.context)
    fitted.metrics["fit_seconds"] = hist.seconds
    fitted.metrics["train_status"] = hist.status
    write_json(fitted.metrics, run_dir / METRICS_FILE)
    if figures:
        from warpphys import report

        report.write_figures(fitted, test, run_dir / "figures", history=asdict(hist),
                             forecasts=forecasts)
    return fitted


def _train_steps(opts: dict, context: int, n_times: int) -> int:
    """How many leading steps of each training trajectory the training loss sees: all, or with
    ``train_steps="auto"`` for a read-out head trained in parallel, twice the context (the
    estimates of contexts from half to twice the default's; the known physics does the rest)."""
    steps = opts.get("train_steps", 0)
    if steps == "auto":
        steps = 2 * context if opts.get("readout") == "head" and opts["mode"] == "parallel" else 0
    steps = int(steps)
    return n_times if steps <= 0 else max(min(steps, n_times), context + 1)


def fresh_source(opts: dict, protocol, train, sys_) -> str | None:
    """Where a run's fresh training trajectories come from: ``"protocol"`` (the system's
    simulator made the training set: its protocol), ``"file"`` (a file of a known system that
    gives every trajectory's parameters: the same physics over the file's parameter ranges,
    from its initial states), or None (``fresh_data=False``, no physics or no parameters)."""
    if not opts.get("fresh_data") or sys_ is None:
        return None
    if protocol is not None:
        return "protocol"
    params = train.system_params(sys_)
    if params is None or not np.all(np.isfinite(params)) or np.any(params < 0):
        return None
    if _fresh_solver(sys_, *_source_ranges(sys_, train)) is None:
        warnings.warn(f"the file's parameter ranges make {sys_.name} too fast to simulate "
                      "fresh training data cheaply: training on the file alone", stacklevel=3)
        return None
    return "file"


#: most RK4 substeps per sample interval for fresh training data (else the file alone)
MAX_FRESH_SUBSTEPS = 64


def _file_ranges(train, sys_) -> list:
    params = train.system_params(sys_)
    return list(zip(params.min(0).tolist(), params.max(0).tolist(), strict=True))


def _source_ranges(sys_, train=None, steps=None):
    """(parameter ranges, a few initial states, sample times) of the data fresh trajectories
    imitate: the system's default protocol, or ``train`` (a file's Trajectories)."""
    if train is None:
        proto = sys_.default  # what simulate_data(info["system"], ...) samples
        ranges = proto.ranges("train")
        return ([ranges.get(p.name, p.train) for p in sys_.params],
                proto.initial_state.sample(4, torch.Generator().manual_seed(0)),
                proto.times("train")[:steps])
    return (_file_ranges(train, sys_), train.x[:16, 0],
            torch.as_tensor(train.t[:steps], dtype=torch.float64))


def fresh_ranges(sys_, lo_hi, x0_some, t, *, widen: float) -> list:
    """The parameter ranges of fresh training data: the training data's ``lo_hi`` widened on
    either side by ``widen`` times its span, in log space where the range is positive and wide
    (high >= 1.5 low), else linearly and never below the parameter's physical minimum. The
    physics is known, so the read-out can learn parameters beyond those of the data it was
    given, which is where extrapolation otherwise fails (MSD: out-of-range errors of k/m and
    c/m 4.9% / 6.2% unwidened, 0.7% with 0.25). The data's own ranges where the widened ones
    would be too fast to simulate cheaply."""
    if widen <= 0:
        return [tuple(r) for r in lo_hi]
    out = []
    for p, (lo, hi) in zip(sys_.params, lo_hi, strict=True):
        if lo > 0 and hi >= 1.5 * lo:
            r = (hi / lo) ** widen
            lo2, hi2 = lo / r, hi * r
        else:
            lo2, hi2 = lo - widen * (hi - lo), hi + widen * (hi - lo)
            if lo2 < p.minimum or (p.strict and lo2 <= p.minimum):
                lo2 = p.minimum + (lo - p.minimum) / 2 if p.strict else p.minimum
        out.append((float(lo2), float(hi2)))
    if not sys_.linear and _fresh_solver(sys_, out, x0_some, t) is None:
        return [tuple(r) for r in lo_hi]
    return out


def _fresh_solver(sys_, lo_hi, x0_some, t):
    """(method, step size) for fresh training data: the closed form of a linear system, else
    RK4 in float32 with (fastest rate) x step <= 0.25: Lotka-Volterra's worst state off by 1e-3
    relative (4 substeps; 8e-5 with 8 at twice the cost), the pendulum's by 2e-4 (2 substeps),
    both far below the estimates' errors. None: more than MAX_FRESH_SUBSTEPS substeps."""
    if sys_.linear:
        return "exact", None
    rate = fastest_rate(sys_, torch.as_tensor(np.asarray(x0_some)), lo_hi)
    t = np.asarray(t, dtype=np.float64)
    dt = float(np.diff(t).min())
    substeps = math.ceil(rate * dt / 0.25) if math.isfinite(rate) else math.inf
    if substeps > MAX_FRESH_SUBSTEPS:
        return None
    return "rk4", dt / max(1, substeps)


def _fresh_training_data(info, net, sys_, dev, steps, train=None):
    """``resample(epoch)``: a new simulated training set for every epoch (``fresh_n``
    trajectories, or the run's ``n_train``), seeded by (seed, epoch): normalised states (first
    ``steps`` steps) and parameters. From the run's protocol, or with ``train`` (a file's
    Trajectories) from the file: parameters uniform over its per-parameter ranges, initial
    states drawn from its trajectories' first states, its sample times. The parameter ranges
    are the run's ``fresh_ranges`` (:func:`fresh_ranges`) where it has them. With the option
    ``fresh_noise`` (default 0), Gaussian observation noise of that many times each state's
    standard deviation in the training data (as :func:`warpphys.data.add_noise` makes it) is
    added, so that the read-out learns to read contexts as noisy as the user's."""
    n = int(info.get("options", {}).get("fresh_n") or info["n_train"])
    lo_hi, x0_some, t = _source_ranges(sys_, train, steps)
    ranges = None  # (runs saved before fresh_ranges: the data's own)
    if info.get("fresh_ranges"):
        lo_hi = [tuple(info["fresh_ranges"][p.name]) for p in sys_.params]
        ranges = {p.name: r for p, r in zip(sys_.params, lo_hi, strict=True)}
    if train is not None:
        x0_pool = torch.as_tensor(train.x[:, 0], dtype=torch.float64)
    # (protocols are checked for their cost when simulated; files by fresh_source)
    method, step_size = _fresh_solver(sys_, lo_hi, x0_some, t) or ("rk4", None)

    noise = float(info.get("options", {}).get("fresh_noise") or 0.0)
    std = net.normalizer.std  # of the training data: noise in add_noise's units

    def resample(epoch: int):
        seed = systems.split_seed(info["seed"], f"fresh/{epoch}") % 2**62
        if train is None:
            tr = simulate_data(info["system"], n, "train", seed, ranges=ranges, method=method,
                               step_size=step_size, dtype=torch.float32, n_steps=steps)
            x, _ = _tensors(tr, dev)
            p = torch.as_tensor(tr.system_params(sys_), dtype=torch.float32, device=dev)
        else:
            g = torch.Generator().manual_seed(seed)
            lo, hi = (torch.tensor(v, dtype=torch.float64) for v in zip(*lo_hi, strict=True))
            p = lo + (hi - lo) * torch.rand(n, len(lo_hi), generator=g, dtype=torch.float64)
            x0 = x0_pool[torch.randint(len(x0_pool), (n,), generator=g)]
            x = integrate(sys_, t.float(), x0.float(), p.float(), method=method,
                          step_size=step_size).to(dev)
            p = p.float().to(dev)
        if noise > 0:  # observed as the training data are: noise * each state's std
            g = torch.Generator().manual_seed(seed ^ 0x5EED)
            x = x + noise * std * torch.randn(x.shape, generator=g).to(x)
        return net.normalizer.encode(x), p

    return resample


#: config.json entries that shape a run: a resumed run must find them as its checkpoint has them
SHAPING_KEYS = ("model", "system", "data", "test_data", "param_name_map", "protocol", "seed",
                "context", "options", "window", "n_steps", "n_train", "state_mean", "state_std")


def _resume(run_dir: Path, *, epochs, device, progress, figures, max_seconds) -> FittedModel:
    config_file, last_file = run_dir / CONFIG_FILE, run_dir / LAST_FILE
    if not config_file.exists() or not last_file.exists():
        raise RunError(f"{str(run_dir)!r} has no {CONFIG_FILE} and {LAST_FILE} to resume from")
    try:
        info = rundir.read_json(config_file)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise RunError(f"{str(config_file)!r} is not valid JSON ({e}); it cannot be resumed") \
            from None
    state = load_checkpoint(last_file)
    if state.get("kind") != "training":
        raise CheckpointError(f"{last_file} is not a training checkpoint")
    try:
        saved = rundir.loads(state["info"])
        if not isinstance(saved, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{str(last_file)!r} has no run configuration of warpphys ('info'); it was not "
            f"written by `warpphys fit` and cannot be resumed"
        ) from None
    def shaping(config: dict, key: str):  # (--epochs may have grown on an earlier resume
        value = config.get(key)           # that was stopped before its first checkpoint)
        if key == "options" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "epochs"}
        return value

    changed = [k for k in SHAPING_KEYS if shaping(info, k) != shaping(saved, k)]
    if changed:
        k = changed[0]
        raise RunError(
            f"{str(config_file)!r} does not match the checkpoint {str(last_file)!r} "
            f"({', '.join(changed)} differ, e.g. {k}: {info.get(k)!r} in {CONFIG_FILE}, "
            f"{saved.get(k)!r} in {LAST_FILE}); was it edited? Restore it, or start a new run"
        )
    info = saved
    if epochs is not None and "epochs" in FIXED_OPTIONS.get(info.get("model"), {}):
        raise RunError(f"model {info.get('model')!r} has nothing to train, so --epochs cannot "
                       f"continue {str(run_dir)!r}; fit a new run to change it")
    if epochs is not None:
        _check_run_options(info["seed"], None, {"epochs": epochs})
        epochs = int(epochs)
        try:
            done = checkpoint_count(state, "epoch")
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{str(last_file)!r} was damaged or edited ({e}); it cannot be "
                                  f"resumed: start a new run") from None
        if epochs <= done:
            raise RunError(
                f"--epochs {epochs} on --resume must exceed the {done} epochs already trained "
                f"in {str(run_dir)!r}"
            )
        info = {**info, "options": {**info["options"], "epochs": int(epochs)}}
    if max_seconds is not None:
        _check_run_options(info["seed"], max_seconds, {})
        info = {**info, "max_seconds": max_seconds}
    if info["data"] is not None:
        traj = Trajectories.load(_resumed_file(info, "data", run_dir), system=info["system"],
                                 param_names=info.get("param_name_map"))
        train, val, test = _split_file(traj, info["seed"])
    else:
        proto = systems.get_system(info["system"]).default
        seed = info["seed"]
        train = simulate_data(info["system"], info["n_train"], "train", seed)
        val = simulate_data(info["system"], proto.n_val, "val", seed)
        test = simulate_data(info["system"], proto.n_test, "test", seed)
    if info.get("test_data") is not None:
        test = Trajectories.load(_resumed_file(info, "test_data", run_dir),
                                 system=info["system"]).rename_params(
            info.get("param_name_map"), info["system"], strict=False)
    _check_architecture(info, train, state, last_file)
    dev = resolve_device(device)
    try:
        return _train_and_report(run_dir, info, train, val, test, dev, progress=progress,
                                 figures=figures, max_seconds=max_seconds, resume_state=state)
    except KeyboardInterrupt:
        raise _interrupted(run_dir, run_dir) from None


def _resumed_file(info: dict, key: str, run_dir: Path) -> str:
    """The data file ``info[key]`` of a run being resumed: as given to ``fit`` (a relative path
    from the current folder), else where it was when the run began; refused where its contents
    differ from those the run recorded (it would resume on other data)."""
    path, recorded = info[key], info.get(f"{key}_file")
    if not isinstance(recorded, dict):  # (runs saved before files were recorded)
        return path
    if not Path(Trajectories.path_of(path)).exists() and Path(recorded["path"]).exists():
        path = recorded["path"]
    if not Path(Trajectories.path_of(path)).is_file():
        return path  # (the loader names what is missing)
    if rundir.file_digest(Trajectories.path_of(path)) != recorded.get("sha256"):
        raise RunError(
            f"{str(path)!r} has changed since {str(run_dir)!r} was fitted on it (its contents "
            f"differ from those the run recorded): resuming would train on other data. Restore "
            f"the file, or start a new run on it"
        )
    return path


def _check_architecture(info: dict, train: Trajectories, state: dict, path: Path) -> None:
    """Refuse a training checkpoint whose weights do not fit the model its config describes."""
    sys_ = systems.get_system(info["system"]) if info["system"] else None
    try:
        with torch.device("meta"):
            net = MODELS[info["model"]](train.dim, sys_, info["options"])
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state["model_state"].items()}
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{str(path)!r} cannot be resumed: it does not hold the training state of a "
            f"{info.get('model')!r} model ({type(e).__name__}: {e})"
        ) from None
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise CheckpointError(
            f"{str(path)!r} holds weights of another architecture than the {info['model']!r} "
            f"model that {CONFIG_FILE} describes (first difference: {diff[0]!r}); it cannot be "
            f"resumed, start a new run"
        )


# -- convenience ---------------------------------------------------------------------------------
def _check_path(key: str, path) -> None:
    """Refuse a ``data``-like argument that is not a path (None passes: not given)."""
    if path is not None and not isinstance(path, str | os.PathLike):
        hint = ("the file to write" if key == "out" else "a trajectory file; save arrays first, "
                "e.g. Trajectories(t=t, x=x).save('data.npz')")
        raise RunError(f"{key} must be the path of an .npz file, got {type(path).__name__}: "
                       f"{hint}")


def load(run_dir, device: str = "cpu") -> FittedModel:
    """Load a run directory (see :meth:`FittedModel.load`)."""
    return FittedModel.load(run_dir, device)


def evaluate(run_dir, data, context: int | None = None,
             param_names: dict[str, str] | None = None, *, estimate: str | None = None) -> dict:
    """Metrics of a run on an .npz file. ``param_names`` ({name in the file: the system's name})
    renames the file's parameter columns; without it the run's recorded ``param_name_map``
    renames those the file has. ``estimate`` ("refined" or "amortised", default the run's: the
    most accurate) decides the headline keys (see :meth:`FittedModel.evaluate`)."""
    _check_path("data", data)
    fitted = load(run_dir)
    system = fitted.info.get("system")
    if param_names:
        traj = Trajectories.load(data, system=system, param_names=param_names)
    else:
        traj = Trajectories.load(data, system=system)
        traj = traj.rename_params(fitted.info.get("param_name_map"), system, strict=False)
    check_model_data(traj, None, f"--data {str(data)!r}")
    return fitted.evaluate(traj, context, estimate=estimate)


def predict(run_dir, data, context: int, horizon: int, out, *,
            estimate: str | None = None, force: bool = False) -> Trajectories:
    """Roll out a run on an .npz file and write ``x (N, K+H, d)`` with the input's keys;
    ``estimate`` as in :func:`evaluate` (models with physical parameters: the refined rollout by
    default). Models with physical parameters also write the parameters that drove each
    rollout, ``params_estimated (N, p)``, with ``params_estimated_names`` (the system's order)
    and ``estimate`` (see :data:`warpphys.data.PREDICTION_KEYS`). An existing ``out`` is
    replaced only with ``force``; the input file never."""
    _check_path("data", data)
    _check_path("out", out)
    check_out_file(out, force=force, inputs=(data,), suffix=".npz")
    fitted = load(run_dir)
    traj = Trajectories.load(data, system=fitted.info.get("system"))
    check_model_data(traj, None, f"--data {str(data)!r}")
    est = fitted.resolve_estimate(estimate)
    forecast = fitted.forecasts(traj, context, (est,), horizon=horizon)[est]
    x_hat = forecast.x_hat
    bad = ~np.isfinite(x_hat).reshape(x_hat.shape[0], x_hat.shape[1], -1).all(2)
    if bad.any():  # (not the data's fault: the context rows are the file's, finite)
        i, k = (int(v) for v in np.argwhere(bad)[0])
        status = fitted.info.get("status")
        trained = (f" (its training {status}: {fitted.info.get('status_message')})"
                   if status not in (None, "completed") else "")
        which = f"{est} " if fitted.model.has_params else ""  # (a black box has one)
        raise RunError(f"the model's {which}rollout overflowed "
                       f"(states not finite) in {int(bad.any(1).sum())} of {len(x_hat)} "
                       f"trajectories, first at trajectory {i}, step {k}: the model{trained} "
                       f"cannot predict these data, which may lie far from its training data; "
                       f"nothing was written")
    res = Trajectories(t=extend_times(traj.t, x_hat.shape[1]), x=x_hat, params=traj.params,
                       state_names=traj.state_names, param_names=traj.param_names,
                       system=traj.system)
    extra = {}
    if forecast.params is not None:
        extra = {"params_estimated": forecast.params,
                 "params_estimated_names": np.array(fitted.system.param_names),
                 "estimate": np.array(est)}
    res.save(out, extra=extra)
    return res

