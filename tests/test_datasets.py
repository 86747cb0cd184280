import hashlib
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.data.datasets import (COIL100_URL, load_brain_mri, load_coil100, load_digits,
                                   load_emnist_letters, load_fashion_mnist, load_folder, load_head_ct,
                                   load_medmnist, load_mnist)
from anomaly.data.io import resize_images
from anomaly.data.protocols.base import resolve_classes
from tests.helpers.formats import (coil_color, write_brain_mri, write_coil100, write_emnist_letters,
                                   write_head_ct, write_image_folder, write_medmnist, write_mnist_like)


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


# ---- image-file datasets, read back from their real on-disk layouts ---------------------------------
def test_coil100_reads_object_files_with_object_numbers_as_classes(tmp_path):
    write_coil100(tmp_path, objects=[1, 2, 3, 10], angles=range(0, 40, 5), size=64,
                  missing=[(2, 5), (2, 10)])
    data = load_coil100(tmp_path, image_size=32, download=False)
    assert data.images.shape == (30, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.class_names == ["1", "2", "3", "10"] and data.official_test is None
    # missing views are skipped, not an error
    assert data.labels.bincount().tolist() == [8, 6, 8, 8]
    # each object keeps its colour through decoding and the area resize (centre pixel)
    for position, obj in enumerate([1, 2, 3, 10]):
        centre = data.images[data.labels == position][:, :, 16, 16].float().mean(0)
        assert torch.allclose(centre, torch.tensor(coil_color(obj), dtype=torch.float32), atol=1)
    # classes as the user writes them: object numbers, not positions
    assert resolve_classes([1, 3, 10], data.class_names, "coil100") == [0, 2, 3]
    assert resolve_classes(["10"], data.class_names) == [3]
    with pytest.raises(AnomalyError, match=r"unknown class 0 for dataset coil100; classes are the "
                                           r"numbers \[1, 2, 3, 10\]"):
        resolve_classes([0], data.class_names, "coil100")
    native = load_coil100(tmp_path, image_size=None, download=False)
    assert native.images.shape[-2:] == (64, 64)


def test_coil100_missing_folder_says_which_layout(tmp_path):
    with pytest.raises(AnomalyError) as err:
        load_coil100(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "coil-100") in msg and "obj1__0.png" in msg and "download disabled" in msg


def _zip_of_coil(tmp_path):
    src = tmp_path / "src"
    write_coil100(src, objects=[1, 2], angles=[0, 5], size=16)
    archive = tmp_path / "coil-100.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((src / "coil-100").iterdir()):
            zf.write(f, f"coil-100/{f.name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_coil100_download_is_checksum_checked_then_extracted(tmp_path, monkeypatch):
    archive, digest = _zip_of_coil(tmp_path)
    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append(url)
        (Path(root) / filename).write_bytes(archive.read_bytes())

    monkeypatch.setattr("torchvision.datasets.utils.download_url", fake_download)
    root = tmp_path / "data"
    data = load_coil100(root, image_size=16, sha256=digest)
    assert calls == [COIL100_URL] and len(data) == 4 and data.class_names == ["1", "2"]
    # a download that does not match the checksum is refused and deleted
    other = tmp_path / "other"
    with pytest.raises(AnomalyError, match=r"has SHA-256 .* expected 0+ .*download was deleted"):
        load_coil100(other, image_size=16, sha256="0" * 64)
    assert not (other / "coil-100.zip").exists()


def test_coil100_failed_download_is_clear(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    with pytest.raises(AnomalyError, match=r"dataset coil100: download of http.*coil-100.zip failed .*; or "
                                           r"unpack COIL-100 yourself so that .*coil-100 holds obj1__0.png"):
        load_coil100(tmp_path)


@pytest.mark.parametrize("layout", ["raw", "gz", "gzip"])
def test_emnist_letters_labels_and_upright_orientation(tmp_path, layout):
    write_emnist_letters(tmp_path, n_train_per_class=2, n_test_per_class=1, layout=layout)
    data = load_emnist_letters(tmp_path, download=False)
    assert data.images.shape == (78, 1, 28, 28) and int(data.official_test.sum()) == 26
    assert data.class_names[0] == "A" and data.class_names[25] == "Z" and len(data.class_names) == 26
    assert sorted(set(data.labels.tolist())) == list(range(26))  # 1…26 → 0…25
    # upright: the generator's bar runs across the top rows, not down the left columns
    mean = data.images.float().mean(0)[0]
    assert mean[0:3, :].mean() > 250 and mean[10:, 0:3].mean() < 100
    # letter A (label 1 on disk) is class 0, with the generator's class-0 patch top-left
    a = data.images[data.labels == 0].float().mean(0)[0]
    assert a[4:10, 2:9].mean() > 150
    assert resolve_classes(["A"], data.class_names) == [0] == resolve_classes([0], data.class_names)


def test_emnist_letters_missing_files_say_where(tmp_path):
    with pytest.raises(AnomalyError) as err:
        load_emnist_letters(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "EMNIST" / "raw") in msg and "emnist-letters-train-images-idx3-ubyte" in msg


@pytest.mark.parametrize("nested", [True, False])
def test_head_ct_png_and_csv(tmp_path, nested):
    write_head_ct(tmp_path, n_normal=4, n_hemorrhage=3, nested=nested, missing_ids=[5])
    data = load_head_ct(tmp_path, image_size=32)
    assert data.class_names == ["normal", "hemorrhage"] and data.images.shape == (6, 1, 32, 32)
    # ids 0-2 hemorrhage, 3-6 normal, id 5's image missing (skipped)
    assert data.labels.tolist() == [1, 1, 1, 0, 0, 0]
    lesion = data.images[:, 0, 13:16, 16:19].float().mean((1, 2))
    assert (lesion[:3] > 200).all() and (lesion[3:] < 130).all()


def test_head_ct_errors_name_the_layout(tmp_path):
    with pytest.raises(AnomalyError, match=r"labels.csv not found; expected .*labels.csv \(columns id, "
                                           r"hemorrhage\) and the images 000.png"):
        load_head_ct(tmp_path)
    write_head_ct(tmp_path, 2, 2)
    (tmp_path / "head_ct" / "labels.csv").write_text("id,label\n0,1\n")
    with pytest.raises(AnomalyError, match=r"has columns \['id', 'label'\], not id and hemorrhage"):
        load_head_ct(tmp_path)
    (tmp_path / "head_ct" / "labels.csv").write_text("id, hemorrhage\n0,2\n")
    with pytest.raises(AnomalyError, match=r"hemorrhage=2 for id 0 .* allowed: 0 \(normal\) or 1"):
        load_head_ct(tmp_path)


@pytest.mark.parametrize("nested", [False, True])
def test_brain_mri_folders(tmp_path, nested):
    write_brain_mri(tmp_path, n_no=3, n_yes=4, nested=nested)
    data = load_brain_mri(tmp_path, image_size=16)
    assert data.class_names == ["no", "yes"] and data.images.shape == (7, 1, 16, 16)
    assert data.labels.tolist() == [0] * 3 + [1] * 4
    assert resolve_classes(["no"], data.class_names) == [0]


def test_brain_mri_missing_layout(tmp_path):
    (tmp_path / "brain_mri" / "no").mkdir(parents=True)
    with pytest.raises(AnomalyError, match=r"no folders no/ and yes/ in .*brain_mri.*expected .*no/\*.jpg"):
        load_brain_mri(tmp_path)


def test_folder_class_names_are_labels(tmp_path):
    write_image_folder(tmp_path / "imgs", {"good": 4, "scratch": 2, "dent": 3})
    data = load_folder(tmp_path / "imgs", image_size=16, channels=3)
    assert data.class_names == ["dent", "good", "scratch"] and data.images.shape == (9, 3, 16, 16)
    assert data.labels.bincount().tolist() == [3, 4, 2] and data.official_test is None
    assert resolve_classes(["good"], data.class_names) == [1]
    gray = load_folder(tmp_path / "imgs", image_size=8, channels=1)
    assert gray.images.shape == (9, 1, 8, 8)
    with pytest.raises(AnomalyError, match=r"channels=2 must be 1 \(grayscale\) or 3 \(RGB\)"):
        load_folder(tmp_path / "imgs", channels=2)


def test_folder_train_test_layout_and_errors(tmp_path):
    write_image_folder(tmp_path / "mvtec", {"good": 3, "crack": 2}, split=True)
    data = load_folder(tmp_path / "mvtec", image_size=16)
    assert data.class_names == ["crack", "good"] and len(data) == 8
    assert int(data.official_test.sum()) == 5 and set(data.labels[~data.official_test].tolist()) == {1}
    with pytest.raises(AnomalyError, match=r"is not a folder; expected one folder per class"):
        load_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "good").mkdir(parents=True)
    with pytest.raises(AnomalyError, match=r"no images found under .*empty"):
        load_folder(tmp_path / "empty")
    write_image_folder(tmp_path / "one", {"good": 2})
    with pytest.raises(AnomalyError, match=r"only one class \(good\)"):
        load_folder(tmp_path / "one")


def test_folder_numeric_class_names_are_numbers(tmp_path):
    write_image_folder(tmp_path / "n", {"3": 2, "10": 2, "7": 2})
    data = load_folder(tmp_path / "n", image_size=8)
    assert data.class_names == ["3", "7", "10"]  # numeric order
    assert resolve_classes([10], data.class_names) == [2] and resolve_classes([3], data.class_names) == [0]


def test_medmnist_npz(tmp_path):
    write_medmnist(tmp_path, "pneumoniamnist", counts=(8, 3, 4))
    data = load_medmnist(tmp_path, "pneumoniamnist")
    assert data.images.shape == (15, 1, 28, 28) and int(data.official_test.sum()) == 4
    assert data.class_names == ["0", "1"]
    write_medmnist(tmp_path, "bloodmnist", rgb=True, n_classes=3)
    assert load_medmnist(tmp_path, "bloodmnist").images.shape[1] == 3
    write_medmnist(tmp_path, "chestmnist", multilabel=True)
    with pytest.raises(AnomalyError, match="multi-label"):
        load_medmnist(tmp_path, "chestmnist")
    with pytest.raises(AnomalyError, match=r"dermamnist.npz not found"):
        load_medmnist(tmp_path, "dermamnist")


@pytest.mark.parametrize("dataset, protocol", [("folder", "one_class"), ("head_ct", "anomaly_ratio"),
                                               ("brain_mri", "holdout_class"), ("emnist_letters", "one_class")])
def test_composed_dataset_configs_split_by_class_name(tmp_path, dataset, protocol):
    from anomaly.pipeline import build_datamodule
    from tests.conftest import compose_config

    write_image_folder(tmp_path / "images", {"good": 6, "bad": 4}, split=True)
    write_head_ct(tmp_path, 10, 10)
    write_brain_mri(tmp_path, 10, 10)
    write_emnist_letters(tmp_path, 10, 2)
    normal = {"folder": "normal=[good]", "head_ct": "normal=[normal]", "brain_mri": "anomalous=[yes]",
              "emnist_letters": "normal=[A]"}[dataset]
    extra = ["protocol.anomaly_ratio=0.5"] if protocol == "anomaly_ratio" else []
    cfg = compose_config(tmp_path / "run", [f"dataset={dataset}", f"protocol={protocol}",
                                            f"paths.data_dir={tmp_path}", f"protocol.{normal}",
                                            "dataset.image_size=16", *extra])
    if "download" in cfg.dataset.loader:
        cfg.dataset.loader.download = False
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.data.images.shape[-2:] == (16, 16)
    assert dm.split.normal_classes == [dm.data.class_names.index({"folder": "good", "head_ct": "normal",
                                                                  "brain_mri": "no",
                                                                  "emnist_letters": "A"}[dataset])]
    assert not dm.split.train_anomalous.any() and dm.split.test_anomalous.any()


def test_datamodule_batches_are_array_slices_in_the_epoch_order(tmp_path):
    from functools import partial

    from lightning.fabric.utilities.data import _set_sampler_epoch
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
    from torch.utils.data import BatchSampler, DistributedSampler

    from anomaly.data.datamodule import AnomalyDataModule
    from anomaly.data.protocols.one_class import OneClass

    write_mnist_like(tmp_path, n_train_per_class=30, n_test_per_class=6)
    dm = AnomalyDataModule(partial(load_mnist, str(tmp_path), download=False), OneClass(normal=[0, 1, 2]),
                           batch_size=32, drop_last=True, seed=5)
    train = dm.train_dataloader()
    _set_sampler_epoch(train, 2)  # what Lightning does each epoch
    shuffle = train.batch_sampler.sampler
    expected = list(BatchSampler(shuffle, 32, drop_last=True))  # torch's lists of ints, same order
    batches = list(train)
    assert len(batches) == len(expected) == len(dm.subset("train")) // 32
    subset = dm.subset("train")
    for batch, positions in zip(batches, expected):
        assert torch.equal(batch["index"], subset.indices[positions])
        assert torch.equal(batch["image"], dm.data.images[subset.indices[positions]])
    _set_sampler_epoch(train, 3)
    assert not torch.equal(next(iter(train))["index"], batches[0]["index"])  # a new order per epoch
    # evaluation: every image once, in order, the last batch short
    val = list(dm.val_dataloader())
    assert torch.equal(torch.cat([b["index"] for b in val]), dm.subset("val").indices)
    # with a worker process: DataLoader's own iterator, the same batches
    workers = AnomalyDataModule(partial(load_mnist, str(tmp_path), download=False), OneClass(normal=[0, 1, 2]),
                                batch_size=32, drop_last=True, seed=5, num_workers=1)
    loader = workers.train_dataloader()
    _set_sampler_epoch(loader, 2)
    assert [b["index"].tolist() for b in loader] == [b["index"].tolist() for b in batches]
    # Lightning sees the shuffle and swaps in its DistributedSampler under DDP
    assert _is_dataloader_shuffled(train) and not _is_dataloader_shuffled(dm.val_dataloader())
    ranked = _update_dataloader(train, DistributedSampler(subset, num_replicas=2, rank=1, seed=5), mode=None)
    assert isinstance(ranked.batch_sampler.sampler, DistributedSampler)
    assert sum(len(b["index"]) for b in ranked) == len(subset) // 2 // 32 * 32


def test_batches_sliced_on_the_device_are_the_host_batches(tmp_path, monkeypatch):
    """The path a GPU run takes (images copied once, the epoch's order as a device tensor), here
    with the CPU standing in for the device: the same batches, in the same order."""
    from functools import partial

    from lightning.fabric.utilities.data import _set_sampler_epoch

    from anomaly.data.datamodule import AnomalyDataModule
    from anomaly.data.protocols.one_class import OneClass

    write_mnist_like(tmp_path, n_train_per_class=30, n_test_per_class=6)

    def batches(on_device: bool, part: str = "train") -> list[dict]:
        dm = AnomalyDataModule(partial(load_mnist, str(tmp_path), download=False), OneClass(normal=[0, 1]),
                               batch_size=16, seed=5)
        if on_device:
            monkeypatch.setattr(dm, "batch_device", lambda: torch.device("cpu"))
        loader = getattr(dm, f"{part}_dataloader")()
        _set_sampler_epoch(loader, 1)
        out = list(loader)
        if on_device:
            assert isinstance(next(iter(loader.batch_sampler)), torch.Tensor)  # the order is a tensor there
            assert dm._on_device is not None  # and the images were copied once
        return out

    for part in ("train", "test"):
        host, device = batches(False, part), batches(True, part)
        assert len(host) == len(device) > 1
        for a, b in zip(host, device):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
