"""``python -m lop_core bench``: steady-state training speed of populations against plain PyTorch.

For each width, layer norm setting, method and population size R it builds a population on the
permuted-MNIST stream, warms it up, then times steps until a time budget is spent; the figure is the
median over repeats of run-steps per second (R x steps / s). In the same process and on the same
data it times the baseline every ratio is quoted against: one ``nn.Sequential`` of ``nn.Linear``
layers trained with ``torch.optim.SGD``, one model at a time, with the same online accuracy kept.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lop_core import config
from lop_core.data import PermutedMNIST
from lop_core.runs import RunError, default_runs_dir, device_name
from lop_core.train import Population, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device, budget: float, repeats: int, warmup: int) -> float:
    """Median steps per second of ``step(i)`` over ``repeats`` windows of about ``budget`` seconds."""
    for i in range(warmup):
        step(i)
    _sync(device)
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            step(n)
            n += 1
            if n % 10 == 0:
                _sync(device)
                if time.perf_counter() - start >= budget:
                    break
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def population_rate(
    width, layer_norm, method, runs, device, budget, repeats, data_root=None, compile=False
) -> float:
    """Run-steps per second of a population of ``runs`` runs."""
    cfgs = [
        config.resolve(
            "permuted_mnist",
            "paper",
            seed=s,
            width=width,
            layer_norm=layer_norm,
            method=method,
            step_size=0.1 if layer_norm else 0.05,
        )
        for s in range(runs)
    ]
    pop = Population(cfgs, device=device, data_root=data_root, compile=compile)
    pop.stream.new_task()
    sums = defaultdict(lambda: torch.zeros(runs, device=pop.device))
    steps = cfgs[0].steps_per_task
    return runs * _timed(lambda i: pop.step(i % steps, sums), pop.device, budget, repeats, warmup=20)


def baseline_rate(width, layer_norm, device, budget, repeats, data_root=None) -> float:
    """Steps per second of one plain PyTorch model (nn.Linear layers, torch.optim.SGD)."""
    device = resolve_device(device)
    stream = PermutedMNIST([0], batch_size=30, device=device, root=data_root)
    stream.new_task()
    layers, fan_in = [], 784
    for _ in range(3):
        layers += [nn.Linear(fan_in, width), nn.ReLU()] + ([nn.LayerNorm(width)] if layer_norm else [])
        fan_in = width
    model = nn.Sequential(*layers, nn.Linear(fan_in, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 if layer_norm else 0.05)
    correct = torch.zeros((), device=device)

    def step(i):
        nonlocal correct
        x, y = stream.batch(i % 2000)
        x, y = x[0], y[0]
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        correct += (logits.argmax(-1) == y).float().mean()

    return _timed(step, device, budget, repeats, warmup=20)


#: On a CPU, populations whose parameters (all runs together) exceed this are not timed.
CPU_MAX_PARAMS = 40_000_000


def _mlp_params(width: int, depth: int = 3) -> int:
    return (784 + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * 10


def run_bench(
    widths=(10, 100, 1000),
    layer_norms=(False, True),
    methods=("base", "swr", "cbp", "redo"),
    populations=(1, 8, 32, 128),
    device="auto",
    budget=1.0,
    repeats=3,
    data_root=None,
    out: str | Path | None = None,
    compile: bool = False,
    progress=print,
) -> dict:
    """Measure every combination; print a table and write it (with the device) to ``out``."""
    from lop_core.methods import METHODS

    methods = [m for m in methods if m in METHODS]
    dev = resolve_device(device)
    rows = []
    for width in widths:
        for ln in layer_norms:
            base = baseline_rate(width, ln, dev, budget, repeats, data_root)
            rows.append(
                {
                    "width": width,
                    "layer_norm": ln,
                    "method": "torch_baseline",
                    "runs": 1,
                    "run_steps_per_s": round(base, 1),
                    "ratio": 1.0,
                }
            )
            progress(f"w={width:<5} ln={ln!s:<5} torch baseline     R=1   {base:10.1f} steps/s")
            for method in methods:
                for r in populations:
                    if dev.type == "cpu" and r * _mlp_params(width) > CPU_MAX_PARAMS:
                        progress(
                            f"w={width:<5} ln={ln!s:<5} {method:<18} R={r:<4} skipped (too large for a CPU)"
                        )
                        continue
                    rate = population_rate(width, ln, method, r, dev, budget, repeats, data_root, compile)
                    rows.append(
                        {
                            "width": width,
                            "layer_norm": ln,
                            "method": method,
                            "runs": r,
                            "run_steps_per_s": round(rate, 1),
                            "ratio": round(rate / base, 3),
                        }
                    )
                    progress(
                        f"w={width:<5} ln={ln!s:<5} {method:<18} R={r:<4}{rate:10.1f} run-steps/s "
                        f"({rate / base:5.2f}x baseline)"
                    )
    result = {
        "compiled": compile,
        "device": device_name(dev),
        "torch": torch.__version__,
        "budget_s": budget,
        "repeats": repeats,
        "rows": rows,
    }
    out = Path(out) if out else default_output(dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out)
    return result


def default_output(device: torch.device, runs_dir=None) -> Path:
    """``runs/bench/<device>.json``: one table per kind of device, read by the speed appendix."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return default_runs_dir(runs_dir) / "bench" / f"{slug}.json"


def load(runs_dir=None) -> pd.DataFrame:
    """Every committed benchmark table as one frame (a ``device`` column tells them apart).

    Raises:
        RunError: there is none; the message names the command that makes one.
    """
    files = sorted((default_runs_dir(runs_dir) / "bench").glob("*.json"))
    if not files:
        raise RunError("no benchmark tables in runs/bench; make one with: python -m lop_core bench")
    frames = []
    for f in files:
        table = json.loads(f.read_text())
        frames.append(pd.DataFrame(table["rows"]).assign(device=table["device"], torch=table["torch"]))
    return pd.concat(frames, ignore_index=True)
