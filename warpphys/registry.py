"""Models by name, and the default of every option.

:data:`MODELS` maps a ``--model`` name to its builder ``builder(dim, system, options) ->
Model`` (``system``: the :class:`systems.System` or None); each builder's ``options`` attribute
holds its model-specific option defaults. :data:`MODEL_CLASSES` maps a class name to the class,
whose ``from_config`` rebuilds a saved model. WARP and WARP-Phys are registered here; the
baselines register themselves in :mod:`warpphys.baselines` (imported by the modules that
look models up: :mod:`warpphys.fitted`, :mod:`warpphys.cli`).

:data:`BASE_OPTIONS` are the options every model takes, sized for a 2-core CPU; the training
ones are :class:`warpphys.train.TrainConfig`'s defaults (one source).
"""

from __future__ import annotations

import dataclasses

import warpphys.physics  # noqa: F401  (registers the physics roots in warpphys.roots.ROOTS)
from warpphys.errors import RunError
from warpphys.model import WARP
from warpphys.physics import READOUTS
from warpphys.roots import ROOTS, MLPRoot, physics_root_names
from warpphys.train import TrainConfig

#: model name -> builder(dim, system or None, options) -> model
MODELS: dict = {}
#: class name -> model class with ``from_config`` (to rebuild saved models)
MODEL_CLASSES: dict[str, type] = {}
#: model name -> options the model fixes whatever the user asks (e.g. no epochs to train)
FIXED_OPTIONS: dict[str, dict] = {}
#: model name -> options of every model that it does not read (its fixed ones included)
IGNORED_OPTIONS: dict[str, set] = {}
#: model name -> the name of the class it builds (a saved model's class must be its model's)
CLASS_OF_MODEL: dict[str, str] = {}

#: training options read from :class:`~warpphys.train.TrainConfig` (their defaults included)
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "lr_transition", "mode", "p_forcing_end",
                 "precision")
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
#: options of every model: WARP's sizes (also used to size the recurrent baselines) and training
BASE_OPTIONS = {
    "width": 16, "depth": 2, "hyper_width": 64, "transition": "dense",
    **{k: _TRAIN_DEFAULTS[k] for k in TRAIN_OPTIONS},
}


def register_model(name: str, builder, cls: type | None = None, *,
                   fixed: dict | None = None, ignores: tuple[str, ...] = ()) -> None:
    """Make ``builder`` available as ``--model name`` (its ``options`` attribute: the model's
    own option defaults); ``cls``: the class it builds, to load saved models; ``fixed``: options
    the model sets whatever the user asks; ``ignores``: options of :data:`BASE_OPTIONS` it
    does not read (a user who sets one is told)."""
    MODELS[name] = builder
    if cls is not None:
        MODEL_CLASSES[cls.__name__] = cls
        CLASS_OF_MODEL[name] = cls.__name__
    FIXED_OPTIONS[name] = dict(fixed or {})
    IGNORED_OPTIONS[name] = set(ignores) | set(fixed or {})


def default_model(system: str | None) -> str:
    """The physics-informed WARP whenever the system is known, else the black box."""
    return "warp-phys" if system is not None and "warp-phys" in MODELS else "warp"


def model_option_names(model: str) -> set:
    """The model-specific options of ``model`` (beyond :data:`BASE_OPTIONS`)."""
    return set(MODELS[model].options)


def resolve_options(model: str, options: dict, epochs: int | None = None) -> dict:
    """Every option of a run of ``model``: defaults, the model's own, the user's, then the
    options the model fixes."""
    opts = {**BASE_OPTIONS, **MODELS[model].options, **options}
    if epochs is not None:
        opts["epochs"] = int(epochs)
    return {**opts, **FIXED_OPTIONS.get(model, {})}


# -- WARP and WARP-Phys ------------------------------------------------------------------------
def _build_warp(dim, system, opts):
    root = MLPRoot(dim, width=opts["width"], depth=opts["depth"])
    return WARP(dim, root, transition=opts["transition"], hyper_width=opts["hyper_width"],
                diff=opts["diff"], a_init=opts["a_init"])


_build_warp.options = {"diff": "input", "a_init": "identity"}


def head_loss_steps(value, *, fresh: bool) -> int:
    """The read-out head's ``loss_steps`` option as a number: ``"auto"`` is one step per
    trajectory on fresh simulated data (every batch new trajectories: the most varied signal
    per unit of work), 16 on a fixed training set (more signal from each trajectory)."""
    if value == "auto":
        return 1 if fresh else 16
    return int(value)


def _build_warp_phys(dim, system, opts):
    if system is None:
        raise RunError(
            "warp-phys needs the system's equations: pass --system NAME (or a file whose "
            "'system' key names one), or use --model warp"
        )
    kind = opts.get("root", "auto")
    if kind == "auto":
        kind = "closed_form" if system.linear else "ode"
    if kind not in physics_root_names():
        raise RunError(f"unknown physics root {kind!r}; choose one of "
                       f"{sorted(physics_root_names())} or auto")
    if opts["readout"] not in READOUTS:
        raise RunError(f"unknown read-out {opts['readout']!r}; choose one of {list(READOUTS)}")
    transition = opts["transition"]
    if opts["readout"] == "root" and transition == "spectral":
        # the root MLP's weights are the state: the paper's trained dense A (here started as a
        # filter bank), not a fixed bank
        transition = "dense"
    kw = {"width": opts["width"], "depth": opts["depth"], "readout": opts["readout"]}
    if opts["readout"] == "head":
        kw.update(state_size=opts["state_size"], head_width=opts["head_width"],
                  head_depth=opts["head_depth"],
                  loss_steps=head_loss_steps(opts["loss_steps"], fresh=False),
                  context_share=opts.get("context_share", 0.0))  # runs saved before it: 0
    if kind in ("ode", "hybrid"):
        kw["substeps"] = opts.get("substeps", "auto")
    root = ROOTS[kind](system.name, **kw)
    a_init = opts["a_init"] if transition == "dense" else "identity"  # filter bank: dense
    lift = opts["lift"]
    if lift == "auto":  # the logs of positive states (populations) where the system has them
        lift = "log" if system.state_low is not None else "none"
    # below the noise the model is trained for, a population's log is noise: floored there
    log_floor = max(float(opts.get("log_floor", 1e-4)),  # (runs saved before the option: 1e-4)
                    3.0 * float(opts.get("fresh_noise") or 0.0))
    return WARP(dim, root, transition=transition, hyper_width=opts["hyper_width"],
                diff=opts["diff"], a_init=a_init, freeze_params=opts["freeze_params"],
                lift=lift, log_floor=log_floor)


_build_warp_phys.options = {
    "root": "auto", "substeps": "auto", "param_weight": 1.0, "diff": "input",
    "a_init": "spectral", "parallel_warmup": 0.0,
    # The parameter read-out (see physics.PhysicsRoot.params): a trained head on the weights,
    # read at the end of the context and held for the rollout. Its weights theta come from a
    # fixed bank of damped rotations tuned to the data's frequencies (model.filter_bank). It
    # trains teacher-forced (the bank in closed form) on the parameter loss: a share
    # context_share of the batches at the end of the context (the estimate the run's context
    # gives), the others over the first two contexts' worth of steps (loss_steps of them at
    # random per batch). 0.9 rather than 0.5: the pendulum's median damping error in range
    # 1.14% / 1.01% -> 0.78% / 0.90% (seeds 0 / 1), at the cost of estimates from other
    # context lengths (damping 3.7% -> 5.7% from 36 steps, 2.1% -> 2.7% from 60; at 1.0 they
    # collapse, 55-113%); Lotka-Volterra unchanged, spring-mass better. With a cosine
    # learning rate and no early stop; when the system's simulator made the data, on fresh
    # simulated trajectories (fresh_n every epoch, 0: the training set's size), so that the
    # head never sees the same parameters twice (12,000 steps of 256 by default), over the
    # training data's parameter ranges widened by fresh_widen on either side (api.fresh_ranges).
    # The recurrence also sees the logs of positive states (lift "auto": "log" on
    # Lotka-Volterra, model.WARP.lifted), down to log_floor training stds: 1e-6, where the
    # float32 states still resolve a population to a few percent (1e-4 gave amortised test
    # MSEs 1.7-2.2x higher, seeds 0 and 1: the slow crashes fall below it within the context).
    "readout": "head", "transition": "spectral", "lift": "auto", "state_size": 256,
    "head_width": 256, "head_depth": 3, "freeze_params": True, "mode": "parallel",
    "lr_transition": 0.0, "lr": 1e-3, "fresh_data": True, "fresh_n": 16384,
    "train_steps": "auto", "schedule": "cosine", "patience": 0, "loss_steps": "auto",
    "context_share": 0.9, "fresh_widen": 0.25, "fresh_noise": 0.0, "log_floor": 1e-6,
    "epochs": 190, "batch_size": 256, "val_every": 10,
}

register_model("warp", _build_warp, WARP)
register_model("warp-phys", _build_warp_phys, WARP)
