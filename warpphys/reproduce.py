"""The reproduction study: every model on one of the paper's protocols, over seeds.

    warpphys reproduce --study msd --scale small --seeds 3 --out runs/study-msd

For each seed the study simulates a training file and a test file of the study's protocol
(``systems.PRESETS`` msd / msd-zero / lv, or the pendulum's default protocol), optionally adds
observation noise (:func:`warpphys.data.add_noise`, to the training file and to the test inputs;
scores are against the clean test states), fits every model with :func:`warpphys.api.fit`
(the training file split 80/10/10 into train / validation / unused, the study's test file as
``test_data``), and scores it on the test file:

* ``test_mse``: rolled-out steps inside the training window (original units);
* ``ood_mse``: rolled-out steps of test trajectories whose parameters lie outside the training
  ranges; ``extrapolation_mse``: steps past the training window (pendulum: test runs are twice
  as long; the paper's protocols have none);
* ``param_rel_error``: median relative error of the identifiable parameters recovered from the
  context (WARP-Phys: one forward pass; classical: its least-squares fit);
* models with physical parameters also report ``test_mse_refined`` / ``ood_mse_refined`` /
  ``param_rel_error_refined``: the same after refining the estimates on the context
  (:meth:`warpphys.api.FittedModel.predict_refined`; the gradient-free numbers stay the main
  ones), and ``refine_seconds``;
* ``fit_seconds``, ``epoch_seconds``, ``inference_seconds`` (rolling out the whole test file),
  ``n_params`` (trainable); ``cpu_seconds``: CPU time (all threads) of fitting and scoring the
  run, in the invocation that finished it (with one thread on an idle machine, about its wall
  time).

Files under ``--out``: ``study.json`` (what was asked), ``data/seed<S>/*.npz``,
``runs/<model>-seed<S>/`` (run directories of :func:`warpphys.api.fit`, plus ``score.json``),
``results.csv`` (one row per model and seed), ``results.md`` (mean ± std over seeds, with the
paper's published numbers beside ours), ``comparison.png``.

An interrupted study resumes: a run whose directory holds ``metrics.json`` (written last by
``fit``) is not fitted again (it is only scored, from disk, if its ``score.json`` is missing);
an unfinished run directory is fitted again from scratch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import systems
from warpphys import api
from warpphys.baselines import BASELINES, count_parameters
from warpphys.data import Trajectories, add_noise
from warpphys.data import simulate as simulate_data
from warpphys.errors import WarpphysError
from warpphys.rundir import write_text

#: study name -> (system, preset or None, paper dataset name or None)
STUDIES = {
    "msd": ("spring_mass", "msd", "MSD"),
    "msd-zero": ("spring_mass", "msd-zero", "MSD-Zero"),
    "lv": ("lotka_volterra", "lv", "LV"),
    "pendulum": ("pendulum", None, None),
}

#: every model of a study, in table order (warp-phys only where the system is known)
MODELS = ("warp-phys", "warp", *BASELINES)

#: Published test MSE (rolled-out steps), read from ../shared/PAPER.md, where the values are
#: given x 1e-2 and marked 2nd-hand (read from summaries of the paper, not its own table).
PAPER_TEST_MSE = {
    "MSD": {"gru": 1.43e-2, "lstm": 1.46e-2, "transformer": 0.34e-2, "warp": 0.94e-2,
            "warp-phys": 0.03e-2},
    "MSD-Zero": {"gru": 0.55e-2, "lstm": 0.57e-2, "transformer": 0.48e-2, "warp": 0.32e-2,
                 "warp-phys": 0.04e-2},
    "LV": {"gru": 5.83e-2, "lstm": 6.18e-2, "transformer": 11.27e-2, "warp": 4.72e-2},
}

COLUMNS = ("model", "seed", "test_mse", "ood_mse", "extrapolation_mse", "param_rel_error",
           "test_mse_refined", "ood_mse_refined", "param_rel_error_refined", "refine_seconds",
           "fit_seconds", "epoch_seconds", "inference_seconds", "n_params", "epochs_run",
           "train_status", "cpu_seconds")
SUMMARY = ("test_mse", "ood_mse", "extrapolation_mse", "param_rel_error", "test_mse_refined",
           "ood_mse_refined", "param_rel_error_refined", "refine_seconds", "fit_seconds",
           "epoch_seconds", "inference_seconds", "n_params")


@dataclass(frozen=True)
class Scale:
    """Data sizes and training options of a study.

    Attributes:
        n_train: training trajectories per seed (the training file holds n_train / 0.8, split
            80/10/10 by ``fit``: the 10% test part is unused, the study's test file is used).
        n_test: test trajectories per seed. None: the protocol's sizes.
        epochs: training epochs of every trained model (the classical fit has none).
        options: training and model options for every model (``fit``'s keyword options).
        model_options: extra options per model name.
        steps, context: keep only the first ``steps`` samples of every training trajectory
            (test trajectories: as many more as the protocol's test horizon asks), and feed
            ``context`` of them (None: the protocol's).
        doc: how the sizes were chosen.
    """

    n_train: int | None
    n_test: int | None
    epochs: int
    options: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    steps: int | None = None
    context: int | None = None
    doc: str = ""


SCALES = {
    "small": Scale(
        n_train=256, n_test=256, epochs=12, options={"batch_size": 32},
        doc="CPU-sized: the protocol's time grid and context, 256 training and 256 test "
            "trajectories per seed, 12 epochs of batches of 32 for every trained model, default "
            "model sizes (WARP root 16 x 2, hypernetwork 64; GRU/LSTM sized to WARP's parameter "
            "count; Transformer d_model 32 x 2 layers; neural ODE 64 x 2 with 8 latent "
            "dimensions). Chosen so that `--study msd --seeds 3` fits in 30 minutes on a 2-core "
            "CPU: measured 27.8 min wall (21.8 min CPU, one thread per fit) on a 2-core "
            "machine shared with other jobs; the Transformer takes 40% of it.",
    ),
    "paper": Scale(
        n_train=None, n_test=None, epochs=1000,
        options={"batch_size": 1024, "width": 48, "depth": 3},
        doc="the paper's protocol sizes (MSD/LV: 20,480 train, 4,096 test; MSD-Zero: 8,192 / "
            "2,048) and root size (48 wide x 3 deep), batches of 1024, up to 1000 epochs "
            "(early stopping on validation); meant for a GPU. The optimiser stays this "
            "project's Adam (see warpphys.train), not the authors' AdaBelief at lr 1e-5.",
    ),
    # hidden: for the tests (seconds per study)
    "tiny": Scale(
        n_train=16, n_test=8, epochs=1,
        options={"batch_size": 8, "width": 4, "depth": 1, "hyper_width": 8},
        model_options={"gru": {"hidden": 8}, "lstm": {"hidden": 8},
                       "transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16},
                       "node": {"node_width": 8, "encoder_width": 8, "augment": 2}},
        steps=40, context=12, doc="test-sized (hidden)",
    ),
}
PUBLIC_SCALES = ("small", "paper")


class StudyError(WarpphysError):
    """A study that cannot run as asked (unknown name, an --out holding another study, ...)."""


# -- data ------------------------------------------------------------------------------------
def _simulate(study: str, n: int | None, split: str, seed: int, device: str) -> Trajectories:
    system, preset, _ = STUDIES[study]
    if preset is not None:
        return simulate_data(None, n, split, seed, preset=preset, device=device)
    return simulate_data(system, n, split, seed, device=device)


def _crop(traj: Trajectories, steps: int | None) -> Trajectories:
    if steps is None or steps >= traj.n_times:
        return traj
    return Trajectories(t=traj.t[:steps], x=traj.x[:, :steps], params=traj.params,
                        state_names=traj.state_names, param_names=traj.param_names,
                        system=traj.system)


def study_data(study: str, scale: Scale, seed: int, noise: float, folder: Path,
               device: str = "cpu") -> dict[str, Path]:
    """Write (once) and return the paths of a seed's files: ``train`` (noisy if ``noise``),
    ``test`` (clean truth) and ``test_inputs`` (what the models see: noisy if ``noise``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train": folder / "train.npz", "test": folder / "test.npz",
             "test_inputs": folder / ("test_noisy.npz" if noise > 0 else "test.npz")}
    if all(p.exists() for p in paths.values()):
        return paths
    proto = systems.get_protocol(STUDIES[study][0], STUDIES[study][1])
    n_train = proto.n_train if scale.n_train is None else scale.n_train
    n_file = int(math.ceil(n_train / 0.8))  # fit keeps 80% for training
    train = _crop(_simulate(study, n_file, "train", seed, device), scale.steps)
    test_steps = None  # test runs keep the protocol's length relative to training
    if scale.steps is not None:
        test_steps = int(round((scale.steps - 1) * proto.test_horizon)) + 1
    test = _crop(_simulate(study, scale.n_test, "test", seed, device), test_steps)
    if noise > 0:
        train = add_noise(train, noise, seed=2 * seed + 1)
        add_noise(test, noise, seed=2 * seed + 2).save(paths["test_inputs"])
    test.save(paths["test"])
    train.save(paths["train"])
    return paths


# -- one run ---------------------------------------------------------------------------------
def score(fitted: api.FittedModel, inputs: Trajectories, truth: Trajectories,
          context: int) -> dict:
    """Metrics of ``fitted`` fed the first ``context`` steps of ``inputs``, scored against
    ``truth`` (the same trajectories without observation noise); times the rollout."""
    t0 = time.perf_counter()
    x_hat = fitted.predict(inputs, context, estimate="amortised")
    inference = time.perf_counter() - t0
    m, params, _ = fitted.score_rollout(truth, x_hat, context)
    out = {k: m[k] for k in ("test_mse", "ood_mse", "extrapolation_mse", "invariant_drift",
                             "valid_prediction_time", "n_ood")}
    out["inference_seconds"] = inference
    for key in ("param_rel_error", "test_mse_refined", "ood_mse_refined",
                "param_rel_error_refined", "refine_seconds"):
        out[key] = None
    if not fitted.model.has_params:
        return out
    t0 = time.perf_counter()
    refined = fitted.refine(inputs, context)
    x_ref = fitted.predict_refined(inputs, context, refined=refined)
    out["refine_seconds"] = time.perf_counter() - t0
    ref, _, _ = fitted.score_rollout(truth, x_ref, context)
    out["test_mse_refined"], out["ood_mse_refined"] = ref["test_mse"], ref["ood_mse"]
    errors = fitted.param_metrics(inputs, context, params, refined[0])
    out["param_rel_error"] = errors.get("param_rel_error")
    out["param_rel_error_refined"] = errors.get("param_rel_error_refined")
    return out


def _row(model: str, seed: int, fitted: api.FittedModel, scores: dict) -> dict:
    info = fitted.info
    epochs = int(info.get("epochs_run") or 0)
    fit_s = float(info.get("fit_seconds") or 0.0)
    return {"model": model, "seed": seed, **{k: scores.get(k) for k in SUMMARY if k in scores},
            "fit_seconds": fit_s, "epoch_seconds": fit_s / epochs if epochs else None,
            "n_params": count_parameters(fitted.model), "epochs_run": epochs,
            "train_status": info.get("status")}


def _model_options(model: str, scale: Scale, noise: float) -> dict:
    if model == "classical":  # no training options; shooting residuals when data are noisy
        return {"residuals": "shooting" if noise > 0 else "one-step"}
    return {**scale.options, **scale.model_options.get(model, {})}


def run_one(model: str, seed: int, *, study: str, scale: Scale, noise: float,
            paths: dict[str, Path], run_dir: Path, device: str, log: Callable) -> dict:
    """Fit (unless finished) and score one model for one seed; returns its results row."""
    score_file = run_dir / "score.json"
    cpu0 = time.process_time()
    finished = (run_dir / api.METRICS_FILE).exists() and (run_dir / api.MODEL_FILE).exists()
    if finished and score_file.exists():
        log(f"{model} seed {seed}: done already")
        return json.loads(score_file.read_text())
    if not finished:
        log(f"{model} seed {seed}: fitting")
        api.fit(data=paths["train"], test_data=paths["test_inputs"], model=model, seed=seed,
                epochs=None if model == "classical" else scale.epochs, context=_context(
                    study, scale), out=run_dir, force=True, device=device, figures=False,
                progress=False, **_model_options(model, scale, noise))
    fitted = api.load(run_dir, device=device)  # scored from disk: a fresh model, honest timing
    system = STUDIES[study][0]
    truth = Trajectories.load(paths["test"], system=system)
    inputs = Trajectories.load(paths["test_inputs"], system=system)
    row = _row(model, seed, fitted, score(fitted, inputs, truth, fitted.context))
    row["cpu_seconds"] = time.process_time() - cpu0
    write_text(json.dumps(row, indent=2) + "\n", score_file)
    log(f"{model} seed {seed}: test_mse {_fmt(row['test_mse'])}, fit "
        f"{row['fit_seconds']:.1f} s, inference {row['inference_seconds']:.2f} s")
    return row


def _context(study: str, scale: Scale) -> int:
    if scale.context is not None:
        return scale.context
    return systems.get_protocol(STUDIES[study][0], STUDIES[study][1]).context


# -- tables ----------------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def summarize(rows: list[dict], models: list[str]) -> dict:
    """{model: {metric: mean, metric + "_std": std over seeds, "seeds": n}}."""
    table = {}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        entry = {"seeds": len(mine)}
        for key in SUMMARY:
            vals = [r.get(key) for r in mine]
            vals = np.array([np.nan if v is None else float(v) for v in vals])
            if np.isnan(vals).all():
                entry[key] = entry[key + "_std"] = None
                continue
            entry[key] = float(np.nanmean(vals))
            entry[key + "_std"] = float(np.nanstd(vals)) if len(vals) > 1 else None
        table[model] = entry
    return table


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def results_markdown(table: dict, *, study: str, scale_name: str, scale: Scale, seeds: int,
                     noise: float, wall_seconds: float, context: int, sizes: dict,
                     cpu_seconds: float = 0.0) -> str:
    """The study's table: mean ± std over seeds, the paper's numbers beside ours."""
    dataset = STUDIES[study][2]
    paper = PAPER_TEST_MSE.get(dataset, {})

    def pm(entry, key, digits=3):
        v, s = entry.get(key), entry.get(key + "_std")
        if v is None:
            return "n/a"
        if key == "n_params":
            return _fmt(int(round(v)))
        return _fmt(v, digits) + ("" if s is None else f" ± {_fmt(s, 2)}")

    where = ("none" if noise == 0 else
             "on training data and test inputs; scored against the clean test states")
    lines = [
        f"# Reproduction study: {study} ({scale_name} scale)", "",
        f"{seeds} seed(s); observation noise {noise:g} x each state's std ({where}); "
        f"context {context} steps; "
        f"{sizes['n_train']} training and {sizes['n_test']} test trajectories per seed, "
        f"{sizes['n_steps']} steps each (test); {scale.epochs} epoch(s) for trained models. "
        f"This invocation: {wall_seconds / 60:.1f} min wall, {cpu_seconds / 60:.1f} min CPU "
        f"(all threads; runs finished by an earlier invocation are reused, not re-timed).", "",
        f"Scale: {scale.doc}", "",
        "Means ± standard deviations over seeds; MSEs in the data's original units, on the "
        "rolled-out steps after the context. `paper test MSE` is the published number "
        "(**2nd-hand**: read from summaries of the paper, see PAPER.md; the paper's sizes and "
        "training budget, not ours), shown for the same dataset and model only.", "",
        "| model | test MSE | paper test MSE (2nd-hand) | OOD MSE | extrapolation MSE | "
        "param rel. error | refined: test MSE | refined: param rel. error | fit s | s / epoch "
        "| inference s | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, e in table.items():
        lines.append(
            f"| {model} | {pm(e, 'test_mse')} | {_fmt(paper.get(model))} | {pm(e, 'ood_mse')} "
            f"| {pm(e, 'extrapolation_mse')} | {pm(e, 'param_rel_error')} "
            f"| {pm(e, 'test_mse_refined')} | {pm(e, 'param_rel_error_refined')} "
            f"| {pm(e, 'fit_seconds', 3)} | {pm(e, 'epoch_seconds', 3)} "
            f"| {pm(e, 'inference_seconds', 3)} | {pm(e, 'n_params')} |")
    lines += [
        "", "Notes:",
        "- OOD MSE: test trajectories with any parameter outside the training ranges. "
        "Extrapolation MSE: steps past the training window (n/a: test runs no longer than "
        "training, as in the paper's protocols).",
        "- param rel. error: median relative error of the identifiable parameter combinations "
        "recovered from the context (WARP-Phys in one forward pass; classical by its "
        "per-trajectory least-squares fit). refined: the estimates refined on the context "
        "(Levenberg-Marquardt on one-step, then whole-context errors through the model's "
        "physics step; `FittedModel.predict_refined`), then rolled out with the physics; "
        "reported beside the gradient-free default.",
        "- classical: per-trajectory `scipy.optimize.least_squares` on the context "
        f"({'shooting' if noise > 0 else 'one-step'} residuals), then the known ODE; nothing "
        "is trained (fit s ~ 0), its inference time is the per-trajectory fits plus the "
        "simulation.",
        "- GRU/LSTM are sized to the black-box WARP's parameter count.",
        "- The paper's numbers come with its own sizes and budget (e.g. MSD: 20,480 training "
        "trajectories, 1000+ epochs) and possibly its own scaling of the states; compare "
        "orders of magnitude and rankings, not digits.",
    ]
    return "\n".join(lines) + "\n"


# -- the study -------------------------------------------------------------------------------
def _manifest(study, scale_name, noise, scale: Scale) -> dict:
    # the scale's options too: runs made with other sizes or epochs are never mixed in
    return {"study": study, "scale": scale_name, "noise": float(noise),
            "scale_options": json.loads(json.dumps(asdict(scale)))}


def run_study(*, study: str, out: str | os.PathLike, scale: str = "small", seeds: int = 3,
              noise: float = 0.0, models: list[str] | None = None, device: str = "auto",
              log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) a study; write results.csv, results.md and comparison.png under ``out``.

    Args:
        study: "msd", "msd-zero", "lv" or "pendulum".
        out: the study folder (created; an existing one must hold the same study, scale and
            noise, whose finished runs are reused).
        scale: "small" (a 2-core CPU, about 30 minutes for msd with 3 seeds) or "paper"
            (the paper's sizes, a GPU).
        seeds: number of seeds (0 .. seeds-1); each seed has its own data and initialisation.
        noise: observation noise, in units of each state's standard deviation.
        models: model names (default: all of :data:`MODELS`).
        device: "auto", "cpu" or "cuda".
        log: called with one line per step (default: silent).
    Returns:
        {"rows": [...], "table": {...}, "paths": {...}, "wall_seconds": s}.
    """
    log = log or (lambda msg: None)
    if study not in STUDIES:
        raise StudyError(f"unknown study {study!r}; choose one of: {', '.join(STUDIES)}")
    if scale not in SCALES:
        raise StudyError(f"unknown scale {scale!r}; choose one of: {', '.join(PUBLIC_SCALES)}")
    if isinstance(seeds, bool) or int(seeds) != seeds or seeds < 1:
        raise StudyError(f"--seeds must be a positive integer, got {seeds!r}")
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise StudyError(f"--noise must be a number >= 0, got {noise}")
    models = list(MODELS) if not models else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise StudyError(f"unknown models {unknown}; choose from: {', '.join(MODELS)}")
    device = api.resolve_device(device)
    sc = SCALES[scale]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {str(out)!r} is a file; name a folder for the study")
    manifest_file = out / "study.json"
    manifest = _manifest(study, scale, noise, sc)
    if manifest_file.exists():
        old = json.loads(manifest_file.read_text())
        if {k: old.get(k) for k in manifest} != manifest:
            raise StudyError(
                f"{str(out)!r} holds another study ({old.get('study')}, scale "
                f"{old.get('scale')}, noise {old.get('noise')}, or other sizes of that scale); "
                f"choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise StudyError(f"--out {str(out)!r} is a non-empty folder that holds no study; "
                         f"choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(manifest, indent=2), manifest_file)
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = []
    for seed in range(int(seeds)):
        paths = study_data(study, sc, seed, noise, out / "data" / f"seed{seed}", device)
        for model in models:
            run_dir = out / "runs" / f"{model}-seed{seed}"
            rows.append(run_one(model, seed, study=study, scale=sc, noise=noise, paths=paths,
                                run_dir=run_dir, device=device, log=log))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    table = summarize(rows, models)
    test = Trajectories.load(out / "data" / "seed0" / "test.npz")
    train_info = json.loads((out / "runs" / f"{models[0]}-seed0" / api.CONFIG_FILE).read_text())
    sizes = {"n_train": train_info["n_train"], "n_test": test.n, "n_steps": test.n_times}
    paths = {"csv": out / "results.csv", "md": out / "results.md",
             "figure": out / "comparison.png"}
    write_text(results_csv(rows), paths["csv"])
    write_text(results_markdown(
        table, study=study, scale_name=scale, scale=sc, seeds=int(seeds), noise=noise,
        wall_seconds=wall, context=train_info["context"], sizes=sizes, cpu_seconds=cpu),
        paths["md"])
    from warpphys import plots

    plots.plot_comparison_bars(table, "test_mse", paths["figure"])
    log(f"wrote {paths['csv']}, {paths['md']}, {paths['figure']} ({wall / 60:.1f} min)")
    return {"rows": rows, "table": table, "paths": {k: str(v) for k, v in paths.items()},
            "wall_seconds": wall, "cpu_seconds": cpu}
