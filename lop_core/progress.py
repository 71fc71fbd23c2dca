"""Population checkpoints: where they live, how they are written, and landing them in the repository.

A population checkpoint (``save_checkpoint``) is the whole resume state of a population: model,
optimizer, method state, every generator, the metrics so far (packed into a few tensors: see
``pack_rows``) and the wall time spent. It lives in ``runs/<benchmark>/.checkpoints/<key>.pt``
(git-ignored, on this machine only) or, *landed*, in ``runs/<benchmark>/progress/<key>.ckpt``:
gzip-compressed and tracked by git, so that a sweep longer than a machine's session can be
committed half way and continued from a fresh clone (``--land-progress``). Resuming takes the
furthest of the two (``latest_checkpoint``: the one with more wall time behind it); both go when
the population is done. A landed checkpoint is never read as a result: chapters read only
finished run folders.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import torch

from lop_core.config import run_name
from lop_core.errors import RunError
from lop_core.runs import benchmark_dir, remove_temporaries, write_atomic

LANDED_DIR, LANDED_SUFFIX = "progress", ".ckpt"
_ROWS = "__packed_rows__"


def population_checkpoint(cfgs, runs_dir=None) -> Path:
    """Where the population of ``cfgs`` keeps its resume state on this machine."""
    key = hashlib.sha1("|".join(run_name(c) for c in cfgs).encode()).hexdigest()[:12]
    return benchmark_dir(cfgs[0].benchmark, runs_dir) / ".checkpoints" / f"{key}.pt"


def landed_checkpoint(cfgs, runs_dir=None) -> Path:
    """Where the population of ``cfgs`` lands its resume state in the repository (tracked by git)."""
    local = population_checkpoint(cfgs, runs_dir)
    return local.parent.parent / LANDED_DIR / f"{local.stem}{LANDED_SUFFIX}"


def checkpoint_places(cfgs, runs_dir) -> tuple[Path, Path]:
    """A population's two checkpoint places: this machine's and the landed one."""
    return population_checkpoint(cfgs, runs_dir), landed_checkpoint(cfgs, runs_dir)


def _is_row(r) -> bool:
    return (
        isinstance(r, (tuple, list))
        and len(r) == 4
        and isinstance(r[0], int)
        and isinstance(r[1], str)
        and isinstance(r[2], str)
        and isinstance(r[3], float)
    )


def pack_rows(obj):
    """``obj`` with every list of metric rows ``(task, metric, layer, value)`` packed into tensors.

    A list of 100,000 rows pickles to megabytes of small objects; packed it is four tensors (task
    int32, metric and layer codes int16, value float64, so that it unpacks to exactly the same floats)
    and the two lists of names. Everything else is returned as it is, recursively.
    """
    if isinstance(obj, dict):
        return {k: pack_rows(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(_is_row(r) for r in obj):
        metrics = sorted({r[1] for r in obj})
        layers = sorted({r[2] for r in obj})
        m, lay = {n: i for i, n in enumerate(metrics)}, {n: i for i, n in enumerate(layers)}
        return {
            _ROWS: True,
            "task": torch.tensor([r[0] for r in obj], dtype=torch.int32),
            "metric": torch.tensor([m[r[1]] for r in obj], dtype=torch.int16),
            "layer": torch.tensor([lay[r[2]] for r in obj], dtype=torch.int16),
            "value": torch.tensor([r[3] for r in obj], dtype=torch.float64),
            "metrics": metrics,
            "layers": layers,
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(pack_rows(v) for v in obj)
    return obj


def unpack_rows(obj):
    """The inverse of ``pack_rows``: packed rows back to a list of tuples; the rest unchanged."""
    if isinstance(obj, dict) and obj.get(_ROWS) is True:
        metrics, layers = obj["metrics"], obj["layers"]
        columns = zip(
            obj["task"].tolist(),
            obj["metric"].tolist(),
            obj["layer"].tolist(),
            obj["value"].tolist(),
            strict=True,
        )
        return [(t, metrics[m], layers[lay], v) for t, m, lay, v in columns]
    if isinstance(obj, dict):
        return {k: unpack_rows(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(unpack_rows(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a resume state atomically (a kill mid-write leaves the previous checkpoint intact);
    rows packed, and gzip-compressed when ``path`` is a landed checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(pack_rows(state), buf)
    data = buf.getvalue()
    if path.suffix == LANDED_SUFFIX:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    write_atomic(path, data)


def load_checkpoint(path: Path, device) -> dict | None:
    """The resume state at ``path`` (tensors and plain containers only: ``weights_only=True``), or None.

    Raises:
        RunError: the file is unreadable, or holds anything but tensors and plain values.
    """
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return unpack_rows(torch.load(io.BytesIO(data), map_location=device, weights_only=True))
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... variously
        # torch's own text is left out: it ends on advice to load with weights_only=False
        raise RunError(
            f"{path} is not a valid checkpoint ({type(err).__name__}); delete it and run again"
        ) from None


def latest_checkpoint(cfgs, runs_dir, device) -> tuple[dict | None, Path | None]:
    """The furthest resume state of the population (local or landed: more wall time behind it)."""
    found = []
    for path in checkpoint_places(cfgs, runs_dir):
        state = load_checkpoint(path, device)
        if state is not None:
            found.append((float(state.get("wall_s", 0.0)), state, path))
    if not found:
        return None, None
    _, state, path = max(found, key=lambda f: f[0])
    return state, path


def has_checkpoint(cfgs, runs_dir=None) -> bool:
    """Whether the population has a checkpoint in either place."""
    return any(p.is_file() for p in checkpoint_places(cfgs, runs_dir))


def remove_checkpoint(path: Path) -> None:
    """Delete a population checkpoint and the temporary files of writes a kill interrupted."""
    if path.exists():  # no write at all when there is none (a read-only store)
        path.unlink(missing_ok=True)
    remove_temporaries(path.parent, path.name)


def remove_checkpoints(cfgs, runs_dir=None) -> None:
    """Delete both checkpoints of a population (the local one and the landed one)."""
    for path in checkpoint_places(cfgs, runs_dir):
        remove_checkpoint(path)


def progress_note(cfgs, runs_dir=None) -> str:
    """How far an unfinished population has got, from its furthest checkpoint ("" without one):
    e.g. "task 340 of 1000, 2.1 h (landed)"."""
    try:
        state, path = latest_checkpoint(cfgs, runs_dir, "cpu")
    except RunError as err:
        return str(err)
    if state is None:
        return ""
    task = state.get("population", {}).get("task")
    where = " (landed)" if path.suffix == LANDED_SUFFIX else ""
    total = getattr(cfgs[0], "num_tasks", None)
    at = f"task {task} of {total}, " if task is not None and total else ""
    return f"{at}{float(state.get('wall_s', 0.0)) / 3600:.1f} h{where}"
