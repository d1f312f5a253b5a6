"""Training options of issue 7 on a CPU: --precision (fp32|tf32|bf16) and --transition
(dense|diagonal|lowrank) for the black box and the physics-informed WARP."""

from __future__ import annotations

import json

import pytest
import torch

from warpphys.model import WARP
from warpphys.roots import MLPRoot
from warpphys.train import TrainConfig, Trainer, autocast, matmul_precision


def test_unknown_precision_is_refused_with_the_choices():
    model = WARP(2, MLPRoot(2, width=4))
    with pytest.raises(ValueError, match="fp32"):
        Trainer(model, TrainConfig(precision="fp16"), progress=False)


def test_tf32_changes_nothing_on_a_cpu():
    before = torch.get_float32_matmul_precision()
    with matmul_precision("tf32", "cpu"):
        assert torch.get_float32_matmul_precision() == before


def test_bf16_autocast_loss_is_close_to_fp32():
    """bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2% per operation); over a
    16-step rollout of a small model the loss stays within 5% of float32's."""
    torch.manual_seed(0)
    model = WARP(2, MLPRoot(2, width=8))
    with torch.no_grad():
        model.B.normal_(0, 0.1)
    x = torch.randn(8, 16, 2).cumsum(1) * 0.1
    t = torch.linspace(0, 1, 16)
    ref = model.training_loss(x, t, context=4, p_forcing=0.0)["loss"]
    with autocast("bf16", "cpu"):
        low = model.training_loss(x, t, context=4, p_forcing=0.0)["loss"]
    low.backward()
    assert torch.isfinite(model.transition.A.grad).all()
    assert low.item() == pytest.approx(ref.item(), rel=5e-2)


def test_fit_with_bf16_records_the_precision(fit_cli, tmp_path, user_file):
    out = tmp_path / "bf16"
    assert fit_cli("--data", str(user_file), "--out", str(out), "--precision", "bf16") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["precision"] == "bf16"
    assert json.loads((out / "metrics.json").read_text())["train_status"] == "completed"


@pytest.mark.parametrize("model", ["warp", "warp-phys"])
@pytest.mark.parametrize("transition", ["dense", "diagonal", "lowrank"])
def test_every_transition_trains_for_both_models(fit_cli, tmp_path, user_file, model,
                                                 transition):
    """warp-phys's spectral start of A exists only for a dense A: structured forms start at
    the identity instead of being refused."""
    out = tmp_path / f"{model}-{transition}"
    assert fit_cli("--data", str(user_file), "--out", str(out), "--model", model,
                   "--transition", transition) == 0
    from warpphys import api

    fitted = api.load(out)
    assert fitted.model.transition.kind == transition
    expected = "spectral" if (model, transition) == ("warp-phys", "dense") else "identity"
    assert fitted.model.transition.init == expected


@pytest.mark.parametrize("keep", ["best", "last"])
def test_a_run_keeps_the_best_validated_weights_or_the_last(keep, monkeypatch):
    # validations 1.0, 0.5, 2.0: "best" ends with the weights of the second epoch, "last" with
    # those of the third (fresh data under a cosine schedule: its annealed end)
    torch.manual_seed(0)
    model = WARP(2, MLPRoot(2, width=4))
    x = torch.randn(8, 12, 2).cumsum(1) * 0.1
    t = torch.linspace(0, 1, 12)
    trainer = Trainer(model, TrainConfig(epochs=3, val_every=1, batch_size=4, context=3,
                                         keep=keep, patience=0), progress=False)
    vals, states = iter([1.0, 0.5, 2.0]), []

    def validate(*_):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(vals)

    monkeypatch.setattr(trainer, "_validate", validate)
    trainer.fit(x, t, x, t)
    kept = states[1] if keep == "best" else states[2]
    assert not torch.equal(states[1]["B"], states[2]["B"])  # the epochs did change the weights
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, kept[k], rtol=0, atol=0)
    assert trainer.best_val == (0.5 if keep == "best" else 2.0)
