"""Issue 13's figures, each measured side by side in one run (used by benchmarks/run.py).

- ``step_speedup_vs_base``: one autoregressive WARP training step (forward, backward, Adam) at
  D = 692 (root 23 x 2 on (tau, x_prev), d = 2), batch 64, T 256, p_forcing 0.25, here against
  an older commit (default 09f7417, extracted with ``git archive``), alternating subprocesses,
  best of N each (:mod:`benchmarks.step_vs_base`).
- ``sim_default_speedup_vs_scipy``: ``systems.simulate`` at its default (the closed form of the
  spring-mass flow) on 4096 trajectories x 256 steps against a loop of scipy ``solve_ivp``
  (DOP853 at rtol 1e-12, the tightest it takes in reasonable time; still less accurate than the
  default, so the ratio is conservative). Errors against ``torch.linalg.matrix_exp``.
- ``sim_pendulum_speedup_vs_scipy``: the same for the (nonlinear) pendulum's test split at its
  default accuracy (``dopri8_uniform`` in float64, rtol 1e-9) against DOP853 at the tolerance
  that matches it.
- ``evaluate_seconds``: ``warpphys evaluate`` of a 2-epoch WARP-Phys run on 4096 MSD test
  trajectories, refinement included (wall time of the command; the files are made first).
- ``threads``: a few training steps at the package's default sizes in fresh processes, with the
  automatic thread choice and with 2 threads, alone and beside one busy Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
BASE_COMMIT = "09f7417"


def base_checkout(commit: str = BASE_COMMIT) -> Path:
    """The files of ``commit`` in a temporary folder (``git archive``; no worktree is added)."""
    folder = Path(tempfile.mkdtemp(prefix=f"warpphys-{commit}-"))
    archive = subprocess.run(["git", "-C", str(HERE), "archive", commit], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def step_vs_base(base: str | None = None, *, rounds: int = 3, threads: int = 1) -> dict:
    from benchmarks.step_vs_base import compare

    folder = base or str(base_checkout())
    r = compare(folder, rounds=rounds, threads=threads)
    r["base"] = base or BASE_COMMIT
    return r


def _best_seconds(fn, repeats: int):
    """The best of ``repeats`` timed calls of ``fn()`` after one warm-up, and its result."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times[1:]), out


def _sim_figures(name: str, n: int, n_steps: int, seconds: float, err: float, scipy_method: str,
                 scipy_n: int, scipy_per_traj: float, scipy_err: float, reference: str) -> dict:
    """The keys of both simulation figures (``sim_<name>_speedup_vs_scipy``)."""
    return {"n": n, "n_steps": n_steps, "torch_seconds": seconds, "torch_error": err,
            "reference": reference, "scipy_method": scipy_method,
            "scipy_timed_trajectories": scipy_n, "scipy_seconds": scipy_per_traj * n,
            "scipy_error": scipy_err,
            f"sim_{name}_speedup_vs_scipy": scipy_per_traj * n / seconds}


def sim_default(n: int = 4096, n_steps: int = 256, *, scipy_n: int = 64,
                repeats: int = 3) -> dict:
    import systems
    from benchmarks.sim_speed import component_error, problem, scipy_loop

    system, t, x0, params = problem(n, n_steps)
    ref = torch.einsum("btij,bj->bti", torch.linalg.matrix_exp(
        system.generator_matrix(params)[:, None] * t[None, :, None, None]), x0).numpy()
    seconds, x = _best_seconds(lambda: systems.simulate(system, t, x0, params), repeats)
    err = float(component_error(x.numpy(), ref).max())
    idx = np.random.default_rng(0).choice(n, size=scipy_n, replace=False)
    start = time.perf_counter()
    xs = scipy_loop(system, t.numpy(), x0.numpy()[idx], params.numpy()[idx], "DOP853", 1e-12)
    per_traj = (time.perf_counter() - start) / scipy_n
    return _sim_figures("default", n, n_steps, seconds, err, "DOP853 rtol 1e-12", scipy_n,
                        per_traj, float(component_error(xs, ref[idx]).max()),
                        "the matrix exponential")


def sim_pendulum(n: int = 4096, *, scipy_n: int = 64, repeats: int = 2) -> dict:
    """``systems.simulate`` of the pendulum's test split at its default accuracy
    (``dopri8_uniform``, float64, rtol 1e-9) against a loop of scipy DOP853 at the tolerance
    that matches that accuracy on the timed trajectories; errors against DOP853 at rtol 1e-13."""
    import systems
    from benchmarks.sim_speed import component_error, scipy_loop

    system = systems.get_system("pendulum")
    proto = system.default
    g = torch.Generator().manual_seed(0)
    params = systems.sample_params(system, proto.ranges("test"), n, g)
    x0 = proto.initial_state.sample(n, g)
    t = proto.times("test")
    seconds, x = _best_seconds(lambda: systems.simulate(system, t, x0, params), repeats)
    idx = np.random.default_rng(0).choice(n, size=scipy_n, replace=False)
    args = (system, t.numpy(), x0.numpy()[idx], params.numpy()[idx], "DOP853")
    ref = scipy_loop(*args, 1e-13)
    err = float(component_error(x.numpy()[idx], ref).max())
    rtol = 1e-6  # the loosest DOP853 tolerance that is as accurate as the torch default
    while True:
        start = time.perf_counter()
        xs = scipy_loop(*args, rtol)
        per_traj = (time.perf_counter() - start) / scipy_n
        scipy_err = float(component_error(xs, ref).max())
        if scipy_err <= err or rtol < 1e-12:
            break
        rtol /= 10
    return _sim_figures("pendulum", n, len(t), seconds, err, f"DOP853 rtol {rtol:g}", scipy_n,
                        per_traj, scipy_err, "DOP853 at rtol 1e-13")


def _cli(*args, env=None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "warpphys", *args], cwd=HERE, env=env, check=True,
                   capture_output=True, text=True)
    return time.perf_counter() - start


def evaluate_time(folder: str | None = None) -> dict:
    folder = Path(folder or tempfile.mkdtemp(prefix="warpphys-eval-"))
    train, test, run = folder / "train.npz", folder / "test.npz", folder / "run"
    if not (run / "config.json").exists():
        _cli("simulate", "--preset", "msd", "--n", "512", "--out", str(train))
        _cli("simulate", "--preset", "msd", "--split", "test", "--out", str(test))
        _cli("fit", "--system", "spring_mass", "--data", str(train), "--context", "100",
             "--epochs", "2", "--out", str(run), "--quiet", "--no-figures", "--force")
    seconds = _cli("evaluate", str(run), "--data", str(test))
    return {"evaluate_seconds": seconds, "n": int(np.load(test)["x"].shape[0]),
            "threads": "automatic"}


THREAD_CHILD = r"""
import sys, time, torch
from warpphys import _threads
n = _threads.configure(None if sys.argv[1] == "auto" else int(sys.argv[1]))
torch.manual_seed(0)
from warpphys.model import WARP
from warpphys.roots import MLPRoot
m = WARP(2, MLPRoot(2, width=16, depth=2))
t = torch.linspace(0, 1, 128)
x = torch.cumsum(0.1 * torch.randn(128, 128, 2), 1)
opt = torch.optim.Adam(m.parameters(), lr=1e-4)
start = time.perf_counter()
for i in range(int(sys.argv[2])):
    opt.zero_grad()
    m.training_loss(x, t, context=32, p_forcing=0.5,
                    generator=torch.Generator().manual_seed(i))["loss"].backward()
    opt.step()
print(n, time.perf_counter() - start)
"""


def _thread_run(choice: str, steps: int) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(HERE)
    out = subprocess.run([sys.executable, "-c", THREAD_CHILD, choice, str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def threads(steps: int = 6, rounds: int = 2) -> dict:
    """Training steps (default sizes: D from a 16 x 2 root, batch 128, T 128) with the
    automatic choice and with 2 threads, alone and beside one busy process; best of rounds."""
    res = {}
    for busy in (False, True):
        hog = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None)
        try:
            for _ in range(rounds):
                for choice in ("auto", "2"):
                    n, sec = _thread_run(choice, steps)
                    key = f"{'busy' if busy else 'alone'}_{choice}"
                    res[key] = min(res.get(key, np.inf), sec)
                    res[f"threads_{choice}"] = n
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    res["auto_vs_2_alone"] = res["alone_2"] / res["alone_auto"]
    res["auto_busy_slowdown"] = res["busy_auto"] / res["alone_auto"]
    res["two_threads_busy_slowdown"] = res["busy_2"] / res["alone_2"]
    return res


if __name__ == "__main__":
    print(json.dumps({"threads": threads()}, indent=1))
