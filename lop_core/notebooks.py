"""Execute experiment notebooks through papermill and store them with the runs they made."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from lop_core import runs
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


def execute_population(cfgs, runs_dir=None, device="auto", data_root=None, compile=False) -> None:
    """Run a population by executing ``book/experiments/<benchmark>.ipynb`` with papermill.

    The runs are finalized (``DONE``) only after the executed notebook is stored in each folder.
    """
    import papermill

    os.environ.setdefault("LOP_COMMAND", "python -m lop_core " + " ".join(sys.argv[1:]))
    todo = [c for c in cfgs if not runs.is_done(runs.run_path(c, runs_dir))]
    if not todo:
        return
    by_rest: dict[str, list] = {}
    for c in todo:
        key = json.dumps({k: v for k, v in c.to_dict().items() if k != "seed"}, sort_keys=True)
        by_rest.setdefault(key, []).append(c)
    for group in by_rest.values():
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
            executed = json.dumps(strip_outputs(json.loads(out.read_text())), indent=1)
        for c in group:
            path = runs.run_path(c, runs_dir)
            runs.write_atomic(path / "notebook.ipynb", executed)
            runs.finalize(path)
