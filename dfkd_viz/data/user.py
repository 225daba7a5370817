"""Bring your own data: image folders, zip archives of them, or ``.npz`` files, validated and
stored as datasets usable as a teacher's ID data, an OOD domain or a student domain.

Accepted sources:

- an **image folder** with one sub-folder per class (``cats/001.png``, ``dogs/…``; the sorted
  sub-folder names are the class names, label = position), or a **.zip** of such a folder (read in
  memory: member names are never used as paths, and one holding ``..`` or an absolute path is
  refused);
- an **.npz** (read with ``allow_pickle=False``) holding ``x`` — ``(N, H, W)``, ``(N, H, W, C)`` or
  ``(N, C, H, W)``, C ∈ {1, 3}, uint8 in [0, 255] or floats in [0, 1] — and ``y`` — ``(N,)``
  integer labels in ``[0, K)`` — and optionally ``classes`` (K names).

Images: PNG / JPEG / BMP / GIF / WebP / TIFF, each ≤ :data:`MAX_IMAGE_PIXELS`; greyscale modes
(``L``, ``1``, ``LA``) give one channel; if any image has colour, all become RGB. All images must
have one size unless ``size`` is given (then they are resized, bilinear). At least two classes and
:data:`MIN_IMAGES` images.

Stored under ``DFKD_VIZ_HOME/user-data/`` as ``<name>.npz`` (``x`` uint8 ``(N, C, H, W)``, ``y``
int64) and ``<name>.json`` (classes, shape, split, per-channel mean / std of the train split,
source), written atomically, card last. :func:`discover` finds them for the dataset registry, so
``load_dataset(name)``, ``ood_domain`` and ``student_domain`` accept the name in every process.
Splits: a seeded permutation, ``test_fraction`` of the images (at least one) for ``test``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from dfkd_viz.data.datasets import DATASETS, ImageDataset, seeded_split
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.paths import user_data_dir

MAX_SOURCE_BYTES = 512 * 1024 * 1024
"""Largest .npz / .zip accepted (bytes); uploads in the app are limited further."""
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 1024 * 1024
MIN_IMAGES = 10
MIN_SIDE, MAX_SIDE = 8, 128
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_GREY_MODES = {"L", "1", "LA"}
_COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


class DataImportError(DfkdVizError):
    """A data source or an import option was rejected (the message is one sentence)."""


@dataclass(frozen=True)
class UserDataset:
    """Loader of one imported dataset (hashable: the loader cache keys on path and mtime)."""

    name: str
    path: str
    mtime_ns: int

    def __call__(self, split: str, data_dir: str | None = None) -> ImageDataset:
        meta = json.loads(Path(self.path).with_suffix(".json").read_text())
        try:
            with np.load(self.path, allow_pickle=False) as f:
                x, y = f["x"], f["y"]
        except (OSError, ValueError, KeyError) as exc:
            raise DfkdVizError(
                f"the imported dataset {self.name!r} is unreadable ({exc})"
            ) from None
        train_idx, test_idx = seeded_split(len(x), int(meta["n_test"]), seed=0)
        idx = train_idx if split == "train" else test_idx
        return ImageDataset(
            self.name,
            split,
            torch.from_numpy(x[idx]).float().div_(255.0),
            torch.from_numpy(y[idx].astype(np.int64)),
            num_classes=len(meta["classes"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            classes=tuple(meta["classes"]),
        )


def discover() -> dict[str, UserDataset]:
    """``{name: loader}`` of every complete imported dataset (card and arrays present)."""
    out = {}
    for card in sorted(user_data_dir().glob("*.json")):
        npz = card.with_suffix(".npz")
        if NAME_RE.match(card.stem) and npz.exists():
            out[card.stem] = UserDataset(card.stem, str(npz), npz.stat().st_mtime_ns)
    return out


def list_datasets() -> list[dict]:
    """The cards of the imported datasets (name, n, shape, classes, source...)."""
    out = []
    for name in discover():
        try:
            out.append(json.loads((user_data_dir() / f"{name}.json").read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


# --------------------------------------------------------------------------- reading sources


def _pil():
    from PIL import Image

    return Image


def _decode(data: bytes, where: str):
    """One image → PIL image (mode L or RGB-capable), size-checked before decoding."""
    Image = _pil()
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise DataImportError(
                f"{where} is {w}×{h} pixels, more than the {MAX_IMAGE_PIXELS} allowed per image"
            )
        im.load()
    except DataImportError:
        raise
    except Exception:
        raise DataImportError(f"{where} is not a readable image") from None
    if im.mode not in _GREY_MODES | _COLOUR_MODES:
        raise DataImportError(
            f"{where} has image mode {im.mode} (16-bit or float images are not supported; "
            "save as 8-bit greyscale or RGB)"
        )
    return im


def _class_files_from_dir(root: Path) -> list[tuple[str, str, bytes]]:
    if not root.is_dir():
        raise DataImportError(f"{root} is not a folder, a .zip or an .npz file")
    out = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(cls.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                if len(out) >= MAX_IMAGES:
                    raise DataImportError(f"the folder holds more than {MAX_IMAGES} images")
                out.append((cls.name, f"{cls.name}/{f.name}", f.read_bytes()))
    return out


def _class_files_from_zip(path: Path) -> list[tuple[str, str, bytes]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DataImportError(f"{path.name} is not a readable zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for m in members:
            parts = PurePosixPath(m.filename.replace("\\", "/")).parts
            if m.filename.startswith(("/", "\\")) or ".." in parts or ":" in m.filename:
                raise DataImportError(
                    f"{path.name} holds an unsafe member path {m.filename[:80]!r}; refused"
                )
        total = sum(m.file_size for m in members)
        if total > MAX_SOURCE_BYTES:
            raise DataImportError(
                f"{path.name} unpacks to {total / 2**20:.0f} MiB, more than "
                f"{MAX_SOURCE_BYTES // 2**20} MiB"
            )
        images = [
            m
            for m in members
            if PurePosixPath(m.filename).suffix.lower() in IMAGE_EXTS
            and not any(p.startswith((".", "__MACOSX")) for p in PurePosixPath(m.filename).parts)
        ]
        if len(images) > MAX_IMAGES:
            raise DataImportError(f"{path.name} holds more than {MAX_IMAGES} images")
        paths = [PurePosixPath(m.filename).parts for m in images]
        # class = the folder right above the file; one optional top-level folder is allowed
        depth = {len(p) for p in paths}
        if not paths or depth - {2, 3} or len(depth) > 1:
            raise DataImportError(
                f"{path.name} must hold one folder per class (class/image.png), optionally inside "
                "one top-level folder"
            )
        out = []
        for m, parts in zip(images, paths):
            try:
                data = zf.read(m)
            except Exception:
                raise DataImportError(f"{m.filename[:80]} in {path.name} is corrupt") from None
            out.append((parts[-2], "/".join(parts[-2:]), data))
        return out


def _images_to_arrays(
    files: list[tuple[str, str, bytes]], size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not files:
        raise DataImportError("no images found (expected one sub-folder of images per class)")
    classes = sorted({c for c, _, _ in files})
    ims = [(_decode(data, where), c) for c, where, data in files]
    colour = any(im.mode not in _GREY_MODES for im, _ in ims)
    sizes = {im.size for im, _ in ims}
    if size is None and len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise DataImportError(
            f"the images have different sizes ({a[0]}×{a[1]}, {b[0]}×{b[1]}, …); give a size "
            "to resize them to"
        )
    w, h = (size[1], size[0]) if size else next(iter(sizes))
    Image = _pil()
    arrays = []
    for im, _ in ims:
        im = im.convert("RGB" if colour else "L")
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a.transpose(2, 0, 1) if colour else a[None])
    x = np.stack(arrays)
    y = np.array([classes.index(c) for _, c in ims], dtype=np.int64)
    return x, y, classes


def _npz_to_arrays(path: Path, size) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise DataImportError(
                    f"{path.name} must hold arrays 'x' (images) and 'y' (labels); it has "
                    f"{', '.join(sorted(keys)) or 'none'}"
                )
            x, y = f["x"], f["y"]
            classes = [str(c) for c in f["classes"].tolist()] if "classes" in keys else None
    except DataImportError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataImportError(
                f"{path.name} holds object arrays, which would need unpickling; refused"
            ) from None
        raise DataImportError(f"{path.name} is not a readable .npz file") from None
    except Exception:
        raise DataImportError(f"{path.name} is not a readable .npz file") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        if x.shape[1] not in (1, 3):
            raise DataImportError(
                f"x has shape {x.shape}: images need 1 or 3 channels ((N, H, W), (N, H, W, C) or "
                "(N, C, H, W))"
            )
    else:
        raise DataImportError(f"x must be (N, H, W), (N, H, W, C) or (N, C, H, W) (got {x.shape})")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataImportError("float images in x must be finite and within [0, 1]")
        x = np.round(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.min() < 0 or x.max() > 255:
            raise DataImportError("integer images in x must be within [0, 255]")
        x = x.astype(np.uint8)
    else:
        raise DataImportError(f"x has dtype {x.dtype}; use uint8 in [0, 255] or floats in [0, 1]")
    if y.ndim != 1 or len(y) != len(x):
        raise DataImportError(f"y must have shape ({len(x)},), one label per image (got {y.shape})")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.isfinite(y).all()
            and (y == np.round(y)).all()
        ):
            y = y.astype(np.int64)
        else:
            raise DataImportError(f"y must hold integer class labels (got dtype {y.dtype})")
    y = y.astype(np.int64)
    k = len(classes) if classes is not None else (int(y.max()) + 1 if len(y) else 0)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataImportError(f"labels in y must be within [0, {k}) (got {y.min()}…{y.max()})")
    if size is not None and x.shape[-2:] != tuple(size):
        t = torch.from_numpy(x).float()
        t = torch.nn.functional.interpolate(
            t, size=tuple(size), mode="bilinear", align_corners=False
        )
        x = t.round().clamp(0, 255).to(torch.uint8).numpy()
    return x, y, classes or [str(i) for i in range(k)]


# --------------------------------------------------------------------------- import / delete


def _check_name(name: str) -> None:
    from dfkd_viz.data.domains import SHIFTS

    if not NAME_RE.match(name or ""):
        raise DataImportError(
            "dataset name must be 1–40 characters of a-z, 0-9, '_', '-' starting with a letter or "
            f"digit (got {str(name)[:50]!r})"
        )
    if DATASETS.is_registered(name) or name in SHIFTS:
        raise DataImportError(f"{name!r} is a built-in dataset or domain; choose another name")


def import_dataset(
    source: str | Path,
    name: str,
    size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    replace: bool = False,
    filename: str | None = None,
) -> dict:
    """Validate ``source`` and store it as the dataset ``name``.

    Args:
        source: an image folder (one sub-folder per class), a ``.zip`` of one, or an ``.npz``.
        name: the new dataset's name (``[a-z0-9][a-z0-9_-]{0,39}``, not a built-in name).
        size: ``(H, W)`` to resize every image to (default: keep the images' common size),
            each side in [8, 256].
        test_fraction: share of the images held out as the test split, in (0, 0.9].
        replace: overwrite an earlier import of the same name.
        filename: the original file name (uploads), recorded in the card.

    Returns:
        The dataset card: name, n, n_test, shape ``[C, H, W]``, classes, per-class counts, mean and
        std (per channel, pixel units), source (file name, SHA-256 of a file source).

    Raises:
        DataImportError: one sentence for every rejection; nothing is written then.
    """
    _check_name(name)
    if not 0.0 < float(test_fraction) <= 0.9:
        raise DataImportError(f"test_fraction must be in (0, 0.9] (got {test_fraction})")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if not all(MIN_SIDE <= s <= MAX_SIDE for s in size):
            raise DataImportError(f"size must be within {MIN_SIDE}…{MAX_SIDE} pixels (got {size})")
    src = Path(source)
    label = Path(filename or src.name).name[:200]
    digest = None
    if src.is_file():
        nbytes = src.stat().st_size
        if nbytes > MAX_SOURCE_BYTES:
            raise DataImportError(
                f"{label} is {nbytes / 2**20:.0f} MiB, more than {MAX_SOURCE_BYTES // 2**20} MiB"
            )
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        head = src.read_bytes()[:4]
        if head == b"PK\x03\x04" and label.lower().endswith(".npz"):
            x, y, classes = _npz_to_arrays(src, size)
        elif head == b"PK\x03\x04":
            x, y, classes = _images_to_arrays(_class_files_from_zip(src), size)
        else:
            raise DataImportError(
                f"{label} is neither an .npz nor a .zip (give an image folder, a .zip of one, "
                "or an .npz with x and y)"
            )
    elif src.is_dir():
        x, y, classes = _images_to_arrays(_class_files_from_dir(src), size)
    else:
        raise DataImportError(f"{src} does not exist")
    n, c, h, w = x.shape
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise DataImportError(
            f"images are {h}×{w}; each side must be within {MIN_SIDE}…{MAX_SIDE} (give a size)"
        )
    if n < MIN_IMAGES or n > MAX_IMAGES:
        raise DataImportError(f"a dataset needs {MIN_IMAGES}…{MAX_IMAGES} images (got {n})")
    counts = np.bincount(y, minlength=len(classes))
    if (counts > 0).sum() < 2:
        raise DataImportError("a dataset needs images of at least two classes")
    n_test = max(1, round(n * float(test_fraction)))
    train_idx, _ = seeded_split(n, n_test, seed=0)
    xt = x[train_idx].astype(np.float32) / 255.0
    mean = xt.mean(axis=(0, 2, 3)).tolist()
    std = np.maximum(xt.std(axis=(0, 2, 3)), 1e-3).tolist()
    meta = {
        "name": name,
        "n": int(n),
        "n_test": int(n_test),
        "shape": [int(c), int(h), int(w)],
        "classes": list(classes),
        "counts": counts.tolist(),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "source": {"filename": label, "sha256": digest},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    d = user_data_dir()
    npz, card = d / f"{name}.npz", d / f"{name}.json"
    with open(d / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if card.exists() and not replace:
            raise DataImportError(f"a dataset {name!r} is already imported; choose another name")
        tmp_npz = d / f".{name}.{os.getpid()}.tmp.npz"
        tmp_card = d / f".{name}.{os.getpid()}.tmp.json"
        try:
            with open(tmp_npz, "wb") as fh:
                np.savez_compressed(fh, x=x, y=y)
            tmp_card.write_text(json.dumps(meta, indent=2))
            os.replace(tmp_npz, npz)
            os.replace(tmp_card, card)
        except OSError as exc:
            if not replace:
                npz.unlink(missing_ok=True)
            raise DataImportError(f"could not write the dataset ({exc.strerror or exc})") from None
        finally:
            tmp_npz.unlink(missing_ok=True)
            tmp_card.unlink(missing_ok=True)
    _clear_caches()
    return meta


def delete_dataset(name: str) -> None:
    """Remove an imported dataset. Raises DataImportError for a built-in or unknown name."""
    if not NAME_RE.match(name or "") or name not in discover():
        raise DataImportError(f"no imported dataset {str(name)[:50]!r}")
    d = user_data_dir()
    (d / f"{name}.json").unlink(missing_ok=True)  # the card first: never a listed half
    (d / f"{name}.npz").unlink(missing_ok=True)
    (d / f".{name}.lock").unlink(missing_ok=True)
    _clear_caches()


def _clear_caches() -> None:
    from dfkd_viz.data.datasets import _cached
    from dfkd_viz.data.domains import _load_domain

    _cached.cache_clear()
    _load_domain.cache_clear()
