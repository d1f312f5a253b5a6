"""The notebooks: committed without outputs, and each runs top to bottom in a fresh kernel.

Running them is opt-in (``python -m pytest -q -m notebooks``; CI does): every notebook is executed
with nbclient in a new kernel of *this* interpreter, in the small setting
(``WARPPHYS_NOTEBOOK_SCALE=small``), with a temporary working directory, within
``NOTEBOOK_TIMEOUT_S`` seconds for the whole notebook. Each notebook's run time is printed
on the terminal. ``python tests/test_notebooks.py --strip-outputs`` strips the outputs of every
notebook in place before a commit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_TIMEOUT_S = 600  # for a whole notebook, in the small setting on a 2-core CPU

STRIP_HINT = "strip them before committing: python tests/test_notebooks.py --strip-outputs"


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"pendulum_reconstruction.ipynb", "lotka_volterra_reconstruction.ipynb",
            "spring_mass_reconstruction.ipynb", "reproduction.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None
                  or "execution" in cell.get("metadata", {}))]
    assert not dirty, (f"{path.name}: code cells {dirty} have outputs, execution counts or "
                       f"timings; {STRIP_HINT}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_its_settings_from_the_environment(path):
    """A parameter cell near the top reads the scale, so CI can run the small setting."""
    nb = json.loads(path.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "WARPPHYS_NOTEBOOK_SCALE" in code[0], f"{path.name}: first code cell must read it"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "reconstruction" in p.name],
                         ids=lambda p: p.stem)
@pytest.mark.parametrize("seed", ["x", "1.5", "-1", ""])
def test_a_bad_seed_in_the_environment_is_named(path, seed, monkeypatch):
    nb = json.loads(path.read_text())
    first = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    monkeypatch.setenv("WARPPHYS_NOTEBOOK_SEED", seed)
    with pytest.raises(ValueError, match="WARPPHYS_NOTEBOOK_SEED must be a whole number"):
        exec(first, {})


def _kernel_manager():
    """A kernel manager for this interpreter's ipykernel ("python3" resolved to sys.executable),
    ignoring any installed kernelspecs, so that nothing has to be registered."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name="python3",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def _repo_files() -> set[str]:
    """Names at the repository's top level and in notebooks/ (what a notebook could litter)."""
    return set(os.listdir(ROOT)) | {f"notebooks/{n}" for n in os.listdir(ROOT / "notebooks")}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, capsys, record_property):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("WARPPHYS_NOTEBOOK_SCALE", "small")
    monkeypatch.setenv("WARPPHYS_NOTEBOOK_SEED", "0")
    monkeypatch.delenv("WARPPHYS_REPRO_DIR", raising=False)  # the reproduction notebook's demo
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # torch threads thrash on 2 shared cores
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temporary run directories

    before = _repo_files()
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    deadline = start + NOTEBOOK_TIMEOUT_S
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(), resources={"metadata": {"path": str(tmp_path)}},
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
    )
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError:
        pytest.fail(f"{path.name} ran past {NOTEBOOK_TIMEOUT_S} s in the small setting")
    seconds = time.monotonic() - start
    record_property("run_seconds", round(seconds, 1))
    with capsys.disabled():
        print(f"\n{path.name}: ran in {seconds:.0f} s (small setting)")
    assert seconds <= NOTEBOOK_TIMEOUT_S, f"{path.name} took {seconds:.0f} s"
    assert _repo_files() == before, f"{path.name} wrote into the repository"


def strip_outputs(paths) -> None:
    """Remove outputs, execution counts, cell timings and the kernel's version details from
    notebooks, in place (what running a notebook adds; the diff is then the source only)."""
    import nbformat

    for p in paths:
        nb = nbformat.read(p, as_version=4)
        nb.metadata["language_info"] = {"name": "python"}
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, p)


if __name__ == "__main__":
    if sys.argv[1:] != ["--strip-outputs"]:
        sys.exit("usage: python tests/test_notebooks.py --strip-outputs")
    strip_outputs(NOTEBOOKS)
