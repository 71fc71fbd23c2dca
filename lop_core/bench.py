"""``python -m lop_core bench``: steady-state training speed of populations against plain PyTorch.

For each width, layer norm setting, method and population size R it builds a population on the
permuted-MNIST stream, warms it up, then times steps until a time budget is spent; the figure is the
median over repeats of run-steps per second (R x steps / s). The method ``mixed`` is one population
of a whole setting: its runs cycle through ``MIXED`` (every method of the A2-A4 comparisons).

Two references are timed in the same process: the *baseline*, one ``nn.Sequential`` of
``nn.Linear`` layers trained with ``torch.optim.SGD``, one model at a time (``ratio``); and the
*limit* of the population step, the same batched arithmetic with nothing else (one fixed batch,
``baddbmm`` forward, cross-entropy, autograd backward, an in-place SGD update: no data gather, no
metrics, no method; ``fraction`` = engine / limit).
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


#: Values a method needs that its defaults leave unset (the reference's h = 100 choices).
METHOD_ARGS = {"l2": {"l2_factor": 1e-4}, "shrink_perturb": {"l2_factor": 1e-4, "noise_variance": 1e-7}}
#: The methods a ``mixed`` population cycles through: one setting's whole comparison.
MIXED = ("base", "l2", "shrink_perturb", "cbp", "redo", "swr")


def bench_configs(width: int, layer_norm: bool, method: str, runs: int) -> list:
    """The configs of a timed population (``method="mixed"``: its runs cycle through ``MIXED``)."""
    methods = [MIXED[s % len(MIXED)] for s in range(runs)] if method == "mixed" else [method] * runs
    cfgs = [
        config.resolve(
            "permuted_mnist",
            "paper",
            seed=s,
            width=width,
            layer_norm=layer_norm,
            method=m,
            step_size=0.1 if layer_norm else 0.05,
            **METHOD_ARGS.get(m, {}),
        )
        for s, m in enumerate(methods)
    ]
    return config.by_method(cfgs)


def population_rate(
    width, layer_norm, method, runs, device, budget, repeats, data_root=None, compile=False
) -> float:
    """Run-steps per second of a population of ``runs`` runs (see ``bench_configs``)."""
    cfgs = bench_configs(width, layer_norm, method, runs)
    pop = Population(cfgs, device=device, data_root=data_root, compile=compile)
    pop.stream.new_task()
    sums = defaultdict(lambda: torch.zeros(runs, device=pop.device))
    steps = cfgs[0].steps_per_task
    return runs * _timed(lambda i: pop.step(i % steps, sums), pop.device, budget, repeats, warmup=20)


def limit_rate(width, layer_norm, runs, device, budget, repeats) -> float:
    """Run-steps per second of the bare arithmetic of a population step (see the module docstring)."""
    device = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    sizes = [784] + [width] * 3 + [10]
    weights = [
        (torch.randn(runs, o, i, generator=g) / i**0.5).to(device).requires_grad_()
        for i, o in zip(sizes, sizes[1:], strict=False)
    ]
    biases = [torch.zeros(runs, o, 1, device=device, requires_grad=True) for o in sizes[1:]]
    params = weights + biases
    x = torch.rand(runs, 784, 30, generator=g).to(device)  # feature-major, as the engine keeps it
    y = torch.randint(0, 10, (runs * 30,), generator=g).to(device)

    def step(i):
        h = x
        for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, w, h)
            if k < 3:
                h = torch.relu(h)
                if layer_norm:
                    h = F.layer_norm(h.mT, (width,)).mT
        loss = F.cross_entropy(h.mT.flatten(0, 1), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, d in zip(params, grads, strict=True):
                p.sub_(d, alpha=0.01)

    return runs * _timed(step, device, budget, repeats, warmup=20)


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
    methods=("base", "swr", "cbp", "redo", "mixed"),
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

    methods = [m for m in methods if m in METHODS or m == "mixed"]
    dev = resolve_device(device)
    rows = []
    for width in widths:
        for ln in layer_norms:
            base = baseline_rate(width, ln, dev, budget, repeats, data_root)
            rows.append({"width": width, "layer_norm": ln, "method": "torch_baseline", "runs": 1})
            rows[-1].update(run_steps_per_s=round(base, 1), ratio=1.0)
            progress(f"w={width:<5} ln={ln!s:<5} torch baseline     R=1   {base:10.1f} steps/s")
            for r in populations:
                if dev.type == "cpu" and r * _mlp_params(width) > CPU_MAX_PARAMS:
                    progress(f"w={width:<5} ln={ln!s:<5} R={r:<4} skipped (too large for a CPU)")
                    continue
                limit = limit_rate(width, ln, r, dev, budget, repeats)
                rows.append(_row(width, ln, "limit", r, limit, base, limit))
                progress(f"w={width:<5} ln={ln!s:<5} {'limit':<18} R={r:<4}{limit:10.1f} run-steps/s")
                for method in methods:
                    rate = population_rate(width, ln, method, r, dev, budget, repeats, data_root, compile)
                    rows.append(_row(width, ln, method, r, rate, base, limit))
                    progress(
                        f"w={width:<5} ln={ln!s:<5} {method:<18} R={r:<4}{rate:10.1f} run-steps/s "
                        f"({rate / base:5.2f}x baseline, {rate / limit:4.0%} of the limit)"
                    )
    result = {
        "compiled": compile,
        "device": device_name(dev),
        "threads": torch.get_num_threads(),
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


def _row(width, layer_norm, method, runs, rate, base, limit) -> dict:
    return {
        "width": width,
        "layer_norm": layer_norm,
        "method": method,
        "runs": runs,
        "run_steps_per_s": round(rate, 1),
        "ratio": round(rate / base, 3),
        "fraction_of_limit": round(rate / limit, 3),
    }


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
