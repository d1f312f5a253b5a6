"""Structured state matrices: speed and accuracy of a dense, diagonal and low-rank A.

The paper's ablation reports that a diagonal or low-rank A loses accuracy against the dense
one. This measures it at our scale on the MSD protocol (``spring_mass`` with the ``msd``
preset: x0 = (1, 0), t in [0, 1], 256 steps, context 100; training ranges for the training
file, the wider test ranges for the test file), for the black-box WARP and for WARP-Phys, each
with the package's default sizes and training options:

- ``dense``: A full D x D (WARP: identity start; WARP-Phys: the spectral filter-bank start,
  its default); for WARP-Phys also ``dense-identity`` (identity start, like the structured
  forms, so that the comparison is not only about the initialisation);
- ``diagonal``: A = diag(a), a starting at 1;
- ``lowrank``: A = I + U V^T of rank 8, U starting at 0.

Speed: seconds per epoch (training time over epochs run; it includes the validation rollouts
every second epoch, the same for every form). Accuracy: test_mse (rolled-out steps after the
context, original units) on the test file, and for WARP-Phys the median relative parameter
error. One seed by default: differences smaller than the seed-to-seed spread (give --seeds 0,1
to see it) are not evidence either way.

    python benchmarks/transitions.py                  # small: ~15 minutes on a 2-core CPU
    python benchmarks/transitions.py --n-train 512 --epochs 20 --seeds 0,1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from warpphys import api  # noqa: E402
from warpphys.data import simulate  # noqa: E402

#: (label, model, options)
VARIANTS = [
    ("warp dense", "warp", {"transition": "dense"}),
    ("warp diagonal", "warp", {"transition": "diagonal"}),
    ("warp lowrank", "warp", {"transition": "lowrank"}),
    ("warp-phys dense (spectral init)", "warp-phys", {"transition": "dense"}),
    ("warp-phys dense (identity init)", "warp-phys", {"transition": "dense",
                                                      "a_init": "identity"}),
    ("warp-phys diagonal", "warp-phys", {"transition": "diagonal"}),
    ("warp-phys lowrank", "warp-phys", {"transition": "lowrank"}),
]


def run(n_train: int = 256, n_test: int = 128, epochs: int = 12, seeds=(0,), device="cpu",
        variants=None, max_seconds: float | None = None, T: int | None = None,
        batch_size: int = 32) -> dict:
    """Fit every variant on the same MSD files; returns ``{"rows": [...], ...}``.

    Args:
        n_train: trajectories in the training file (split 80/10/10 into train/val/held-out;
            the metrics use the separate test file). n_test: trajectories of the test file.
        epochs: training epochs of each fit. seeds: one fit per seed and variant.
        batch_size: trajectories per step (small, so that a small training set still gives
            several optimiser steps per epoch).
        variants: a subset of the labels of VARIANTS (default: all).
        T: cut the protocol's 256 steps to the first T (tests use tiny ones; the context
            is scaled as 100/256 of T).
    """
    chosen = [v for v in VARIANTS if variants is None or v[0] in variants]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train = simulate("spring_mass", n_train, "train", 0, preset="msd")
        test = simulate("spring_mass", n_test, "test", 0, preset="msd")
        context = 100
        if T is not None:
            train, test = _cut(train, T), _cut(test, T)
            context = max(2, round(T * 100 / 256))
        train_file = train.save(Path(tmp) / "train.npz")
        test_file = test.save(Path(tmp) / "test.npz")
        for label, model, opts in chosen:
            for seed in seeds:
                fitted = api.fit(data=train_file, system="spring_mass", test_data=test_file,
                                 model=model, epochs=epochs, context=context, device=device,
                                 seed=seed, out=Path(tmp) / f"{label}-{seed}".replace(" ", "_"),
                                 figures=False, progress=False, max_seconds=max_seconds,
                                 batch_size=batch_size, **opts)
                m, info = fitted.metrics, fitted.info
                n_params = sum(p.numel() for p in fitted.model.parameters())
                rows.append({
                    "variant": label, "model": model, "seed": seed, **opts,
                    "D": fitted.model.num_weights, "parameters": n_params,
                    "epochs_run": info["epochs_run"], "fit_seconds": info["fit_seconds"],
                    "seconds_per_epoch": info["fit_seconds"] / max(1, info["epochs_run"]),
                    "train_status": info["status"], "best_val_mse": info["best_val_mse"],
                    # the one-pass estimate (what the transition shapes), for every model
                    "test_mse": m.get("test_mse_amortised", m["test_mse"]),
                    "ood_mse": m.get("ood_mse_amortised", m.get("ood_mse")),
                    "param_rel_error": m.get("param_rel_error_amortised"),
                })
                print(_row(rows[-1]), flush=True)
    return {"protocol": "msd", "n_train_file": n_train, "n_test": n_test, "epochs": epochs,
            "context": context, "T": T or 256, "seeds": list(seeds), "device": str(device),
            "batch_size": batch_size, "zero_prediction_mse": float((test.x[:, context:] ** 2
                                                                    ).mean()),
            "torch_threads": torch.get_num_threads(), "rows": rows,
            "seconds": time.perf_counter() - started}


def _cut(traj, T):
    from dataclasses import replace

    return replace(traj, t=traj.t[:T], x=traj.x[:, :T])


def _row(r: dict) -> str:
    pe = "" if r["param_rel_error"] is None else f"{r['param_rel_error']:.3g}"
    return (f"{r['variant']:<33} {r['seed']:>4} {r['D']:>5} {r['parameters']:>9} "
            f"{r['seconds_per_epoch']:>8.2f} {r['test_mse']:>10.4g} {pe:>9} {r['train_status']}")


HEADER = (f"{'variant':<33} {'seed':>4} {'D':>5} {'params':>9} {'s/epoch':>8} {'test_mse':>10} "
          f"{'param_err':>9} status")


def report(r: dict) -> str:
    lines = [f"MSD protocol (spring_mass, preset msd): {r['n_train_file']} training-file "
             f"trajectories (80% trained on), {r['n_test']} test trajectories (OOD ranges), "
             f"T {r['T']}, context {r['context']}, {r['epochs']} epochs of batches of "
             f"{r['batch_size']}, device {r['device']}, {r['torch_threads']} torch threads; "
             f"for scale, predicting x = 0 after the context scores test_mse "
             f"{r['zero_prediction_mse']:.4g}", HEADER]
    lines += [_row(row) for row in r["rows"]]
    by = {}
    for row in r["rows"]:
        by.setdefault(row["variant"], []).append(row)
    if any(len(v) > 1 for v in by.values()):
        lines.append("means over seeds:")
        for label, rs in by.items():
            mse = sum(x["test_mse"] for x in rs) / len(rs)
            sec = sum(x["seconds_per_epoch"] for x in rs) / len(rs)
            lines.append(f"  {label:<33} test_mse {mse:.4g}, {sec:.2f} s/epoch")
    lines.append(f"total {r['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-test", type=int, default=128)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variants", help="comma-separated labels (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(HEADER, flush=True)
    r = run(args.n_train, args.n_test, args.epochs, tuple(int(s) for s in args.seeds.split(",")),
            args.device, args.variants.split(",") if args.variants else None,
            batch_size=args.batch_size)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
