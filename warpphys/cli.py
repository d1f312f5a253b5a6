"""The `warpphys` command line: parses arguments, calls the library, prints. No logic here."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit code 2, no traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads of torch (default: OMP_NUM_THREADS if set, else chosen by "
                        "the work's size: one for warpphys's usual sizes)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warpphys",
        description="Learn and extrapolate physical dynamical systems with WARP.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="simulate trajectories of a system to an .npz file")
    s.add_argument("--system", help="pendulum, lotka_volterra or spring_mass")
    s.add_argument("--preset", help="a paper protocol: msd, msd-zero or lv")
    s.add_argument("--n", type=_positive_int, help="number of trajectories (default: protocol's)")
    s.add_argument(
        "--split", choices=["train", "val", "test"], default="train",
        help="train/val: training parameter ranges; test: the wider out-of-distribution ranges "
        "(default: train)",
    )
    s.add_argument("--seed", type=int, default=0,
                   help="random seed; the same seed and split give the same file (default: 0)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    s.add_argument(
        "--range", dest="ranges", action="append", default=[], metavar="NAME=LO:HI",
        help="sample parameter NAME uniformly from [LO, HI] instead of the split's range "
        "(repeatable; LO:LO fixes it), e.g. --range k=2:30 --range c=0:0",
    )
    s.add_argument("--method", default="auto",
                   help="auto (default: the closed form of linear systems, else dopri5 at "
                        "rtol 1e-9), exact, or a torchdiffeq method: dopri5, dopri8, rk4, ...")
    s.add_argument("--rtol", type=float,
                   help="relative tolerance of adaptive methods (default 1e-9); larger is "
                        "faster and less accurate")
    s.add_argument("--out", required=True, help="output .npz file")
    _threads_option(s)
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("fit", help="train a model (simulating data for --system) into RUN_DIR")
    src = f.add_argument_group("data (one of, or both: --data with known physics)")
    src.add_argument("--system", help="a registered system; alone, data are simulated")
    src.add_argument("--data", help="an .npz trajectory file (split 80/10/10)")
    f.add_argument("--model", help="warp-phys (default with a known system), warp, or a baseline")
    f.add_argument("--epochs", type=_positive_int)
    f.add_argument("--context", type=_positive_int, help="true steps fed before rolling out")
    f.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", help="run directory (default runs/<system>-<model>-<time>)")
    f.add_argument("--force", action="store_true", help="replace an existing run directory")
    f.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    f.add_argument("--n-train", type=_positive_int, help="simulated training trajectories")
    f.add_argument("--test-data", help="evaluate on this .npz file instead of the held-out split")
    f.add_argument("--max-minutes", type=float, help="training time budget")
    f.add_argument("--batch-size", type=_positive_int)
    f.add_argument("--lr", type=float)
    f.add_argument("--width", type=_positive_int, help="root network width")
    f.add_argument("--depth", type=_positive_int, help="root network hidden layers")
    f.add_argument("--transition", choices=["dense", "diagonal", "lowrank"])
    f.add_argument("--mode", choices=["autoregressive", "parallel"])
    f.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of the training steps: fp32 (default), tf32 (CUDA tensor "
                        "cores) or bf16 (autocast); evaluation stays fp32")
    f.add_argument("--root", choices=["auto", "ode", "closed_form", "hybrid"],
                   help="warp-phys root: the system's ODE, its closed form (linear systems), or "
                        "the ODE plus a neural correction (physics known in part); default auto")
    f.add_argument("--no-figures", action="store_true")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads_option(f)
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("evaluate", help="metrics of a run on an .npz file (JSON on stdout)")
    e.add_argument("run_dir")
    e.add_argument("--data", required=True)
    e.add_argument("--context", type=_positive_int)
    _threads_option(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="roll out a run on an .npz file")
    r.add_argument("run_dir")
    r.add_argument("--data", required=True)
    r.add_argument("--context", type=_positive_int, required=True)
    r.add_argument("--horizon", type=_positive_int, required=True)
    r.add_argument("--out", required=True, help="output .npz file")
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
    q.add_argument("--out", required=True, help="study folder (an interrupted study resumes)")
    _threads_option(q)
    q.set_defaults(func=cmd_reproduce)
    return p


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
            ranges[name.strip()] = (float(lo), float(hi))
        except ValueError:
            raise UsageError(
                f"--range {item!r} is not of the form NAME=LO:HI with numbers LO <= HI, "
                f"e.g. --range k=2:30"
            ) from None
    return ranges


def _check_out(out: str) -> None:
    """Refuse an --out path that cannot be written, before any simulation is done."""
    import os
    from pathlib import Path

    if not out.endswith(".npz"):
        raise UsageError(f"--out must name an .npz file, got {out!r}")
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out!r} is a folder; name an .npz file, e.g. {out}/data.npz")
    for folder in path.absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"--out {out!r} cannot be written: {str(folder)!r} is a file")
            if not os.access(folder, os.W_OK):
                raise UsageError(
                    f"--out {out!r} cannot be written: no permission in {str(folder)!r}"
                )
            return


def cmd_simulate(args) -> int:
    import systems
    from warpphys import data

    if args.system is None and args.preset is None:
        raise UsageError("name a system with --system (or a paper protocol with --preset)")
    if args.system is not None and args.system not in systems.names():
        raise UsageError(
            f"unknown system {args.system!r}; choose one of: {', '.join(systems.names())}"
        )
    if args.preset is not None and args.preset not in systems.PRESETS:
        raise UsageError(
            f"unknown preset {args.preset!r}; choose one of: {', '.join(systems.PRESETS)}"
        )
    _check_out(args.out)
    traj = data.simulate(
        args.system, args.n, args.split, args.seed, preset=args.preset,
        device=_device(args.device), ranges=_ranges(args.ranges), method=args.method,
        rtol=args.rtol,
    )
    try:
        traj.save(args.out)
    except OSError as e:
        raise UsageError(f"cannot write --out {args.out!r}: {e.strerror or e}") from None
    print(json.dumps({
        "out": args.out, "system": traj.system, "n": traj.n, "T": traj.n_times, "d": traj.dim,
        "t_end": float(traj.t[-1]), "split": args.split, "seed": args.seed,
    }))
    return 0


def cmd_fit(args) -> int:
    from warpphys import api

    options = {k: getattr(args, k) for k in ("batch_size", "lr", "width", "depth", "transition",
                                              "mode", "root", "precision")
               if getattr(args, k) is not None}
    fitted = api.fit(
        system=args.system, data=args.data, model=args.model, epochs=args.epochs,
        context=args.context, out=args.out, device=args.device, seed=args.seed, force=args.force,
        resume=args.resume, n_train=args.n_train, test_data=args.test_data,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        figures=not args.no_figures, progress=not args.quiet, **options,
    )
    from warpphys import distributed

    if not distributed.is_main():  # under torchrun, rank 0 prints the summary
        return 0
    print(json.dumps({"run_dir": str(fitted.run_dir), **_summary(fitted.metrics)}, indent=2))
    return 0


def _summary(m: dict) -> dict:
    keys = ("model", "test_mse", "extrapolation_mse", "ood_mse", "invariant_drift",
            "param_rel_error", "test_mse_refined", "param_rel_error_refined",
            "valid_prediction_time",
            "fit_seconds", "train_status")
    return {k: m[k] for k in keys if k in m}


def cmd_evaluate(args) -> int:
    from warpphys import api

    print(json.dumps(api.evaluate(args.run_dir, args.data, args.context), indent=2))
    return 0


def cmd_predict(args) -> int:
    from warpphys import api

    if not args.out.endswith(".npz"):
        raise UsageError(f"--out must name an .npz file, got {args.out!r}")
    res = api.predict(args.run_dir, args.data, args.context, args.horizon, args.out)
    print(json.dumps({"out": args.out, "n": res.n, "T": res.n_times, "d": res.dim}))
    return 0


def cmd_reproduce(args) -> int:
    from warpphys import reproduce

    models = None if args.models is None else [m.strip() for m in args.models.split(",")
                                               if m.strip()]
    log = None if args.quiet else (lambda msg: print(f"reproduce: {msg}", file=sys.stderr,
                                                     flush=True))
    res = reproduce.run_study(study=args.study, out=args.out, scale=args.scale, seeds=args.seeds,
                              noise=args.noise, models=models, device=args.device, log=log)
    print(json.dumps({**res["paths"], "wall_minutes": round(res["wall_seconds"] / 60, 2),
                      "cpu_minutes": round(res["cpu_seconds"] / 60, 2),
                      "test_mse": {m: e["test_mse"] for m, e in res["table"].items()}},
                     indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from warpphys.data import DataError

    try:
        if hasattr(args, "threads"):
            from warpphys import _threads

            _threads.configure(args.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except (UsageError, DataError, ValueError, KeyError, FileNotFoundError,
            FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"warpphys {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
