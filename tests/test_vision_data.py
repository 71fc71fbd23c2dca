"""The image loaders on tiny files in each format, splits, class orders and the shared CIFAR-10 tree."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lop_core.data import DataError
from lop_core.vision import data as vdata


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def test_cifar100_loader_reads_torchvision_pickles(tmp_path):
    # the exact on-disk format: cifar-100-python/{train,test,meta}, rows of 3072 bytes (R, G, B planes)
    folder = tmp_path / "cifar-100-python"
    train = _images(6, 0)
    _pickle(folder / "train", {"data": train, "fine_labels": [3, 1, 3, 0, 99, 1], "coarse_labels": [0] * 6})
    _pickle(folder / "test", {"data": _images(2, 1), "fine_labels": [1, 99], "coarse_labels": [0, 0]})
    names = [f"class{i}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["x"]})
    data = vdata.load_cifar("cifar100", tmp_path)
    assert data.train_x.shape == (6, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_y.tolist() == [3, 1, 3, 0, 99, 1] and data.test_y.tolist() == [1, 99]
    assert data.classes == names
    # pixel (row 0, col 1) of image 2: byte 1 of the red plane, 1025 of green, 2049 of blue
    assert data.train_x[2, :, 0, 1].tolist() == [train[2, 1], train[2, 1025], train[2, 2049]]
    assert data.mean == vdata.CIFAR100_MEAN and data.std == vdata.CIFAR100_STD  # the reference's


def test_cifar10_loader_reads_torchvision_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": _images(2, i), "labels": [i % 10, 0]})
    _pickle(folder / "test_batch", {"data": _images(3, 9), "labels": [4, 5, 6]})
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    data = vdata.load_cifar("cifar10", tmp_path)
    assert data.train_x.shape == (10, 3, 32, 32)
    assert data.train_y.tolist() == [1, 0, 2, 0, 3, 0, 4, 0, 5, 0] and data.test_y.tolist() == [4, 5, 6]
    mean, std = vdata.channel_stats(data.train_x)
    assert data.mean == mean and data.std == std


def test_missing_cifar_names_the_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(CIFAR100, "download", offline)
    with pytest.raises(DataError, match="cifar-100-python.*train, test, meta"):
        vdata.load_cifar("cifar100", tmp_path)


def _tree(root, classes=("b_cat", "a_dog"), per_class=3, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:03d}.png")
    return root


def test_image_folder_decodes_resizes_and_caches(tmp_path):
    tree = _tree(tmp_path / "tree")
    first = vdata.load_image_folder(tree, image_size=8, cache_dir=tmp_path / "cache")
    assert first.classes == ["a_dog", "b_cat"]  # ImageFolder's sorted class folders
    assert first.train_x.shape == (6, 3, 8, 8) and first.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    png = np.array(Image.open(tree / "train" / "b_cat" / "001.png"))
    assert torch.equal(first.train_x[4], torch.from_numpy(png).permute(2, 0, 1))  # lossless PNG: exact
    caches = list((tmp_path / "cache").glob("imagefolder-*.pt"))
    assert len(caches) == 1
    again = vdata.load_image_folder(tree, image_size=8, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_x, first.train_x) and again.mean == first.mean
    # a changed file gives a new key (the stale cache is not used)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tree / "train" / "b_cat" / "001.png")
    changed = vdata.load_image_folder(tree, image_size=8, cache_dir=tmp_path / "cache")
    assert int(changed.train_x[4].sum()) == 0
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 2
    small = vdata.load_image_folder(tree, image_size=4)
    assert small.train_x.shape == (6, 3, 4, 4)


def test_missing_image_tree_names_the_layout(tmp_path):
    with pytest.raises(DataError, match="train/<class>/<image>"):
        vdata.load_dataset("imagefolder", tmp_path, "cifar10")


def test_class_order_is_a_permutation_per_seed():
    a, b = vdata.class_order(0, 100), vdata.class_order(1, 100)
    assert sorted(a.tolist()) == list(range(100)) and sorted(b.tolist()) == list(range(100))
    assert torch.equal(a, vdata.class_order(0, 100))  # the seed decides it, nothing else
    assert not torch.equal(a, b)
    assert not torch.equal(a, torch.arange(100))


def test_first_per_class_is_the_reference_split():
    labels = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])
    # class 0 at 0, 2, 3, 6; class 1 at 1, 4, 5, 7: validation = first 1 of each, training = next 2
    assert vdata.first_per_class(labels, 0, 1).tolist() == [0, 1]
    assert vdata.first_per_class(labels, 1, 2).tolist() == [2, 3, 4, 5]
    assert vdata.first_per_class(labels, 1, 0).tolist() == [2, 3, 4, 5, 6, 7]  # 0: all the rest
    # 500 images per class in shuffled order -> 450 / 50, disjoint, validation = each class's first 50
    big = torch.randperm(5000, generator=torch.Generator().manual_seed(0)) % 10
    val, train = vdata.first_per_class(big, 0, 50), vdata.first_per_class(big, 50, 450)
    assert len(val) == 500 and len(train) == 4500 and not set(val.tolist()) & set(train.tolist())
    for c in range(10):
        own = (big == c).nonzero().squeeze(1)
        assert set(val[big[val] == c].tolist()) == set(own[:50].tolist())


def test_shared_cifar10_jpeg_subset(data_root):
    if not (data_root / "cifar10").exists():
        pytest.skip("no cifar10 tree beside the repository")
    data = vdata.load_dataset("imagefolder", data_root, "cifar10")
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and len(data.classes) == 10
    assert data.train_x.shape == (20000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [2000] * 10
    assert all(0.3 < m < 0.6 for m in data.mean) and all(0.15 < s < 0.35 for s in data.std)
