"""Dataset loaders: each returns an `ImageSet` (all images decoded once into one uint8 tensor,
`anomaly.data.image_set`).

A loader knows where its files live and how to fetch them; it knows nothing about protocols.
Reading, checking, fetching and resizing the files is `anomaly.data.io`'s.
Adding a dataset = one loader function here + one config in `conf/dataset/`.
"""

from __future__ import annotations

import csv
import logging
import re
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.io import (IMAGE_SUFFIXES, check_idx_file, error_line, fetch_archive, gunzip_missing,
                             list_image_files, read_images)


log = logging.getLogger("anomaly")


def fixed_stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed train/test split for datasets without an official one (same on every machine)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return torch.from_numpy(test)


def load_digits(test_fraction: float = 0.3) -> ImageSet:
    """scikit-learn's 1,797 8×8 handwritten digits: real data shipped inside scikit-learn.

    There is no official split; a fixed stratified one (seed 0, 30 % test) stands in for it.
    Pixel values 0…16 are scaled to 0…255.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    return ImageSet(
        name="digits",
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=[str(c) for c in range(10)],
        official_test=fixed_stratified_test_mask(labels, test_fraction),
    )


def _load_torchvision_idx(cls: Callable, name: str, root: str | Path, download: bool,
                          class_names: list[str], files: list[str] | None = None,
                          official_size: dict[str, int] | None = None, **kwargs) -> ImageSet:
    """Read an IDX-format torchvision dataset (MNIST family), train and test splits pooled.

    torchvision reads `root/<ClassName>/raw/*-ubyte` when present and otherwise downloads the
    official archives, checking their MD5 sums. `files` names the raw files for the error message
    (default: from `cls.resources`); `kwargs` go to the dataset class (EMNIST's `split`).
    """
    root = Path(root).expanduser()
    raw_dir = root / cls.__name__ / "raw"
    if files is None:
        files = [Path(url).name.removesuffix(".gz") for url, _ in cls.resources]
    where = (f"expected {', '.join(files)} in {raw_dir} (torchvision's layout); set paths.data_dir "
             f"or ANOMALY_DATA_DIR to the folder that holds {cls.__name__}/raw")
    # torchvision only checks that the files exist: a truncated one would be read as far as it goes
    for file in files:
        if (raw_dir / file).is_file():
            check_idx_file(raw_dir / file, name)
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download, **kwargs)
        except RuntimeError as err:
            if not download:
                missing = [f for f in files if not (raw_dir / f).is_file()]
                raise AnomalyError(f"dataset {name}: files not found and download disabled "
                                   f"({', '.join(missing) or 'some'} missing); {where}") from None
            raise AnomalyError(f"dataset {name}: files not found and download failed "
                               f"({error_line(err)}); {where}") from None
        except OSError as err:  # URLError, permission problems, unreadable files
            raise AnomalyError(f"dataset {name}: could not read or fetch files ({error_line(err)}); "
                               f"{where}") from None
        if len(ds.data) != len(ds.targets):
            split = "train" if train else "test"
            raise AnomalyError(f"dataset {name}: the {split} files in {raw_dir} hold {len(ds.data)} images but "
                               f"{len(ds.targets)} labels; one of them is from another release or damaged: "
                               "delete both and fetch them again")
        parts.append((ds.data, ds.targets, train))
    images = torch.cat([p[0] for p in parts])[:, None].contiguous()
    labels = torch.cat([torch.as_tensor(p[1]) for p in parts])
    official_test = torch.cat([torch.full((len(p[0]),), not p[2]) for p in parts])
    data = ImageSet(name=name, images=images, labels=labels, class_names=class_names,
                    official_test=official_test, official_size=official_size)
    subset = data.subset_line()
    if subset:  # a copy smaller than the papers' data: their numbers were made on more images
        log.info("dataset %s: %s in %s (a subset of the papers' data)", name, subset, raw_dir)
    return data


def load_mnist(root: str | Path, download: bool = True) -> ImageSet:
    """MNIST through torchvision (official train + test, pooled; `official_test` marks the test)."""
    from torchvision.datasets import MNIST

    return _load_torchvision_idx(MNIST, "mnist", root, download, [str(c) for c in range(10)],
                                 official_size={"train": 60000, "test": 10000})


def load_fashion_mnist(root: str | Path, download: bool = True) -> ImageSet:
    """Fashion-MNIST through torchvision; class names as torchvision spells them."""
    from torchvision.datasets import FashionMNIST

    return _load_torchvision_idx(FashionMNIST, "fashion_mnist", root, download,
                                 list(FashionMNIST.classes), official_size={"train": 60000, "test": 10000})


# ---- COIL-100 -------------------------------------------------------------------------------------
COIL100_URL = "http://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip"
# SHA-256 of that archive (130,688,843 bytes) as registered by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/coil100.txt); not re-measured here (no network).
COIL100_SHA256 = "fcb4b8b01c0778f416d8d7a09f45082c4f7075cc74743dcddd5c44307bd4afe7"
COIL_FILE = re.compile(r"obj(\d+)__(\d+)\.png", re.IGNORECASE)


def load_coil100(root: str | Path, folder: str = "coil-100", image_size: int | None = 32,
                 resize_mode: str = "area", download: bool = True, url: str = COIL100_URL,
                 sha256: str | None = COIL100_SHA256) -> ImageSet:
    """COIL-100: 100 objects × 72 views (`objN__A.png`, N = 1…100, A = 0…355 in steps of 5) in
    `root/folder`; the official archive unpacks to `coil-100/`.

    Classes are the objects, named by their number ("1" … "100") in object order, so
    `protocol.normal=[1,3,77]` means objects 1, 3 and 77 (integer classes of a dataset whose
    class names are all numbers are read as those numbers, see `protocols.resolve_classes`).
    Missing views (or whole objects) are skipped: the classes are the objects present. Images
    are decoded as RGB and resized to `image_size` (area interpolation, ARAE's INTER_AREA).
    No official split: protocols make one (`protocol=coil_random`).
    """
    root = Path(root).expanduser()
    directory = root / folder
    files = _coil_files(directory)
    if not files and download:
        archive = root / Path(url).name
        try:
            fetch_archive(url, archive, sha256, "coil100")
        except AnomalyError as err:  # say where a manual copy goes, too
            raise AnomalyError(f"{err}; or unpack COIL-100 yourself so that {directory} holds "
                               "obj1__0.png … obj100__355.png") from None
        from torchvision.datasets.utils import extract_archive

        try:
            extract_archive(str(archive), str(root))
        except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, zlib errors: a damaged archive
            raise AnomalyError(f"dataset coil100: cannot unpack {archive} ({error_line(err)}); delete it "
                               "and fetch it again") from None
        files = _coil_files(directory)
    if not files:
        how = ("download disabled (dataset.loader.download=false)" if not download else
               f"{Path(url).name} did not unpack to {directory}")
        raise AnomalyError(f"dataset coil100: no objN__A.png files in {directory} ({how}); expected "
                           f"COIL-100's obj1__0.png … obj100__355.png in one folder, {folder}/ under "
                           "paths.data_dir (or ANOMALY_DATA_DIR), as the official coil-100.zip unpacks")
    objects = sorted({obj for obj, _, _ in files})
    if len(files) != 72 * len(objects):  # not an error: protocols work with what is there
        log.info("dataset coil100: %d views of %d objects in %s (%d views missing in all, of 72 per object)",
                 len(files), len(objects), directory, 72 * len(objects) - len(files))
    position = {obj: i for i, obj in enumerate(objects)}
    images = read_images([path for _, _, path in files], 3, image_size, resize_mode, "coil100")
    labels = torch.tensor([position[obj] for obj, _, _ in files], dtype=torch.int64)
    return ImageSet(name="coil100", images=images, labels=labels,
                    class_names=[str(obj) for obj in objects], official_size={"all": 7200})


def _coil_files(directory: Path) -> list[tuple[int, int, Path]]:
    """(object, angle, path) of every objN__A.png in `directory`, in object then angle order."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = COIL_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found, key=lambda f: (f[0], f[1]))


# ---- EMNIST letters -------------------------------------------------------------------------------
def load_emnist_letters(root: str | Path, download: bool = True) -> ImageSet:
    """EMNIST, split `letters`, through torchvision (official train 124,800 + test 20,800, pooled).

    Files: `root/EMNIST/raw/emnist-letters-{train,test}-{images-idx3,labels-idx1}-ubyte`; the
    `.gz` files of the official gzip.zip (in `raw/` or `raw/gzip/`) are unpacked there first,
    which torchvision itself only does as part of a download. Labels 1…26 (upper and lower case
    merged) become class ids 0…25 named A…Z. EMNIST stores each image transposed; they are
    flipped back to upright here.
    """
    from torchvision.datasets import EMNIST

    raw_dir = Path(root).expanduser() / "EMNIST" / "raw"
    files = [f"emnist-letters-{part}-{kind}-ubyte" for part in ("train", "test")
             for kind in ("images-idx3", "labels-idx1")]
    gunzip_missing(raw_dir, files)
    data = _load_torchvision_idx(EMNIST, "emnist_letters", root, download,
                                 [chr(ord("A") + i) for i in range(26)], files,
                                 official_size={"train": 124800, "test": 20800}, split="letters")
    bad = (data.labels < 1) | (data.labels > 26)
    if bool(bad.any()):
        raise AnomalyError(f"dataset emnist_letters: labels must be 1…26 (A…Z), found "
                           f"{sorted(set(data.labels[bad].tolist()))[:5]} in {raw_dir}")
    data.labels = data.labels - 1
    data.images = data.images.transpose(-1, -2).contiguous()
    return data


# ---- medical sets: Head CT hemorrhage, Brain MRI tumour -------------------------------------------


def load_head_ct(root: str | Path, folder: str = "head_ct", image_size: int | None = 64,
                 resize_mode: str = "area") -> ImageSet:
    """Head CT hemorrhage (Kaggle, 200 images: 100 normal, 100 hemorrhage), as distributed:
    `root/folder/labels.csv` (columns `id`, `hemorrhage`: 0/1) and the images `000.png` …
    `199.png` in `root/folder/head_ct/` (the archive's nesting) or in `root/folder/` itself.

    Class 0 "normal" (the healthy class, the protocols' default normal class), 1 "hemorrhage".
    Grayscale, resized to `image_size` (the scans have different sizes). No official split.
    """
    directory = Path(root).expanduser() / folder
    layout = (f"expected {directory}/labels.csv (columns id, hemorrhage) and the images 000.png … "
              f"199.png in {directory}/head_ct/ or {directory}/, as the Kaggle 'Head CT - hemorrhage' "
              "archive unpacks; it sits behind a login, so put a local copy there (paths.data_dir or "
              "ANOMALY_DATA_DIR is the folder that holds head_ct/)")
    csv_path = directory / "labels.csv"
    if not csv_path.is_file():
        raise AnomalyError(f"dataset head_ct: {csv_path} not found; {layout}")
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "id" not in header or "hemorrhage" not in header:
        raise AnomalyError(f"dataset head_ct: {csv_path} has columns {header}, not id and "
                           f"hemorrhage; {layout}")
    col_id, col_label = header.index("id"), header.index("hemorrhage")
    image_dir = directory / "head_ct" if (directory / "head_ct").is_dir() else directory
    by_id = {}
    for path in list_image_files(image_dir):
        if path.stem.isdigit():
            by_id[int(path.stem)] = path
    paths, labels, missing = [], [], []
    for row in rows[1:]:
        if not row or not "".join(row).strip():
            continue
        try:
            image_id, label = int(row[col_id]), int(row[col_label])
        except (ValueError, IndexError):
            raise AnomalyError(f"dataset head_ct: bad row {row} in {csv_path}: id and hemorrhage "
                               "must be integers") from None
        if label not in (0, 1):
            raise AnomalyError(f"dataset head_ct: hemorrhage={label} for id {image_id} in {csv_path}; "
                               "allowed: 0 (normal) or 1 (hemorrhage)")
        if image_id in by_id:
            paths.append(by_id[image_id])
            labels.append(label)
        else:
            missing.append(image_id)
    if not paths:
        raise AnomalyError(f"dataset head_ct: no image of {csv_path} found in {image_dir}; {layout}")
    if missing:
        log.warning("dataset head_ct: %d ids of labels.csv have no image (first: %s); skipped",
                    len(missing), missing[:5])
    images = read_images(paths, 1, image_size, resize_mode, "head_ct")
    return ImageSet(name="head_ct", images=images, labels=torch.tensor(labels, dtype=torch.int64),
                    class_names=["normal", "hemorrhage"])


def load_brain_mri(root: str | Path, folder: str = "brain_mri", image_size: int | None = 64,
                   resize_mode: str = "area") -> ImageSet:
    """Brain MRI tumour (Kaggle "Brain MRI Images for Brain Tumor Detection", 253 images): the
    folders `no/` (healthy, 98) and `yes/` (tumour, 155) in `root/folder/` or in
    `root/folder/brain_tumor_dataset/` (the archive holds both copies).

    Class 0 "no" (healthy: the default normal class), 1 "yes". Grayscale, resized to
    `image_size` (the scans differ in size and format: jpg, png). No official split.
    """
    directory = Path(root).expanduser() / folder
    base = next((d for d in (directory, directory / "brain_tumor_dataset")
                 if (d / "no").is_dir() and (d / "yes").is_dir()), None)
    if base is None:
        raise AnomalyError(f"dataset brain_mri: no folders no/ and yes/ in {directory} or "
                           f"{directory / 'brain_tumor_dataset'}; expected {directory}/no/*.jpg "
                           f"(healthy) and {directory}/yes/*.jpg (tumour), as the Kaggle 'Brain MRI "
                           "Images for Brain Tumor Detection' archive unpacks; it sits behind a login, "
                           "so put a local copy there (paths.data_dir or ANOMALY_DATA_DIR is the "
                           "folder that holds brain_mri/)")
    paths, labels = [], []
    for label, name in enumerate(("no", "yes")):
        files = list_image_files(base / name)
        if not files:
            raise AnomalyError(f"dataset brain_mri: {base / name} holds no images "
                               f"({', '.join(IMAGE_SUFFIXES)})")
        paths += files
        labels += [label] * len(files)
    images = read_images(paths, 1, image_size, resize_mode, "brain_mri")
    return ImageSet(name="brain_mri", images=images, labels=torch.tensor(labels, dtype=torch.int64),
                    class_names=["no", "yes"])


# ---- the user's own images ------------------------------------------------------------------------
def _class_order(name: str) -> tuple:
    """Numeric class folders in numeric order (2 before 10), then the others alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def load_folder(root: str | Path, image_size: int | None = 64, channels: int = 3,
                resize_mode: str = "area") -> ImageSet:
    """The user's own images, one folder per class: `root/<class_name>/*.{png,jpg,…}`.

    The folder names are the class names (`protocol.normal=[good]`). With `root/train/<class>/`
    and `root/test/<class>/` instead (MVTec AD's layout), the `test/` images form the official
    test split (`protocol=one_class` then trains on train/<normal>/ and tests on all of test/).
    Class folders without images are skipped. Images are decoded with `channels` (1 grayscale,
    3 RGB) and resized to `image_size` squares.
    """
    root = Path(root).expanduser()
    layout = (f"expected one folder per class with its images, {root}/<class_name>/*.png|jpg (e.g. "
              f"{root}/good/, {root}/defect/), or {root}/train/<class_name>/ and "
              f"{root}/test/<class_name>/; set dataset.loader.root")
    if not root.is_dir():
        raise AnomalyError(f"dataset folder: {root} is not a folder; {layout}")
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    parts = [(root / "train", False), (root / "test", True)] if split_layout else [(root, False)]
    entries = []  # (class name, is_test, path)
    for base, is_test in parts:
        for class_dir in sorted(d for d in base.iterdir() if d.is_dir()):
            entries += [(class_dir.name, is_test, p) for p in list_image_files(class_dir)]
    if not entries:
        raise AnomalyError(f"dataset folder: no images found under {root}; {layout}")
    class_names = sorted({c for c, _, _ in entries}, key=_class_order)
    if len(class_names) < 2:
        raise AnomalyError(f"dataset folder: only one class ({class_names[0]}) under {root}; "
                           f"anomaly detection needs normal and anomalous images; {layout}")
    position = {c: i for i, c in enumerate(class_names)}
    images = read_images([p for _, _, p in entries], channels, image_size, resize_mode, "folder")
    labels = torch.tensor([position[c] for c, _, _ in entries], dtype=torch.int64)
    official_test = torch.tensor([t for _, t, _ in entries]) if split_layout else None
    return ImageSet(name="folder", images=images, labels=labels, class_names=class_names,
                    official_test=official_test)


# ---- MedMNIST (2D subsets, the `medmnist` package's .npz files) -----------------------------------
def load_medmnist(root: str | Path, subset: str = "pneumoniamnist", resolution: int = 28) -> ImageSet:
    """A MedMNIST 2D subset from its .npz file (`train_images`, `train_labels`, `val_*`,
    `test_*`): `root/medmnist/<subset>.npz` (28×28) or `<subset>_<resolution>.npz`, as the
    `medmnist` package stores them (also accepted directly in `root/`). Official test = the test
    split; the official validation split is pooled with train (protocols make their own
    validation). Class names are the label numbers ("0", "1", …; the meaning is the `medmnist`
    package's INFO[subset]["label"]). Multi-label subsets (chestmnist) are refused.
    """
    root = Path(root).expanduser()
    name = subset if resolution == 28 else f"{subset}_{resolution}"
    candidates = [root / "medmnist" / f"{name}.npz", root / f"{name}.npz"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise AnomalyError(f"dataset medmnist: {name}.npz not found in {candidates[0].parent} or "
                           f"{root}; expected the medmnist package's file (python -m medmnist "
                           f"download, or copy ~/.medmnist/{name}.npz there)")
    try:
        with np.load(path) as f:
            try:
                parts = [(f[f"{s}_images"], f[f"{s}_labels"], s == "test") for s in ("train", "val", "test")]
            except KeyError as err:
                raise AnomalyError(f"dataset medmnist: {path} lacks {err}; expected train/val/test "
                                   "_images and _labels arrays") from None
    except AnomalyError:
        raise
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as err:  # a damaged .npz
        raise AnomalyError(f"dataset medmnist: {path} is truncated or corrupt ({error_line(err)}); delete "
                           "it and fetch it again") from None
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise AnomalyError(f"dataset medmnist: {subset} is multi-label ({labels.shape[1]} labels per "
                           "image); only single-label subsets have classes to be normal or anomalous")
    labels = labels.reshape(-1).astype(np.int64)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    n_classes = int(labels.max()) + 1
    return ImageSet(name="medmnist", images=torch.from_numpy(np.ascontiguousarray(images, np.uint8)),
                    labels=torch.from_numpy(labels), class_names=[str(c) for c in range(n_classes)],
                    official_test=torch.from_numpy(np.concatenate([np.full(len(p[0]), p[2]) for p in parts])))
