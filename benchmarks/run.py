"""Performance figures of warpphys, each a ratio of two things timed side by side in one run.

Absolute times are printed only as context: they depend on the machine and its load; a ratio of
two measurements taken next to each other much less so.

- ``sim_speedup_vs_scipy``: one batched ``systems.simulate`` call against a loop of scipy
  ``solve_ivp`` calls at matched accuracy (:mod:`benchmarks.sim_speed`; target >= 100).
- ``recurrence_efficiency``: achieved FLOP/s of one autoregressive WARP training step (forward
  and backward of the recurrence plus the root, scheduled sampling on) over the FLOP/s of plain
  ``torch.matmul`` calls on the same GEMM shapes (target >= 0.5). FLOPs are counted
  analytically: per step the recurrence ``theta A^T`` (2 B D^2), the drive ``dx B^T``
  (2 B d D) and the root's batched matmuls (2 B o i per layer); the backward pass is counted as
  twice the forward (a gradient for each GEMM operand). The reference times exactly those GEMMs
  (forward and both backward products) with no autograd, no loop bookkeeping and no root
  non-linearities. The hypernetwork (run once per trajectory) is left out of both.
- ``warp_vs_gru_epoch_time``: one training epoch of the black-box WARP (the package's default
  sizes) over one epoch of a GRU with the same parameter count, same data and batches, both
  with scheduled sampling (p_forcing 0.5: step by step beyond the context; target <= 1). Also
  given for teacher-forced epochs (WARP's parallel mode, the GRU's single cuDNN/ATen pass).
- ``parallel_vs_sequential``: forward and backward of ``run_parallel`` against ``run`` with
  ``context = T`` (the same teacher-forced computation, step by step): sequential time over
  parallel time, at the default sizes and at the recurrence benchmark's size.
- ``amortized_vs_classical_speedup``: from ``benchmarks/amortized_vs_classical.py`` when it
  exists.
- Peak memory of one training step per trajectory-step: ``torch.cuda.max_memory_allocated`` on
  a GPU; on a CPU, in a fresh subprocess, the peak RSS during the step (``/proc/self/status``
  VmHWM, reset just before it through ``/proc/self/clear_refs``; ``resource`` ru_maxrss where
  that is not permitted) minus the RSS just before it. The bytes autograd saves for the
  backward pass (counted with saved-tensor hooks) are given beside it on both.
- How one training step's time grows with D, T and batch: a small table, one factor doubled at
  a time.

Sizes: D ~ 5000 (root 48 wide x 3 deep, as the paper's), batch 256, T 256 by default (GPU
scale); ``--quick`` uses D ~ 1000, batch 64, T 64 and a smaller epoch problem so that it
finishes in a few minutes on a 2-core CPU (scipy is then timed on 256 trajectories and
extrapolated, see sim_speed.py).

    python benchmarks/run.py --quick --threads 2        # CPU, 2-5 minutes
    python benchmarks/run.py --device cuda --json bench.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from warpphys.model import WARP  # noqa: E402
from warpphys.roots import MLPRoot  # noqa: E402

DIM = 2  # state size of the benchmark problems (spring-mass: position, velocity)
DEPTH = 3  # root depth of the recurrence benchmark (the paper's 48 x 3 root)
FULL = {"D": 5000, "batch": 256, "T": 256}
QUICK = {"D": 1000, "batch": 64, "T": 64}
# epoch benchmark: the package's defaults (api.BASE_OPTIONS) on the spring_mass protocol's grid
EPOCH_FULL = {"n_train": 512, "T": 128, "context": 32, "batch": 128}
EPOCH_QUICK = {"n_train": 256, "T": 128, "context": 32, "batch": 128}


# -- helpers -------------------------------------------------------------------------------------
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats: int = 3, warmup: int = 1) -> dict:
    """Best and median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"best": times[0], "median": times[len(times) // 2], "repeats": repeats}


def width_for(D: int, dim: int = DIM, depth: int = DEPTH) -> int:
    """Root width whose weight count (MLPRoot with the state as input) is closest to D."""
    def weights(w):  # MLPRoot's layers: (1 + dim) -> w -> ... -> w -> dim, with biases
        sizes = [1 + dim] + [w] * depth + [dim]
        return sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:], strict=True))

    return min(range(1, 1024), key=lambda w: abs(weights(w) - D))


def build_warp(D: int, device, *, transition: str = "dense", depth: int = DEPTH,
               seed: int = 0) -> WARP:
    torch.manual_seed(seed)
    root = MLPRoot(DIM, width=width_for(D, DIM, depth), depth=depth)
    model = WARP(DIM, root, transition=transition)
    with torch.no_grad():  # a non-zero B, so that theta moves as in a trained model
        model.B.normal_(0.0, 0.01)
    return model.to(device)


def trajectories(batch: int, T: int, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised damped oscillations ``(batch, T, 2)`` and times ``(T,)`` on [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0.0, 1.0, T)
    w = 5 + 10 * torch.rand(batch, 1, generator=gen)
    c = 2 * torch.rand(batch, 1, generator=gen)
    env = torch.exp(-c * t)
    x = torch.stack([env * torch.cos(w * t), -env * torch.sin(w * t)], -1)
    return x.to(device), t.to(device)


def training_step(model, xn, t, *, context: int, p_forcing: float = 0.5,
                  mode: str = "autoregressive"):
    """A closure: zero the gradients, one training loss (forward), backward."""
    gen = torch.Generator().manual_seed(0)

    def step():
        model.zero_grad(set_to_none=True)
        logs = model.training_loss(xn, t, context=context, p_forcing=p_forcing, generator=gen,
                                   mode=mode)
        logs["loss"].backward()

    return step


def gemm_shapes(model: WARP, batch: int, T: int) -> dict:
    """The GEMMs of one autoregressive run: [(count, batch_dims, m, k, n)] for ``(m,k)@(k,n)``."""
    D, d = model.num_weights, model.dim
    root = [(o, i) for o, i in model.root.mlp.shapes]
    return {
        "recurrence": [(T - 2, (), batch, D, D)],
        "drive": [(T - 2, (), batch, d, D)],
        "root": [(T - 1, (batch,), o, i, 1) for o, i in root],
    }


def count_flops(shapes: dict) -> dict:
    """Forward FLOPs (2 m k n per product) by part, and forward+backward (3x)."""
    fwd = {}
    for part, items in shapes.items():
        fwd[part] = sum(c * 2 * m * k * n * math.prod(bd) for c, bd, m, k, n in items)
    total = sum(fwd.values())
    return {"forward": fwd, "forward_total": total, "train_total": 3 * total}


def matmul_reference(shapes: dict, device):
    """A closure timing plain matmuls on the same shapes: per GEMM (m,k)@(k,n) the forward
    product and the two backward ones, (m,n)@(n,k) and (k,m)@(m,n)."""
    ops = []
    for items in shapes.values():
        for count, bd, m, k, n in items:
            a = torch.randn(*bd, m, k, device=device)
            b = torch.randn(*bd, k, n, device=device)
            g = torch.randn(*bd, m, n, device=device)
            ops.append((count, a, b, g, a.transpose(-1, -2), b.transpose(-1, -2)))

    def run():
        for count, a, b, g, at, bt in ops:
            for _ in range(count):
                torch.matmul(a, b)
                torch.matmul(g, bt)
                torch.matmul(at, g)

    return run


# -- the figures ----------------------------------------------------------------------------------
def recurrence_efficiency(D: int, batch: int, T: int, device="cpu", repeats: int = 3) -> dict:
    """Achieved FLOP/s of a WARP training step over plain matmul on the same GEMM shapes."""
    model = build_warp(D, device)
    xn, t = trajectories(batch, T, device)
    context = max(1, round(T * 100 / 256))  # the paper's 100 of 256 steps
    shapes = gemm_shapes(model, batch, T)
    flops = count_flops(shapes)
    warp = timeit(training_step(model, xn, t, context=context), device, repeats)
    ref = timeit(matmul_reference(shapes, device), device, repeats)
    opt = torch.optim.Adam(model.parameters())
    adam = timeit(opt.step, device, repeats)  # gradients are there from the last step
    total = flops["train_total"]
    return {
        "D": model.num_weights, "root_width": model.root.width, "root_depth": model.root.depth,
        "batch": batch, "T": T, "context": context, "p_forcing": 0.5,
        "flops_train_step": total,
        "flops_share_recurrence": flops["forward"]["recurrence"] / flops["forward_total"],
        "warp_seconds": warp["best"], "warp_seconds_median": warp["median"],
        "matmul_seconds": ref["best"], "matmul_seconds_median": ref["median"],
        "warp_flops_per_s": total / warp["best"], "matmul_flops_per_s": total / ref["best"],
        "adam_step_seconds": adam["best"],
        "recurrence_efficiency": ref["best"] / warp["best"],
    }


def _gru_like(dim: int, n_params: int):
    """The package's GRU baseline sized to ``n_params``; a plain torch.nn.GRU stand-in with the
    same training interface when the baselines are not there."""
    try:
        from warpphys.baselines import GRUBaseline, hidden_for_params

        hidden = hidden_for_params("gru", dim, n_params)
        return GRUBaseline(dim, hidden=hidden), "warpphys.baselines.GRUBaseline"
    except ImportError:
        return _PlainGRU(dim, n_params), "torch.nn.GRU (benchmark stand-in)"


class _PlainGRU(nn.Module):
    """A GRU over (tau, x_prev) with a residual read-out, autoregressive beyond the context."""

    def __init__(self, dim: int, n_params: int):
        super().__init__()
        gru_params = lambda h: 3 * (h * (1 + dim) + h * h + 2 * h) + h * dim + dim  # noqa: E731
        hidden = min(range(1, 4096), key=lambda h: abs(gru_params(h) - n_params))
        self.cell = nn.GRUCell(1 + dim, hidden)
        self.out = nn.Linear(hidden, dim)

    def training_loss(self, xn, t, *, context, p_forcing=1.0, generator=None, mode=None,
                      **kw):
        B, T, _ = xn.shape
        tau = (t - t[0]) / (t[-1] - t[0])
        gdev = xn.device if generator is None else generator.device
        force = torch.rand(B, T, generator=generator, device=gdev).to(xn.device) < p_forcing
        h, x_in, preds = None, xn[:, 0], []
        for s in range(T - 1):
            h = self.cell(torch.cat([tau[s + 1].expand(B, 1), x_in], -1), h)
            mean = x_in + self.out(h)
            preds.append(mean)
            nxt = xn[:, s + 1]
            x_in = nxt if s + 1 < context else torch.where(force[:, s + 1, None], nxt, mean)
        loss = ((torch.stack(preds, 1) - xn[:, 1:]) ** 2).mean()
        return {"loss": loss}


def _epoch(model, xn, t, *, batch: int, context: int, p_forcing: float, mode: str):
    """A closure: one training epoch as the Trainer runs it (loss, backward, clip, Adam)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        perm = torch.randperm(xn.shape[0], generator=gen)
        for i in range(0, xn.shape[0], batch):
            xb = xn[perm[i:i + batch].to(xn.device)]
            opt.zero_grad(set_to_none=True)
            logs = model.training_loss(xb, t, context=context, p_forcing=p_forcing,
                                       generator=gen, mode=mode)
            logs["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    return epoch


def warp_vs_gru(n_train: int, T: int, context: int, batch: int, device="cpu",
                repeats: int = 2) -> dict:
    """Epoch time of the default black-box WARP over a GRU with the same parameter count."""
    from warpphys import api
    from warpphys.baselines import count_parameters

    opts = {**api.BASE_OPTIONS, **api.MODELS["warp"].options}
    torch.manual_seed(0)
    warp = api.MODELS["warp"](DIM, None, opts).to(device)
    n_warp = count_parameters(warp)
    gru, gru_kind = _gru_like(DIM, n_warp)
    gru = gru.to(device)
    xn, t = trajectories(n_train, T, device, seed=1)
    res = {"n_train": n_train, "T": T, "context": context, "batch": batch,
           "warp_D": warp.num_weights, "warp_params": n_warp, "gru": gru_kind,
           "gru_params": count_parameters(gru), "gru_hidden": getattr(gru, "hparams", {}).get(
               "hidden")}
    for label, pf, warp_mode in (("", 0.5, "autoregressive"), ("_teacher_forced", 1.0,
                                                               "parallel")):
        w = timeit(_epoch(warp, xn, t, batch=batch, context=context, p_forcing=pf,
                          mode=warp_mode), device, repeats)
        g = timeit(_epoch(gru, xn, t, batch=batch, context=context, p_forcing=pf,
                          mode="autoregressive"), device, repeats)
        res[f"warp_epoch_seconds{label}"] = w["best"]
        res[f"gru_epoch_seconds{label}"] = g["best"]
        res[f"warp_vs_gru_epoch_time{label}"] = w["best"] / g["best"]
    return res


def parallel_vs_sequential(D: int, batch: int, T: int, device="cpu", repeats: int = 3,
                           depth: int = DEPTH) -> dict:
    """Teacher-forced forward+backward: step-by-step ``run(context=T)`` over ``run_parallel``."""
    model = build_warp(D, device, depth=depth)
    xn, t = trajectories(batch, T, device)
    par = timeit(training_step(model, xn, t, context=T, mode="parallel"), device, repeats)
    seq = timeit(training_step(model, xn, t, context=T, p_forcing=0.0), device, repeats)
    with torch.no_grad():
        diff = (model.run_parallel(xn, t).mean - model.run(xn, t, context=T).mean).abs().max()
    return {"D": model.num_weights, "batch": batch, "T": T, "parallel_seconds": par["best"],
            "sequential_seconds": seq["best"], "max_abs_difference": float(diff),
            "parallel_vs_sequential": seq["best"] / par["best"]}


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    seen = {}

    def pack(x):
        if x.device.type != "meta":
            st = x.untyped_storage()
            seen[(st.data_ptr(), x.device)] = st.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn()
    del out
    return sum(seen.values())


def _proc_status_bytes(key: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_in_process(D: int, batch: int, T: int, device) -> dict:
    model = build_warp(D, device)
    xn, t = trajectories(batch, T, device)
    context = max(1, round(T * 100 / 256))
    gen = torch.Generator().manual_seed(0)

    def forward():
        return model.training_loss(xn, t, context=context, p_forcing=0.5, generator=gen)["loss"]

    # a tiny step first (library initialisation, thread pools), then the measured one, then
    # the saved-tensor count (its frees would otherwise leave reusable memory in the process)
    training_step(model, xn[:1, :3], t[:3], context=1)()
    step = training_step(model, xn, t, context=context)
    model.zero_grad(set_to_none=True)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        how = "torch.cuda.max_memory_allocated - memory_allocated before the step"
    else:
        # /proc's VmHWM, reset just before the step, rather than ru_maxrss, which Linux
        # carries over from the parent across fork and exec
        reset = _reset_peak_rss()
        base = _proc_status_bytes("VmRSS")
        step()
        if reset:
            peak = _proc_status_bytes("VmHWM") - base
            how = ("fresh subprocess: peak RSS (/proc VmHWM, reset before the step) - RSS "
                   "before the step")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
            how = "fresh subprocess: resource ru_maxrss after the step - RSS before the step"
    saved = saved_tensor_bytes(forward)
    steps = batch * (T - 1)
    return {"D": model.num_weights, "batch": batch, "T": T, "method": how,
            "peak_bytes": peak, "peak_bytes_per_trajectory_step": peak / steps,
            "saved_for_backward_bytes": saved,
            "saved_for_backward_bytes_per_trajectory_step": saved / steps,
            "theta_bytes_per_trajectory_step": 4 * model.num_weights}


def memory_per_step(D: int, batch: int, T: int, device="cpu") -> dict:
    """Peak memory of one training step per trajectory-step (see the module docstring)."""
    if torch.device(device).type == "cuda" or not Path("/proc/self/status").exists():
        return _memory_in_process(D, batch, T, device)
    spec = json.dumps({"D": D, "batch": batch, "T": T})
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    out = subprocess.run([sys.executable, __file__, "--memory-child", spec], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling_table(D: int, batch: int, T: int, device="cpu", factors=(2,),
                  repeats: int = 2) -> list[dict]:
    """Training-step time at a base size and with one of D, T, batch multiplied by each of
    ``factors``; ``exponent`` = log(time ratio) / log(factor)."""
    def measure(d, b, tt):
        model = build_warp(d, device)
        xn, t = trajectories(b, tt, device)
        ctx = max(1, round(tt * 100 / 256))
        return model.num_weights, timeit(training_step(model, xn, t, context=ctx), device,
                                         repeats)["best"]

    D0, base = measure(D, batch, T)
    rows = [{"vary": "base", "factor": 1, "D": D0, "batch": batch, "T": T, "seconds": base,
             "ratio": 1.0, "exponent": None}]
    for f in factors:
        for vary, size in (("D", (D * f, batch, T)), ("T", (D, batch, T * f)),
                           ("batch", (D, batch * f, T))):
            d_real, sec = measure(*size)
            scale = d_real / D0 if vary == "D" else f
            rows.append({"vary": vary, "factor": f, "D": d_real, "batch": size[1], "T": size[2],
                         "seconds": sec, "ratio": sec / base,
                         "exponent": math.log(sec / base) / math.log(scale)})
    return rows


def amortized_vs_classical(quick: bool, device="cpu") -> dict:
    """``benchmarks/amortized_vs_classical.py``'s figure, if that benchmark exists."""
    try:
        mod = importlib.import_module("benchmarks.amortized_vs_classical")
    except ImportError as e:
        return {"amortized_vs_classical_speedup": "not available",
                "note": f"benchmarks/amortized_vs_classical.py not importable ({e})"}
    import inspect

    params = inspect.signature(mod.run).parameters
    kw = {k: v for k, v in (("quick", quick), ("device", device)) if k in params}
    r = mod.run(**kw)
    if "amortized_vs_classical_speedup" not in r:
        return {"amortized_vs_classical_speedup": "not available",
                "note": "its run() returned no amortized_vs_classical_speedup", "result": r}
    return r


# -- the whole run ------------------------------------------------------------------------------
PARTS = ("step", "sim_default", "sim_pendulum", "evaluate", "threads", "sim", "recurrence",
         "epoch", "parallel", "amortized", "memory", "scaling")


def run(quick: bool = False, device="cpu", *, sizes: dict | None = None,
        epoch_sizes: dict | None = None, skip=(), repeats: int | None = None,
        sim_kwargs: dict | None = None, amortized_quick: bool | None = None,
        base: str | None = None) -> dict:
    """Every figure; returns a dict with ``figures`` (the ratios) and each part's details.

    Args:
        quick: the CPU sizes (QUICK, EPOCH_QUICK) instead of the GPU-scale ones.
        device: "cpu" or "cuda".
        sizes, epoch_sizes: override {"D", "batch", "T"} and {"n_train", "T", "context",
            "batch"} (tests use tiny ones).
        skip: parts to leave out (names in PARTS).
        repeats: timed runs per measurement (default 3, 2 for whole epochs).
        sim_kwargs: arguments of ``benchmarks.sim_speed.run`` (default: quick or full).
        amortized_quick: run the amortised-vs-classical benchmark in its quick mode (256
            trajectories, a 2-epoch model; default: as ``quick``).
        base: checkout of the older commit for the step figure (default: 09f7417 extracted
            with ``git archive``; see :mod:`benchmarks.issue13`).
    """
    sz = {**(QUICK if quick else FULL), **(sizes or {})}
    ez = {**(EPOCH_QUICK if quick else EPOCH_FULL), **(epoch_sizes or {})}
    rep = repeats or 3
    started = time.perf_counter()
    r = {"quick": quick, "device": str(device), "torch": torch.__version__,
         "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
         "cpu_count": os.cpu_count(), "load_average_start": _loadavg(), "sizes": sz,
         "epoch_sizes": ez}
    if torch.device(device).type == "cuda":
        r["gpu"] = torch.cuda.get_device_name()
    figs = {}
    from benchmarks import issue13

    if "step" not in skip:  # issue 13: the training step against an older commit
        r["step"] = issue13.step_vs_base(base, rounds=2 if quick else 3)
        figs["step_speedup_vs_base"] = r["step"]["speedup"]
    if "sim_default" not in skip:
        r["sim_default"] = issue13.sim_default(scipy_n=32 if quick else 256)
        figs["sim_default_speedup_vs_scipy"] = r["sim_default"]["sim_default_speedup_vs_scipy"]
    if "sim_pendulum" not in skip:
        r["sim_pendulum"] = issue13.sim_pendulum(scipy_n=32 if quick else 128)
        figs["sim_pendulum_speedup_vs_scipy"] = r["sim_pendulum"]["sim_pendulum_speedup_vs_scipy"]
    if "evaluate" not in skip:
        r["evaluate"] = issue13.evaluate_time()
        figs["evaluate_seconds"] = r["evaluate"]["evaluate_seconds"]
    if "threads" not in skip:
        r["threads"] = issue13.threads(steps=3 if quick else 6, rounds=1 if quick else 2)
        figs["threads_auto_vs_2_alone"] = r["threads"]["auto_vs_2_alone"]
        figs["threads_auto_busy_slowdown"] = r["threads"]["auto_busy_slowdown"]
    if "sim" not in skip:
        from benchmarks import sim_speed

        kw = sim_kwargs or {"quick": quick, "with_default": False}
        s = sim_speed.run(device=device, **kw)
        r["sim"] = s
        figs["sim_speedup_vs_scipy"] = s["sim_speedup_vs_scipy"]
    if "recurrence" not in skip:
        r["recurrence"] = recurrence_efficiency(sz["D"], sz["batch"], sz["T"], device, rep)
        figs["recurrence_efficiency"] = r["recurrence"]["recurrence_efficiency"]
    if "epoch" not in skip:
        r["epoch"] = warp_vs_gru(ez["n_train"], ez["T"], ez["context"], ez["batch"], device,
                                 repeats=rep)
        figs["warp_vs_gru_epoch_time"] = r["epoch"]["warp_vs_gru_epoch_time"]
        figs["warp_vs_gru_epoch_time_teacher_forced"] = r["epoch"][
            "warp_vs_gru_epoch_time_teacher_forced"]
    if "parallel" not in skip:
        from warpphys import api

        r["parallel_default"] = parallel_vs_sequential(
            MLPRoot(DIM, width=api.BASE_OPTIONS["width"],
                    depth=api.BASE_OPTIONS["depth"]).num_weights,
            ez["batch"], ez["T"], device, rep, depth=api.BASE_OPTIONS["depth"])
        r["parallel_large"] = parallel_vs_sequential(sz["D"], sz["batch"], sz["T"], device, rep)
        figs["parallel_vs_sequential"] = r["parallel_default"]["parallel_vs_sequential"]
        figs["parallel_vs_sequential_large_D"] = r["parallel_large"]["parallel_vs_sequential"]
    if "amortized" not in skip:
        r["amortized"] = amortized_vs_classical(
            quick if amortized_quick is None else amortized_quick, device)
        figs["amortized_vs_classical_speedup"] = r["amortized"]["amortized_vs_classical_speedup"]
    if "memory" not in skip:
        r["memory"] = memory_per_step(sz["D"], sz["batch"], sz["T"], device)
        figs["peak_bytes_per_trajectory_step"] = r["memory"]["peak_bytes_per_trajectory_step"]
    if "scaling" not in skip:
        base = {k: max(2, v // 2) for k, v in sz.items()}
        r["scaling"] = scaling_table(base["D"], base["batch"], base["T"], device,
                                     factors=(2,) if quick else (2, 4), repeats=rep)
    r["figures"] = figs
    r["seconds"] = time.perf_counter() - started
    r["load_average_end"] = _loadavg()
    return r


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) else str(x)


def report(r: dict) -> str:
    lines = [f"warpphys benchmarks on {r['device']}" + (f" ({r['gpu']})" if "gpu" in r else "")
             + f", torch {r['torch']}, {r['torch_threads']} torch threads, "
             f"{r['cpu_count']} CPUs, load average {_fmt(r['load_average_start'])}"
             + (" [--quick: CPU sizes]" if r["quick"] else ""), ""]
    if "step" in r:
        c = r["step"]
        lines.append(f"step_speedup_vs_base = {c['speedup']:.2f}: training step (forward, "
                     f"backward, Adam), D = {c['D']}, batch {c['batch']}, T {c['T']}, "
                     f"{c['threads']} thread; {c['base']} {c['old_s']:.3f} s vs now "
                     f"{c['new_s']:.3f} s (best of alternating runs); in CPU time "
                     f"{c['old_cpu_s']:.3f} s vs {c['new_cpu_s']:.3f} s = "
                     f"{c['speedup_cpu']:.2f}x")
    for name, system in (("default", "spring-mass"), ("pendulum", "pendulum")):
        if f"sim_{name}" in r:
            c = r[f"sim_{name}"]
            lines.append(
                f"sim_{name}_speedup_vs_scipy = {c[f'sim_{name}_speedup_vs_scipy']:.0f}: "
                f"{c['n']} x {c['n_steps']} {system}, default simulate {c['torch_seconds']:.3f} s "
                f"(error {c['torch_error']:.1e}) vs scipy {c['scipy_method']} loop "
                f"{c['scipy_seconds']:.1f} s (error {c['scipy_error']:.1e}; errors against "
                f"{c['reference']}; scipy timed on {c['scipy_timed_trajectories']}, "
                f"extrapolated)")
    if "evaluate" in r:
        c = r["evaluate"]
        lines.append(f"evaluate_seconds = {c['evaluate_seconds']:.1f}: warpphys evaluate of a "
                     f"WARP-Phys run on {c['n']} MSD trajectories, refinement included")
    if "threads" in r:
        c = r["threads"]
        lines.append(
            f"threads: automatic choice ({c['threads_auto']}) {c['alone_auto']:.2f} s vs 2 "
            f"threads {c['alone_2']:.2f} s (ratio {c['auto_vs_2_alone']:.2f}); beside one busy "
            f"process: automatic {c['busy_auto']:.2f} s (slowdown "
            f"{c['auto_busy_slowdown']:.2f}), 2 threads {c['busy_2']:.2f} s (slowdown "
            f"{c['two_threads_busy_slowdown']:.2f})")
    if "sim" in r:
        s = r["sim"]
        lines.append(f"sim_speedup_vs_scipy = {s['sim_speedup_vs_scipy']:.1f}: "
                     f"{s['n_trajectories']} spring-mass trajectories x {s['n_steps']} steps, "
                     f"torch {s['torch_seconds']:.3f} s vs scipy {s['scipy_method']} loop "
                     f"{s['scipy_seconds']:.1f} s"
                     + (" (extrapolated)" if s["scipy_extrapolated"] else "")
                     + f"; accuracy ok: {s['accuracy_ok']}")
    if "recurrence" in r:
        c = r["recurrence"]
        lines.append(
            f"recurrence_efficiency = {c['recurrence_efficiency']:.2f}: D = {c['D']} (root "
            f"{c['root_width']} x {c['root_depth']}), batch {c['batch']}, T {c['T']}; "
            f"{c['flops_train_step'] / 1e9:.1f} GFLOP per training step "
            f"({100 * c['flops_share_recurrence']:.1f}% in theta A^T); WARP "
            f"{c['warp_seconds']:.3f} s = {c['warp_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
            f"{c['matmul_seconds']:.3f} s = {c['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s "
            f"(Adam step on top: {c['adam_step_seconds'] * 1e3:.1f} ms)")
    if "epoch" in r:
        e = r["epoch"]
        lines.append(
            f"warp_vs_gru_epoch_time = {e['warp_vs_gru_epoch_time']:.2f} (scheduled sampling, "
            f"p_forcing 0.5): WARP {e['warp_epoch_seconds']:.2f} s ({e['warp_params']} "
            f"parameters, D = {e['warp_D']}) vs GRU {e['gru_epoch_seconds']:.2f} s "
            f"({e['gru_params']} parameters, {e['gru']}); {e['n_train']} trajectories x "
            f"{e['T']} steps, batch {e['batch']}")
        lines.append(
            f"warp_vs_gru_epoch_time_teacher_forced = "
            f"{e['warp_vs_gru_epoch_time_teacher_forced']:.2f}: WARP parallel mode "
            f"{e['warp_epoch_seconds_teacher_forced']:.2f} s vs GRU one pass "
            f"{e['gru_epoch_seconds_teacher_forced']:.2f} s")
    for key, label in (("parallel_default", "parallel_vs_sequential"),
                       ("parallel_large", "parallel_vs_sequential_large_D")):
        if key in r:
            p = r[key]
            lines.append(f"{label} = {p['parallel_vs_sequential']:.2f}: D = {p['D']}, batch "
                         f"{p['batch']}, T {p['T']}; sequential {p['sequential_seconds']:.3f} s"
                         f", parallel {p['parallel_seconds']:.3f} s (same outputs to "
                         f"{p['max_abs_difference']:.1e})")
    if "amortized" in r:
        a = r["amortized"]
        try:
            ctx = (f": {a['n']} trajectories, classical fits {a['classical_seconds']:.2f} s "
                   f"({a['classical_median_rel_error']:.2g} median error) vs amortised "
                   f"{a['warp_phys_seconds']:.3f} s ({a['warp_phys_median_rel_error']:.2g})")
        except (KeyError, TypeError, ValueError):
            ctx = ""
        lines.append(f"amortized_vs_classical_speedup = {_fmt(a['amortized_vs_classical_speedup'])}"
                     + ctx + (f" ({a['note']})" if "note" in a else ""))
    if "memory" in r:
        m = r["memory"]
        lines.append(
            f"peak memory per trajectory-step = {m['peak_bytes_per_trajectory_step'] / 1e3:.1f} "
            f"kB (D = {m['D']}, batch {m['batch']}, T {m['T']}; {m['method']}); saved for "
            f"backward {m['saved_for_backward_bytes_per_trajectory_step'] / 1e3:.1f} kB; theta "
            f"alone {m['theta_bytes_per_trajectory_step'] / 1e3:.1f} kB")
    if "scaling" in r:
        lines += ["", "training-step time as one size grows (autoregressive, forward+backward):",
                  f"{'vary':>6} {'x':>3} {'D':>6} {'batch':>6} {'T':>5} {'seconds':>9} "
                  f"{'ratio':>6} {'exponent':>8}"]
        for row in r["scaling"]:
            ex = "" if row["exponent"] is None else f"{row['exponent']:.2f}"
            lines.append(f"{row['vary']:>6} {row['factor']:>3} {row['D']:>6} {row['batch']:>6} "
                         f"{row['T']:>5} {row['seconds']:>9.4f} {row['ratio']:>6.2f} {ex:>8}")
    lines += ["", f"total {r['seconds']:.0f} s; load average at the end "
                  f"{_fmt(r['load_average_end'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="CPU sizes (D ~ 1000, batch 64, T 64): 2-5 minutes on 2 cores")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {','.join(PARTS)}")
    p.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    p.add_argument("--amortized", choices=["quick", "full"],
                   help="mode of benchmarks/amortized_vs_classical.py (default: quick with "
                        "--quick, else full: 4096 trajectories, minutes of CPU)")
    p.add_argument("--base", help="checkout of the older commit for the step figure "
                                  "(default: 09f7417 by git archive)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:  # internal: the CPU memory measurement in a fresh process
        spec = json.loads(args.memory_child)
        print(json.dumps(_memory_in_process(spec["D"], spec["batch"], spec["T"], "cpu")))
        return 0
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    r = run(args.quick, args.device, skip=skip,
            amortized_quick=None if args.amortized is None else args.amortized == "quick",
            base=args.base)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
