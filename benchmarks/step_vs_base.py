"""One autoregressive WARP training step (forward, backward, Adam), this checkout against another
(a worktree of an older commit), timed side by side: the two run in alternating subprocesses,
best of N each, in wall time and in CPU time (``time.process_time``: with one thread, the
work done, much less sensitive than wall time to other processes on a shared machine).

    python benchmarks/step_vs_base.py --base ../wt-perf-base [--D 692 --batch 64 --T 256]

Also printed: the time of the step's unavoidable GEMMs alone (forward, input gradient and the
gradient of A of the recurrence), and the speed-up over the older step that an implementation
doing nothing else would reach (``speedup_bound``).

Default size: the issue's (root 23 wide x 2 deep on (tau, x_prev), d = 2: D = 692; batch 64,
T 256, p_forcing 0.25, context 16).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
torch.manual_seed(0)
from warpphys.model import WARP
from warpphys.roots import MLPRoot
width, depth, batch, T, pf, steps, threads = (int(sys.argv[1]), int(sys.argv[2]),
    int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
torch.set_num_threads(threads)
model = WARP(2, MLPRoot(2, width=width, depth=depth))
t = torch.linspace(0, 1, T)
g = torch.Generator().manual_seed(1)
x = torch.cumsum(torch.randn(batch, T, 2, generator=g) * 0.1, 1)
opt = torch.optim.Adam(model.parameters(), lr=1e-5)
def step():
    opt.zero_grad(set_to_none=True)
    loss = model.training_loss(x, t, context=16, p_forcing=pf,
                               generator=torch.Generator().manual_seed(2))["loss"]
    loss.backward()
    opt.step()
    return float(loss)
times, cpu, losses = [], [], []
for i in range(steps + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    losses.append(step())
    if i:
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
print(json.dumps({"D": model.num_weights, "best": min(times), "best_cpu": min(cpu),
                  "losses": losses}))
"""


#: the GEMMs that any implementation of the step must do, alone: per step the recurrence's
#: forward (B x (D+d)) @ ((D+d) x D) and its input gradient (B x D) @ (D x (D+d)); once, the
#: gradient of [A, B] over all steps, (D x BT) @ (BT x (D+d)). Best of three, at the natural
#: inner width and at it padded to a multiple of 64 (MKL is faster there), the faster counts.
GEMMS = r"""
import json, sys, time, torch
D, d, batch, T, threads = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(threads)
best = float("inf")
for width in (D + d, -(-(D + d) // 64) * 64):
    z, W = torch.randn(batch, width), torch.randn(width, D)
    g, Wt = torch.randn(batch, D), torch.randn(D, width)
    G, Z = torch.randn(batch * (T - 1), D), torch.randn(batch * (T - 1), width)
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(T - 1):
            z @ W
            g @ Wt
        G.t() @ Z
        best = min(best, time.perf_counter() - t0)
print(json.dumps({"gemm_s": best}))
"""


def gemm_floor(D: int, args) -> float:
    """Seconds of the step's unavoidable GEMMs alone (see :data:`GEMMS`)."""
    cmd = [sys.executable, "-c", GEMMS, str(D), "2", str(args.batch), str(args.T),
           str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["gemm_s"]


def measure(root: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-c", CHILD, str(args.width), str(args.depth), str(args.batch),
           str(args.T), str(args.p_forcing), str(args.steps), str(args.threads)]
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(base: str, *, width=23, depth=2, batch=64, T=256, p_forcing=0.25, rounds=3,
            steps=2, threads=1) -> dict:
    """Best-of times of the step at ``base`` (a checkout folder) and here, alternated."""
    args = argparse.Namespace(width=width, depth=depth, batch=batch, T=T, p_forcing=p_forcing,
                              steps=steps, threads=threads)
    old, new, floors = [], [], []
    for _ in range(rounds):
        old.append(measure(Path(base), args))
        new.append(measure(HERE, args))
        floors.append(gemm_floor(new[-1]["D"], args))
    o, n = min(r["best"] for r in old), min(r["best"] for r in new)
    oc, nc = min(r["best_cpu"] for r in old), min(r["best_cpu"] for r in new)
    floor = min(floors)
    return {"D": new[0]["D"], "batch": batch, "T": T, "threads": threads, "old_s": o, "new_s": n,
            "speedup": o / n, "old_cpu_s": oc, "new_cpu_s": nc, "speedup_cpu": oc / nc,
            # the step's GEMMs alone: the most that any implementation doing the same float32
            # arithmetic could gain over the old step, and the share of it the new step reaches
            "gemm_only_s": floor, "speedup_bound": o / floor, "gemm_share": floor / n,
            "loss_old": old[0]["losses"], "loss_new": new[0]["losses"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="checkout of the older commit")
    p.add_argument("--width", type=int, default=23)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--p-forcing", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    r = compare(a.base, width=a.width, depth=a.depth, batch=a.batch, T=a.T,
                p_forcing=a.p_forcing, rounds=a.rounds, steps=a.steps, threads=a.threads)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
