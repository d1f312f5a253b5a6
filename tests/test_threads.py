"""Thread choice: an explicit request, then OMP_NUM_THREADS, then the work's size."""

import pytest
import torch

from warpphys import _threads, cli


def test_request_wins_over_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _threads.choose(2, work_flops=1e12) == (2, "requested")


def test_environment_is_honoured(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _threads.choose(work_flops=1e3, cores=8)[0] == 3


def test_environment_above_the_cores_is_capped_with_a_warning(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "99999")
    with pytest.warns(UserWarning, match="OMP_NUM_THREADS=99999 is more than the 4 CPU cores"):
        assert _threads.choose(work_flops=1e3, cores=4) == (4, "OMP_NUM_THREADS")


def test_small_work_runs_on_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _threads.choose(cores=8, load=0.0)[0] == 1
    assert _threads.choose(work_flops=2 * 128 * 370**2, cores=8, load=0.0)[0] == 1


def test_a_large_dense_recurrence_uses_an_idle_second_core_but_not_a_busy_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _threads.choose(work_flops=2 * 64 * 692**2, cores=2, load=0.0)[0] == 2
    assert _threads.choose(work_flops=2 * 64 * 692**2, cores=2, load=1.0)[0] == 1


def test_a_job_adapts_only_an_automatic_choice(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(_threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    try:
        _threads.configure(None)  # the rule: small work, one thread
        assert torch.get_num_threads() == 1
        assert _threads.adapt(2 * 64 * 692**2) == 2 == torch.get_num_threads()
        _threads.configure(1)  # --threads 1: kept whatever the work
        assert _threads.adapt(2 * 64 * 692**2) == 1 == torch.get_num_threads()
    finally:
        _threads._automatic = False
        torch.set_num_threads(before)


def test_large_work_uses_the_idle_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _threads.choose(work_flops=1e11, cores=8, load=3.2)[0] == 5
    assert _threads.choose(work_flops=1e11, cores=2, load=5.0)[0] == 1


def test_bad_request_is_refused():
    with pytest.raises(ValueError, match="positive"):
        _threads.choose(0)


@pytest.mark.parametrize("command", ["simulate", "fit", "evaluate", "predict", "reproduce"])
def test_cli_commands_take_threads(command):
    args = {"simulate": ["simulate", "--system", "pendulum", "--out", "x.npz"],
            "fit": ["fit", "--system", "pendulum"],
            "evaluate": ["evaluate", "run", "--data", "x.npz"],
            "predict": ["predict", "run", "--data", "x.npz", "--context", "2", "--horizon", "2",
                        "--out", "p.npz"],
            "reproduce": ["reproduce", "--study", "msd", "--out", "s"]}[command]
    assert cli._parser().parse_args([*args, "--threads", "3"]).threads == 3


def test_configure_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert _threads.configure(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_more_threads_than_cores_are_capped_with_a_warning():
    with pytest.warns(UserWarning, match="--threads 1000 is more than the 2 CPU cores"):
        assert _threads.choose(1000, cores=2) == (2, "requested")
    assert _threads.choose(2, cores=2) == (2, "requested")
