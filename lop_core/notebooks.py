"""Execute experiment notebooks through papermill and store them with the runs they made."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from lop_core import locks, progress, runs
from lop_core.config import default_config

EXPERIMENTS = runs.REPO / "book" / "experiments"


def notebook_parameters(cfgs) -> dict:
    """Papermill parameters of a population whose runs differ only in their seed."""
    first = cfgs[0].to_dict()
    for c in cfgs[1:]:
        other = {k: v for k, v in c.to_dict().items() if k != "seed"}
        if other != {k: v for k, v in first.items() if k != "seed"}:
            raise ValueError("a notebook execution takes runs that differ only in their seed")
    default = default_config(cfgs[0].benchmark, cfgs[0].preset, cfgs[0].method).to_dict()
    overrides = {k: v for k, v in first.items() if k not in ("seed", "method_args") and v != default[k]}
    overrides.update({k: v for k, v in first["method_args"].items() if v != default["method_args"][k]})
    return {
        "preset": cfgs[0].preset,
        "method": cfgs[0].method,
        "seeds": [c.seed for c in cfgs],
        "overrides": overrides,
    }


def strip_outputs(nb: dict) -> dict:
    """Drop stream output (progress bars, logs) from an executed notebook; keep results."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("output_type") != "stream"]
    return nb


@contextmanager
def _environ(**values):
    """Set environment variables for the body (the notebook kernels started in it inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_population(
    cfgs, runs_dir=None, device="auto", data_root=None, compile=False, checkpoint_every=None
) -> None:
    """Run a population by executing ``book/experiments/<benchmark>.ipynb`` with papermill.

    One execution per group of runs that differ only in their seed (a notebook's parameters), with
    every seed of the group, so that a group killed while being finalized resumes as a whole. The
    unfinished runs are locked here, for the kernel too, until the executed notebook is stored in
    each of their folders and they are finalized (``DONE``); then the checkpoint is removed.
    """
    os.environ.setdefault("LOP_COMMAND", "python -m lop_core " + " ".join(sys.argv[1:]))
    groups: dict[str, list] = {}
    for c in cfgs:
        key = json.dumps({k: v for k, v in c.to_dict().items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, []).append(c)
    for group in groups.values():
        todo = [runs.run_path(c, runs_dir) for c in group if not runs.is_done(runs.run_path(c, runs_dir))]
        if not todo:
            continue
        with locks.locked(todo) as owner:
            todo = [path for path in todo if not runs.is_done(path)]
            env = {locks.LOCK_OWNER_ENV: owner, "LOP_CHECKPOINT_EVERY": checkpoint_every}
            with _environ(**env):
                executed = _execute(group, runs_dir, device, data_root, compile)
            for path in todo:
                runs.write_atomic(path / "notebook.ipynb", executed)
                runs.finalize(path)
            progress.remove_checkpoints(group, runs_dir)


def _execute(group, runs_dir, device, data_root, compile) -> str:
    """The executed experiment notebook of ``group`` (outputs stripped), as JSON text."""
    import papermill

    params = notebook_parameters(group)
    params.update(
        runs_dir=str(runs.default_runs_dir(runs_dir)),
        device=device,
        data_root=str(data_root) if data_root else None,
        finalize=False,
        compile=compile,
    )
    template = EXPERIMENTS / f"{group[0].benchmark}.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "executed.ipynb"
        papermill.execute_notebook(
            str(template),
            str(out),
            parameters=params,
            cwd=str(EXPERIMENTS),
            progress_bar=False,
            kernel_name="python3",
        )
        return json.dumps(strip_outputs(json.loads(out.read_text())), indent=1)
