"""CIFAR-10 and CIFAR-100 read from the official archives, offline and without unsafe unpickling.

Registered in :data:`dfkd_viz.data.datasets.DATASETS` as ``cifar10`` and ``cifar100`` (splits
``"train"`` / ``"test"``). Nothing is ever downloaded: the user fetches an archive from
https://www.cs.toronto.edu/~kriz/cifar.html and puts it in a data directory
(:func:`dfkd_viz.paths.data_dirs`: ``--data-dir``, ``DFKD_VIZ_DATA``, ``DFKD_VIZ_HOME/data``,
``/usr/share/datasets``, searched in that order).

Result (an :class:`~dfkd_viz.data.datasets.ImageDataset`):

- ``x``: ``(N, 3, 32, 32)`` float32 in ``[0, 1]`` (``uint8 / 255``), channels R, G, B;
- ``y``: ``(N,)`` int64 in ``[0, K)``; CIFAR-100 uses the **fine** labels (K = 100);
- ``N``: 50,000 train / 10,000 test for the official archives of both datasets;
- ``mean`` / ``std``: CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010), CIFAR-100
  (0.5071, 0.4867, 0.4408) / (0.2675, 0.2565, 0.2761);
- ``classes``: the names in the archive's meta file (``batches.meta.txt``, ``batches.meta``,
  ``fine_label_names.txt``, ``meta``) when present, else the official names built in here.

Memory: ImageDataset holds float32, so the train split costs 50,000×3×32×32×4 B = 614 MB (123 MB
for test), plus the 154 MB of uint8 records while loading; the conversion is one vectorised pass.

Layouts, in the order they are tried in each data directory (the first directory holding one
wins; an extracted folder missing a file of the split is skipped and named in the error):

1. **Binary**, extracted: ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` … ``data_batch_5.bin``
   and ``test_batch.bin``, each a sequence of 3,073-byte records: 1 label byte (0–9), then 1,024
   red, 1,024 green and 1,024 blue bytes, each plane a row-major 32×32 image; class names one per
   line in ``batches.meta.txt``. ``cifar-100-binary/`` with ``train.bin`` and ``test.bin``:
   3,074-byte records (coarse label 0–19, fine label 0–99, the same 3,072 pixel bytes); names in
   ``fine_label_names.txt``. Read with ``numpy.fromfile`` — no pickle involved.
2. **Python**, extracted: ``cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``,
   ``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``):
   Python 2 cPickle (protocol 2) dicts whose ``data`` is an ``N×3072`` uint8 ndarray (same pixel
   order as the binary records) and ``labels`` / ``fine_labels`` a list of ints. They are read
   with :class:`SafeUnpickler`, which resolves only numpy's array-reconstruction globals
   (``numpy.core.multiarray._reconstruct`` or ``numpy._core.multiarray._reconstruct``,
   ``numpy.ndarray``, ``numpy.dtype`` — all the official files use; lists, ints and strings need
   no global) and refuses every other global before anything is called.
3. **Archives**, as downloaded: ``cifar-10-binary.tar.gz``, ``cifar-10-python.tar.gz``,
   ``cifar-100-binary.tar.gz``, ``cifar-100-python.tar.gz`` (binary preferred). The needed members
   are read straight from one streaming pass over the tar into memory: nothing is extracted, so
   no member path can escape a directory, no cache can go stale and the disk holds no second copy.
   Members must be regular files or folders (a link or device anywhere before the needed members
   rejects the archive) with relative paths without ``..``, and no larger than the official files.
   Costs one gunzip of the archive per split (~1 s for the 163 MB CIFAR-10 archive).

Record counts: the official files hold exactly 10,000 records per CIFAR-10 batch file and
50,000 / 10,000 for CIFAR-100 train / test. Any positive whole number of records up to that is
accepted (so small hand-made archives load, e.g. in tests), but all batch files of a CIFAR-10
split must hold the same number, a Python batch must hold as many labels as images, and the
``num_cases_per_batch`` of ``batches.meta`` (when present) is enforced. A file cut exactly at a
record boundary in a single-file split is therefore not detected (chance ≈ 1/3,073 for a random
cut of a binary file); any other cut is.

Errors (one sentence each, all :class:`~dfkd_viz.errors.DfkdVizError`, so the CLI exits with 2):

- :class:`~dfkd_viz.errors.DataUnavailableError`: no layout found; names the directories searched,
  the expected folder and archive names and the download page.
- :class:`CifarFileError`: a truncated file (size not a whole number of records, fewer records
  than its siblings or its meta, a cut pickle or gzip stream), a wrong file (label out of range,
  wrong array shape or dtype, a pickle without the expected keys, too large) or an archive with
  a link, device or escaping path.
- :class:`UnsafePickleError` (a :class:`CifarFileError`): a pickle referencing any other global
  (``os.system``, ``builtins.eval``, ``subprocess.Popen`` …); nothing of it is executed.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.errors import DataUnavailableError, DfkdVizError
from dfkd_viz.paths import data_dirs

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
PIXELS = 3 * 32 * 32

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# the order of ``fine_label_names`` in the official ``meta`` / ``fine_label_names.txt``
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)


class CifarFileError(DfkdVizError, ValueError):
    """A CIFAR file or archive that is truncated, not what its name says, or unsafe to read."""


class UnsafePickleError(CifarFileError, pickle.UnpicklingError):
    """A pickle that references a global outside the numpy array-reconstruction allowlist."""


# (module, name) as written in the pickle → the object it may resolve to; nothing else is imported
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy < 2 (the archives)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-reconstruction globals.

    ``find_class`` never imports anything: it looks ``(module, name)`` up in a fixed table and
    raises :class:`UnsafePickleError` for every other global, so a hostile pickle fails at its
    first ``GLOBAL`` opcode, before any ``REDUCE`` can call anything. Use with
    ``encoding="bytes"`` for the Python 2 CIFAR files (keys and strings come back as ``bytes``).
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None


@dataclass(frozen=True)
class _Spec:
    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    label_bytes: int  # bytes before the pixels in a binary record; the last one is the label
    official: dict[str, int]  # records per file of each split in the official archive
    bin_dir: str
    bin_files: dict[str, tuple[str, ...]]
    bin_meta: str
    py_dir: str
    py_files: dict[str, tuple[str, ...]]
    py_meta: str
    py_labels: str
    py_names: str
    archives: tuple[str, str]  # binary, python

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS

    def max_bytes(self, split: str) -> int:
        """Largest plausible size of one file of ``split`` (pickles carry file names etc.)."""
        return self.official[split] * self.record + (8 << 20)


_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(
        name="cifar10",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        classes=CIFAR10_CLASSES,
        label_bytes=1,
        official={"train": 10_000, "test": 10_000},
        bin_dir="cifar-10-batches-bin",
        bin_files={"train": tuple(f"{b}.bin" for b in _BATCHES), "test": ("test_batch.bin",)},
        bin_meta="batches.meta.txt",
        py_dir="cifar-10-batches-py",
        py_files={"train": _BATCHES, "test": ("test_batch",)},
        py_meta="batches.meta",
        py_labels="labels",
        py_names="label_names",
        archives=("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"),
    ),
    "cifar100": _Spec(
        name="cifar100",
        num_classes=100,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
        classes=CIFAR100_CLASSES,
        label_bytes=2,
        official={"train": 50_000, "test": 10_000},
        bin_dir="cifar-100-binary",
        bin_files={"train": ("train.bin",), "test": ("test.bin",)},
        bin_meta="fine_label_names.txt",
        py_dir="cifar-100-python",
        py_files={"train": ("train",), "test": ("test",)},
        py_meta="meta",
        py_labels="fine_labels",
        py_names="fine_label_names",
        archives=("cifar-100-binary.tar.gz", "cifar-100-python.tar.gz"),
    ),
}


def load_cifar(name: str, split: str, data_dir: str | Path | None = None) -> ImageDataset:
    """Load ``cifar10`` or ``cifar100`` (``split`` ``"train"`` / ``"test"``) from a data directory.

    Prefer :func:`dfkd_viz.data.load_dataset`, which caches the result per process.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.
        data_dir: a directory searched before the default ones (see the module docstring).

    Returns:
        An ImageDataset: ``x`` ``(N, 3, 32, 32)`` float32 in ``[0, 1]``, ``y`` ``(N,)`` int64 in
        ``[0, K)`` (K = 10 or 100, CIFAR-100 fine labels); the official archives give N = 50,000
        (train) / 10,000 (test). Full CIFAR-10 train: ~0.6 GB of float32.

    Raises:
        DataUnavailableError: no archive or extracted folder in any data directory (the message
            names where to put which file and the download page).
        CifarFileError: a truncated or wrong file or an unsafe archive.
        UnsafePickleError: a pickle referencing a global outside numpy's array reconstruction.
    """
    spec = SPECS[name]
    if split not in spec.official:
        raise DfkdVizError(f"split must be one of train, test (got {split!r})")
    read, kind = _locate(spec, split, data_dir)
    batches, classes = (_read_binary if kind == "bin" else _read_python)(spec, split, read)
    x, y = _assemble(batches)
    return ImageDataset(
        name,
        split,
        x,
        y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        classes=classes,
    )


# --------------------------------------------------------------------------------------------
# finding the files

# read(file name inside the layout's folder, optional=False) -> (where, data): data is a writable
# uint8 array for binary batches, bytes for pickles and text; None for an absent optional file
_Reader = Callable[..., Any]


def _locate(spec: _Spec, split: str, data_dir: str | Path | None) -> tuple[_Reader, str]:
    """The reader of the first usable layout and its kind (``"bin"`` / ``"py"``)."""
    dirs = data_dirs(data_dir)
    incomplete: list[str] = []
    for base in dirs:
        for kind, folder, files in (
            ("bin", spec.bin_dir, spec.bin_files[split]),
            ("py", spec.py_dir, spec.py_files[split]),
        ):
            d = base / folder
            if d.is_dir():
                missing = [f for f in files if not (d / f).is_file()]
                if not missing:
                    return _dir_reader(d, kind, spec, split), kind
                incomplete.append(f"{d} lacks {', '.join(missing)}")
        for kind, archive in zip(("bin", "py"), spec.archives, strict=True):
            p = base / archive
            if p.is_file():
                return _tar_reader(p, kind, spec, split), kind
    where = ", ".join(str(d) for d in dirs)
    found = f" ({'; '.join(incomplete)})" if incomplete else ""
    raise DataUnavailableError(
        f"{spec.name} is not on this machine{found}: put {spec.archives[0]} or "
        f"{spec.archives[1]} (or its extracted {spec.bin_dir}/ or {spec.py_dir}/ folder) in one "
        f"of {where} (or pass --data-dir), after downloading it yourself from {CIFAR_URL}"
    )


def _dir_reader(folder: Path, kind: str, spec: _Spec, split: str) -> _Reader:
    limit = spec.max_bytes(split)

    def read(fname: str, optional: bool = False):
        p = folder / fname
        if not p.is_file():
            if optional:
                return None
            raise DataUnavailableError(f"{p} disappeared while {spec.name} was being read")
        size = p.stat().st_size
        if size > limit:
            raise CifarFileError(
                f"{p} is not a {spec.name} file: it holds {size:,} bytes, more than the "
                f"official {split} files ({limit:,} at most)"
            )
        if kind == "bin" and fname.endswith(".bin"):
            return str(p), np.fromfile(p, dtype=np.uint8)
        return str(p), p.read_bytes()

    return read


def _tar_reader(path: Path, kind: str, spec: _Spec, split: str) -> _Reader:
    folder = spec.bin_dir if kind == "bin" else spec.py_dir
    files = spec.bin_files[split] if kind == "bin" else spec.py_files[split]
    meta = spec.bin_meta if kind == "bin" else spec.py_meta
    members = _read_tar(path, {f"{folder}/{f}" for f in files}, f"{folder}/{meta}", spec, split)

    def read(fname: str, optional: bool = False):
        key = f"{folder}/{fname}"
        if key not in members:
            if optional:
                return None
            raise CifarFileError(
                f"{path} lacks the member {key}, so it is not a complete {spec.name} archive"
            )
        buf = members[key]
        where = f"{path}:{key}"
        if kind == "bin" and fname.endswith(".bin"):
            return where, np.frombuffer(buf, dtype=np.uint8)  # bytearray: writable, no copy
        return where, bytes(buf)

    return read


def _read_tar(
    path: Path, wanted: set[str], optional: str, spec: _Spec, split: str
) -> dict[str, bytearray]:
    """The ``wanted`` members (and ``optional`` if present) of a ``.tar.gz``, read in one
    streaming pass (``r|gz``: no seeking, nothing written to disk)."""
    limit = spec.max_bytes(split)
    out: dict[str, bytearray] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tf:
            for m in tf:
                name = m.name[2:] if m.name.startswith("./") else m.name
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts:
                    raise CifarFileError(
                        f"{path} holds the member path {m.name!r} outside the archive's folder, "
                        "so it was not read (official CIFAR archives hold none)"
                    )
                if not (m.isfile() or m.isdir()):
                    raise CifarFileError(
                        f"{path} holds {m.name!r}, a link or device, so it was not read "
                        "(official CIFAR archives hold only folders and regular files)"
                    )
                if not m.isfile() or (name not in wanted and name != optional):
                    continue
                if m.size > limit:
                    raise CifarFileError(
                        f"{path}:{name} is not a {spec.name} file: it holds {m.size:,} bytes, "
                        f"more than the official {split} files ({limit:,} at most)"
                    )
                f = tf.extractfile(m)
                buf = bytearray(m.size)
                if f is None or f.readinto(buf) != m.size:
                    raise CifarFileError(f"{path}:{name} is truncated; download it again")
                out[name] = buf
                if wanted.union((optional,)) <= out.keys():
                    break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise CifarFileError(
            f"{path} is truncated or not a gzip-compressed tar archive ({exc}); download it again"
        ) from None
    return out


# --------------------------------------------------------------------------------------------
# parsing


def _read_binary(
    spec: _Spec, split: str, read: _Reader
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """``[(pixels (n, 3072) uint8, labels (n,) uint8)]`` per batch file, and the class names."""
    batches, first = [], None
    for fname in spec.bin_files[split]:
        where, buf = read(fname)
        rec = spec.record
        if buf.size == 0 or buf.size % rec:
            raise CifarFileError(
                f"{where} is truncated: {buf.size:,} bytes is not a whole number of "
                f"{rec:,}-byte {spec.name} records; download the archive again"
            )
        n = buf.size // rec
        _check_count(spec, split, where, n, first)
        first = first or (where, n)
        records = buf.reshape(n, rec)
        labels = records[:, spec.label_bytes - 1]
        _check_labels(spec, where, labels)
        if spec.label_bytes == 2:  # CIFAR-100: the coarse label comes first
            _check_labels(spec, where, records[:, 0], k=20, what="coarse label")
        batches.append((records[:, spec.label_bytes :], labels))
    meta = read(spec.bin_meta, True)
    classes = spec.classes
    if meta is not None:
        where, text = meta
        names = [s.strip() for s in text.decode("utf-8", "replace").splitlines() if s.strip()]
        classes = _check_names(spec, where, names)
    return batches, classes


def _read_python(
    spec: _Spec, split: str, read: _Reader
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Like :func:`_read_binary`, for the pickled batches (read with :class:`SafeUnpickler`)."""
    meta_file = read(spec.py_meta, True)
    classes, per_batch = spec.classes, None
    if meta_file is not None:
        where, raw = meta_file
        meta = _unpickle(where, raw)
        if spec.py_names in meta:
            names = meta[spec.py_names]
            if not isinstance(names, list | tuple) or not all(
                isinstance(s, bytes | str) for s in names
            ):
                raise CifarFileError(f"{where} is not a {spec.name} meta file: bad {spec.py_names}")
            decoded = [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]
            classes = _check_names(spec, where, decoded)
        n_meta = meta.get("num_cases_per_batch")
        if isinstance(n_meta, int) and not isinstance(n_meta, bool) and n_meta > 0:
            per_batch = (where, n_meta)
    batches, first = [], None
    for fname in spec.py_files[split]:
        where, raw = read(fname)
        d = _unpickle(where, raw)
        if "data" not in d or spec.py_labels not in d:
            raise CifarFileError(
                f"{where} is not a {spec.name} batch: its dict lacks 'data' or '{spec.py_labels}'"
            )
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            raise CifarFileError(
                f"{where} is not a {spec.name} batch: 'data' is not a uint8 matrix"
            )
        if data.shape[1] != PIXELS or data.shape[0] == 0:
            raise CifarFileError(
                f"{where} is not a {spec.name} batch: 'data' has shape {data.shape}, "
                f"not (N, {PIXELS})"
            )
        labels = _int_labels(spec, where, d[spec.py_labels])
        if len(labels) != len(data):
            raise CifarFileError(
                f"{where} is truncated or wrong: it holds {len(data):,} images but "
                f"{len(labels):,} labels"
            )
        n = len(data)
        if per_batch is not None and n != per_batch[1]:
            raise CifarFileError(
                f"{where} is truncated: it holds {n:,} images, {per_batch[0]} promises "
                f"{per_batch[1]:,} per batch"
            )
        _check_count(spec, split, where, n, first)
        first = first or (where, n)
        _check_labels(spec, where, labels)
        batches.append((data, labels))
    return batches, classes


def _unpickle(where: str, raw: bytes) -> dict[str, object]:
    """A pickled dict read with :class:`SafeUnpickler` (``bytes`` keys decoded to ``str``)."""
    try:
        obj = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{where} was refused: it asks for the global {exc}, and a CIFAR pickle may use "
            "nothing but numpy's array reconstruction (nothing of it was run)"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise CifarFileError(
            f"{where} is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from None
    except (AttributeError, MemoryError, RecursionError, OverflowError) as exc:
        raise CifarFileError(f"{where} is not a CIFAR pickle ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise CifarFileError(f"{where} is not a CIFAR pickle: it holds a {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _int_labels(spec: _Spec, where: str, labels: object) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        arr = labels
    elif isinstance(labels, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        arr = np.asarray(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
    else:
        arr = None
    if arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise CifarFileError(
            f"{where} is not a {spec.name} batch: '{spec.py_labels}' is not a list of integers"
        )
    return arr


def _check_count(
    spec: _Spec, split: str, where: str, n: int, first: tuple[str, int] | None
) -> None:
    if n > spec.official[split]:
        raise CifarFileError(
            f"{where} is not a {spec.name} {split} file: it holds {n:,} records, more than the "
            f"official {spec.official[split]:,}"
        )
    if first is not None and n != first[1]:
        raise CifarFileError(
            f"{where} is truncated: it holds {n:,} records where {first[0]} holds {first[1]:,}"
        )


def _check_labels(
    spec: _Spec, where: str, labels: np.ndarray, k: int | None = None, what: str = "label"
) -> None:
    k = spec.num_classes if k is None else k
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise CifarFileError(
            f"{where} is not a {spec.name} file: {what} {int(bad[0])} is outside 0–{k - 1}"
        )


def _check_names(spec: _Spec, where: str, names: list[str]) -> tuple[str, ...]:
    if len(names) != spec.num_classes:
        raise CifarFileError(
            f"{where} is not a {spec.name} meta file: it names {len(names)} classes, "
            f"not {spec.num_classes}"
        )
    return tuple(names)


def _assemble(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the batches into ``x`` (N, 3, 32, 32) float32 = uint8 / 255 and ``y`` int64,
    converting each (possibly strided) uint8 block straight into its slice of ``x``."""
    total = sum(len(lab) for _, lab in batches)
    x = np.empty((total, PIXELS), dtype=np.float32)
    y = np.empty(total, dtype=np.int64)
    i = 0
    for pix, lab in batches:
        n = len(lab)
        np.divide(pix, np.float32(255.0), out=x[i : i + n], dtype=np.float32)
        y[i : i + n] = lab
        i += n
    return torch.from_numpy(x).view(total, 3, 32, 32), torch.from_numpy(y)
