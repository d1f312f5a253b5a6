"""Test configuration: strict float64 numerics for physics, hypothesis profiles, GPU opt-in."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (opt-in `-m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- small fits for the fit / evaluate / predict / checkpoint tests (well under a second each) ---
#: options that keep a WARP fit tiny; later arguments override them (argparse keeps the last)
SMALL_FIT = ["--model", "warp", "--epochs", "1", "--context", "5", "--width", "4",
             "--batch-size", "8", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="session")
def user_file(tmp_path_factory):
    """A user's own measurements: 12 spring-mass trajectories of 20 steps with every optional key
    (params, state_names, param_names, system)."""
    from warpphys.data import Trajectories, simulate

    sim = simulate("spring_mass", n=12, seed=0)
    tr = Trajectories(t=sim.t[:20], x=sim.x[:, :20], params=sim.params,
                      state_names=sim.state_names, param_names=sim.param_names, system=sim.system)
    return tr.save(tmp_path_factory.mktemp("data") / "spring.npz")


@pytest.fixture
def fit_cli():
    """``fit_cli(*args, figures=False)``: ``warpphys fit`` in-process with SMALL_FIT options."""
    from warpphys import cli

    def run(*args: str, figures: bool = False) -> int:
        return cli.main(["fit", *SMALL_FIT, *([] if figures else ["--no-figures"]), *args])

    return run


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory, user_file):
    """Run directory of a 1-epoch black-box WARP fit on ``user_file``. Shared: copy it before
    changing anything in it."""
    from warpphys import cli

    out = tmp_path_factory.mktemp("runs") / "warp"
    rc = cli.main(["fit", *SMALL_FIT, "--no-figures", "--data", str(user_file), "--out", str(out)])
    assert rc == 0
    return out


class _PickleBomb:
    """Unpickling this creates ``marker`` (harmless stand-in for running arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def pickle_bomb():
    """``pickle_bomb(path, marker, via="torch"|"pickle")``: write a file that would create
    ``marker`` if it were ever unpickled: a warpphys-looking checkpoint dict saved with
    torch.save, or a bare pickle."""
    import pickle

    def write(path, marker, via: str = "torch"):
        bomb = _PickleBomb(marker)
        if via == "torch":
            torch.save({"format": "warpphys", "version": 1, "kind": "model", "state_dict": bomb},
                       path)
        else:
            with open(path, "wb") as fh:
                pickle.dump(bomb, fh)
        return path

    return write


def variant(user_file, path, **changes):
    """A copy of the .npz ``user_file`` at ``path`` with arrays replaced (value None drops the
    key); returns ``path``."""
    with np.load(user_file) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def refused(rc: int, capsys, *needles: str) -> str:
    """Assert a clean refusal of the command line: exit 2, one line on stderr (``warpphys ...:
    error: ...``) containing ``needles``, no traceback. Returns the line."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("warpphys ") and ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def float64():
    """float64 as torch's default dtype for one test (files that check physics use it for all
    their tests: ``pytestmark = pytest.mark.usefixtures("float64")``); a module-level
    ``set_default_dtype`` would leak into every test file collected after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
