"""Amortised parameter recovery (WARP-Phys) against classical per-trajectory fits, in one run.

The task (issue 5): recover the physical parameters of N test trajectories (default 4096) from
their context windows, and compare

* WARP-Phys, amortised: one batched forward pass of the trained model over all contexts
  (``FittedModel.recover_params``, chunks of ``--batch`` trajectories), no gradient step;
* WARP-Phys + refinement: the same estimates polished by 10 batched Levenberg-Marquardt steps
  (``recover_params(refine=True)``), reported beside it;
* classical system identification: for each trajectory, ``scipy.optimize.least_squares`` of the
  known ODE's log-parameters on the context's one-step residuals
  (:class:`warpphys.baselines.ClassicalSysID`), one trajectory after the other, started from
  the geometric middle of the run's training parameter ranges.

on wall time and on the median relative error of the identifiable parameters (spring-mass:
k/m and c/m; every trajectory and combination pooled). The printed
``amortized_vs_classical_speedup`` is classical seconds / amortised seconds. The target in
issue 5 is >= 100x at <= 1% median error.

Without ``--run RUN_DIR`` a small WARP-Phys is trained first on the spring-mass default
protocol (``--n-train`` trajectories, ``--epochs`` epochs; a few minutes on 2 CPU cores, not
part of the timings). Test trajectories come from the run's protocol, test split (its wider,
partly out-of-distribution parameter ranges), seed ``--seed + 1``.

    python benchmarks/amortized_vs_classical.py --quick          # ~1 minute
    python benchmarks/amortized_vs_classical.py --run runs/study/runs/warp-phys-seed0 --preset msd
    python benchmarks/amortized_vs_classical.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import systems  # noqa: E402
from warpphys import api, metrics  # noqa: E402
from warpphys.baselines import ClassicalSysID  # noqa: E402
from warpphys.data import Trajectories  # noqa: E402
from warpphys.data import simulate as simulate_data  # noqa: E402


def _simulate(info: dict, n: int, split: str, seed: int, preset: str | None = None
              ) -> Trajectories:
    protocol = preset or info.get("protocol")
    if protocol in systems.PRESETS:
        return simulate_data(None, n, split, seed, preset=protocol)
    return simulate_data(info["system"], n, split, seed)


def _crop(traj: Trajectories, steps: int) -> Trajectories:
    return Trajectories(t=traj.t[:steps], x=traj.x[:, :steps], params=traj.params,
                        state_names=traj.state_names, param_names=traj.param_names,
                        system=traj.system)


def train_small(out: Path, *, epochs: int, n_train: int, seed: int, device: str) -> Path:
    """A small WARP-Phys on the spring-mass default protocol (the benchmark's own model)."""
    api.fit(system="spring_mass", model="warp-phys", epochs=epochs, n_train=n_train,
            out=out, seed=seed, device=device, figures=False, progress=False, force=True)
    return out


def run(*, n: int = 4096, run_dir: str | Path | None = None, epochs: int = 10,
        n_train: int = 256, seed: int = 0, batch: int = 1024, device: str = "cpu",
        quick: bool = False, preset: str | None = None) -> dict:
    """Time and score both ways of recovering parameters; returns the result dict.

    Args:
        n: test trajectories (``quick``: at most 256).
        run_dir: a trained WARP-Phys run; None trains a small one (``epochs``, ``n_train``;
            ``quick``: 2 epochs on 64 trajectories).
        seed: training seed; the test trajectories use ``seed + 1``.
        batch: trajectories per WARP-Phys forward pass.
        device: where WARP-Phys runs (the classical fits run on the CPU).
        preset: the protocol of the test trajectories (default: the run's, else its system's
            default; name it for a run trained on a file, e.g. "msd" for a reproduce study).
    """
    if quick:
        n, epochs, n_train = min(n, 256), min(epochs, 2), min(n_train, 64)
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="amortized-")
        t0 = time.perf_counter()
        run_dir = train_small(Path(tmp.name) / "warp-phys", epochs=epochs, n_train=n_train,
                              seed=seed, device=device)
        train_seconds = time.perf_counter() - t0
    else:
        train_seconds = None
    try:
        fitted = api.load(run_dir, device=device)
        if not getattr(fitted.model, "has_params", False):
            raise ValueError(f"{run_dir} is not a WARP-Phys run (its model reads out no "
                             f"physical parameters)")
        sys_, K, info = fitted.system, fitted.context, fitted.info
        test = _crop(_simulate(info, n, "test", seed + 1, preset), K + 1)
        true = sys_.identifiable(test.system_params(sys_))

        def estimated(estimate: str) -> tuple[np.ndarray, float]:
            t0 = time.perf_counter()
            parts = [fitted.recover_params(test.subset(slice(i, i + batch)), K,
                                           estimate=estimate)
                     for i in range(0, test.n, batch)]
            return np.concatenate(parts), time.perf_counter() - t0

        # warm-up (allocations, kernels)
        fitted.recover_params(test.subset(slice(0, 8)), K, estimate="amortised")
        est_warp, warp_s = estimated("amortised")
        est_ref, ref_s = estimated("refined")

        # the classical start: the middle (geometric) of the run's training parameter ranges
        classical = ClassicalSysID(sys_.dim, system=sys_.name)
        ranges = info.get("param_ranges") or sys_.default.train_ranges
        classical.set_scales(np.array([ranges[p] for p in sys_.param_names]).T, test.x)
        x = torch.as_tensor(test.x[:, :K])
        t = torch.as_tensor(test.t[:K])
        t0 = time.perf_counter()
        est_cls = classical.recover_params(x, t, K).numpy()
        cls_s = time.perf_counter() - t0

        def err(est):
            return metrics.param_relative_error(true, sys_.identifiable(est))["median"]

        return {
            "system": sys_.name, "protocol": info.get("protocol"), "n": test.n, "context": K,
            "run_dir": None if tmp is not None else str(run_dir),
            "warp_train_seconds": train_seconds,
            "warp_phys_seconds": warp_s, "warp_phys_median_rel_error": err(est_warp),
            "warp_phys_refined_seconds": ref_s,
            "warp_phys_refined_median_rel_error": err(est_ref),
            "classical_seconds": cls_s, "classical_median_rel_error": err(est_cls),
            "classical_ms_per_trajectory": 1e3 * cls_s / test.n,
            "amortized_vs_classical_speedup": cls_s / warp_s,
            "refined_vs_classical_speedup": cls_s / ref_s,
            "identifiable": list(sys_.identifiable_names),
            "torch_threads": torch.get_num_threads(), "device": device,
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


def report(r: dict) -> str:
    lines = [
        f"{r['n']} {r['system']} test trajectories, context {r['context']} steps; median "
        f"relative error of {', '.join(r['identifiable'])}:",
        f"  WARP-Phys (amortised)  {r['warp_phys_seconds']:9.3f} s   "
        f"error {r['warp_phys_median_rel_error']:.3g}",
        f"  WARP-Phys + LM refine  {r['warp_phys_refined_seconds']:9.3f} s   "
        f"error {r['warp_phys_refined_median_rel_error']:.3g}",
        f"  classical (scipy)      {r['classical_seconds']:9.3f} s   "
        f"error {r['classical_median_rel_error']:.3g}   "
        f"({r['classical_ms_per_trajectory']:.1f} ms per trajectory)",
        f"refined_vs_classical_speedup: {r['refined_vs_classical_speedup']:.3g}",
        f"amortized_vs_classical_speedup: {r['amortized_vs_classical_speedup']:.3g}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4096, help="test trajectories (default 4096)")
    p.add_argument("--quick", action="store_true", help="256 trajectories, a 2-epoch model")
    p.add_argument("--run", help="a trained WARP-Phys run directory (default: train one)")
    p.add_argument("--preset", help="protocol of the test trajectories (msd, msd-zero, lv; "
                                    "default: the run's)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the model trained here")
    p.add_argument("--n-train", type=int, default=256, help="its training trajectories")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1024, help="trajectories per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(n=args.n, run_dir=args.run, epochs=args.epochs, n_train=args.n_train,
            seed=args.seed, batch=args.batch, device=args.device, quick=args.quick,
            preset=args.preset)
    print(json.dumps(r, indent=2) if args.json else report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
