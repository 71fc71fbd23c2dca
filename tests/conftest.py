"""Shared fixtures: a writable MNIST data root seeded from ../shared/data (or $LOP_DATA)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "MNIST" / "raw"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root that holds MNIST/raw (from $LOP_DATA if it has it, else a copy of ../shared)."""
    env = os.environ.get("LOP_DATA")
    if env and (Path(env) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        return Path(env)
    if not SHARED_MNIST.is_dir():
        pytest.fail(
            f"MNIST is needed: set LOP_DATA to a folder with MNIST/raw/*.gz, or provide {SHARED_MNIST}"
        )
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(SHARED_MNIST, root / "MNIST" / "raw")
    return root
