"""MNIST-M-style colour digits at 32×32, built offline from the bundled MNIST digits.

The recipe of MNIST-M (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015, §4): every digit is blended with a random crop of a colour photograph as the absolute
difference ``|digit − crop|``, per channel — white strokes invert the photo's colours, the black
background keeps them. MNIST-M crops BSDS500 photos; here the photos are the two scikit-learn ships
(``sklearn.datasets.load_sample_images``: ``china.jpg`` and ``flower.jpg``, Flickr, CC BY 2.0), at
half resolution (213×320) so a 32×32 crop holds some texture, so the dataset needs no download.

``mnistm32`` (:func:`load_mnistm32`): the bundled 10,000 MNIST digits with their seeded 8,000 /
2,000 split (the ``mnist`` dataset's own split, so the test digits are the same), each resized from
28×28 to 32×32 (bilinear) and blended with one crop drawn with a per-split seed: ``(N, 3, 32, 32)``
float32 in [0, 1], deterministic, about a second to build (the photos' JPEG decoding included).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

#: per-channel statistics of the ``mnistm32`` train split (measured; ``tests/test_colour.py``)
MNISTM32_MEAN = (0.4199, 0.4266, 0.3983)
MNISTM32_STD = (0.3582, 0.2885, 0.3104)
_CROP_SEED = {"train": 21, "test": 22}


@lru_cache(maxsize=1)
def photos_rgb() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled photos as ``(H, W, 3)`` float32 in [0, 1] at half resolution
    (2×2 average pooling: 213×320)."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:  # (427, 640, 3) uint8
        t = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        out.append(F.avg_pool2d(t, 2)[0].permute(1, 2, 0).contiguous().numpy())
    return tuple(out)


def random_crops(
    n: int, size: tuple[int, int], rng: np.random.Generator, photos=None
) -> np.ndarray:
    """``n`` random crops ``(n, 3, h, w)`` float32 in [0, 1] of the photos (one photo drawn per
    crop, then a uniform position), all from ``rng``."""
    photos = photos_rgb() if photos is None else photos
    h, w = size
    which = rng.integers(0, len(photos), size=n)
    crops = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        p = photos[which[i]]
        r = rng.integers(0, p.shape[0] - h)
        q = rng.integers(0, p.shape[1] - w)
        crops[i] = p[r : r + h, q : q + w].transpose(2, 0, 1)
    return crops


def blend(digits: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """MNIST-M's blend ``|digit − crop|`` per channel: ``digits`` ``(N, 1, H, W)`` in [0, 1],
    ``crops`` ``(N, 3, H, W)`` → ``(N, 3, H, W)`` in [0, 1]."""
    return (digits - crops).abs()


def load_mnistm32(split: str, data_dir: str | None = None):
    """The ``mnistm32`` split (see the module docstring); raises DataUnavailableError when the
    bundled MNIST file is missing."""
    from dfkd_viz.data.datasets import ImageDataset, load_dataset

    mnist = load_dataset("mnist", split, data_dir)
    digits = F.interpolate(mnist.x, size=(32, 32), mode="bilinear", align_corners=False)
    digits = digits.clamp_(0.0, 1.0)
    rng = np.random.default_rng(_CROP_SEED[split])
    crops = torch.from_numpy(random_crops(len(mnist), (32, 32), rng))
    return ImageDataset(
        "mnistm32",
        split,
        blend(digits, crops).contiguous(),
        mnist.y.clone(),
        mean=MNISTM32_MEAN,
        std=MNISTM32_STD,
    )
