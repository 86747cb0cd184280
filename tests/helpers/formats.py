"""Small datasets in the real on-disk formats, as a user's files would look (no downloads)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims, raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def blob_images(labels: np.ndarray, size: int = 28, seed: int = 0) -> np.ndarray:
    """Easy synthetic classes: class k is a bright 8×8 patch at its own place (k-th cell of a
    3×4 grid, jittered ±1 px) on a faint noisy background. An autoencoder of one class cannot
    reconstruct patches elsewhere, so its reconstruction error separates the classes."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 30, size=(n, size, size)).astype(np.float64)
    row_step, col_step = (size - 10) // 2, (size - 10) // 3  # 9 and 6 px for 28×28
    for i, k in enumerate(labels):
        row, col = divmod(int(k), 4)
        y = 1 + row * row_step + rng.integers(-1, 2)
        x = 1 + col * col_step + rng.integers(-1, 2)
        images[i, y:y + 8, x:x + 8] = 200 + rng.integers(0, 55, size=(8, 8))
    return images.clip(0, 255).astype(np.uint8)


def write_mnist_like(root: Path, folder: str = "MNIST", n_train_per_class: int = 60,
                     n_test_per_class: int = 30, n_classes: int = 10, compress: bool = False,
                     seed: int = 0) -> Path:
    """torchvision's layout: root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    raw = Path(root) / folder / "raw"
    for train, per_class in ((True, n_train_per_class), (False, n_test_per_class)):
        labels = np.repeat(np.arange(n_classes), per_class)
        labels = np.random.default_rng(seed + train).permutation(labels).astype(np.uint8)
        images = blob_images(labels, seed=seed + 10 * train)
        img_file, lbl_file = MNIST_FILES[train]
        write_idx(raw / img_file, images, compress)
        write_idx(raw / lbl_file, labels, compress)
    return raw


# ---- image-file datasets -----------------------------------------------------------------------------
def _save_image(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 H×W or H×W×3 array with PIL (format from the suffix)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path)
    return path


def coil_color(obj: int) -> np.ndarray:
    """Object N's colour in the synthetic COIL images (distinct for N = 1…27)."""
    n = obj - 1
    return np.array([60 + 95 * (n % 3), 60 + 95 * ((n // 3) % 3), 60 + 95 * ((n // 9) % 3)], np.uint8)


def coil_image(obj: int, angle: int, size: int = 64) -> np.ndarray:
    """Object N at `angle`: a square of its colour on black, shifted a little with the angle (the
    turntable), so the views of one object differ but keep its colour."""
    image = np.zeros((size, size, 3), np.uint8)
    side = size // 2
    shift = int(round((size // 8) * np.sin(np.deg2rad(angle))))
    top, left = size // 4, size // 4 + shift
    image[top:top + side, left:left + side] = coil_color(obj)
    return image


def write_coil100(root: Path, objects=range(1, 11), angles=range(0, 360, 5), size: int = 64,
                  missing=(), folder: str = "coil-100") -> Path:
    """COIL-100's layout: root/coil-100/objN__A.png, RGB PNGs; `missing` (obj, angle) pairs are
    left out, as some views are in the shared copy. Plus the archive's non-image file."""
    directory = Path(root) / folder
    directory.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        for angle in angles:
            if (obj, angle) not in set(missing):
                _save_image(directory / f"obj{obj}__{angle}.png", coil_image(obj, angle, size))
    (directory / "convertGroupppm2png.pl").write_text("# not an image\n")
    return directory


def letter_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Upright 28×28 images for EMNIST letters 1…26: a bright bar across the top rows (so a
    transposed image shows it down the left side instead) and a class patch (blob_images)."""
    images = blob_images((np.asarray(labels) - 1) % 12, seed=seed)
    images[:, 0:3, :] = 255
    return images


def write_emnist_letters(root: Path, n_train_per_class: int = 4, n_test_per_class: int = 2,
                         layout: str = "raw", seed: int = 0) -> Path:
    """torchvision's EMNIST layout, split letters: root/EMNIST/raw/emnist-letters-{train,test}-
    {images-idx3,labels-idx1}-ubyte, labels 1…26, each image stored transposed as in the real
    files. layout: "raw" (uncompressed, what torchvision reads), "gz" (the .gz files in raw/) or
    "gzip" (raw/gzip/*.gz, as the official gzip.zip unpacks)."""
    raw = Path(root) / "EMNIST" / "raw"
    target = raw / "gzip" if layout == "gzip" else raw
    for part, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        labels = np.repeat(np.arange(1, 27), per_class)
        labels = np.random.default_rng(seed + (part == "train")).permutation(labels).astype(np.uint8)
        upright = letter_images(labels, seed=seed + 10 * (part == "train"))
        stored = np.ascontiguousarray(upright.transpose(0, 2, 1))
        write_idx(target / f"emnist-letters-{part}-images-idx3-ubyte", stored, layout != "raw")
        write_idx(target / f"emnist-letters-{part}-labels-idx1-ubyte", labels, layout != "raw")
    return raw


def scan_image(height: int, width: int, lesion: bool, rng: np.random.Generator,
               rgb: bool = False) -> np.ndarray:
    """A synthetic scan: a mid-grey ellipse (the head) on black; `lesion` adds a bright blob
    near its centre."""
    yy, xx = np.mgrid[0:height, 0:width]
    head = ((yy - height / 2) / (0.4 * height)) ** 2 + ((xx - width / 2) / (0.4 * width)) ** 2 <= 1
    image = np.where(head, 90, 0).astype(np.float64) + rng.integers(0, 20, (height, width))
    if lesion:
        blob = ((yy - 0.45 * height) / (0.12 * height)) ** 2 + ((xx - 0.55 * width) / (0.12 * width)) ** 2 <= 1
        image[blob] = 240
    image = image.clip(0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if rgb else image


def write_head_ct(root: Path, n_normal: int = 6, n_hemorrhage: int = 6, nested: bool = True,
                  seed: int = 0, missing_ids=()) -> Path:
    """Kaggle's Head CT layout: root/head_ct/labels.csv (header "id, hemorrhage", with the
    space) and 000.png … in root/head_ct/head_ct/ (nested=True) or root/head_ct/. The scans have
    different sizes; hemorrhage ids come first, as in the real file."""
    rng = np.random.default_rng(seed)
    directory = Path(root) / "head_ct"
    image_dir = directory / "head_ct" if nested else directory
    labels = [1] * n_hemorrhage + [0] * n_normal
    lines = ["id, hemorrhage"]
    for image_id, label in enumerate(labels):
        lines.append(f"{image_id},{label}")
        if image_id not in missing_ids:
            h, w = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            _save_image(image_dir / f"{image_id:03d}.png", scan_image(h, w, bool(label), rng))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "labels.csv").write_text("\n".join(lines) + "\n")
    return directory


def write_brain_mri(root: Path, n_no: int = 6, n_yes: int = 8, nested: bool = False,
                    seed: int = 0) -> Path:
    """Kaggle's Brain MRI layout: root/brain_mri/{no,yes}/ (or .../brain_tumor_dataset/{no,yes}/)
    with JPEGs of different sizes, some RGB, names as in the archive (N1.JPG, Y1.jpg, …) and one
    PNG."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "brain_mri" / ("brain_tumor_dataset" if nested else "")
    for name, count, prefix in (("no", n_no, "N"), ("yes", n_yes, "Y")):
        for i in range(count):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            suffix = ".png" if i == 0 else (".JPG" if i % 2 else ".jpg")
            _save_image(base / name / f"{prefix}{i + 1}{suffix}",
                        scan_image(h, w, name == "yes", rng, rgb=bool(i % 3 == 1)))
    return base


def write_image_folder(root: Path, classes: dict[str, int] | None = None, split: bool = False,
                       seed: int = 0) -> Path:
    """The user folder layout: root/<class_name>/*.png|jpg (split=False) or root/train/<class>/
    and root/test/<class>/ (split=True: `classes` go to test, and the first class, the normal
    one, also gets as many training images). Class k is a square of its own colour."""
    classes = classes or {"good": 5, "bad": 3}
    rng = np.random.default_rng(seed)
    parts = [("train", {next(iter(classes)): next(iter(classes.values()))}), ("test", classes)] \
        if split else [("", classes)]
    for part, counts in parts:
        for name, count in counts.items():
            obj = list(classes).index(name) + 1
            for i in range(count):
                image = coil_image(obj, int(rng.integers(0, 360)), int(rng.integers(30, 50)))
                suffix = ".jpg" if i % 2 else ".png"
                _save_image(Path(root) / part / name / f"img_{i}{suffix}", image)
    return Path(root)


def write_medmnist(root: Path, subset: str = "pneumoniamnist", counts=(8, 3, 4), n_classes: int = 2,
                   rgb: bool = False, multilabel: bool = False) -> Path:
    """The medmnist package's .npz: {train,val,test}_{images,labels}, images N×28×28 (×3 for RGB
    subsets), labels N×1 (N×14 for multi-label chestmnist)."""
    path = Path(root) / "medmnist" / f"{subset}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in zip(("train", "val", "test"), counts):
        labels = np.arange(n) % n_classes
        images = blob_images(labels, seed=n)
        arrays[f"{part}_images"] = np.repeat(images[..., None], 3, axis=3) if rgb else images
        arrays[f"{part}_labels"] = (np.eye(14, dtype=np.uint8)[labels] if multilabel
                                    else labels[:, None].astype(np.uint8))
    np.savez_compressed(path, **arrays)
    return path
