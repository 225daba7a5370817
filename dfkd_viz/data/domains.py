"""Out-of-distribution (OOD) domains of a dataset, for NTL teachers and OOD accuracy.

A *domain* maps an ID dataset split to an OOD split with the same labels and image shape.
Two kinds of names are accepted by :func:`load_domain`:

- a **shift** of the ID images themselves (registered in :data:`SHIFTS`):

  - ``mnist-m``: the MNIST-M recipe (Ganin & Lempitsky 2015): ``|x − crop|`` where ``crop`` is a
    random H×W crop of a real photograph (scikit-learn's two sample images at half resolution for
    texture), in luminance for grey images, in colour (per channel) for 3-channel images;
  - ``watermark``: NTL's source-only ownership watermark (Wang et al. 2022, §4.3): +0.3 on every
    other row and every other column (a grid) of every channel, clipped to ``[0, 1]``;
  - ``invert``: ``1 − x`` (a cheap, obviously different domain);

- another registered **dataset** (e.g. ``digits``, ``fashion-mnist``), resized to the ID shape.

All images are ``(N, C, H, W)`` float32 in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from dfkd_viz.data.datasets import DATASETS, ImageDataset, load_dataset
from dfkd_viz.data.mnistm import random_crops
from dfkd_viz.registry import Registry

SHIFTS: Registry[Callable[[ImageDataset], torch.Tensor]] = Registry("domain shift")

_SPLIT_SEED = {"train": 11, "test": 12}


@lru_cache(maxsize=1)
def _photos_gray() -> list[np.ndarray]:
    """scikit-learn's two bundled photos as float32 luminance in [0, 1], at half resolution."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:  # (427, 640, 3) uint8
        g = torch.from_numpy(img.astype(np.float32) / 255.0) @ torch.tensor([0.299, 0.587, 0.114])
        g = F.avg_pool2d(g[None, None], 2)[0, 0]
        out.append(g.numpy())
    return out


@SHIFTS.register("mnist-m")
def mnist_m(ds: ImageDataset) -> torch.Tensor:
    """``|x − photo crop|`` per image, crops drawn with a per-split seed (train and test differ):
    grey crops for 1-channel images, colour crops for 3-channel ones (per channel)."""
    rng = np.random.default_rng(_SPLIT_SEED.get(ds.split, 13))
    n, c, h, w = ds.x.shape
    if c == 3:
        return (ds.x - torch.from_numpy(random_crops(n, (h, w), rng))).abs()
    photos = _photos_gray()
    crops = np.empty((n, 1, h, w), dtype=np.float32)
    which = rng.integers(0, len(photos), size=n)
    for i in range(n):
        p = photos[which[i]]
        r = rng.integers(0, p.shape[0] - h)
        q = rng.integers(0, p.shape[1] - w)
        crops[i, 0] = p[r : r + h, q : q + w]
    return (ds.x - torch.from_numpy(crops).expand(n, c, h, w)).abs()


@SHIFTS.register("watermark")
def watermark(ds: ImageDataset, value: float = 0.3) -> torch.Tensor:
    """Add ``value`` on every other row and column (every channel), clipped to [0, 1]."""
    x = ds.x.clone()
    grid = torch.zeros(x.shape[-2:], dtype=torch.bool)
    grid[::2, :] = True
    grid[:, ::2] = True
    x[:, :, grid] += value
    return x.clamp_(0.0, 1.0)


@SHIFTS.register("invert")
def invert(ds: ImageDataset) -> torch.Tensor:
    """``1 − x``."""
    return 1.0 - ds.x


def domain_names() -> list[str]:
    """Every name :func:`load_domain` accepts: the shifts, then the datasets."""
    return SHIFTS.names() + [n for n in DATASETS.names() if n not in SHIFTS]


def load_domain(domain: str, base: str, split: str, data_dir=None) -> ImageDataset:
    """The OOD split ``domain`` of the ID dataset ``base`` (cached per process).

    Args:
        domain: a shift name (``mnist-m``, ``watermark``, ``invert``) or a dataset name
            (``digits``, ``fashion-mnist``...).
        base: the ID dataset name, e.g. ``"mnist"``.
        split: ``"train"`` or ``"test"``.

    Returns:
        An :class:`ImageDataset` named ``"<base>/<domain>"`` (shifts) or ``domain`` (datasets),
        with the ID dataset's image shape and normalisation statistics.

    Raises:
        UnknownNameError: ``domain`` is neither a shift nor a dataset.
        DataUnavailableError: a dataset domain that is not on this machine.
    """
    return _load_domain(domain, base, split, str(data_dir) if data_dir else None)


@lru_cache(maxsize=32)
def _load_domain(domain: str, base: str, split: str, data_dir: str | None) -> ImageDataset:
    ds = load_dataset(base, split, data_dir)
    if domain in SHIFTS:
        return ds.replace(name=f"{base}/{domain}", x=SHIFTS.get(domain)(ds).contiguous())
    other = load_dataset(domain, split, data_dir)  # raises UnknownNameError if not a dataset
    return other.replace(x=match_shape(other.x, ds.shape), mean=ds.mean, std=ds.std)


def match_shape(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize ``x`` ``(N, C', H', W')`` to ``(N, *shape)``: bilinear resize, channel mean or repeat."""
    c, h, w = shape
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x.mean(1, keepdim=True).expand(-1, c, -1, -1)
    return x.contiguous()
