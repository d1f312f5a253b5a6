"""CPU/GPU parity of WARP (opt-in: ``pytest -m gpu``; skipped without CUDA by conftest.py).

Tolerances: float32 on both sides with TF32 off (``highest`` matmul precision), so the two
differ only in the order of float32 sums inside GEMMs (relative ~1e-7 per product), amplified
along the recurrence; 1e-4 absolute on normalised states (unit scale) leaves two orders of
magnitude above what 32-64 steps produce and is far below any modelling error.
"""

from __future__ import annotations

import copy

import pytest
import torch

from warpphys.model import WARP
from warpphys.physics import ClosedFormRoot, ODERoot
from warpphys.roots import MLPRoot

pytestmark = pytest.mark.gpu
ATOL = 1e-4


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


def _model(root: str, transition: str) -> WARP:
    torch.manual_seed(0)
    roots = {"mlp": lambda: MLPRoot(2, width=16),
             "closed_form": lambda: ClosedFormRoot("spring_mass", width=8),
             "ode": lambda: ODERoot("spring_mass", width=8, substeps=2)}
    model = WARP(2, roots[root](), transition=transition)
    with torch.no_grad():
        model.B.normal_(0, 0.05)
    return model.eval()


def _data(batch: int = 16, T: int = 48):
    gen = torch.Generator().manual_seed(1)
    t = torch.linspace(0, 1, T)
    w = 5 + 10 * torch.rand(batch, 1, generator=gen)
    x = torch.stack([torch.cos(w * t), -torch.sin(w * t)], -1)
    return x, t


@pytest.mark.parametrize("transition", ["dense", "diagonal", "lowrank"])
@pytest.mark.parametrize("root", ["mlp", "closed_form", "ode"])
def test_forward_pass_on_cuda_matches_cpu(root, transition):
    cpu = _model(root, transition)
    gpu = copy.deepcopy(cpu).cuda()
    x, t = _data()
    with torch.no_grad():
        a = cpu.run(x, t, context=12).mean
        b = gpu.run(x.cuda(), t.cuda(), context=12).mean
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=ATOL, rtol=0)
        a = cpu.run_parallel(x, t).mean
        b = gpu.run_parallel(x.cuda(), t.cuda()).mean
        torch.testing.assert_close(b.cpu(), a, atol=ATOL, rtol=0)


def test_scheduled_sampling_with_the_trainers_cpu_generator_runs_on_cuda():
    """The Trainer's generator lives on the CPU: masks are drawn there and moved, so a CUDA
    run draws the same masks as a CPU run and gives the same loss and gradients."""
    cpu = _model("mlp", "dense").train()
    gpu = copy.deepcopy(cpu).cuda()
    x, t = _data()
    losses = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        gen = torch.Generator().manual_seed(7)
        loss = model.training_loss(x.to(dev), t.to(dev), context=12, p_forcing=0.5,
                                   generator=gen)["loss"]
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    g = cpu.transition.A.grad
    torch.testing.assert_close(gpu.transition.A.grad.cpu(), g, rtol=1e-3,
                               atol=1e-4 * float(g.abs().max()))


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_fit_on_cuda_with_reduced_precision(tmp_path, user_file, precision):
    from warpphys import api

    run = api.fit(data=user_file, model="warp", epochs=2, context=5, width=4, batch_size=8,
                  device="cuda", out=tmp_path / precision, figures=False, progress=False,
                  precision=precision)
    assert run.info["options"]["precision"] == precision
    assert torch.isfinite(torch.tensor(run.metrics["test_mse"]))


def test_small_fit_on_cuda_matches_cpu(tmp_path, user_file):
    """Two epochs of the same fit on each device: the same metrics to 5% (Adam's first steps
    are close to sign(gradient) steps, so a component whose gradient is near zero may step
    either way on the two devices; 5% is far below the difference between models)."""
    from warpphys import api

    kw = dict(data=user_file, model="warp", epochs=2, context=5, width=4, batch_size=8,
              figures=False, progress=False)
    a = api.fit(device="cpu", out=tmp_path / "cpu", **kw).metrics
    b = api.fit(device="cuda", out=tmp_path / "cuda", **kw).metrics
    for key in ("test_mse", "ood_mse"):
        if a.get(key) is not None:
            assert b[key] == pytest.approx(a[key], rel=5e-2), key
