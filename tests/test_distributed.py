"""Data-parallel training: N processes (torchrun, gloo on a CPU) train like one process.

Equivalence is by construction: every rank draws the same batch permutation, takes a contiguous
slice of each batch, and the gradients, weighted by each rank's share of the batch, are summed
across ranks (warpphys.distributed); scheduled-sampling masks are the rows of the one-process
mask. What remains is float rounding (sums in a different order), so the tests compare with
tolerances a few orders of magnitude above float32 rounding and far below any training effect.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from warpphys import checkpoint, distributed
from warpphys.model import WARP
from warpphys.roots import MLPRoot

ROOT = Path(__file__).resolve().parents[1]


def _fake_world(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


@pytest.mark.parametrize("n, world", [(10, 3), (9, 2), (1, 2), (7, 7)])
def test_shards_are_contiguous_and_cover_the_batch(monkeypatch, n, world):
    bounds = []
    for r in range(world):
        _fake_world(monkeypatch, r, world)
        bounds.append(distributed.shard(n))
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def _rank_generator(seed: int, skip_rows: int, n_times: int) -> torch.Generator:
    gen = torch.Generator().manual_seed(seed)
    if skip_rows:
        torch.rand(skip_rows * n_times, generator=gen)
    return gen


@pytest.mark.parametrize("threads", [1, 2])
def test_rank_masks_join_into_the_one_process_mask(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        T, rows = 37, [5, 4, 0, 3]
        full = torch.rand(sum(rows), T, generator=torch.Generator().manual_seed(11))
        parts, lo = [], 0
        for n in rows:
            parts.append(torch.rand(n, T, generator=_rank_generator(11, lo, T)))
            lo += n
        assert torch.equal(torch.cat(parts), full)
    finally:
        torch.set_num_threads(old)


def test_weighted_shard_gradients_sum_to_the_full_batch_gradient():
    """The sum over ranks of (n_r / n) * grad(mean loss on shard r) is the full batch's
    gradient, scheduled sampling included (masks: rows of the one-process mask)."""
    torch.manual_seed(0)
    model = WARP(2, MLPRoot(2, width=6), transition="dense").double()
    with torch.no_grad():
        model.B.normal_(0, 0.1)
    x = torch.randn(10, 12, 2, dtype=torch.float64).cumsum(1) * 0.1
    t = torch.linspace(0, 1, 12, dtype=torch.float64)

    def grads(xb, gen):
        model.zero_grad(set_to_none=True)
        model.training_loss(xb, t, context=3, p_forcing=0.5, generator=gen)["loss"].backward()
        return [p.grad.clone() for p in model.parameters()]

    full = grads(x, _rank_generator(5, 0, 12))
    total, lo = None, 0
    for n in (4, 3, 3):  # the shards of 10 over 3 ranks
        g = grads(x[lo:lo + n], _rank_generator(5, lo, 12))
        g = [gi * (n / 10) for gi in g]
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
        lo += n
    for a, b in zip(total, full, strict=True):
        # float64: only rounding of sums taken in another order
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIT = ["--model", "warp", "--epochs", "2", "--context", "5", "--width", "4", "--batch-size", "9",
       "--quiet", "--no-figures", "--device", "cpu", "--seed", "3"]


def test_two_processes_train_like_one(tmp_path, user_file):
    """torchrun with 2 gloo processes gives the one-process metrics and history.

    ``user_file`` has 12 trajectories: 10 train, so batches of 9 and 1: the first split 5/4,
    the second leaves rank 1 an empty slice. Two epochs: the second uses scheduled sampling
    (p_forcing 0.17), so the masks matter. Tolerance: relative 1e-4 on every metric and loss
    (float32 sums in another order drift by ~1e-7 per step; a real difference, such as one
    rank's gradients dropped or another mask, changes them by 1e-2 or more).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["fit", "--data", str(user_file), *FIT]
    subprocess.run([sys.executable, "-m", "warpphys", *args, "--out", str(one)], env=env,
                   check=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "warpphys", *args, "--out", str(two)],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count('"run_dir"') == 1  # rank 0 alone prints the summary
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    for key in ("test_mse", "ood_mse", "invariant_drift"):
        if m1.get(key) is not None:
            assert m2[key] == pytest.approx(m1[key], rel=1e-4), key
    c1 = json.loads((one / "config.json").read_text())
    c2 = json.loads((two / "config.json").read_text())
    assert (c1["world_size"], c2["world_size"]) == (1, 2)
    assert c2["best_val_mse"] == pytest.approx(c1["best_val_mse"], rel=1e-4)
    h1 = checkpoint.load(one / "last.pt")["history"]
    h2 = checkpoint.load(two / "last.pt")["history"]
    assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)
    assert h2["val_mse"] == pytest.approx(h1["val_mse"], rel=1e-4)
