"""CPU/GPU parity of a small fit, and the accuracy cost and speed of TF32 and bf16 training.

1. The same small fit (spring_mass, the package's defaults, a few epochs, fixed seed) on the CPU
   and on the GPU: metrics side by side. Tolerance: 5% relative on test_mse (Adam's first steps
   are nearly sign(gradient) steps, so float32 rounding that differs between devices can flip
   a near-zero component; 5% is far below the gaps between models).
2. Forward parity of each trained model, moved to the other device, on the test data:
   max |x_gpu - x_cpu| / state std over the whole rollout. Tolerance 1e-4 (float32 sums in
   another order, amplified along the rollout; TF32 off).
3. The GPU fit again with ``precision="tf32"`` and ``"bf16"``: test_mse and fit time next to
   fp32 (the accuracy cost of each, measured).

    python benchmarks/gpu_parity.py [--epochs 4] [--n-train 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from warpphys import api  # noqa: E402
from warpphys.data import simulate  # noqa: E402

FIT_TOL = 5e-2
FORWARD_TOL = 1e-4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--models", default="warp,warp-phys")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_parity: CUDA is not available; nothing to compare")
        return 1
    torch.set_float32_matmul_precision("highest")
    out, ok = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}, True
    test = simulate("spring_mass", None, "test", 0)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            kw = dict(system="spring_mass", model=model, epochs=args.epochs,
                      n_train=args.n_train, figures=False, progress=False, seed=0)
            runs = {}
            for dev, prec in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "tf32"),
                              ("cuda", "bf16")):
                runs[dev, prec] = api.fit(device=dev, precision=prec,
                                          out=Path(tmp) / f"{model}-{dev}-{prec}", **kw)
            cpu, gpu = runs["cpu", "fp32"], runs["cuda", "fp32"]
            mse = lambda r: r.metrics.get("test_mse_amortised", r.metrics["test_mse"])  # noqa: E731
            rel = abs(mse(gpu) - mse(cpu)) / mse(cpu)  # the one-pass rollout's: the model's own
            std = test.x.reshape(-1, test.dim).std(0)
            fwd = []
            for fitted in (cpu, gpu):  # each trained model, on both devices
                pred = {}
                for dev in ("cpu", "cuda"):
                    f = api.load(fitted.run_dir, device=dev)
                    pred[dev] = f.predict(test, estimate="amortised")
                fwd.append(float((np.abs(pred["cuda"] - pred["cpu"]) / std).max()))
            row = {
                "test_mse_cpu": mse(cpu), "test_mse_cuda": mse(gpu),
                "test_mse_rel_diff": rel, "fit_tolerance": FIT_TOL,
                "forward_max_rel_diff": max(fwd), "forward_tolerance": FORWARD_TOL,
                "fit_seconds": {f"{d}-{pr}": r.metrics["fit_seconds"] for (d, pr), r in
                                runs.items()},
                "test_mse": {f"{d}-{pr}": mse(r) for (d, pr), r in runs.items()},
            }
            if "param_rel_error" in cpu.metrics:
                row["param_rel_error"] = {f"{d}-{pr}": r.metrics.get("param_rel_error_amortised")
                                          for (d, pr), r in runs.items()}
            row["ok"] = rel <= FIT_TOL and max(fwd) <= FORWARD_TOL
            ok &= row["ok"]
            out[model] = row
            print(f"{model}: test_mse cpu {row['test_mse_cpu']:.4g} cuda "
                  f"{row['test_mse_cuda']:.4g} (rel diff {rel:.2e}, tolerance {FIT_TOL}); "
                  f"forward parity {max(fwd):.2e} of the state std (tolerance {FORWARD_TOL}): "
                  f"{'ok' if row['ok'] else 'FAILED'}")
            for key in row["test_mse"]:
                extra = ""
                if "param_rel_error" in row:
                    extra = f", param_rel_error {row['param_rel_error'][key]:.3g}"
                print(f"   {key:>10}: test_mse {row['test_mse'][key]:.4g}, fit "
                      f"{row['fit_seconds'][key]:.1f} s{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
