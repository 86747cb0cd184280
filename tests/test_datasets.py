import urllib.error

import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.datasets import load_digits, load_fashion_mnist, load_mnist, resize_images
from tests.helpers.formats import write_mnist_like


def test_mnist_reads_torchvision_layout(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train_per_class=6, n_test_per_class=3)
    data = load_mnist(tmp_path, download=False)
    assert data.images.shape == (90, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == set(range(10))
    assert int(data.official_test.sum()) == 30
    assert data.class_names == [str(c) for c in range(10)]
    # the class patterns survive the round trip: class 0's patch is top-left
    zero = data.images[data.labels == 0].float().mean(0)[0]
    assert zero[2:10, 2:10].mean() > 150 and zero[18:26, 18:26].mean() < 60


def test_fashion_mnist_reads_its_layout_with_class_names(tmp_path):
    write_mnist_like(tmp_path, "FashionMNIST", n_train_per_class=2, n_test_per_class=1)
    data = load_fashion_mnist(tmp_path, download=False)
    assert len(data) == 30 and data.class_names[1] == "Trouser"


def test_missing_files_without_download_say_where_they_belong(tmp_path):
    with pytest.raises(AnomalyError) as err:
        load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg
    assert "download disabled" in msg and "ANOMALY_DATA_DIR" in msg


def test_failed_download_says_where_files_belong(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    with pytest.raises(AnomalyError, match=r"files not found and download failed .*MNIST/raw"):
        load_mnist(tmp_path, download=True)


def test_digits_is_embedded_with_a_fixed_split():
    a, b = load_digits(), load_digits()
    assert a.images.shape == (1797, 1, 8, 8) and int(a.images.max()) == 255
    assert torch.equal(a.official_test, b.official_test)
    frac = a.official_test.float().mean().item()
    assert 0.29 < frac < 0.31
    for c in range(10):  # stratified
        per_class = a.official_test[a.labels == c].float().mean().item()
        assert abs(per_class - 0.3) < 0.02


def test_resize_keeps_uint8_and_values():
    flat = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    out = resize_images(flat, 32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.uint8 and bool((out == 77).all())
    assert resize_images(flat, None) is flat and resize_images(flat, 28) is flat
    ramp = torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8).repeat(2, 3, 1, 1)
    down = resize_images(ramp, 4, "area")
    assert down.shape == (2, 3, 4, 4)
    assert np.isclose(down.float().mean().item(), ramp.float().mean().item(), atol=1)
