"""The `warpphys` command line: parses arguments, calls the library, prints. No logic here."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import warnings

import systems
import warpphys.baselines  # noqa: F401  (registers the baselines in warpphys.registry)
from warpphys import registry
from warpphys.errors import WarpphysError
from warpphys.physics import READOUTS
from warpphys.roots import physics_root_names

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line (the problem and where to find help)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"a seed is a whole number from 0 to 2**63 - 1, got {text!r}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _path_type(what: str):
    """An argparse type for a path option: refuses an empty one (``--out ""``, ``--data=``),
    which would otherwise name the current folder or a default; ``what``: what to name."""

    def path(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"the path is empty ({text!r}); name {what}")
        return text

    return path


_NPZ = _path_type("an .npz file")
_FOLDER = _path_type("a folder")


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads of torch (default: OMP_NUM_THREADS if set, else chosen by "
                        "the work's size: one for warpphys's usual sizes)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="warpphys",
        description="Learn and extrapolate physical dynamical systems with WARP.",
    )
    from importlib.metadata import version

    import warpphys

    p.add_argument("--version", action="version",
                   version=f"warpphys {warpphys.__version__} (torch {version('torch')}, "
                           f"torchdiffeq {version('torchdiffeq')}, python "
                           f"{sys.version.split()[0]})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="simulate trajectories of a system to an .npz file")
    s.add_argument("--system", help=f"one of: {', '.join(systems.names())}")
    s.add_argument("--preset", help=f"a paper protocol: {', '.join(systems.PRESETS)}")
    s.add_argument("--n", type=_positive_int, help="number of trajectories (default: protocol's)")
    s.add_argument(
        "--split", choices=["train", "val", "test"], default="train",
        help="train/val: training parameter ranges; test: the wider out-of-distribution ranges "
        "(default: train)",
    )
    s.add_argument("--seed", type=_seed, default=0,
                   help="random seed; the same seed and split give the same file (default: 0)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    s.add_argument(
        "--range", dest="ranges", action="append", default=[], metavar="NAME=LO:HI",
        help="sample parameter NAME uniformly from [LO, HI] instead of the split's range "
        "(repeatable; LO:LO fixes it), e.g. --range k=2:30 --range c=0:0",
    )
    s.add_argument("--method", default="auto",
                   help="auto (default: the closed form of linear systems, else "
                        "dopri8_uniform at rtol 1e-9), exact, dopri8_uniform, a torchdiffeq "
                        "method (dopri5, dopri8, rk4, ...), dopri5_fixed or dopri8_fixed")
    s.add_argument("--rtol", type=_positive_float,
                   help="relative tolerance of adaptive methods and dopri8_uniform (default "
                        "1e-9); larger is faster and less accurate")
    s.add_argument("--step-size", type=_positive_float,
                   help="the longest step of a fixed-step method (rk4, dopri8_fixed, ...): "
                        "each sample interval is cut into equal steps no longer than this "
                        "(default: the sample spacing / 8)")
    s.add_argument("--out", required=True, type=_NPZ, help="output .npz file")
    s.add_argument("--force", action="store_true", help="replace an existing --out file")
    _threads_option(s)
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("fit", help="train a model (simulating data for --system) into RUN_DIR")
    src = f.add_argument_group("data (one of, or both: --data with known physics)")
    src.add_argument("--system", help=f"one of: {', '.join(systems.names())}; alone, data are "
                                      "simulated")
    src.add_argument("--data", type=_NPZ, help="an .npz trajectory file (split 80/10/10)")
    _param_name_argument(src)
    f.add_argument("--model", help="warp-phys (default with a known system), warp, or a baseline: "
                                   f"{', '.join(sorted(registry.MODELS))}")
    f.add_argument("--epochs", type=_positive_int,
                   help="training epochs (with --resume: train on up to this many)")
    f.add_argument("--context", type=_positive_int, help="true steps fed before rolling out")
    f.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    f.add_argument("--seed", type=_seed, help="random seed (default 0)")
    f.add_argument("--out", type=_FOLDER,
                   help="run directory (default runs/<system>-<model>-<time>)")
    f.add_argument("--force", action="store_true",
                   help="replace an existing run directory of warpphys, once the new run is done")
    f.add_argument("--resume", metavar="RUN_DIR", type=_FOLDER,
                   help="continue an interrupted run")
    f.add_argument("--n-train", type=_positive_int, help="simulated training trajectories")
    f.add_argument("--test-data", type=_NPZ,
                   help="evaluate on this .npz file instead of the held-out split")
    f.add_argument("--max-minutes", type=_positive_float, help="training time budget")
    f.add_argument("--batch-size", type=_positive_int)
    f.add_argument("--lr", type=_positive_float)
    f.add_argument("--width", type=_positive_int, help="root network width")
    f.add_argument("--depth", type=_positive_int, help="root network hidden layers")
    f.add_argument("--transition", choices=["dense", "diagonal", "lowrank", "spectral"],
                   help="the recurrence's A: trained dense (warp's default), diagonal or low "
                        "rank, or a fixed bank of damped rotations tuned to the data (spectral, "
                        "warp-phys's default)")
    f.add_argument("--mode", choices=["autoregressive", "parallel"])
    f.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of the training steps: fp32 (default), tf32 (CUDA tensor "
                        "cores) or bf16 (autocast); evaluation stays fp32")
    f.add_argument("--root", choices=["auto", *physics_root_names()],
                   help="warp-phys root: the system's ODE, its closed form (linear systems), or "
                        "the ODE plus a neural correction (physics known in part); default auto")
    f.add_argument("--readout", choices=list(READOUTS),
                   help="how warp-phys reads the physical parameters from the weights: a trained "
                        "read-out head on the filter bank's state, read at the end of the "
                        "context (head, the default), or the paper's root MLP at every step "
                        "(root)")
    f.add_argument("--no-fresh-data", action="store_true",
                   help="warp-phys: train on the training data alone, not also on fresh "
                        "trajectories simulated over its parameter ranges (the default when "
                        "the system and every trajectory's parameters are known)")
    _estimate_option(f)
    f.add_argument("--no-figures", action="store_true")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads_option(f)
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("evaluate", help="metrics of a run on an .npz file (JSON on stdout)")
    e.add_argument("run_dir", type=_FOLDER)
    e.add_argument("--data", required=True, type=_NPZ)
    e.add_argument("--context", type=_positive_int)
    _param_name_argument(e)
    _estimate_option(e)
    _threads_option(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="roll out a run on an .npz file")
    r.add_argument("run_dir", type=_FOLDER)
    r.add_argument("--data", required=True, type=_NPZ)
    r.add_argument("--context", type=_positive_int, required=True)
    r.add_argument("--horizon", type=_positive_int, required=True)
    r.add_argument("--out", required=True, type=_NPZ, help="output .npz file")
    r.add_argument("--force", action="store_true", help="replace an existing --out file")
    _estimate_option(r)
    _threads_option(r)
    r.set_defaults(func=cmd_predict)

    q = sub.add_parser("reproduce", help="the paper's study: every model, over seeds, tables "
                                         "and a figure in DIR")
    q.add_argument("--study", required=True, help="msd, msd-zero, lv or pendulum")
    q.add_argument("--scale", default="small",
                   help="small (a 2-core CPU, ~30 min for msd with 3 seeds; default) or paper "
                        "(the paper's sizes, for a GPU)")
    q.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (default 3)")
    q.add_argument("--noise", type=float, default=0.0,
                   help="observation noise, times each state's std (default 0)")
    q.add_argument("--models", help="comma-separated subset, e.g. warp-phys,gru,classical "
                                    "(default: all)")
    q.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    q.add_argument("--quiet", action="store_true", help="no progress lines")
    q.add_argument("--out", required=True, type=_FOLDER,
                   help="study folder (an interrupted study resumes)")
    _threads_option(q)
    q.set_defaults(func=cmd_reproduce)
    p.commands = sub.choices  # (each command's own parser: its usage errors)
    return p


def _param_name_argument(group) -> None:
    group.add_argument(
        "--param-name", dest="param_names", action="append", default=[],
        metavar="FILE_NAME=SYSTEM_NAME",
        help="the file's parameter column FILE_NAME is the system's parameter SYSTEM_NAME "
        "(repeatable), e.g. --param-name mass=m --param-name stiffness=k; recorded in the run",
    )


def _param_names(items: list[str]) -> dict[str, str] | None:
    """Parse ``FILE_NAME=SYSTEM_NAME`` items into ``{FILE_NAME: SYSTEM_NAME}`` (None if none)."""
    mapping = {}
    for item in items:
        name, eq, target = (part.strip() for part in item.partition("="))
        if not (eq and name and target):
            raise UsageError(
                f"--param-name {item!r} is not of the form FILE_NAME=SYSTEM_NAME, "
                f"e.g. --param-name mass=m"
            )
        if name in mapping:
            raise UsageError(f"--param-name names {name!r} twice")
        mapping[name] = target
    return mapping or None


def _estimate_option(parser) -> None:
    from warpphys.metrics import ESTIMATES

    parser.add_argument(
        "--estimate", choices=ESTIMATES,
        help="models with physical parameters: the estimate behind the headline metrics and "
             "the rollout: refined (default: the most accurate, refined on the context) or "
             "amortised (one forward pass); metrics always include both as *_amortised and "
             "*_refined")


def _device(name: str) -> str:
    from warpphys.api import resolve_device  # one device rule for every command

    return resolve_device(name)


def _ranges(items: list[str]) -> dict[str, tuple[float, float]]:
    """Parse ``NAME=LO:HI`` items into ``{NAME: (LO, HI)}``."""
    ranges = {}
    for item in items:
        name, eq, span = item.partition("=")
        lo, colon, hi = span.partition(":")
        try:
            if not (eq and colon and name.strip()):
                raise ValueError
            if name.strip() in ranges:
                raise UsageError(f"--range names {name.strip()!r} twice; give each parameter "
                                 f"one range")
            ranges[name.strip()] = (float(lo), float(hi))
        except ValueError:
            raise UsageError(
                f"--range {item!r} is not of the form NAME=LO:HI with numbers LO <= HI, "
                f"e.g. --range k=2:30"
            ) from None
    return ranges


def _check_out(out: str, *, force: bool = False, inputs: tuple = ()) -> None:
    """Refuse an --out .npz path that cannot be written, or would replace a file (an input file
    always; another only with ``force``), before any work is done."""
    from warpphys.rundir import check_out_file

    check_out_file(out, force=force, inputs=inputs, suffix=".npz")


def cmd_simulate(args) -> int:
    from warpphys import data

    if args.system is None and args.preset is None:
        raise UsageError("name a system with --system (or a paper protocol with --preset)")
    if args.system is not None and args.system not in systems.names():
        raise UsageError(systems.unknown_system_message(args.system))
    if args.preset is not None and args.preset not in systems.PRESETS:
        raise UsageError(
            f"unknown preset {args.preset!r}; choose one of: {', '.join(systems.PRESETS)}"
        )
    _check_out(args.out, force=args.force)
    traj = data.simulate(
        args.system, args.n, args.split, args.seed, preset=args.preset,
        device=_device(args.device), ranges=_ranges(args.ranges), method=args.method,
        rtol=args.rtol, step_size=args.step_size,
    )
    try:
        traj.save(args.out)
    except OSError as e:
        raise UsageError(f"cannot write --out {args.out!r}: {e.strerror or e}") from None
    _say(_json({
        "out": args.out, "system": traj.system, "n": traj.n, "T": traj.n_times, "d": traj.dim,
        "t_end": float(traj.t[-1]), "split": args.split, "seed": args.seed,
    }))
    return 0


def cmd_fit(args) -> int:
    from warpphys import api

    options = {k: getattr(args, k) for k in ("batch_size", "lr", "width", "depth", "transition",
                                              "mode", "root", "precision", "readout")
               if getattr(args, k) is not None}
    if args.no_fresh_data:
        options["fresh_data"] = False
    fitted = api.fit(
        system=args.system, data=args.data, model=args.model, epochs=args.epochs,
        context=args.context, out=args.out, device=args.device, seed=args.seed, force=args.force,
        resume=args.resume, n_train=args.n_train, test_data=args.test_data,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        figures=not args.no_figures, progress=not args.quiet, estimate=args.estimate,
        param_names=_param_names(args.param_names), **options,
    )
    from warpphys import distributed

    if not distributed.is_main():  # under torchrun, rank 0 prints the summary
        return 0
    _say(_json({"run_dir": str(fitted.run_dir), **_summary(fitted.metrics)}, indent=2))
    return 0


def _summary(m: dict) -> dict:
    from warpphys.metrics import summary_keys  # the metric table decides what is printed

    return {k: m[k] for k in summary_keys(m)}


def cmd_evaluate(args) -> int:
    from warpphys import api

    _say(_json(api.evaluate(args.run_dir, args.data, args.context,
                             param_names=_param_names(args.param_names),
                             estimate=args.estimate), indent=2))
    return 0


def cmd_predict(args) -> int:
    from warpphys import api

    _check_out(args.out, force=args.force, inputs=(args.data,))
    fitted = api.load(args.run_dir)
    estimate = fitted.resolve_estimate(args.estimate)  # checked before any work, and said
    res = api.predict(args.run_dir, args.data, args.context, args.horizon, args.out,
                      estimate=args.estimate, force=args.force)
    said = {"estimate": estimate} if fitted.model.has_params else {}  # black box: keys as before
    _say(_json({"out": args.out, "n": res.n, "T": res.n_times, "d": res.dim, **said}))
    return 0


def cmd_reproduce(args) -> int:
    from warpphys import reproduce

    models = None if args.models is None else [m.strip() for m in args.models.split(",")
                                               if m.strip()]
    if models == []:
        raise UsageError(f"--models {args.models!r} names no model; give a comma-separated list, "
                         f"e.g. --models warp-phys,gru, or leave it out for all")
    log = None if args.quiet else (lambda msg: print(f"reproduce: {msg}", file=sys.stderr,
                                                     flush=True))
    res = reproduce.run_study(study=args.study, out=args.out, scale=args.scale, seeds=args.seeds,
                              noise=args.noise, models=models, device=args.device, log=log)
    _say(_json({**res["paths"], "wall_minutes": round(res["wall_seconds"] / 60, 2),
                 "cpu_minutes": round(res["cpu_seconds"] / 60, 2),
                 "test_mse": {m: e["test_mse"] for m, e in res["table"].items()},
                 "test_mse_minmax": {m: e.get("test_mse_minmax")
                                     for m, e in res["table"].items()}},
                indent=2))
    return 0


def _json(obj, **kw) -> str:
    """Strict JSON (no NaN or Infinity: non-finite numbers are written as null)."""
    from warpphys.rundir import finite_json

    return json.dumps(finite_json(obj), allow_nan=False, **kw)


def _say(text: str) -> None:
    """Print a command's result on stdout. A closed stdout (``>&-``) or a full disk there is an
    error, since the result is lost; a reader that went away (``| head``) is handled by
    :func:`_run` as the shell's convention has it."""
    if sys.stdout is None:
        raise UsageError("standard output is closed (>&-), so the result could not be "
                         "printed; redirect it to a file instead")
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise UsageError(f"cannot write the result to standard output: "
                         f"{e.strerror or e}") from None


def _os_error(e: OSError) -> str:
    """An operating-system error as one line naming the path and the problem."""
    name = e.filename
    if isinstance(name, str) and len(name) > 80:
        name = f"{name[:30]}...{name[-30:]} ({len(name)} characters)"
    where = f"{name!r}" if name is not None else "a file"
    if e.filename2 is not None:
        where += f" -> {e.filename2!r}"
    return f"cannot use {where}: {e.strerror or e}"


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()))


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``kill``, a batch system's time limit): handled as Ctrl-C is, so
    that a fit says where its last checkpoint is and leaves no half-written files."""


def _terminate(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # a usage error: one line, SystemExit(2)
    if extra:  # (named by the command's own parser, which points to its own --help)
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _run(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    command = args.command
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            # one line each, like the errors (not the file, line and source of the warning),
            # and each message once
            said = set()

            def show(message, *_args, **_kwargs):
                if str(message) not in said:
                    said.add(str(message))
                    print(f"warpphys {command}: warning: {message}", file=sys.stderr)

            warnings.showwarning = show
            if hasattr(args, "threads"):  # (its warning, too, one line)
                from warpphys import _threads

                _threads.configure(args.threads)
            return args.func(args)
    except (UsageError, WarpphysError, systems.SystemInputError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        return _fail(command, msg)
    except BrokenPipeError:  # (the reader of stdout went away, e.g. `| head`: the work is
        # done; exit quietly as a process killed by SIGPIPE would, without flushing again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:
        return _fail(command, _os_error(e))
    except KeyboardInterrupt as e:
        terminated = isinstance(e, _Terminated) or isinstance(e.__context__, _Terminated)
        print(f"warpphys {command}: {e.args[0] if e.args else 'interrupted'}"
              + (" (terminated: SIGTERM)" if terminated else ""), file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _fail(command, f"out of memory ({first[:160]}); use smaller sizes (--n, "
                              f"--width, --batch-size, --horizon)")


def _fail(command: str, msg: str) -> int:
    print(f"warpphys {command}: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
