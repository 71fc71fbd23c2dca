"""Live CPU demos of seconds that the mechanisms chapter computes inline (no run store).

``cloning_demo`` (finding B2): train a narrow MLP to memorize randomly labelled MNIST images, widen
it by cloning, and keep training the wide network plainly, with noise injection, or with dropout,
against the narrow network itself and a fresh wide one. Plain training keeps the clones identical,
so the wide network's hidden layer never has more distinct directions than the narrow one's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from lop_core import mechanisms, metrics
from lop_core.data import load_mnist, seeded_generator
from lop_core.models.feedforward import MLP


@dataclass
class CloningDemo:
    """Settings of ``cloning_demo`` (the defaults take a few seconds per seed on one CPU core).

    Attributes:
        examples: MNIST training images to memorize (their labels are redrawn at random).
        width: hidden units of the narrow network; ``factor * width`` of the wide one.
        depth: hidden layers.
        factor: clones per unit.
        base_steps: Adam steps of the narrow network before cloning.
        steps: Adam steps after cloning (every variant).
        batch_size: examples per step.
        step_size: Adam's learning rate.
        noise: noise injection scale (``mechanisms.perturb_gradients``).
        dropout: dropout probability of the dropout variant.
        every: steps between measurements.
    """

    examples: int = 1000
    width: int = 8
    depth: int = 2
    factor: int = 4
    base_steps: int = 300
    steps: int = 450
    batch_size: int = 100
    step_size: float = 1e-2
    noise: float = 0.02
    dropout: float = 0.1
    every: int = 50


#: Variants after the switch: (label, wide?, noise?, dropout?). "fresh" is a new wide network.
VARIANTS = (
    ("narrow (no cloning)", False, False, False),
    ("cloned", True, False, False),
    ("cloned + noise", True, True, False),
    ("cloned + dropout", True, False, True),
    ("fresh wide", None, False, False),
)


def _measure(model: MLP, x: torch.Tensor, y: torch.Tensor, factor: int | None) -> dict:
    """Training accuracy (eval mode), last-layer rank, and the clone gap of a cloned network."""
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean()
    h = model.features[-1]  # [N, width]
    model.train()
    return {
        "train_accuracy": float(acc),
        "rank": float(metrics.threshold_rank(h)),
        "clone_gap": mechanisms.clone_gap(model, factor) if factor else float("nan"),
    }


def _train(model, x, y, cfg: CloningDemo, gen: torch.Generator, noise: float, factor, log, label, start):
    opt = torch.optim.Adam(model.parameters(), lr=cfg.step_size)
    steps = cfg.steps if start else cfg.base_steps
    for s in range(1, steps + 1):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        mechanisms.perturb_gradients(model.parameters(), noise, gen)
        opt.step()
        if log is not None and s % cfg.every == 0:
            log.append({"variant": label, "step": start + s, **_measure(model, x, y, factor)})
    return model


def cloning_demo(seeds=(0, 1, 2), cfg: CloningDemo | None = None, data_root=None) -> pd.DataFrame:
    """Run the cloning demo for every seed.

    Returns:
        Tidy rows: ``seed``, ``variant``, ``step`` (counted from the narrow network's start),
        ``train_accuracy``, ``rank`` (99% singular-value count of the last hidden layer on all
        ``examples`` images) and ``clone_gap`` (``mechanisms.clone_gap``; nan when not cloned).
    """
    from lop_core.executors import training_threads

    cfg = cfg or CloningDemo()
    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads())  # a thread per core another process keeps busy is 25 x slower
    try:
        return _cloning_demo(seeds, cfg, data_root)
    finally:
        torch.set_num_threads(threads)


def _cloning_demo(seeds, cfg: CloningDemo, data_root) -> pd.DataFrame:
    images, _ = load_mnist(data_root)
    x = images[: cfg.examples].float() / 255.0  # [N, 784]
    rows = []
    for seed in seeds:
        y = torch.randint(0, 10, (cfg.examples,), generator=seeded_generator(seed, stream=7))
        torch.manual_seed(seed)
        narrow = MLP(784, cfg.width, cfg.depth, 10)
        log: list[dict] = []
        _train(narrow, x, y, cfg, seeded_generator(seed, 8), 0.0, None, None, "narrow", 0)
        for label, wide, noisy, drop in VARIANTS:
            gen = seeded_generator(seed, 9)  # the same batches for every variant
            if wide is None:
                torch.manual_seed(seed + 10_000)
                model, factor = MLP(784, cfg.width * cfg.factor, cfg.depth, 10), None
            else:
                factor = cfg.factor if wide else 1
                model = mechanisms.widen_by_cloning(narrow, factor)  # factor 1: an exact copy
                factor = factor if wide else None
            model.drop.p = cfg.dropout if drop else 0.0
            log.append({"variant": label, "step": cfg.base_steps, **_measure(model, x, y, factor)})
            _train(model, x, y, cfg, gen, cfg.noise if noisy else 0.0, factor, log, label, cfg.base_steps)
        rows += [{"seed": seed, **r} for r in log]
    return pd.DataFrame(rows)
