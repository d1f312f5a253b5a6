"""`warpphys reproduce` on a hidden test-sized scale: the files it promises, resuming without
redoing finished runs, refusals; observation noise; the amortised-vs-classical benchmark."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from warpphys import api, cli, reproduce
from warpphys.data import add_noise, simulate

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "amortized_vs_classical.py"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A finished tiny msd study (every model, one seed) and its log lines."""
    out = tmp_path_factory.mktemp("study") / "msd"
    lines = []
    res = reproduce.run_study(study="msd", scale="tiny", seeds=1, out=out, device="cpu",
                              log=lines.append)
    return out, res, lines


def _mtimes(out: Path) -> dict:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in sorted((out / "runs").rglob("*")) if p.is_file()}


def test_study_writes_results_csv_md_and_figure(tiny_study):
    out, res, _ = tiny_study
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    # one row per model, and per estimate for the models with physical parameters
    labels = [reproduce.label({"model": r["model"], "estimate": r["estimate"]}) for r in rows]
    expected = []
    for m in reproduce.MODELS:
        expected += ([f"{m} (amortised)", f"{m} (refined)"] if m in ("warp-phys", "classical")
                     else [m])
    assert labels == expected
    assert set(reproduce.COLUMNS) == set(rows[0])
    assert {"test_mse_minmax", "ood_mse_minmax", "id_mse", "n_train"} <= set(rows[0])
    with np.load(out / "data" / "seed0" / "train.npz") as f:
        x_train = f["x"]
    for r in rows:
        assert float(r["test_mse"]) >= 0 and int(r["n_params"]) >= 0
        assert float(r["inference_seconds"]) > 0 and r["extrapolation_mse"] == ""  # msd: none
        # paper units: divided by half the training split's global range, squared (the split
        # is 80% of the training file, so its range lies within the file's)
        ratio = float(r["test_mse"]) / float(r["test_mse_minmax"])
        assert 0 < ratio <= ((x_train.max() - x_train.min()) / 2) ** 2 * (1 + 1e-12)
    by = dict(zip(labels, rows, strict=True))
    assert float(by["classical (amortised)"]["test_mse"]) < 1e-8  # clean data, exact physics
    assert float(by["classical (amortised)"]["param_rel_error"]) < 1e-4
    assert by["warp-phys (amortised)"]["param_rel_error"] != ""
    assert by["gru"]["param_rel_error"] == "" and by["gru"]["estimate"] == ""
    # the refined estimate on its own row, beside the gradient-free one
    wp, wr = by["warp-phys (amortised)"], by["warp-phys (refined)"]
    assert float(wr["param_rel_error"]) < float(wp["param_rel_error"])
    assert float(wr["test_mse"]) < float(wp["test_mse"])
    md = (out / "results.md").read_text()
    assert "2nd-hand" in md and "| classical (amortised) |" in md
    assert "| warp-phys (refined) |" in md and "| 0.0143 |" in md  # paper's GRU
    assert "paper units" in md and "units of its WARP-Phys number are uncertain" in md
    assert "20,480 × 1,000 (batch 1024)" in md and "20,480 × 2,500 (batch 1024)" in md
    assert (out / "comparison.png").stat().st_size > 1000
    assert set(res["table"]) == set(expected)


def test_study_resumes_without_redoing_finished_runs(tiny_study, tmp_path):
    src, _, _ = tiny_study
    out = tmp_path / "msd"
    shutil.copytree(src, out)
    before = _mtimes(out)
    lines = []
    reproduce.run_study(study="msd", scale="tiny", seeds=1, out=out, device="cpu",
                        log=lines.append)
    assert _mtimes(out) == before
    assert sum("done already" in line for line in lines) == len(reproduce.MODELS)

    # a run whose score is missing is scored from disk, not refitted
    (out / "runs" / "gru-seed0" / "score.json").unlink()
    # a run interrupted before fit finished (no metrics.json) is fitted again
    (out / "runs" / "lstm-seed0" / "metrics.json").unlink()
    lines.clear()
    reproduce.run_study(study="msd", scale="tiny", seeds=1, out=out, device="cpu",
                        log=lines.append)
    after = _mtimes(out)
    assert after["runs/gru-seed0/model.pt"] == before["runs/gru-seed0/model.pt"]
    assert (out / "runs" / "gru-seed0" / "score.json").exists()
    assert after["runs/lstm-seed0/model.pt"] != before["runs/lstm-seed0/model.pt"]
    assert [line for line in lines if "fitting" in line] == ["lstm seed 0: fitting"]


def test_study_refuses_an_out_holding_another_study(tiny_study):
    out, _, _ = tiny_study
    with pytest.raises(reproduce.StudyError, match="holds another study"):
        reproduce.run_study(study="msd", scale="tiny", seeds=1, noise=0.01, out=out)


def test_a_damaged_score_is_computed_again_from_its_run(tiny_study, tmp_path):
    """score.json is the study's cache of a finished run's scores: damaged, it gave a
    JSONDecodeError; now the run is scored again from disk, not fitted again."""
    out = tmp_path / "msd"
    shutil.copytree(tiny_study[0], out)
    score = out / "runs" / "gru-seed0" / "score.json"
    good = json.loads(score.read_text())
    model_before = (out / "runs" / "gru-seed0" / "model.pt").read_bytes()
    score.write_text("{bad")
    lines = []
    reproduce.run_study(study="msd", scale="tiny", seeds=1, models=["gru"], out=out,
                        log=lines.append)
    assert "gru seed 0: fitting" not in lines
    assert (out / "runs" / "gru-seed0" / "model.pt").read_bytes() == model_before
    assert json.loads(score.read_text())["rows"][0]["test_mse"] == pytest.approx(
        good["rows"][0]["test_mse"])


@pytest.mark.parametrize("text, words", [("{bad json", "Expecting property name"),
                                         ("[1, 2]", "not a JSON object")])
def test_study_refuses_a_damaged_description_and_keeps_the_folder(tmp_path, text, words):
    """A study.json that is not JSON, or not an object, gave a JSONDecodeError or an
    AttributeError traceback."""
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(text)
    with pytest.raises(reproduce.StudyError, match=f"cannot be read.*{words}"):
        reproduce.run_study(study="msd", scale="tiny", seeds=1, models=["classical"], out=out)
    assert (out / "study.json").read_text() == text and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("args, needle", [
    (["--study", "nope"], "unknown study"),
    (["--study", "msd", "--scale", "huge"], "unknown scale"),
    (["--study", "msd", "--models", "gru,foo"], "unknown models"),
    (["--study", "msd", "--noise", "-1"], "--noise"),
    (["--study", "msd", "--noise", "5"], "--noise must be a number from 0 to 1"),
])
def test_reproduce_cli_refuses_bad_input(args, needle, tmp_path, capsys):
    rc = cli.main(["reproduce", *args, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_reproduce_cli_runs_a_subset_of_models(tmp_path, capsys):
    rc = cli.main(["reproduce", "--study", "pendulum", "--scale", "tiny", "--seeds", "1",
                   "--models", "classical", "--device", "cpu", "--quiet",
                   "--out", str(tmp_path / "p")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["test_mse"]) == {"classical (amortised)", "classical (refined)"}
    assert set(summary["test_mse_minmax"]) == set(summary["test_mse"])
    with open(tmp_path / "p" / "results.csv") as fh:
        row = next(csv.DictReader(fh))
    assert row["extrapolation_mse"] != ""  # pendulum tests run past the training window
    # a second call with other models tabulates those, and says which runs it leaves out
    rc = cli.main(["reproduce", "--study", "pendulum", "--scale", "tiny", "--seeds", "1",
                   "--models", "warp", "--device", "cpu", "--quiet", "--out",
                   str(tmp_path / "p")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "1 finished runs in" in err and "classical-seed0" in err


# -- observation noise ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean():
    return simulate("spring_mass", 16, "train", 0)


def test_noise_of_zero_changes_nothing(clean):
    same = add_noise(clean, 0.0, seed=1)
    np.testing.assert_array_equal(same.x, clean.x)
    assert same is not clean


def test_noise_has_sigma_times_each_states_std(clean):
    noisy = add_noise(clean, 0.05, seed=1)
    noise = (noisy.x - clean.x).reshape(-1, clean.dim)
    state_std = clean.x.reshape(-1, clean.dim).std(0)
    n = noise.shape[0]  # the sample std of n Gaussians is within ~4/sqrt(2n) of the truth
    np.testing.assert_allclose(noise.std(0), 0.05 * state_std, rtol=4 / np.sqrt(2 * n))
    np.testing.assert_allclose(noise.mean(0), 0.0, atol=4 * 0.05 * state_std.max() / np.sqrt(n))


def test_noise_is_seeded_and_leaves_the_rest_alone(clean):
    x0 = clean.x.copy()
    a, b, c = (add_noise(clean, 0.01, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    np.testing.assert_array_equal(clean.x, x0)  # the input is not changed
    np.testing.assert_array_equal(a.t, clean.t)
    np.testing.assert_array_equal(a.params, clean.params)
    assert a.system == clean.system and a.param_names == clean.param_names


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_noise_refuses_bad_levels(clean, sigma):
    with pytest.raises(ValueError, match="noise level"):
        add_noise(clean, sigma)


# -- the amortised-vs-classical benchmark ----------------------------------------------------------
def test_amortized_vs_classical_benchmark_runs_and_reports_the_ratio(user_file, tmp_path):
    spec = importlib.util.spec_from_file_location("amortized_vs_classical", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_dir = tmp_path / "warp-phys"
    api.fit(data=user_file, model="warp-phys", epochs=1, context=8, out=run_dir, device="cpu",
            width=4, hyper_width=8, batch_size=8, figures=False, progress=False)
    r = bench.run(n=16, run_dir=run_dir)
    assert r["n"] == 16 and r["context"] == 8 and r["amortized_vs_classical_speedup"] > 0
    assert r["classical_median_rel_error"] < 1e-4  # clean data, exact physics
    assert np.isfinite(r["warp_phys_median_rel_error"])
    assert "amortized_vs_classical_speedup:" in bench.report(r)


def test_study_models_all_learn_from_the_study_file_alone(tiny_study):
    # no fresh simulated (clean, unlimited) trajectories for WARP-Phys in a comparison
    out, _, _ = tiny_study
    configs = list((out / "runs").glob("warp-phys-seed*/config.json"))
    assert configs
    for path in configs:
        info = json.loads(path.read_text())
        assert info["options"]["fresh_data"] is False and info["fresh_data"] is None
