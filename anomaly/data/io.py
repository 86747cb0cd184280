"""File I/O for the dataset loaders: checked IDX files, checksummed downloads, gunzip, image
decoding and resizing.

Every function here refuses a damaged or foreign file with an `AnomalyError` that names it (a
truncated download or unpacking is never read in part); none knows about `ImageSet` or classes.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from anomaly import AnomalyError
from anomaly.config_schema import RESIZE_MODES

log = logging.getLogger("anomaly")


def error_line(err: Exception) -> str:
    """The most specific line of a (possibly multi-line) error, for a one-line message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


# ---- IDX files (the MNIST family's format) -------------------------------------------------------
# IDX element types (the third header byte) and their sizes in bytes
IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path, name: str) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares, after checking that the file holds exactly
    that much data: a truncated download or unpacking is refused rather than read in part."""
    again = "delete it and fetch it again (missing files are downloaded unless dataset.loader.download=false)"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        valid = len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES and 1 <= head[3] <= 4
        dims_bytes = fh.read(4 * head[3]) if valid else b""
    if not valid or len(dims_bytes) != 4 * head[3]:
        raise AnomalyError(f"dataset {name}: {path} is not an IDX file (it starts with "
                           f"{head.hex() or 'nothing'}, {size} bytes); {again}")
    dims = struct.unpack(f">{head[3]}I", dims_bytes)
    expected = 4 + 4 * len(dims) + int(np.prod(dims)) * IDX_TYPES[head[2]]
    if size != expected:
        raise AnomalyError(f"dataset {name}: {path} is {'truncated' if size < expected else 'too long'}: its "
                           f"header declares {'×'.join(map(str, dims))} values ({expected:,} bytes) but the "
                           f"file has {size:,} bytes; {again}")
    return dims


# ---- gzip, downloads, checksums ------------------------------------------------------------------
def gunzip_missing(raw_dir: Path, files: list[str]) -> None:
    """Unpack `raw_dir/<f>.gz` or `raw_dir/gzip/<f>.gz` to `raw_dir/<f>` where `<f>` is missing."""
    for name in files:
        target = raw_dir / name
        if target.is_file():
            continue
        for packed in (raw_dir / f"{name}.gz", raw_dir / "gzip" / f"{name}.gz"):
            if packed.is_file():
                # unpack beside the target, then rename: an interrupted or failed unpacking leaves
                # no partial file behind that would pass for the dataset next time
                partial = target.with_name(target.name + ".partial")
                try:
                    with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
                    partial.unlink(missing_ok=True)
                    raise AnomalyError(f"cannot unpack {packed}: truncated or corrupt gzip file "
                                       f"({error_line(err)}); delete it and fetch it again") from None
                partial.replace(target)
                break


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(url: str, archive: Path, sha256: str | None, name: str) -> None:
    """Download `url` to `archive` (unless already there) and check its SHA-256.

    A file that fails the check is refused (and a downloaded one deleted) so a truncated or
    changed archive never turns into a silently different dataset. `sha256=None` skips the check
    (the computed digest is logged, to pin it in the config).
    """
    from torchvision.datasets.utils import download_url

    fetched = not archive.is_file()
    if fetched:
        archive.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url(url, str(archive.parent), archive.name)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            archive.unlink(missing_ok=True)
            raise AnomalyError(f"dataset {name}: download of {url} failed ({error_line(err)})") from None
    digest = _sha256(archive)
    if sha256 is None:
        log.warning("dataset %s: %s not checksum-verified (dataset.loader.sha256=null); its SHA-256 "
                    "is %s", name, archive, digest)
    elif digest != sha256.lower():
        if fetched:
            archive.unlink(missing_ok=True)
        action = "the download was deleted" if fetched else "delete it"
        raise AnomalyError(f"dataset {name}: {archive} has SHA-256 {digest}, expected {sha256} "
                           f"(dataset.loader.sha256); {action} and fetch it again, or set "
                           "dataset.loader.sha256=null to accept it")


# ---- resizing ------------------------------------------------------------------------------------
# the torch.nn.functional.interpolate modes for images (N×C×H×W): `dataset.resize_mode`


def resize_images(images: torch.Tensor, size: int | None, mode: str = "bilinear",
                  chunk: int = 8192) -> torch.Tensor:
    """Resize a uint8 N×C×H×W tensor once (in chunks), returning uint8 again.

    `mode` is one of RESIZE_MODES, the `torch.nn.functional.interpolate` modes for images
    ("bilinear" as GPND, "area" for downsampling as ARAE's INTER_AREA).
    """
    if mode not in RESIZE_MODES:
        raise AnomalyError(f"dataset.resize_mode={mode!r}: must be one of {', '.join(RESIZE_MODES)}")
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    kwargs = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].float()
        block = torch.nn.functional.interpolate(block, size=(size, size), mode=mode, **kwargs)
        out[start:start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out


# ---- image files: listing, decoding --------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHANNEL_MODES = {1: "L", 3: "RGB"}


def list_image_files(directory: Path) -> list[Path]:
    """The image files (IMAGE_SUFFIXES) directly in `directory`, in name order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _channel_mode(channels: int, name: str) -> str:
    if channels not in CHANNEL_MODES:
        raise AnomalyError(f"dataset {name}: dataset.loader.channels={channels} must be 1 "
                           "(grayscale) or 3 (RGB)")
    return CHANNEL_MODES[channels]


def _decode(path: Path, mode: str) -> np.ndarray:
    """One image file → uint8 H×W×C in PIL mode `mode` ("L" or "RGB")."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit PNGs (some scanners' exports): PIL's convert("L") clips them instead of
            # scaling, so scale to 8 bits here
            arr = np.asarray(im, dtype=np.float64)
            arr = arr * (255.0 / max(float(arr.max()), 1.0))
            im = Image.fromarray(arr.round().astype(np.uint8))
        arr = np.asarray(im.convert(mode))
    return arr[..., None] if arr.ndim == 2 else arr


def read_images(paths: list[Path], channels: int, size: int | None, resize_mode: str = "area",
                name: str = "dataset") -> torch.Tensor:
    """Decode image files into one uint8 N×C×size×size tensor.

    Files of the same shape are resized together (`resize_images`), so images of any (mixed)
    size end up square at `size` (not aspect-preserving: the nets take squares). `size=None`
    keeps the native size, which then has to be the same for every file.
    """
    mode = _channel_mode(channels, name)
    if not paths:
        raise AnomalyError(f"dataset {name}: no image files to read")
    arrays, unreadable = [], []
    for path in paths:
        try:
            arrays.append(_decode(path, mode))
        # PIL reports truncated or foreign files as OSError, some damaged ones as SyntaxError,
        # ValueError, zlib errors…: all mean the same here, so every one is collected and named
        except Exception as err:  # noqa: BLE001
            unreadable.append(f"{path} ({error_line(err)})")
    if unreadable:
        shown = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise AnomalyError(f"dataset {name}: {len(unreadable)} of {len(paths)} image files cannot be read: "
                           f"{shown}; repair or remove them")
    shapes = sorted({a.shape for a in arrays})
    if size is None and len(shapes) > 1:
        raise AnomalyError(f"dataset {name}: images have different sizes ({shapes[0][:2]}, "
                           f"{shapes[-1][:2]}, …); set dataset.image_size to resize them all")
    out_size = size if size is not None else shapes[0][0]
    if size is None and shapes[0][0] != shapes[0][1]:
        raise AnomalyError(f"dataset {name}: images are {shapes[0][:2]}, not square; set "
                           "dataset.image_size to resize them to a square")
    out = torch.empty((len(arrays), channels, out_size, out_size), dtype=torch.uint8)
    for shape in shapes:  # one batched resize per distinct input shape
        idx = [i for i, a in enumerate(arrays) if a.shape == shape]
        block = torch.from_numpy(np.stack([arrays[i] for i in idx])).permute(0, 3, 1, 2)
        out[idx] = resize_images(block.contiguous(), out_size, resize_mode)
    return out

