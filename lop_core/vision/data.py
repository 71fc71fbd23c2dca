"""Image data for class-incremental learning: CIFAR-100, CIFAR-10 and ImageFolder trees as tensors.

A data set is loaded once as uint8 tensors [N, 3, H, W] with int64 labels and kept on the
training device; batches are gathered and augmented there (``lop_core.vision.augment``). Where
the files live (``data_root`` is ``$LOP_DATA`` unless given):

* ``cifar100``: torchvision's ``<root>/<data_dir>/cifar-100-python/{train,test,meta}``, downloaded
  by torchvision (and checked against its md5) when the folder is missing;
* ``cifar10``: torchvision's ``<root>/<data_dir>/cifar-10-batches-py/``, likewise;
* ``imagefolder``: ``<root>/<data_dir>/{train,test}/<class>/<image>``, any format PIL
  decodes. Decoding tens of thousands of files takes seconds, so the decoded tensors are cached
  in ``<root>/lop_cache/`` under a key of the tree's file list, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lop_core.data import DataError, data_root, seeded_generator

#: The per-channel statistics the reference normalizes CIFAR-100 with (reference §4.3).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass
class ImageData:
    """A whole data set: uint8 images [N, 3, H, W], int64 labels [N], class names, channel statistics."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to(self, device) -> ImageData:
        return ImageData(
            self.train_x.to(device),
            self.train_y.to(device),
            self.test_x.to(device),
            self.test_y.to(device),
            self.classes,
            self.mean,
            self.std,
        )


def _torchvision_cifar(name: str):
    """torchvision's CIFAR class, and a subclass that reads files already on disk without the md5 check.

    torchvision verifies the md5 of every file whenever it opens the data set; the download itself
    is verified (archive md5) by ``download=True``. Files already on disk are trusted, so that
    small files in the same format (the tests') load too.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR100 if name == "cifar100" else CIFAR10

    class OnDisk(cls):
        train_list = [(f, None) for f, _ in cls.train_list]
        test_list = [(f, None) for f, _ in cls.test_list]
        meta = {**cls.meta, "md5": None}

    return cls, OnDisk


def load_cifar(name: str, folder: Path) -> ImageData:
    """CIFAR-100 or CIFAR-10 through torchvision, downloading into ``folder`` when missing.

    Raises:
        DataError: the files are missing and cannot be downloaded; the message names the layout.
    """
    cls, on_disk = _torchvision_cifar(name)
    if not (folder / cls.base_folder).is_dir():
        try:
            cls(str(folder), train=True, download=True)
        except Exception as err:  # URLError, OSError, RuntimeError ... variously
            files = ", ".join(f for f, _ in cls.train_list + cls.test_list)
            raise DataError(
                f"{name} is not under {folder / cls.base_folder} and could not be downloaded ({err}). "
                f"Expected torchvision's layout: {folder / cls.base_folder}/{{{files}, {cls.meta['filename']}}} "
                "(python pickles). Point LOP_DATA (or data_dir) at a folder that has it."
            ) from None
    try:
        train, test = on_disk(str(folder), train=True), on_disk(str(folder), train=False)
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        raise DataError(f"{name} under {folder / cls.base_folder} is unreadable ({err})") from None

    def tensors(ds):  # ds.data: numpy [N, H, W, 3] uint8
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    (train_x, train_y), (test_x, test_y) = tensors(train), tensors(test)
    if name == "cifar100":
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    else:
        mean, std = channel_stats(train_x)
    return ImageData(train_x, train_y, test_x, test_y, list(train.classes), mean, std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, 3, H, W], on the [0, 1] scale."""
    x = images.double().div_(255.0).transpose(0, 1).flatten(1)  # [3, N * H * W]
    return tuple(x.mean(dim=1).tolist()), tuple(x.std(dim=1).tolist())


def _tree_key(tree: Path, image_size: int) -> str:
    """A key that changes when any file of the tree is added, removed, resized or touched."""
    h = hashlib.sha1(f"{tree.resolve()}|{image_size}".encode())
    for split in ("train", "test"):
        for dirpath, dirnames, filenames in os.walk(tree / split, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{os.path.relpath(dirpath, tree)}/{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_split(folder: Path, image_size: int, classes: list[str] | None):
    import numpy as np
    from PIL import Image
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))  # its loader opens any format PIL reads, as RGB
    if classes is not None and ds.classes != classes:
        raise DataError(f"{folder} has classes {ds.classes}, the training split has {classes}")
    images = np.empty((len(ds.samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        img = ds.loader(path)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        images[i] = np.asarray(img)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]
    return x, torch.tensor(ds.targets, dtype=torch.long), ds.classes


def load_image_folder(tree: Path, image_size: int = 32, cache_dir: Path | None = None) -> ImageData:
    """An ImageFolder tree ``tree/{train,test}/<class>/*`` as uint8 tensors, cached after the first decode.

    Raises:
        DataError: the tree is missing or lacks a split; the message names the layout.
    """
    if not ((tree / "train").is_dir() and (tree / "test").is_dir()):
        raise DataError(
            f"no image tree at {tree}: expected {tree}/train/<class>/<image> and {tree}/test/<class>/<image> "
            "(torchvision ImageFolder layout, same class folders in both). For the CIFAR-10 JPEG subset "
            "of the shared data run `make data`, or link ../shared/data/cifar10 to $LOP_DATA/cifar10."
        )
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"imagefolder-{_tree_key(tree, image_size)}.pt"
        if cache.is_file():
            saved = torch.load(cache, weights_only=True)
            return ImageData(**{**saved, "mean": tuple(saved["mean"]), "std": tuple(saved["std"])})
    train_x, train_y, classes = _decode_split(tree / "train", image_size, None)
    test_x, test_y, _ = _decode_split(tree / "test", image_size, classes)
    mean, std = channel_stats(train_x)
    data = ImageData(train_x, train_y, test_x, test_y, classes, mean, std)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(vars(data), buf)
        tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, cache)  # atomic: a concurrent reader sees no half-written cache
    return data


_LOADED: dict[tuple, ImageData] = {}


def load_dataset(dataset: str, root=None, data_dir: str = "", image_size: int = 32) -> ImageData:
    """The data set ``dataset`` (``cifar100``, ``cifar10`` or ``imagefolder``) on the CPU, loaded once per process.

    Raises:
        DataError: the data is missing (and cannot be downloaded) or unreadable.
    """
    base = data_root(root)
    folder = base / data_dir if data_dir else base
    key = (dataset, str(folder), image_size)
    if key not in _LOADED:
        if dataset == "imagefolder":
            _LOADED[key] = load_image_folder(folder, image_size, cache_dir=base / "lop_cache")
        elif dataset in ("cifar100", "cifar10"):
            data = load_cifar(dataset, folder)
            if data.train_x.shape[-1] != image_size:
                raise DataError(f"{dataset} images are {data.train_x.shape[-1]} pixels, not {image_size}")
            _LOADED[key] = data
        else:
            raise DataError(f"unknown dataset {dataset!r}; choose cifar100, cifar10 or imagefolder")
    return _LOADED[key]


def class_order(seed: int, num_classes: int) -> torch.Tensor:
    """The order in which run ``seed`` meets the classes: a random permutation per seed (reference §4.3).

    It depends on the seed only (its own generator stream), so every method sees the same order.
    """
    # argsort of uniform draws: torch.randperm of a few items repeats itself across nearby seeds
    return torch.rand(num_classes, generator=seeded_generator(seed, stream=1), dtype=torch.float64).argsort()


def first_per_class(labels: torch.Tensor, skip: int, take: int) -> torch.Tensor:
    """Indices of the images number ``skip`` to ``skip + take - 1`` of every class, in data-set order.

    ``take = 0`` takes all the rest. The reference's validation set is ``skip=0, take=50`` and its
    training set ``skip=50, take=450`` (reference §4.3).
    """
    out = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        out.append(idx[skip : skip + take] if take else idx[skip:])
    return torch.cat(out).sort().values


def dataset_label(cfg) -> str:
    """How captions name the data of a run: "CIFAR-100", "CIFAR-10" or "CIFAR-10 (JPEG subset)"."""
    if cfg.dataset == "cifar100":
        return "CIFAR-100"
    if cfg.dataset == "cifar10":
        return "CIFAR-10"
    if Path(cfg.data_dir).name == "cifar10":
        return "CIFAR-10 (JPEG subset)"
    return f"ImageFolder {cfg.data_dir}"
