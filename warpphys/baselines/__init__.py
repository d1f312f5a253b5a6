"""Baselines next to WARP, on the same data interface, training loop, metrics and ``--model``
flag: ``gru``, ``lstm``, ``transformer``, ``node`` (neural ODE) and ``classical`` (per-trajectory
least-squares system identification with the known ODE).

Importing this package registers them in :data:`warpphys.registry.MODELS` (``import warpphys``
does). Each builder has the signature ``builder(dim, system, options) -> Model`` and its
``options`` attribute holds the model-specific option defaults.

Default sizes: the GRU and LSTM get the hidden size whose parameter count is closest to that of
the black-box WARP built with the same options (``width``, ``depth``, ``hyper_width``,
``transition``), unless ``hidden`` is given. The Transformer (d_model 32, 2 layers) and the
neural ODE (64 x 2 field, 8 latent dimensions) are small, for a CPU.
"""

from __future__ import annotations

from warpphys import registry
from warpphys.baselines.base import Baseline, StepBaseline, count_parameters
from warpphys.baselines.classical import ClassicalSysID
from warpphys.baselines.node import NeuralODE
from warpphys.baselines.recurrent import (
    GRUBaseline,
    LSTMBaseline,
    hidden_for_params,
    recurrent_param_count,
)
from warpphys.baselines.transformer import CausalTransformer
from warpphys.errors import RunError

#: the baselines' names, in the order of a study's tables
BASELINES = ("gru", "lstm", "transformer", "node", "classical")


def warp_param_count(dim: int, opts: dict) -> int:
    """Trainable parameters of the black-box WARP built with the options ``opts``."""
    builder = registry.MODELS["warp"]
    return count_parameters(builder(dim, None, {**builder.options, **opts}))


def _recurrent_builder(kind: str, cls: type):
    def build(dim, system, opts):
        hidden = opts.get("hidden", "auto")
        layers = int(opts.get("layers", 1))
        if hidden in (None, "auto"):
            hidden = hidden_for_params(kind, dim, warp_param_count(dim, opts), layers)
        return cls(dim, hidden=int(hidden), layers=layers)

    build.__name__ = f"_build_{kind}"
    build.__doc__ = (f"{kind.upper()} sized to WARP's parameter count unless ``hidden`` is given.")
    build.options = {"hidden": "auto", "layers": 1}
    return build


def _build_transformer(dim, system, opts):
    return CausalTransformer(dim, d_model=opts["d_model"], heads=opts["heads"],
                             layers=opts["layers"], ff=opts["ff"])


_build_transformer.options = {"d_model": 32, "heads": 4, "layers": 2, "ff": 64}


def _build_node(dim, system, opts):
    return NeuralODE(dim, width=opts["node_width"], depth=opts["node_depth"],
                     augment=opts["augment"], encoder=opts["encoder"],
                     encoder_width=opts["encoder_width"], method=opts["method"],
                     adjoint=opts["adjoint"])


_build_node.options = {"node_width": 64, "node_depth": 2, "augment": 8, "encoder": "gru",
                       "encoder_width": 64, "method": "rk4", "adjoint": False}


def _build_classical(dim, system, opts):
    if system is None:
        raise RunError(
            "classical system identification needs the system's equations: pass --system NAME "
            "(or a file whose 'system' key names one)"
        )
    return ClassicalSysID(dim, system=system.name, residuals=opts["residuals"],
                          substeps=opts["substeps"], bound=opts["bound"],
                          max_nfev=opts["max_nfev"])


_build_classical.options = {"residuals": "one-step", "substeps": "auto", "bound": 7.0,
                            "max_nfev": 200}


def register_all() -> None:
    """Register every baseline in :data:`warpphys.registry.MODELS` (idempotent)."""
    register_model = registry.register_model
    # (the recurrent baselines are sized by WARP's width, depth, ... unless hidden is given)
    register_model("gru", _recurrent_builder("gru", GRUBaseline), GRUBaseline,
                   ignores=("lr_transition",))
    register_model("lstm", _recurrent_builder("lstm", LSTMBaseline), LSTMBaseline,
                   ignores=("lr_transition",))
    warp_sizes = ("width", "depth", "hyper_width", "transition", "lr_transition")
    register_model("transformer", _build_transformer, CausalTransformer, ignores=warp_sizes)
    register_model("node", _build_node, NeuralODE, ignores=warp_sizes)
    # nothing to train (epochs 0: the Trainer returns at once), whatever --epochs says
    register_model("classical", _build_classical, ClassicalSysID, fixed={"epochs": 0},
                   ignores=(*warp_sizes, "batch_size", "lr", "mode", "p_forcing_end",
                            "precision"))


register_all()

__all__ = [
    "BASELINES", "Baseline", "CausalTransformer", "ClassicalSysID", "GRUBaseline",
    "LSTMBaseline", "NeuralODE", "StepBaseline", "count_parameters", "hidden_for_params",
    "recurrent_param_count", "register_all", "warp_param_count",
]
