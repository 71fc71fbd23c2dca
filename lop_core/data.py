"""Data: MNIST through torchvision from a data root, and the permuted-MNIST task stream.

The data root is, in order: the ``root`` argument, the ``LOP_DATA`` environment variable, or
``~/.cache/lop_core/data``. torchvision downloads MNIST there on a connected machine; on a
machine without network, put the four ``MNIST/raw/*.gz`` files there (torchvision's layout).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class DataError(RuntimeError):
    """A data set that is neither on disk nor downloadable."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the data sets."""
    if root is None:
        root = os.environ.get("LOP_DATA") or Path.home() / ".cache" / "lop_core" / "data"
    return Path(root).expanduser()


_MNIST_CACHE: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}

#: sha256 of each MNIST split as decoded (the uint8 images [N, 28, 28], then the int64 labels, as
#: bytes): a wrong file of the right size (extracted garbage, another data set) trains silently at
#: chance and would be stored under the same run names as real runs, so it is refused.
MNIST_SHA256 = {
    True: "d18cfd466eb143ac1097fde604dba9eec4116885869d04cc648b510949f9e88c",
    False: "a0863a96c44e5666edbb30c4071ee79ca0514c621e6349c5967fc78e7305c891",
}
_FIX = (
    "On a machine without network, copy the four MNIST .gz files there, or point LOP_DATA at a "
    "folder that has MNIST/raw/."
)


def _check_archives(raw: Path) -> None:
    """Refuse ``.gz`` files that are there but fail torchvision's MD5 (truncated or altered)."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_integrity

    bad = [
        name
        for name, md5 in MNIST.resources
        if (raw / name).is_file() and not check_integrity(raw / name, md5)
    ]
    if bad:
        raise DataError(
            f"MNIST files under {raw} are corrupt (MD5 mismatch: truncated or altered): {bad}. "
            "Delete them and copy or download them again."
        )


def _remove_empty(folder: Path, stop: Path | None) -> None:
    """Remove ``folder`` and its empty parents up to (not including) ``stop``, if they hold nothing."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def load_mnist(root=None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as tensors: images uint8 [N, 784] and labels int64 [N].

    Raises:
        DataError: the files are missing under ``root`` and cannot be downloaded, are corrupt
            (the ``.gz`` files' MD5, as torchvision checks them), cannot be decoded, or decode to
            something other than MNIST (``MNIST_SHA256``). A folder that did not exist before is
            not left behind.
    """
    import hashlib

    root = data_root(root)
    key = (str(root), train)
    if key in _MNIST_CACHE:
        return _MNIST_CACHE[key]
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    _check_archives(raw)
    first_missing = next((p for p in [root, *root.parents] if p.exists()), None)
    extracted = [raw / name.removesuffix(".gz") for name, _ in MNIST.resources]
    try:
        ds = MNIST(str(root), train=train, download=True)
    except Exception as err:  # torchvision raises RuntimeError/URLError/OSError variously
        if all(p.is_file() for p in extracted):
            raise DataError(
                f"MNIST under {raw} cannot be decoded ({type(err).__name__}: {err}). Delete the "
                "extracted files (the names without .gz) so that they are extracted again."
            ) from None
        if first_missing != root:
            _remove_empty(raw, first_missing)
        raise DataError(f"MNIST is not under {raw} and could not be downloaded ({err}). {_FIX}") from None
    images, labels = ds.data.contiguous(), ds.targets.long()
    digest = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    if digest != MNIST_SHA256[train]:
        split = "training" if train else "test"
        raise DataError(
            f"the files under {raw} do not hold MNIST's {split} set (sha256 {digest[:12]}..., expected "
            f"{MNIST_SHA256[train][:12]}...). Delete the extracted files (the names without .gz) so "
            "that they are extracted again from the .gz files, or replace them all."
        )
    _MNIST_CACHE[key] = (images.reshape(len(images), -1), labels)
    return _MNIST_CACHE[key]


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose (``stream``) of one run (``seed``).

    Separate streams keep, e.g., the task sequence of a seed identical across methods.
    """
    return torch.Generator().manual_seed(seed * 1000 + stream)


class PermutedMNIST:
    """The permuted-MNIST task stream of a population of R runs.

    Every run draws its own pixel permutation at the start of every task (the first task is
    permuted too) and its own order of the 60,000 training images (reference_code.md §1.1).
    Images stay on ``device``; a batch is gathered and permuted there in one indexing op.

    Args:
        seeds: one seed per run.
        batch_size: examples per step.
        device: where images, labels and batches live.
        root: data root (see ``data_root``).
        dtype: floating-point type of the images (float32 unless a population asks for float64).
    """

    def __init__(self, seeds: list[int], batch_size: int, device="cpu", root=None, dtype=torch.float32):
        images, labels = load_mnist(root)
        self.images = images.to(device=device, dtype=dtype).div_(255.0)  # [N, 784] in [0, 1]
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generators = [seeded_generator(s, stream=1) for s in seeds]
        self.perms: torch.Tensor | None = None  # [R, 784]
        self.order: torch.Tensor | None = None  # [R, N]

    def new_task(self) -> None:
        """Draw every run's permutation and example order for the next task."""
        n, d = self.images.shape
        perms = [torch.randperm(d, generator=g) for g in self.generators]
        order = [torch.randperm(n, generator=g) for g in self.generators]
        self.perms = torch.stack(perms).to(self.device)
        self.order = torch.stack(order).to(self.device)

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # idx: [R, B] example indices -> x: [R, B, 784] permuted pixels, y: [R, B].
        # Whole rows first (a contiguous copy), then the pixels within them: ~3x faster than
        # one advanced-indexing op with two index tensors.
        r, b = idx.shape
        rows = self.images.index_select(0, idx.reshape(-1)).view(r, b, -1)
        x = rows.gather(2, self.perms.unsqueeze(1).expand(r, b, rows.shape[-1]))
        return x, self.labels[idx]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (0-based, within the task) of every run."""
        b = self.batch_size
        return self._gather(self.order[:, step * b : (step + 1) * b])

    def probe(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` examples of the task, on which the correlates are measured."""
        return self._gather(self.order[:, :size])

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)
