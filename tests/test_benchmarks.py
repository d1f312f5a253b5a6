"""benchmarks/run.py at tiny sizes: every part runs, reports what it promises, and its FLOP
count agrees with torch's own counter."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from warpphys.roots import MLPRoot

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flop_count_agrees_with_torch_flop_counter(bench):
    """The analytic count (recurrence + drive + root GEMMs, backward = 2x forward) against
    torch's FlopCounterMode on a real training step without the hypernetwork (which the
    benchmark leaves out). They differ only where autograd skips an input gradient (the drive
    and the root's first layer fed with true data, under 1% of the FLOPs here), so within 5%.
    On the plain autograd path, where every product is a matmul the counter sees (the fused
    run, warpphys.fused, forms the root's weight gradients as element-wise outer products and
    accumulates in place, which it does not count; the arithmetic is the same)."""
    torch.manual_seed(0)
    model = bench.build_warp(300, "cpu")
    model.fast_recurrence = False
    model.use_hypernet = False
    model.theta_init = torch.nn.Parameter(model.root.initial_weights())
    xn, t = bench.trajectories(8, 16, "cpu")
    step = bench.training_step(model, xn, t, context=4, p_forcing=0.5)
    with FlopCounterMode(display=False) as counter:
        step()
    counted = counter.get_total_flops()
    analytic = bench.count_flops(bench.gemm_shapes(model, 8, 16))["train_total"]
    assert counted == pytest.approx(analytic, rel=0.05)


def test_width_for_matches_the_papers_root(bench):
    assert bench.width_for(4994) == 48  # 48 x 3 with (tau, x_prev) inputs: D = 4994
    for D in (60, 370, 1000):
        w = bench.width_for(D)
        assert abs(MLPRoot(2, width=w, depth=3).num_weights - D) <= abs(
            MLPRoot(2, width=w + 1, depth=3).num_weights - D)


def test_every_part_runs_at_tiny_sizes(bench, monkeypatch):
    # sim and amortized have their own tests; memory runs in-process here (the CPU path's
    # fresh subprocess costs seconds of imports)
    monkeypatch.setattr(bench, "memory_per_step", bench._memory_in_process)
    r = bench.run(quick=True, sizes={"D": 60, "batch": 4, "T": 8},
                  epoch_sizes={"n_train": 12, "T": 10, "context": 3, "batch": 6},
                  repeats=1, skip=("sim", "amortized", "step", "sim_default", "sim_pendulum",
                                   "evaluate", "threads"))  # issue 13's parts time whole commands
    figs = r["figures"]
    for key in ("recurrence_efficiency", "warp_vs_gru_epoch_time",
                "warp_vs_gru_epoch_time_teacher_forced", "parallel_vs_sequential",
                "parallel_vs_sequential_large_D"):
        assert isinstance(figs[key], float) and math.isfinite(figs[key]) and figs[key] > 0, key
    # in-process on a CPU the step may reuse memory the process already holds: >= 0 only
    assert figs["peak_bytes_per_trajectory_step"] >= 0
    # equal parameter count: the GRU is sized to WARP's
    e = r["epoch"]
    assert abs(e["gru_params"] - e["warp_params"]) / e["warp_params"] < 0.02
    # the parallel mode computes the same thing as the loop
    assert r["parallel_default"]["max_abs_difference"] < 1e-5
    # saved-for-backward memory holds at least theta for every trajectory-step
    m = r["memory"]
    assert m["saved_for_backward_bytes_per_trajectory_step"] >= m["theta_bytes_per_trajectory_step"]
    assert {row["vary"] for row in r["scaling"]} == {"base", "D", "T", "batch"}
    text = bench.report(r)
    for key in figs:
        assert key.split("_large")[0].split("_teacher")[0] in text or key.startswith("peak")
    assert "peak memory per trajectory-step" in text


def test_plain_gru_stand_in_trains(bench):
    """The torch.nn.GRU stand-in (used when the baselines are missing) has WARP's interface."""
    gru = bench._PlainGRU(2, 5000)
    xn, t = bench.trajectories(4, 8, "cpu")
    loss = gru.training_loss(xn, t, context=3, p_forcing=0.5,
                             generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert math.isfinite(loss.item())
    assert abs(sum(p.numel() for p in gru.parameters()) - 5000) < 300


def test_amortized_figure_comes_from_its_benchmark_or_says_not_available(bench, monkeypatch):
    import types

    stub = types.ModuleType("benchmarks.amortized_vs_classical")
    stub.run = lambda quick=False, device="cpu": {"amortized_vs_classical_speedup": 12.5,
                                                   "quick": quick}
    monkeypatch.setitem(sys.modules, "benchmarks.amortized_vs_classical", stub)
    r = bench.amortized_vs_classical(True)
    assert r["amortized_vs_classical_speedup"] == 12.5 and r["quick"] is True

    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(bench.importlib, "import_module", missing)
    r = bench.amortized_vs_classical(True)
    assert r["amortized_vs_classical_speedup"] == "not available" and "note" in r


def test_transitions_benchmark_runs_at_tiny_sizes():
    spec = importlib.util.spec_from_file_location(
        "benchmarks_transitions", SCRIPT.with_name("transitions.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(n_train=12, n_test=4, epochs=1, T=12, batch_size=4,
                variants=["warp diagonal", "warp-phys lowrank"])
    assert [row["variant"] for row in r["rows"]] == ["warp diagonal", "warp-phys lowrank"]
    for row in r["rows"]:
        assert math.isfinite(row["test_mse"]) and row["seconds_per_epoch"] > 0
    assert r["rows"][1]["param_rel_error"] is not None
    assert "warp-phys lowrank" in mod.report(r)


def test_physics_vs_blackbox_at_the_defaults_scores_noisy_contexts_against_the_truth(tmp_path,
                                                                                   capsys):
    """--defaults: fit's defaults on a noisy file (tiny sizes), both models of the same run,
    finished runs reused."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "physics_vs_blackbox.py"
    spec = importlib.util.spec_from_file_location("physics_vs_blackbox", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--out", str(tmp_path), "--defaults", "--quick", "--studies", "spring_mass",
            "--noise", "0.01", "--jobs", "1"]
    import json

    assert mod.main([*argv, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["study"], row["noise"]) == ("spring_mass", 0.01)
    assert math.isclose(row["ratio_amortised"], row["warp_mse"] / row["warp_phys_mse"])
    assert row["warp_phys_refined_mse"] < row["warp_phys_mse"]
    for est in ("amortised", "refined"):  # a per-trajectory median: not the ratio of means
        assert 0 < row[f"median_ratio_{est}"] < math.inf
    # the best point estimate the noisy contexts allow beats a one-epoch model's own
    assert math.isclose(row["ratio_context_limit"], row["warp_mse"] / row["context_limit_mse"])
    assert row["context_limit_mse"] < row["warp_phys_mse"]
    folder = tmp_path / "defaults_spring_mass_n0.01"
    from warpphys import api
    from warpphys.data import simulate

    # on clean contexts the truth is the least-squares fit: its rollout is the exact one
    clean = simulate("spring_mass", 4, "test", 11)
    K = 32
    assert mod._context_limit(api.load(folder / "warp-phys"), clean, clean, K) < 1e-12
    config = json.loads((folder / "warp-phys" / "config.json").read_text())
    assert config["options"]["fresh_noise"] == 0.01 and config["fresh_data"] == "file"
    stamp = (folder / "warp" / "model.pt").stat().st_mtime_ns
    assert mod.main(argv) == 0  # reuses the finished runs; prints the table
    assert (folder / "warp" / "model.pt").stat().st_mtime_ns == stamp
    text = capsys.readouterr().out
    assert "min_ratio_amortised" in text and "med_ratio" in text


def test_physics_vs_blackbox_benchmark_reports_side_by_side_ratios(tmp_path, capsys):
    """Tiny sizes, one study, clean and noisy: a row per noise level, ratios computed from the
    two models' MSEs of the same run, refined MSE below the amortised one."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "physics_vs_blackbox.py"
    spec = importlib.util.spec_from_file_location("physics_vs_blackbox", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--out", str(tmp_path), "--quick", "--studies", "msd", "--seeds", "1", "--jobs", "1"]
    assert mod.main([*argv, "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [(r["study"], r["noise"]) for r in rows] == [("msd", 0.0), ("msd", 0.01)]
    for r in rows:
        assert math.isclose(r["ratio_amortised"], r["warp_mse"] / r["warp_phys_mse"])
        assert r["warp_phys_refined_mse"] < r["warp_phys_mse"]
    assert (tmp_path / "msd_n0.01" / "results.csv").exists()
    assert mod.main(argv) == 0  # reuses the finished runs; prints the table
    text = capsys.readouterr().out
    assert "min_ratio_amortised" in text and "min_ratio_refined" in text


def test_step_vs_base_reports_the_gemm_bound_beside_the_step():
    """The side-by-side step benchmark, run against this same checkout at a tiny size: both
    sides give the same losses, and the step's GEMMs alone take less than the whole step."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_vs_base.py"
    spec = importlib.util.spec_from_file_location("step_vs_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.compare(str(path.parents[1]), width=4, depth=1, batch=4, T=24, rounds=1, steps=1)
    assert r["loss_old"] == r["loss_new"]
    assert 0 < r["gemm_only_s"] < r["new_s"]
    assert r["speedup_bound"] == pytest.approx(r["old_s"] / r["gemm_only_s"])
