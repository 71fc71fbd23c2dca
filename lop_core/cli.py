"""``python -m lop_core``: run experiments and sweeps from the shell.

Commands:
    run BENCHMARK [--preset P] [--method M] [--seeds 0-4] [--set name=value ...]
    sweep NAME_OR_FILE ... [--preset P] [--notebook] [--jobs N] [--executor local|slurm ...]
    status NAME_OR_FILE ... [--preset P]   (done / diverged / running / partial / missing / corrupt)
    list  (benchmarks, presets, methods, sweeps)

Exit status 2: a bad parameter, a locked or corrupt run, missing data, a failed write, or a population
that failed (its worker process died included); the other populations of a sweep still train.
"""

from __future__ import annotations

import argparse
import sys

from lop_core import config

#: Names ``--set`` may not set, and the option that does.
RESERVED = {
    "benchmark": "the benchmark argument",
    "preset": "--preset",
    "method": "--method",
    "seed": "--seeds",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="smoke | quick | paper (default quick)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available) | cpu | cuda | cuda:N")
    p.add_argument(
        "--runs-dir", default=None, help="run store (default: ./runs of the repository, or $LOP_RUNS)"
    )
    p.add_argument("--data", default=None, help="data root (default: $LOP_DATA or ~/.cache/lop_core/data)")
    p.add_argument(
        "--notebook",
        action="store_true",
        help="execute the experiment notebook through papermill and store it with the runs",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--compile", action="store_true", help="capture the training step with torch.compile")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between population checkpoints, taken at task boundaries (default 300)",
    )
    p.add_argument(
        "--land-progress",
        action="store_true",
        help="write checkpoints to runs/<benchmark>/progress/ (compressed, for git) so that an "
        "unfinished sweep can be committed and resumed from a fresh clone",
    )


def _scale(p: argparse.ArgumentParser) -> None:
    local = p.add_argument_group("local execution")
    local.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="populations trained at once in worker processes, round robin over the visible GPUs "
        "(more jobs than GPUs share them), else sharing the CPU cores (default: one per GPU, else 1); "
        "with --executor slurm: the most jobs running at once",
    )
    local.add_argument("--executor", default="local", choices=["local", "slurm"], help="default local")
    slurm = p.add_argument_group("slurm execution (--executor slurm, through submitit)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time", type=int, default=24 * 60, help="minutes per job; requeued when reached")
    slurm.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per job")
    slurm.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per job")
    slurm.add_argument("--mem-gb", type=float, default=None, help="memory per job")
    slurm.add_argument("--per-job", type=int, default=1, help="populations per job, trained at once")
    slurm.add_argument("--log-dir", default=None, help="submitit logs (default: <runs>/.submitit)")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return; follow with `status`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lop_core", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the runs of one configuration (one run per seed)")
    run.add_argument("benchmark", help=f"one of {sorted(config.BENCHMARKS)}")
    run.add_argument("--method", default="base", help="plasticity method (see `list`)")
    run.add_argument("--seeds", default="0", help="e.g. 0-4, 0,2,5 or [0, 1] (default 0)")
    run.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a config field or method hyperparameter; repeatable",
    )
    _common(run)
    sweep = sub.add_parser("sweep", help="make every missing run of sweep files")
    sweep.add_argument(
        "sweeps", nargs="+", help="sweep names (a1) or files (book/experiments/sweeps/a1.yaml)"
    )
    _common(sweep)
    _scale(sweep)
    status = sub.add_parser("status", help="count the runs of sweep files by state")
    status.add_argument("sweeps", nargs="+", help="sweep names or files")
    status.add_argument("--preset", default="quick", help="smoke | quick | paper (default quick)")
    status.add_argument("--runs-dir", default=None, help="run store (default: ./runs or $LOP_RUNS)")
    sub.add_parser("list", help="benchmarks, presets, methods and sweeps")
    bench = sub.add_parser("bench", help="training speed of populations against a plain PyTorch loop")
    bench.add_argument(
        "target", nargs="?", default="mlp", choices=["mlp", "vit"], help="what to time (mlp | vit)"
    )
    bench.add_argument("--widths", default="10,100,1000", help="hidden widths (default 10,100,1000)")
    bench.add_argument("--layer-norm", default="both", choices=["both", "off", "on"])
    bench.add_argument(
        "--methods",
        default="base,swr,cbp,redo,mixed",
        help="methods to attach; mixed: one population cycling through every method of a setting",
    )
    bench.add_argument("--runs", default="1,8,32,128", help="population sizes R")
    bench.add_argument("--budget", type=float, default=1.0, help="seconds timed per repeat")
    bench.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    bench.add_argument("--out", default=None, help="JSON table (default: runs/bench/<device>.json)")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--compile", action="store_true", help="time populations captured with torch.compile")
    bench.add_argument("--data", default=None)
    bench.add_argument("--runs-dir", default=None, help="run store whose bench/ folder gets the table")
    return parser


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise config.ConfigError(f"--{name}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise config.ConfigError(f"--{name}: expected positive integers, got {text!r}")
    return values


def _bench(args) -> int:
    if args.target == "vit":
        from lop_core.vision.bench import main as bench_vit

        return bench_vit(args)
    from lop_core.bench import default_output, run_bench
    from lop_core.methods import METHODS
    from lop_core.train import resolve_device

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS and m != "mixed"]
    if unknown:
        raise config.ConfigError(f"unknown methods {unknown}; choose from {[*sorted(METHODS), 'mixed']}")
    ln = {"both": (False, True), "off": (False,), "on": (True,)}[args.layer_norm]
    result = run_bench(
        _ints(args.widths, "widths"),
        ln,
        methods,
        _ints(args.runs, "runs"),
        args.device,
        args.budget,
        args.repeats,
        args.data,
        args.out or default_output(resolve_device(args.device), args.runs_dir),
        args.compile,
    )
    print(f"wrote {result['path']}")
    return 0


def _positive(value, name: str) -> None:
    if value is not None and value < 1:
        raise config.ConfigError(f"--{name} must be >= 1, got {value}")


def _slurm(args) -> dict | None:
    """``slurm.submit`` keyword arguments from the command line, or None for local execution."""
    if args.executor != "slurm":
        return None
    for name in ("time", "gpus_per_node", "cpus_per_task", "per_job"):
        _positive(getattr(args, name), name.replace("_", "-"))
    return {
        "partition": args.partition,
        "time_min": args.time,
        "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task,
        "mem_gb": args.mem_gb,
        "per_job": args.per_job,
        "parallel": args.jobs,
        "folder": args.log_dir,
        "wait": not args.no_wait,
    }


def _status(args) -> int:
    from lop_core.runs import STATES
    from lop_core.sweep import status

    table = status(args.sweeps, args.preset, args.runs_dir)
    print(table.to_string(index=False))
    totals = ", ".join(f"{int(table[s].sum())} {s}" for s in STATES if table[s].sum())
    print(f"\n{int(table.runs.sum())} runs in {len(table)} population(s): {totals}")
    return 0


def _drop_corrupt(populations, runs_dir) -> tuple[list, list[str]]:
    """``populations`` without their finished runs that are corrupt (``runs.check_run``), and one
    message per such run (its folder and the fix): they are reported, not trained over."""
    from lop_core.runs import RunError, check_run, is_done, run_path

    kept, corrupt = [], []
    for cfgs in populations:
        good = []
        for c in cfgs:
            try:
                if is_done(run_path(c, runs_dir)):
                    check_run(run_path(c, runs_dir))
                good.append(c)
            except RunError as err:
                corrupt.append(str(err))
        kept += [good] if good else []
    return kept, corrupt


def _train(populations, args) -> int:
    from lop_core.executors import TrainOptions, execute, visible_gpus
    from lop_core.experiment import checkpoint_interval, require_data
    from lop_core.runs import is_done, run_path, run_state

    sweep = args.command == "sweep"
    slurm = _slurm(args) if sweep else None
    jobs = getattr(args, "jobs", None)
    _positive(jobs, "jobs")
    if jobs is None:
        jobs = max(1, len(visible_gpus())) if args.device in ("auto", "cuda") else 1
    opts = TrainOptions(
        runs_dir=args.runs_dir,
        device=args.device,
        data_root=args.data,
        notebook=args.notebook,
        compile=args.compile,
        progress=not args.no_progress,
        checkpoint_every=checkpoint_interval(args.checkpoint_every),
        land_progress=args.land_progress,
    )
    if args.land_progress and args.notebook:
        raise config.ConfigError("--land-progress and --notebook do not go together; drop one")
    total = sum(len(p) for p in populations)
    populations, corrupt = _drop_corrupt(populations, args.runs_dir)
    paths = [run_path(c, args.runs_dir) for cfgs in populations for c in cfgs]
    done = sum(map(is_done, paths))
    if slurm is None:  # on a cluster the data root is the compute nodes' business
        todo = {c.benchmark for cfgs in populations for c in cfgs if not is_done(run_path(c, args.runs_dir))}
        for benchmark in sorted(todo):  # a finished sweep needs no data
            require_data(benchmark, args.data)
    bad = f", {len(corrupt)} corrupt" if corrupt else ""
    print(f"{total} runs ({done} already done{bad}) in {len(populations)} population(s)", file=sys.stderr)
    for error in corrupt:
        print(f"error: {error}", file=sys.stderr)
    errors = execute(populations, opts, jobs, slurm, desc="sweep" if sweep else None)
    if slurm is None or slurm["wait"]:
        finished = [p for p in paths if is_done(p)]  # the runs that exist now, not those that failed
        for path in finished:
            print(path)
        diverged = [p.name for p in finished if run_state(p) == "diverged"]
        if diverged:
            names = ", ".join(diverged[:5]) + (" ..." if len(diverged) > 5 else "")
            print(f"{len(diverged)} run(s) diverged (non-finite loss): {names}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors or corrupt else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            from lop_core.methods import METHODS
            from lop_core.sweep import SWEEPS_DIR

            print("benchmarks:", ", ".join(sorted(config.BENCHMARKS)))
            print("presets:   ", ", ".join(config.PRESETS))
            print("methods:   ", ", ".join(sorted(METHODS)))
            print("sweeps:    ", ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))))
            return 0
        if args.command == "bench":
            return _bench(args)
        if args.command == "status":
            return _status(args)
        if args.command == "run":
            overrides = config.parse_assignments(args.assignments)
            config.refuse_reserved(overrides, RESERVED, where="--set ")
            seeds = config.parse_seeds(args.seeds)
            cfgs = [
                config.resolve(args.benchmark, args.preset, seed=s, method=args.method, **overrides)
                for s in seeds
            ]
            populations = [cfgs]
        else:
            from lop_core.sweep import expand

            populations = [p for name in args.sweeps for p in expand(name, args.preset)]
        return _train(populations, args)
    except (config.ConfigError, RuntimeError, OSError) as err:  # OSError: an unreadable or unwritable store
        print(f"error: {err}", file=sys.stderr)
        return 2
