"""``python -m lop_core bench vit``: training images per second of the ViT, one model, per method.

It times ``vision.train.Run.train_step`` (gather, augmentation, forward with bf16 autocast on a
GPU, loss, backward, SGD step, schedule, the method's hook) on random images kept on the device:
the speed does not depend on their content. On a GPU the model is the paper's (patch 4, width
384, 8 blocks, 100 classes, batch 90); on a CPU the ``quick`` preset's tiny ViT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lop_core import config
from lop_core.bench import _timed
from lop_core.runs import default_runs_dir, device_name
from lop_core.train import resolve_device
from lop_core.vision.data import ImageData
from lop_core.vision.train import Run


def vit_rate(cfg, device, budget: float = 2.0, repeats: int = 3, compile: bool = False) -> float:
    """Median training images per second of the run ``cfg`` on ``device``."""
    device = resolve_device(device)
    n = cfg.batch_size * cfg.num_classes  # a batch's worth of images per class: every task has enough
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % cfg.num_classes
    names = [str(c) for c in range(cfg.num_classes)]
    data = ImageData(images, labels, images[:1], labels[:1], names, (0.5,) * 3, (0.25,) * 3).to(device)
    every = torch.arange(n, device=device)
    run = Run(cfg, data, (every, every, every[:1]), device, compile)
    run._start_task(cfg.num_tasks - 1)  # every class seen: the largest head slice
    batches = every.split(cfg.batch_size)
    return cfg.batch_size * _timed(
        lambda i: run.train_step(batches[i % len(batches)]), device, budget, repeats, 5
    )


def bench_configs(device: torch.device, methods) -> list:
    """The paper's ViT on a GPU, the quick preset's on a CPU; schedules long enough never to end."""
    preset = "paper" if device.type == "cuda" else "quick"
    return [config.resolve("incremental_cifar", preset, method=m, epochs_per_task=100_000) for m in methods]


def main(args) -> int:
    """The ``bench vit`` command (its options are the ``bench`` command's)."""
    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = []
    for cfg in bench_configs(device, methods):
        rate = vit_rate(cfg, device, args.budget, args.repeats, args.compile)
        rows.append({"method": cfg.method, "width": cfg.width, "depth": cfg.depth, "patch": cfg.patch,
                     "batch_size": cfg.batch_size, "images_per_s": round(rate, 1)})  # fmt: skip
        print(f"ViT w={cfg.width} d={cfg.depth} p={cfg.patch} {cfg.method:<15}{rate:10.1f} training images/s")
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    out = Path(args.out) if args.out else default_runs_dir(args.runs_dir) / "bench" / "vit" / f"{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = {
        "device": device_name(device),
        "torch": torch.__version__,
        "compiled": args.compile,
        "rows": rows,
    }
    out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
