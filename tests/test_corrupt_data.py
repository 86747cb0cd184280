"""Damaged data files are refused with the file named, never read in part: truncated or foreign
IDX files, IDX pairs that do not match, truncated gzip / zip / npz archives, unreadable images."""

import hashlib
import zipfile

import numpy as np
import pytest

from anomaly import AnomalyError
from anomaly.data.datasets import load_coil100, load_emnist_letters, load_folder, load_medmnist, load_mnist
from anomaly.pipeline import train
from tests.conftest import TINY, compose_config
from tests.helpers.formats import (write_coil100, write_emnist_letters, write_idx, write_image_folder,
                                   write_medmnist, write_mnist_like)


def cut(path, n_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - n_bytes])


@pytest.fixture
def mnist(tmp_path):
    return write_mnist_like(tmp_path, "MNIST", n_train_per_class=6, n_test_per_class=3)


@pytest.mark.parametrize("download", [False, True])
def test_truncated_idx_file_is_refused(tmp_path, mnist, download):
    images = mnist / "train-images-idx3-ubyte"
    cut(images, 100)
    # with download=True too: the files are there, so nothing is fetched, and nothing is half-read
    with pytest.raises(AnomalyError, match=rf"dataset mnist: {images} is truncated: its header declares "
                                           r"60×28×28 values \(47,056 bytes\) but the file has 46,956 bytes; "
                                           r"delete it and fetch it again"):
        load_mnist(tmp_path, download=download)


def test_idx_file_too_long_or_not_idx_is_refused(tmp_path, mnist):
    labels = mnist / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes() + b"\0")
    with pytest.raises(AnomalyError, match=r"t10k-labels-idx1-ubyte is too long: its header declares 30 "
                                           r"values \(38 bytes\) but the file has 39 bytes"):
        load_mnist(tmp_path, download=False)
    labels.write_text("<html>404 Not Found</html>")
    with pytest.raises(AnomalyError, match=r"t10k-labels-idx1-ubyte is not an IDX file \(it starts with "
                                           r"3c68746d, 26 bytes\)"):
        load_mnist(tmp_path, download=False)


def test_images_and_labels_that_do_not_pair_are_refused(tmp_path, mnist):
    write_idx(mnist / "t10k-labels-idx1-ubyte", np.zeros(29, np.uint8))  # a valid file, one label short
    with pytest.raises(AnomalyError, match=r"the test files in .*MNIST/raw hold 30 images but 29 labels"):
        load_mnist(tmp_path, download=False)


def test_missing_files_are_named(tmp_path, mnist):
    (mnist / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(AnomalyError, match=r"files not found and download disabled \(t10k-labels-idx1-ubyte "
                                           r"missing\); expected train-images-idx3-ubyte, .* in .*MNIST/raw"):
        load_mnist(tmp_path, download=False)


def test_a_run_on_a_truncated_file_never_trains(tmp_path, mnist):
    cut(mnist / "t10k-images-idx3-ubyte", 784 * 3)  # three images short
    cfg = compose_config(tmp_path / "run", [*TINY, "dataset=mnist", f"paths.data_dir={tmp_path}",
                                            "dataset.loader.download=false"])
    with pytest.raises(AnomalyError, match=r"t10k-images-idx3-ubyte is truncated"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_truncated_gzip_is_refused_and_leaves_no_partial_file(tmp_path):
    raw = write_emnist_letters(tmp_path, n_train_per_class=2, n_test_per_class=1, layout="gz")
    packed = raw / "emnist-letters-train-images-idx3-ubyte.gz"
    cut(packed, 200)
    with pytest.raises(AnomalyError, match=rf"cannot unpack {packed}: truncated or corrupt gzip file \(.+\); "
                                           r"delete it and fetch it again"):
        load_emnist_letters(tmp_path, download=False)
    assert [p.name for p in raw.iterdir() if not p.name.endswith(".gz")] == []  # no partial file


def test_unreadable_images_are_all_named(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"good": 4, "bad": 2})
    broken = [root / "good" / "img_0.png", root / "bad" / "img_1.jpg"]
    cut(broken[0], broken[0].stat().st_size - 40)  # the header survives, the pixels do not
    broken[1].write_text("not an image")
    with pytest.raises(AnomalyError) as err:
        load_folder(root, image_size=16)
    message = str(err.value)
    assert message.startswith("dataset folder: 2 of 6 image files cannot be read: ")
    assert all(str(p) in message for p in broken) and message.endswith("; repair or remove them")
    assert "\n" not in message


def test_damaged_coil_archive_is_refused(tmp_path):
    src = tmp_path / "src"
    write_coil100(src, objects=[1, 2], angles=[0, 5], size=16)
    root = tmp_path / "data"
    root.mkdir()
    archive = root / "coil-100.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((src / "coil-100").iterdir()):
            zf.write(f, f"coil-100/{f.name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cut(archive, 300)
    # an archive already there (an interrupted download): the checksum refuses it, it is kept
    with pytest.raises(AnomalyError, match=rf"{archive} has SHA-256 \w+, expected {digest} .*; delete it "
                                           r"and fetch it again"):
        load_coil100(root, image_size=16, sha256=digest)
    assert archive.exists()
    # without a checksum to compare, the damage shows when unpacking
    with pytest.raises(AnomalyError, match=rf"dataset coil100: cannot unpack {archive} \(.+\); delete it"):
        load_coil100(root, image_size=16, sha256=None)


def test_truncated_medmnist_file_is_refused(tmp_path):
    path = write_medmnist(tmp_path)
    cut(path, 50)
    with pytest.raises(AnomalyError, match=rf"dataset medmnist: {path} is truncated or corrupt \(.+\); delete it"):
        load_medmnist(tmp_path)
