"""Resuming a study whose runs already hold a ``score.json``: the study's own file is reused; one
that is not what the study writes (damaged, edited, of another run) is never trusted: the run is
scored again from its saved model, with a one-line warning naming the file and what was wrong,
and the results equal those of the undamaged study."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from warpphys import cli, reproduce

RUN = "classical-seed0"
#: timings: measured again when a run is scored again, so never equal
TIMINGS = ("inference_seconds", "cpu_seconds")


@pytest.fixture(scope="module")
def classical_study(tmp_path_factory):
    """A finished tiny msd study of the classical fit (no training: seconds), one seed."""
    out = tmp_path_factory.mktemp("resume") / "msd"
    res = reproduce.run_study(study="msd", scale="tiny", seeds=1, models=["classical"], out=out,
                              device="cpu")
    return out, res


def _copy(classical_study, tmp_path):
    out = tmp_path / "msd"
    shutil.copytree(classical_study[0], out)
    return out, out / "runs" / RUN / "score.json"


def _resume(out) -> tuple[dict, list[str], list[str]]:
    """Run the copied study again: its results, its log lines, the warnings about scores."""
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = reproduce.run_study(study="msd", scale="tiny", seeds=1, models=["classical"],
                                  out=out, device="cpu", log=lines.append)
    said = [str(w.message) for w in caught if "score.json" in str(w.message)]
    return res, lines, said


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def _assert_same_results(res: dict, good: dict):
    """The same rows and table as the undamaged study (timings aside): metrics to a relative
    1e-9 (the same saved estimates scored again by the same deterministic code)."""
    got, want = _comparable(res["rows"]), _comparable(good["rows"])
    assert [(r["model"], r["seed"], r["estimate"]) for r in got] == [
        (r["model"], r["seed"], r["estimate"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-9, abs=0), key
            else:
                assert g[key] == value, key
    assert res["table"].keys() == good["table"].keys()
    for name, entry in good["table"].items():
        assert res["table"][name]["test_mse"] == pytest.approx(entry["test_mse"], rel=1e-9)


def _good_rows(classical_study) -> list[dict]:
    return json.loads((classical_study[0] / "runs" / RUN / "score.json").read_text())["rows"]


def test_the_studys_own_score_is_reused_without_a_warning(classical_study, tmp_path):
    out, score = _copy(classical_study, tmp_path)
    before = score.stat().st_mtime_ns
    assert reproduce.score_problem({"rows": _good_rows(classical_study)}, "classical", 0) is None
    res, lines, said = _resume(out)
    assert said == [] and "classical seed 0: done already" in lines
    assert score.stat().st_mtime_ns == before  # not scored again
    _assert_same_results(res, classical_study[1])


def _text_for_a_number(rows):
    rows[0]["test_mse"] = "NaN-ish"
    return {"rows": rows}


def _partial_row(rows):
    return {"rows": [{"model": "classical"}]}


def _another_seed(rows):
    for row in rows:
        row["seed"] = 1
    return {"rows": rows}


def _refined_row_missing(rows):
    return {"rows": rows[:1]}


def _true_for_a_count(rows):
    rows[1]["n_params"] = True
    return {"rows": rows}


@pytest.mark.parametrize("damage, words", [
    ('{"rows": 5}', "rows are not a list of JSON objects"),
    ('{"rows": [5]}', "rows are not a list of JSON objects"),
    (_text_for_a_number, "row 0: test_mse 'NaN-ish' is not a number"),
    (_partial_row, "row 0 lacks keys ['cpu_seconds', "),
    (_another_seed, "row 0 is of 'classical' seed 1, not this run's"),
    (_refined_row_missing, 'estimates ["amortised"], not [null] or ["amortised", "refined"]'),
    (_true_for_a_count, "row 1: n_params True is not a whole number"),
    ("{bad json", "cannot be read as JSON (Expecting property name"),
    ("[]", 'not a JSON object of the one key "rows"'),
], ids=["rows-an-int", "row-an-int", "text-for-test_mse", "partial-row", "another-seed",
        "refined-row-missing", "bool-for-n_params", "invalid-json", "empty-list"])
def test_a_malformed_score_is_scored_again_from_its_run(classical_study, tmp_path, damage,
                                                        words):
    """These gave a TypeError or ValueError traceback, or (a partial row, another run's rows)
    put rows without scores, or of another run, into the results table."""
    out, score = _copy(classical_study, tmp_path)
    model_before = (out / "runs" / RUN / "model.pt").read_bytes()
    text = damage if isinstance(damage, str) else json.dumps(
        damage(_good_rows(classical_study)))
    score.write_text(text)
    res, lines, said = _resume(out)
    assert len(said) == 1 and str(score) in said[0] and words in said[0], said
    assert "\n" not in said[0]
    assert not any("fitting" in line or "done already" in line for line in lines)
    assert (out / "runs" / RUN / "model.pt").read_bytes() == model_before  # not fitted again
    _assert_same_results(res, classical_study[1])
    rewritten = json.loads(score.read_text())
    assert reproduce.score_problem(rewritten, "classical", 0) is None
    assert (out / "results.csv").read_text().count("\n") == 1 + len(res["rows"])


def test_the_cli_resumes_a_malformed_score_with_one_warning_line(classical_study, tmp_path,
                                                                 capsys):
    out, score = _copy(classical_study, tmp_path)
    score.write_text('{"rows": 5}')
    rc = cli.main(["reproduce", "--study", "msd", "--scale", "tiny", "--seeds", "1",
                   "--models", "classical", "--device", "cpu", "--quiet", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err
    warned = [line for line in captured.err.splitlines() if "score.json" in line]
    assert len(warned) == 1 and warned[0].startswith("warpphys reproduce: warning: ")
    assert str(score) in warned[0]
    summary = json.loads(captured.out)
    good = classical_study[1]["table"]
    assert set(summary["test_mse"]) == set(good)
    for name, value in summary["test_mse"].items():
        assert value == pytest.approx(good[name]["test_mse"], rel=1e-9)
