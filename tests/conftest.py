"""Shared fixtures: a writable data root seeded from ../shared/data (or $LOP_DATA).

It holds MNIST/raw and, for the vision benchmark, ``cifar10`` (the CIFAR-10 JPEG subset, an
ImageFolder tree), linked from ../shared/data when the root lacks it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "MNIST" / "raw"
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"


def _link_cifar10(root: Path) -> Path:
    """Link the shared CIFAR-10 tree into ``root`` if it has none (what ``make data`` does)."""
    if not (root / "cifar10").exists() and SHARED_CIFAR10.is_dir():
        (root / "cifar10").symlink_to(SHARED_CIFAR10.resolve(), target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root that holds MNIST/raw (from $LOP_DATA if it has it, else a copy of ../shared) and cifar10."""
    env = os.environ.get("LOP_DATA")
    if env and (Path(env) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        return _link_cifar10(Path(env))
    if not SHARED_MNIST.is_dir():
        pytest.fail(
            f"MNIST is needed: set LOP_DATA to a folder with MNIST/raw/*.gz, or provide {SHARED_MNIST}"
        )
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(SHARED_MNIST, root / "MNIST" / "raw")
    return _link_cifar10(root)


def write_image_tree(root: Path, classes: int, counts: dict[str, int], size: int, noise: float) -> Path:
    """Write ``root/tree/{split}/c<k>/<i>.png``: ``size`` x ``size`` RGB images of one colour per
    class plus Gaussian noise of std ``noise``, ``counts[split]`` images per class (seeded)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, size=(classes, 3))
    for split, n in counts.items():
        for c in range(classes):
            (root / "tree" / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(colours[c] + rng.normal(0, noise, size=(size, size, 3)), 0, 255).astype(
                    np.uint8
                )
                Image.fromarray(pixels).save(root / "tree" / split / f"c{c}" / f"{i:02d}.png")
    return root
