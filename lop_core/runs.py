"""The run store: ``runs/<benchmark>/<name>-<hash8>/`` folders, written by experiments, read by chapters.

A run folder holds ``config.json`` (resolved), ``meta.json`` (versions, device, wall time,
status), ``metrics.csv.gz`` (tidy: one row per task x metric x layer), ``summary.json``
(headline numbers), the executed notebook when papermill made it, and ``DONE``, written last. A
folder without ``DONE`` is incomplete: it is resumed by experiments and never read by chapters.
Population checkpoints (``lop_core.progress``) and run locks live in
``runs/<benchmark>/.checkpoints/`` (git-ignored), or, landed, in ``runs/<benchmark>/progress/``;
checkpoints are deleted once every run of the population is done, locks when their holder exits;
what a killed process left (temporary files, a finished run's lock file) goes when its runs resume.
A run that diverged (a non-finite loss) is finished too: its ``summary.json`` says
``"status": "diverged"`` with the step, and ``load`` reports it without its metrics.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import torch

import lop_core
from lop_core import locks
from lop_core.config import BENCHMARKS, ConfigError, run_name
from lop_core.errors import RunError

REPO = Path(lop_core.__file__).resolve().parents[1]


def default_runs_dir(runs_dir=None) -> Path:
    """``runs_dir``, else ``$LOP_RUNS``, else the repository's ``runs/``."""
    return Path(runs_dir or os.environ.get("LOP_RUNS") or REPO / "runs")


def safe_name(name: str) -> str:
    """``name`` as one harmless path component: letters, digits and ``._-`` only, no leading dot.

    Run and benchmark names are made from parameters; this keeps every folder inside the store
    whatever a parameter holds (``../``, ``/``, a hidden name).
    """
    return re.sub(r"^\.", "_", re.sub(r"[^A-Za-z0-9._-]", "_", str(name))) or "_"


def benchmark_dir(benchmark: str, runs_dir=None) -> Path:
    return default_runs_dir(runs_dir) / safe_name(benchmark)


def run_path(cfg, runs_dir=None) -> Path:
    """The folder of the run ``cfg``, always inside the store."""
    return benchmark_dir(cfg.benchmark, runs_dir) / safe_name(run_name(cfg))


def is_done(path: Path) -> bool:
    return (path / "DONE").is_file()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file, fsync, then rename: readers see the old or the new file, never half.

    A failed write (a full disk, a read-only store) removes its temporary file; one left by a
    killed process is removed by ``remove_temporaries`` when its run resumes.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, name: str = "*") -> None:
    """Delete the temporary files of ``write_atomic`` for ``name`` in ``folder`` (left by a kill
    mid-write). Only while holding the lock of the runs they belong to: no other writer is alive."""
    for tmp in folder.glob(f".{name}.tmp*"):
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lop_core"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return (
            sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
            if sha.returncode == 0
            else "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def base_meta(device: torch.device, population: int) -> dict:
    return {
        "git_sha": _git_sha(),
        "lop_core": lop_core.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "population_size": population,
        # the sweep runner passes its own command line to the notebook kernels it starts
        "command": os.environ.get("LOP_COMMAND") or " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
    }


def write_results(path: Path, rows: list[tuple], summary: dict, meta: dict) -> None:
    """Write a finished run's metrics, summary and meta (not ``DONE``; see ``finalize``)."""
    df = pd.DataFrame(rows, columns=["task", "metric", "layer", "value"])
    buf = io.BytesIO()
    df.to_csv(buf, index=False, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    write_atomic(path / "metrics.csv.gz", buf.getvalue())
    write_json(path / "summary.json", summary)
    write_json(path / "meta.json", meta)


def finalize(path: Path) -> None:
    """Mark a run complete; ``DONE`` is always the last file written."""
    write_atomic(path / "DONE", "")


#: What ``run_state`` can say about a run.
STATES = ("done", "diverged", "running", "partial", "missing", "corrupt")


def run_state(path: Path) -> str:
    """``done``, ``diverged`` (finished), ``running`` (locked), ``partial`` (started, resumable),
    ``missing`` or ``corrupt`` (finished, but a file of it is missing or unreadable: ``check_run``)."""
    if is_done(path):
        try:
            status = check_run(path).get("status", "done")
        except RunError:
            return "corrupt"
        return "diverged" if status == "diverged" else "done"
    if locks.is_locked(path):
        return "running"
    return "partial" if path.exists() else "missing"


#: What reading a damaged run file raises (a bit flip in a gzip stream is a ``zlib.error``).
DAMAGED = (OSError, ValueError, EOFError, zlib.error)
COLUMNS = ("task", "metric", "layer", "value")


def _corrupt(path: Path, err: BaseException) -> RunError:
    kind = type(err).__name__
    if type(err).__module__ != "builtins":  # zlib.error, json.JSONDecodeError, ...
        kind = f"{type(err).__module__.split('.')[0]}.{kind}"
    return RunError(f"{path} is corrupt ({kind}: {err}); delete the folder and run it again")


def _json_object(path: Path, name: str) -> dict:
    try:
        obj = json.loads((path / name).read_text())
    except DAMAGED as err:
        raise _corrupt(path, err) from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}/{name} is not a JSON object; delete the folder and run it again")
    return obj


def read_summary(path: Path) -> dict:
    """The ``summary.json`` of run folder ``path``.

    Raises:
        RunError: the file is missing, unreadable or not a JSON object.
    """
    return _json_object(path, "summary.json")


def _check_columns(path: Path, columns) -> None:
    missing = set(COLUMNS) - set(columns)
    if missing:
        raise RunError(
            f"{path}/metrics.csv.gz lacks columns {sorted(missing)}; delete the folder and run it again"
        )


def check_run(path: Path) -> dict:
    """The summary of a finished run after a cheap look at its other files (``config.json`` is a
    JSON object, ``metrics.csv.gz`` decompresses to its end and has the columns).

    Raises:
        RunError: a file is missing, truncated or unreadable; the message names the folder.
    """
    summary = read_summary(path)
    _json_object(path, "config.json")
    try:
        with gzip.open(path / "metrics.csv.gz", "rb") as f:
            header = f.readline().decode().strip().split(",")
            while f.read(1 << 20):
                pass
    except DAMAGED as err:
        raise _corrupt(path, err) from None
    _check_columns(path, header)
    return summary


def read_run(path: Path) -> tuple[dict, dict, pd.DataFrame]:
    """(config, summary, metrics) of a finished run.

    Raises:
        RunError: the folder is not finished or a file in it is missing or unreadable.
    """
    path = Path(path)
    if not is_done(path):
        raise RunError(f"{path} is not a finished run (no DONE); run its experiment again to resume it")
    summary = read_summary(path)
    cfg = _json_object(path, "config.json")
    try:
        metrics = pd.read_csv(path / "metrics.csv.gz", dtype={"layer": str})
    except DAMAGED as err:
        raise _corrupt(path, err) from None
    _check_columns(path, metrics.columns)
    return cfg, summary, metrics


def config_from_json(cfg: dict):
    """Rebuild a config object from its ``config.json`` dict."""
    if cfg.get("benchmark") not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {cfg.get('benchmark')!r}; choose one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[cfg["benchmark"]](**cfg)


#: Config fields copied as columns into the tidy tables ``load`` returns.
LABELS = (
    "method",
    "seed",
    "width",
    "layer_norm",
    "preset",
    "step_size",
    "num_tasks",
    "examples_per_task",
    "optimizer",
    "momentum",
    "activation",
    "skip_connections",
    "batch_size",
)


@functools.cache
def _field_defaults(benchmark: str) -> dict:
    """Every config field of ``benchmark`` at its default (runs made before a field existed)."""
    return BENCHMARKS[benchmark]().to_dict() if benchmark in BENCHMARKS else {}


def old_duplicates_dropped(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` without the duplicate share of a run made before it was counted per layer.

    Such a run holds one ``duplicate_fraction`` row per task, over all its layers' units at once
    (a unit could "duplicate" one of another layer); the one definition now is per layer, averaged
    (``metrics.layer_mean_duplicate_fraction``), so the old rows are left out rather than mixed in.
    """
    dup = metrics.metric == "duplicate_fraction"
    if dup.any() and (metrics.layer[dup] == "all").all():
        return metrics[~dup]
    return metrics


def load(cfgs, runs_dir=None, command: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics and summaries of the finished runs of ``cfgs``.

    Returns:
        ``(metrics, summaries)``: metrics has one row per run x task x metric x layer, with the
        run's ``run`` and ``LABELS`` columns added, plus a column per text-valued method
        hyperparameter (``utility``, ``pruning``, ...; empty for methods without it);
        summaries has one row per run with its ``status``. Runs that diverged are in summaries
        (``status`` "diverged", ``diverged_step``, no headline numbers, so no mean counts them)
        and not in metrics (``chapters.diverged_note`` words them for a caption).

    Raises:
        RunError: some runs are missing or unfinished; the message names the command that makes them.
    """
    paths = [run_path(c, runs_dir) for c in cfgs]
    missing = [p for p in paths if not is_done(p)]
    if missing:
        how = f"\nMake them with:\n  {command}" if command else ""
        names = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise RunError(f"{len(missing)} of {len(paths)} runs are missing or unfinished ({names}).{how}")
    frames, rows = [], []
    for path in paths:
        cfg, summary, metrics = read_run(path)
        full = _field_defaults(cfg.get("benchmark")) | cfg
        labels = {k: full[k] for k in LABELS if k in full}  # benchmarks differ in their fields
        # the method's choices (utility, pruning, ...) name its variant; numbers stay in config.json
        labels.update(
            {k: v for k, v in cfg.get("method_args", {}).items() if isinstance(v, str) and k not in labels}
        )
        labels["run"] = path.name
        summary.setdefault("status", "done")
        if summary["status"] != "diverged":
            frames.append(old_duplicates_dropped(metrics).assign(**labels))
        rows.append({**labels, **summary})
    if not frames:  # every run diverged
        frames = [pd.DataFrame(columns=["task", "metric", "layer", "value", *LABELS, "run"])]
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)
