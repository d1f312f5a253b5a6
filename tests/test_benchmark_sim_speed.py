"""The simulation benchmark script runs (on a tiny problem) and reports what it promises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sim_speed.py"


def test_sim_speed_benchmark_runs_and_reports_matched_accuracy():
    spec = importlib.util.spec_from_file_location("sim_speed", SCRIPT)
    sim_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim_speed)
    r = sim_speed.run(n=32, n_steps=64, quick=True, scipy_n=8, repeats=1, with_default=False)
    assert r["scipy_extrapolated"] and r["scipy_timed_trajectories"] == 8
    assert r["accuracy_ok"], r
    assert r["sim_speedup_vs_scipy"] > 0 and r["torch_max_rel_error_vs_closed_form"] <= 1e-5
    assert "sim_speedup_vs_scipy" in sim_speed.report(r)
