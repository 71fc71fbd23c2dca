"""MNIST from a data root: missing, corrupt and wrong files are refused with what to do."""

import gzip
import shutil
import struct

import pytest

from lop_core import data
from lop_core.data import DataError, load_mnist


@pytest.fixture
def own_copy(tmp_path, data_root):
    """A data root of this test's own, holding a copy of the four MNIST .gz files."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(data_root / "MNIST" / "raw" / name, raw / name)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_root / "MNIST" / "raw" / name, raw / name)
    return tmp_path / "root"


def test_real_mnist_loads_and_matches_its_fingerprint(own_copy):
    images, labels = load_mnist(own_copy)
    assert images.shape == (60000, 784) and labels.shape == (60000,)
    assert load_mnist(own_copy, train=False)[0].shape == (10000, 784)


def test_a_truncated_archive_is_reported_corrupt_not_missing(own_copy):
    gz = own_copy / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: 5 * 2**20])
    with pytest.raises(DataError, match=r"corrupt \(MD5 mismatch.*train-images-idx3-ubyte.gz"):
        load_mnist(own_copy)


def test_undecodable_extracted_files_say_so(own_copy):
    load_mnist(own_copy)  # extracts the four files
    data._MNIST_CACHE.clear()
    (own_copy / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match="cannot be decoded.*Delete the extracted files"):
        load_mnist(own_copy)


def test_plausible_garbage_of_the_right_size_is_refused(own_copy):
    """All-zero images with a valid header would train at chance under a real run's name."""
    load_mnist(own_copy)
    data._MNIST_CACHE.clear()
    path = own_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">iiii", 2051, 60000, 28, 28) + b"\0" * (60000 * 784))
    with pytest.raises(DataError, match="do not hold MNIST's training set"):
        load_mnist(own_copy)
    with gzip.open(own_copy / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") as gz:
        assert gz.read(4)  # the .gz is untouched


def test_a_missing_root_is_not_created(tmp_path):
    root = tmp_path / "nowhere" / "data"
    with pytest.raises(DataError, match="MNIST is not under .*could not be downloaded"):
        load_mnist(root)
    assert not (tmp_path / "nowhere").exists()
