"""The reproduction study: every model on one of the paper's protocols, over seeds.

    warpphys reproduce --study msd --scale small --seeds 3 --out runs/study-msd

For each seed the study simulates a training file and a test file of the study's protocol
(``systems.PRESETS`` msd / msd-zero / lv, or the pendulum's default protocol), optionally adds
observation noise (:func:`warpphys.data.add_noise`, to the training file and to the test inputs;
scores are against the clean test states), fits every model with :func:`warpphys.api.fit`
(the training file split 80/10/10 into train / validation / unused, the study's test file as
``test_data``), and scores it on the test file:

* the metrics of :data:`warpphys.metrics.METRICS` marked ``study`` (``test_mse``,
  ``extrapolation_mse``, ``ood_mse`` / ``id_mse`` (trajectories whose identifiable parameters
  lie outside / inside their training ranges), ``invariant_drift``, ``valid_prediction_time``,
  ``param_rel_error``), every MSE in physical units and in the paper's (``*_minmax``: states
  mapped to [-1, 1] by the training data's global min and max);
* one row per model and estimate: models with physical parameters (WARP-Phys, classical
  identification) get an ``amortised`` row (their own estimate: WARP-Phys's one forward pass,
  the classical least-squares fit) and a ``refined`` row (refined on the context,
  :meth:`warpphys.api.FittedModel.predict_refined`); black-box models one row;
* ``inference_seconds`` (the rollout of the whole test file; refined rows: refining and
  rolling out), ``fit_seconds``, ``epoch_seconds``, ``n_params`` (trainable), ``n_train`` x
  ``epochs_run`` (the training budget); ``cpu_seconds``: CPU time (all threads) of fitting and
  scoring the run, in the invocation that finished it (with one thread on an idle machine,
  about its wall time).

Files under ``--out``: ``study.json`` (what was asked), ``data/seed<S>/*.npz``,
``runs/<model>-seed<S>/`` (run directories of :func:`warpphys.api.fit`, plus ``score.json``),
``results.csv`` (one row per model, estimate and seed), ``results.md`` (mean ± std over seeds in
both units, with the paper's published numbers and budget beside ours), ``comparison.png``
(test MSE per model in both units, the paper's beside ours).

An interrupted study resumes: a run whose directory holds ``metrics.json`` (written last by
``fit``) is not fitted again (it is only scored, from disk, if its ``score.json`` is missing, or
is not what the study writes: :func:`score_problem`, with a warning); an unfinished run directory
is fitted again from scratch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import systems
from warpphys import api, metrics, registry, rundir
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

#: The paper's training budget (PAPER.md): epochs per model (others: not stated), batch size;
#: its training trajectories are the protocol's ``n_train``.
PAPER_EPOCHS = {"warp": 1000, "warp-phys": 2500}
PAPER_BATCH = 1024

#: run facts summarised beside the metrics of :func:`warpphys.metrics.study_keys`
RUN_FACTS = ("inference_seconds", "fit_seconds", "epoch_seconds", "n_params", "n_train",
             "epochs_run")
COLUMNS = ("model", "estimate", "seed", *metrics.study_keys(), "n_ood", *RUN_FACTS,
           "train_status", "cpu_seconds")
SUMMARY = (*metrics.study_keys(), *RUN_FACTS)


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
            "CPU: measured 11.2 min wall (11.0 min CPU, one thread per fit) on a 2-core "
            "machine shared with other jobs; the Transformer takes about half of it.",
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


def _data_sizes(study: str, scale: Scale) -> dict[str, tuple[int, np.ndarray]]:
    """{"train" / "test": (trajectories, sample times)} of the files :func:`study_data` writes
    for ``study`` at ``scale``."""
    proto = systems.get_protocol(STUDIES[study][0], STUDIES[study][1])
    n_train = proto.n_train if scale.n_train is None else scale.n_train
    n_file = int(math.ceil(n_train / 0.8))  # fit keeps 80% for training
    n_test = proto.n_test if scale.n_test is None else scale.n_test
    t_train = proto.times("train").cpu().numpy()
    t_test = proto.times("test").cpu().numpy()
    if scale.steps is not None:  # test runs keep the protocol's length relative to training
        t_train = t_train[:scale.steps]
        t_test = t_test[:int(round((scale.steps - 1) * proto.test_horizon)) + 1]
    return {"train": (n_file, t_train), "test": (n_test, t_test)}


def _check_data(path: Path, split: str, study: str, sizes: dict) -> None:
    """StudyError unless the existing file ``path`` is the study's ``split`` file: its system,
    its number of trajectories and its sample times those :func:`study_data` writes."""
    fix = "delete it (it will be simulated again) or choose another --out"
    try:
        traj = Trajectories.load(path)
    except (OSError, WarpphysError) as e:
        raise StudyError(f"study data file {str(path)!r} cannot be read ({e}); {fix}") from None
    system = systems.get_system(STUDIES[study][0])
    n, t = sizes[split]
    problem = None
    if traj.system != system.name:
        problem = ("it names no system" if traj.system is None else
                   f"it holds data of system {traj.system!r}") + f", not {system.name!r}"
    elif traj.dim != system.dim:
        problem = f"its states have {traj.dim} variables, not {system.name}'s {system.dim}"
    elif traj.n != n or traj.n_times != len(t):
        problem = (f"it holds {traj.n} trajectories of {traj.n_times} steps, not the {n} of "
                   f"{len(t)} steps that this study's scale makes")
    elif not np.allclose(np.asarray(traj.t, dtype=float), t, rtol=1e-9, atol=1e-12):
        problem = "its sample times are not the study protocol's"
    if problem is not None:
        raise StudyError(f"data file {str(path)!r} does not belong to this study ({problem}); "
                         f"{fix}")


def study_data(study: str, scale: Scale, seed: int, noise: float, folder: Path,
               device: str = "cpu") -> dict[str, Path]:
    """Write (once) and return the paths of a seed's files: ``train`` (noisy if ``noise``),
    ``test`` (clean truth) and ``test_inputs`` (what the models see: noisy if ``noise``).
    Existing files are checked (:func:`_check_data`: StudyError for a file of another system,
    or of other sizes) and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train": folder / "train.npz", "test": folder / "test.npz",
             "test_inputs": folder / ("test_noisy.npz" if noise > 0 else "test.npz")}
    sizes = _data_sizes(study, scale)
    if all(p.exists() for p in paths.values()):
        splits = {paths["train"]: "train", paths["test"]: "test", paths["test_inputs"]: "test"}
        for path, split in splits.items():
            _check_data(path, split, study, sizes)
        return paths
    (n_file, t_train), (n_test, t_test) = sizes["train"], sizes["test"]
    train = _crop(_simulate(study, n_file, "train", seed, device), len(t_train))
    test = _crop(_simulate(study, n_test, "test", seed, device), len(t_test))
    if noise > 0:
        train = add_noise(train, noise, seed=2 * seed + 1)
        add_noise(test, noise, seed=2 * seed + 2).save(paths["test_inputs"])
    test.save(paths["test"])
    train.save(paths["train"])
    return paths


# -- one run ---------------------------------------------------------------------------------
def score(fitted: api.FittedModel, inputs: Trajectories, truth: Trajectories,
          context: int) -> list[dict]:
    """Scores of ``fitted`` fed the first ``context`` steps of ``inputs``, against ``truth``
    (the same trajectories without observation noise): one dict per estimate the model offers
    (each estimate computed once, its rollout timed), with ``estimate`` (None for black-box
    models), the study's metrics, ``n_ood`` and ``inference_seconds``."""
    forecasts = fitted.forecasts(inputs, context)
    out = []
    for est, forecast in forecasts.items():
        m = fitted.score(truth, forecasts, context, estimate=est)
        out.append({"estimate": est if fitted.model.has_params else None,
                    **{k: m.get(k) for k in metrics.study_keys()}, "n_ood": m.get("n_ood"),
                    "inference_seconds": forecast.seconds})
    return out


def _row(model: str, seed: int, fitted: api.FittedModel, scores: dict) -> dict:
    info = fitted.info
    epochs = int(info.get("epochs_run") or 0)
    fit_s = float(info.get("fit_seconds") or 0.0)
    return {"model": model, "seed": seed, **scores, "fit_seconds": fit_s,
            "epoch_seconds": fit_s / epochs if epochs else None,
            "n_params": count_parameters(fitted.model), "n_train": info.get("n_train"),
            "epochs_run": epochs, "train_status": info.get("status")}


def label(row: dict) -> str:
    """A table row's name: the model, with its estimate where it has several."""
    return row["model"] if not row.get("estimate") else f"{row['model']} ({row['estimate']})"


def _model_options(model: str, scale: Scale, noise: float) -> dict:
    if model == "classical":  # no training options; shooting residuals when data are noisy
        return {"residuals": "shooting" if noise > 0 else "one-step"}
    opts = {k: v for k, v in {**scale.options, **scale.model_options.get(model, {})}.items()
            if k not in registry.IGNORED_OPTIONS.get(model, set())}  # (sizes of others)
    if "fresh_data" in api.MODELS[model].options:
        # every model of a study learns from the same (noisy, when noise > 0) training file:
        # no fresh simulated trajectories, which would be clean and unlimited
        opts.setdefault("fresh_data", False)
    return opts


def run_one(model: str, seed: int, *, study: str, scale: Scale, noise: float,
            paths: dict[str, Path], run_dir: Path, device: str, log: Callable) -> list[dict]:
    """Fit (unless finished) and score one model for one seed; returns its results rows (one
    per estimate)."""
    score_file = run_dir / "score.json"
    cpu0 = time.process_time()
    finished = (run_dir / api.METRICS_FILE).exists() and (run_dir / api.MODEL_FILE).exists()
    if finished and score_file.exists():
        try:
            saved = rundir.read_json(score_file)
            if isinstance(saved, dict) and isinstance(saved.get("rows"), list):
                saved["rows"] = [{k: math.inf if v == DIVERGED else v for k, v in row.items()}
                                 if isinstance(row, dict) else row for row in saved["rows"]]
            problem = score_problem(saved, model, seed)
        except (OSError, ValueError) as e:  # damaged (e.g. cut short)
            problem = f"it cannot be read as JSON ({e})"
        if problem is None:
            log(f"{model} seed {seed}: done already")
            return saved["rows"]
        # edited, damaged or of an older format: scored again from the run, not fitted again
        warnings.warn(f"{str(score_file)!r} is not a score this study writes ({problem}); "
                      f"scoring the run again from its saved model", stacklevel=2)
    if not finished:
        log(f"{model} seed {seed}: fitting")
        score_file.unlink(missing_ok=True)  # the study's own file: --force replaces a bare run
        api.fit(data=paths["train"], test_data=paths["test_inputs"], model=model, seed=seed,
                epochs=None if model == "classical" else scale.epochs, context=_context(
                    study, scale), out=run_dir, force=True, device=device, figures=False,
                progress=False, **_model_options(model, scale, noise))
    fitted = api.load(run_dir, device=device)  # scored from disk: a fresh model, honest timing
    system = STUDIES[study][0]
    truth = Trajectories.load(paths["test"], system=system)
    inputs = Trajectories.load(paths["test_inputs"], system=system)
    rows = [_row(model, seed, fitted, s)
            for s in score(fitted, inputs, truth, fitted.context)]
    cpu = time.process_time() - cpu0
    for row in rows:
        row["cpu_seconds"] = cpu
        log(f"{label(row)} seed {seed}: test_mse {_fmt(row['test_mse'])} "
            f"({_fmt(row.get('test_mse_minmax'))} in the paper's units), fit "
            f"{row['fit_seconds']:.1f} s, inference {row['inference_seconds']:.2f} s")
    # strict JSON: a diverged metric (NaN or infinite) is written as the word "diverged"
    rundir.write_json({"rows": [{k: DIVERGED if isinstance(v, float) and not math.isfinite(v)
                                 else v for k, v in row.items()} for row in rows]}, score_file)
    return rows


#: how score.json writes a metric of rollouts that diverged (strict JSON has no NaN or inf)
DIVERGED = "diverged"
_NUMBER, _WHOLE = (int, float), int
_TYPE_WORDS = {_NUMBER: "a number", _WHOLE: "a whole number", str: "text"}
#: each key of a results row (:func:`_row`): (its type in ``score.json``, whether null is written)
_ROW_TYPES = {
    "model": (str, False), "seed": (_WHOLE, False), "estimate": (str, True),
    **{k: (_NUMBER, True) for k in metrics.study_keys()}, "n_ood": (_WHOLE, True),
    "inference_seconds": (_NUMBER, False), "fit_seconds": (_NUMBER, False),
    "epoch_seconds": (_NUMBER, True), "n_params": (_WHOLE, False), "n_train": (_WHOLE, True),
    "epochs_run": (_WHOLE, False), "train_status": (str, True), "cpu_seconds": (_NUMBER, False),
}


def score_problem(saved, model: str, seed: int) -> str | None:
    """What keeps ``saved`` (a run's ``score.json``, parsed) from being the scores that
    :func:`run_one` writes for ``model`` and ``seed``, or None: ``{"rows": [...]}``, one row per
    estimate (one row, estimate None, or one per :data:`warpphys.metrics.ESTIMATES` in order),
    each row with exactly the keys of :func:`_row` and the type it writes to each."""
    if not isinstance(saved, dict) or set(saved) != {"rows"}:
        return 'not a JSON object of the one key "rows"'
    rows = saved["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return "its rows are not a list of JSON objects"
    estimates = tuple(r.get("estimate") for r in rows)
    if estimates not in ((None,), metrics.ESTIMATES):
        return (f"its rows have estimates {json.dumps(estimates)}, not [null] or "
                f"{json.dumps(metrics.ESTIMATES)}")
    for i, row in enumerate(rows):
        if set(row) != set(_ROW_TYPES):
            missing, extra = set(_ROW_TYPES) - set(row), set(row) - set(_ROW_TYPES)
            return (f"row {i} lacks keys {sorted(missing)}" if missing
                    else f"row {i} has unknown keys {sorted(extra)}")
        for key, (types, optional) in _ROW_TYPES.items():
            v = row[key]
            if not ((v is None and optional)
                    or (isinstance(v, types) and not isinstance(v, bool))):
                return f"row {i}: {key} {v!r} is not {_TYPE_WORDS[types]}"
        if row["model"] != model or row["seed"] != seed:
            return f"row {i} is of {row['model']!r} seed {row['seed']}, not this run's"
    return None


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
    """{label: {metric: mean, metric + "_std": std over seeds, "seeds": n, "model": model,
    "estimate": estimate}}, one entry per model and estimate (see :func:`label`), in the order
    of ``models`` and then :data:`warpphys.metrics.ESTIMATES`."""
    table = {}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        for est in (None, *metrics.ESTIMATES):
            group = [r for r in mine if r.get("estimate") == est]
            if group:
                table[label(group[0])] = _entry(group)
    return table


def _entry(group: list[dict]) -> dict:
    """Mean and std over seeds of every :data:`SUMMARY` key of ``group``'s rows (over the seeds
    that have it; infinite when a seed's rollouts diverged, so that no mean hides it)."""
    entry = {"seeds": len(group), "model": group[0]["model"],
             "estimate": group[0].get("estimate")}
    for key in SUMMARY:
        vals = np.array([float(r[key]) for r in group if r.get(key) is not None])
        if not vals.size:  # (the metric does not apply)
            entry[key] = entry[key + "_std"] = None
        elif not np.isfinite(vals).all():  # a seed diverged: no mean hides it
            entry[key], entry[key + "_std"] = math.inf, None
        else:
            entry[key] = float(vals.mean())
            entry[key + "_std"] = float(vals.std()) if len(vals) > 1 else None
    return entry


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def _budget(n_train, epochs, batch) -> str:
    """``trajectories x epochs (batch B)``, e.g. ``20,480 × 1,000 (batch 1024)``."""
    if not epochs:
        return "no training"
    return f"{_fmt(int(round(n_train)))} × {_fmt(int(round(epochs)))} (batch {batch})"


def results_markdown(table: dict, *, study: str, scale_name: str, scale: Scale, seeds: int,
                     noise: float, wall_seconds: float, context: int, sizes: dict,
                     cpu_seconds: float = 0.0) -> str:
    """The study's table: mean ± std over seeds of the metrics of
    :func:`warpphys.metrics.study_keys` (every MSE in physical and in the paper's units), with
    the paper's numbers (its units only, 2nd-hand) and training budget beside ours."""
    dataset = STUDIES[study][2]
    paper = PAPER_TEST_MSE.get(dataset, {})
    proto = systems.get_protocol(STUDIES[study][0], STUDIES[study][1])
    batch = scale.options.get("batch_size", "default")

    def pm(entry, key, digits=3):
        v, s = entry.get(key), entry.get(key + "_std")
        if v is None:
            return "n/a"
        if not math.isfinite(v):
            return DIVERGED
        if key == "n_params":
            return _fmt(int(round(v)))
        return _fmt(v, digits) + ("" if s is None else f" ± {_fmt(s, 2)}")

    def paper_mse(entry):  # the paper's WARP-Phys is its one-pass model: the amortised row
        if entry.get("estimate") not in (None, "amortised"):
            return "–"
        return _fmt(paper.get(entry["model"]))

    def paper_budget(entry):
        epochs = PAPER_EPOCHS.get(entry["model"])
        if dataset is None or entry["model"] not in paper:
            return "n/a"
        return ("not stated" if epochs is None else
                _budget(proto.n_train, epochs, PAPER_BATCH))

    # metric columns from the metric table: each MSE in both units, the paper's beside ours
    columns = []  # (header, cell function)
    for metric in metrics.METRICS:
        if not metric.study:
            continue
        columns.append((metric.label, lambda e, k=metric.key: pm(e, k)))
        if not metric.minmax:
            continue
        in_paper_units = metrics.metric_key(metric.key, minmax=True)
        columns.append((f"{metric.label}, paper units",
                        lambda e, k=in_paper_units: pm(e, k)))
        if metric.key == "test_mse" and dataset is not None:
            columns.append(("paper's test MSE, paper units (2nd-hand)", paper_mse))
    columns += [("parameters", lambda e: pm(e, "n_params")),
                ("fit s", lambda e: pm(e, "fit_seconds", 3)),
                ("inference s", lambda e: pm(e, "inference_seconds", 3)),
                ("budget: train trajectories × epochs", lambda e: _budget(
                    e.get("n_train") or 0, e.get("epochs_run"), batch))]
    if dataset is not None:
        columns.append(("paper's budget", paper_budget))

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
        "Means ± standard deviations over seeds, on the rolled-out steps after the context. "
        "Every MSE twice: in the data's physical units, and in the paper's units (states "
        "mapped to [-1, 1] by the training data's one global minimum and maximum over all "
        "state variables: the physical MSE divided by half the training range squared).", "",
        "| model | " + " | ".join(h for h, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, e in table.items():
        lines.append(f"| {name} | " + " | ".join(cell(e) for _, cell in columns) + " |")
    lines += ["", "Notes:"]
    if dataset is not None:
        lines += [
            "- paper's test MSE: the published number (**2nd-hand**: read from summaries of "
            "the paper, see PAPER.md), in the paper's units only, beside the same dataset and "
            "model (WARP-Phys: beside our one-pass, amortised row); its sizes and budget are "
            "the paper's, not ours (paper's budget column). The paper's WARP-Phys run had "
            "normalisation off, so the units of its WARP-Phys number are uncertain.",
        ]
    lines += [
        "- OOD / in-range MSE: test trajectories whose identifiable parameter combinations "
        "(e.g. k/m and c/m) lie outside / inside their training ranges. Extrapolation MSE: "
        "steps past the training window (n/a: test runs no longer than training, as in the "
        "paper's protocols).",
        "- amortised / refined rows: models with physical parameters are scored with each of "
        "their estimates. amortised: WARP-Phys's one forward pass (no gradient step); for "
        "classical identification, its per-trajectory least-squares fit. refined: those "
        "estimates refined on the context (Levenberg-Marquardt on one-step, then "
        "whole-context errors through the model's physics step; "
        "`FittedModel.predict_refined`), then rolled out with the physics; its inference "
        "time includes the refinement. param. rel. error: median relative error of the "
        "identifiable parameter combinations.",
        "- classical: per-trajectory `scipy.optimize.least_squares` on the context "
        f"({'shooting' if noise > 0 else 'one-step'} residuals), then the known ODE; nothing "
        "is trained (fit s ~ 0), its inference time is the per-trajectory fits plus the "
        "simulation.",
        "- GRU/LSTM are sized to the black-box WARP's parameter count.",
        "- budget: training trajectories × epochs run (mean over seeds; early stopping may "
        "end a fit sooner) and batch size.",
    ]
    return "\n".join(lines) + "\n"


# -- the study -------------------------------------------------------------------------------
#: the most seeds a study runs (each seed: its own data files and a fit of every model)
MAX_SEEDS = 100


def _seed_count(seeds) -> int:
    """``seeds`` as an int from 1 to :data:`MAX_SEEDS`; StudyError otherwise."""
    whole = not isinstance(seeds, bool) and (
        isinstance(seeds, numbers.Integral)
        or (isinstance(seeds, numbers.Real) and math.isfinite(seeds)
            and float(seeds).is_integer()))
    if not whole or seeds < 1:
        raise StudyError(f"--seeds must be a positive integer, got {seeds!r}")
    if seeds > MAX_SEEDS:
        raise StudyError(f"--seeds {int(seeds)} is too many: a study simulates data and fits "
                         f"every model once per seed; give at most {MAX_SEEDS}, e.g. --seeds 3 "
                         f"(more can be added later with the same --out)")
    return int(seeds)


def _run_config(run_dir: Path) -> dict:
    """A finished run's ``config.json``, checked for what the study's table reads from it
    (``n_train``, ``context``: whole numbers); StudyError otherwise."""
    path = run_dir / api.CONFIG_FILE
    try:
        info = rundir.read_json(path)
    except (OSError, ValueError) as e:
        problem = f"it cannot be read as JSON ({e})"
    else:
        problem = None if isinstance(info, dict) else "not a JSON object"
        for key in ("n_train", "context") if problem is None else ():
            v = info.get(key)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                problem = f"its {key} {v!r} is not a positive whole number"
                break
    if problem is not None:
        raise StudyError(f"the run's config.json {str(path)!r} was edited or damaged "
                         f"({problem}); delete the run folder {str(run_dir)!r} (it will be "
                         f"fitted again)")
    return info


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
        seeds: number of seeds (0 .. seeds-1), at most :data:`MAX_SEEDS`; each seed has its
            own data and initialisation.
        noise: observation noise, in units of each state's standard deviation.
        models: model names, each once (default: all of :data:`MODELS`).
        device: "auto", "cpu" or "cuda".
        log: called with one line per step (default: silent).
    Returns:
        {"rows": [...], "table": {...}, "paths": {...}, "wall_seconds": s}; rows and table
        entries per model and estimate (:func:`label`).
    """
    log = log or (lambda msg: None)
    if study not in STUDIES:
        raise StudyError(f"unknown study {study!r}; choose one of: {', '.join(STUDIES)}")
    if scale not in SCALES:
        raise StudyError(f"unknown scale {scale!r}; choose one of: {', '.join(PUBLIC_SCALES)}")
    seeds = _seed_count(seeds)
    noise = float(noise)
    if not (math.isfinite(noise) and 0 <= noise <= 1):  # (as fit's fresh_noise)
        raise StudyError(f"--noise must be a number from 0 to 1 (times each state's std, e.g. "
                         f"0.01), got {noise:g}")
    models = list(MODELS) if not models else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise StudyError(f"unknown models {unknown}; choose from: {', '.join(MODELS)}")
    twice = [m for i, m in enumerate(models) if m in models[:i]]
    if twice:  # every row would be written, and averaged, twice
        raise StudyError(f"--models names {twice[0]!r} more than once; name each model once, "
                         f"e.g. --models {','.join(dict.fromkeys(models))}")
    device = api.resolve_device(device)
    sc = SCALES[scale]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {str(out)!r} is a file; name a folder for the study")
    manifest_file = out / "study.json"
    manifest = _manifest(study, scale, noise, sc)
    if manifest_file.exists():
        try:
            old = rundir.read_json(manifest_file)
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise StudyError(f"{str(manifest_file)!r} cannot be read as a study's description "
                             f"({e}); choose another --out (its runs are kept as they are)"
                             ) from None
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
    for seed in range(seeds):
        paths = study_data(study, sc, seed, noise, out / "data" / f"seed{seed}", device)
        for model in models:
            run_dir = out / "runs" / f"{model}-seed{seed}"
            rows.extend(run_one(model, seed, study=study, scale=sc, noise=noise, paths=paths,
                                run_dir=run_dir, device=device, log=log))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    asked = {f"{m}-seed{s}" for m in models for s in range(seeds)}
    others = sorted(p.name for p in (out / "runs").iterdir()
                    if p.is_dir() and p.name not in asked and (p / api.MODEL_FILE).exists())
    if others:  # runs of an earlier call with other --models or --seeds: not in this table
        warnings.warn(f"the results cover --models {','.join(models)} and --seeds {seeds} "
                      f"only; {len(others)} finished runs in {str(out / 'runs')!r} are left "
                      f"out ({', '.join(others[:4])}{' ...' if len(others) > 4 else ''}): "
                      f"name their models and seeds too to tabulate them together",
                      stacklevel=2)
    table = summarize(rows, models)
    test = Trajectories.load(out / "data" / "seed0" / "test.npz")
    train_info = _run_config(out / "runs" / f"{models[0]}-seed0")
    sizes = {"n_train": train_info["n_train"], "n_test": test.n, "n_steps": test.n_times}
    paths = {"csv": out / "results.csv", "md": out / "results.md",
             "figure": out / "comparison.png"}
    write_text(results_csv(rows), paths["csv"])
    write_text(results_markdown(
        table, study=study, scale_name=scale, scale=sc, seeds=seeds, noise=noise,
        wall_seconds=wall, context=train_info["context"], sizes=sizes, cpu_seconds=cpu),
        paths["md"])
    from warpphys import plots

    paper = PAPER_TEST_MSE.get(STUDIES[study][2], {})
    # beside the model's one-pass row (the paper's WARP-Phys reads its parameters in one pass)
    reference = {(f"{m} (amortised)" if f"{m} (amortised)" in table else m): v
                 for m, v in paper.items()}
    plots.plot_comparison_bars(
        table, ["test_mse", "test_mse_minmax"], paths["figure"],
        reference={"test_mse_minmax": reference}, reference_label="paper (2nd-hand)",
        titles={"test_mse": "test MSE, physical units",
                "test_mse_minmax": "test MSE, paper units (states in [-1, 1])"})
    log(f"wrote {paths['csv']}, {paths['md']}, {paths['figure']} ({wall / 60:.1f} min)")
    return {"rows": rows, "table": table, "paths": {k: str(v) for k, v in paths.items()},
            "wall_seconds": wall, "cpu_seconds": cpu}
