"""Backdoor triggers and dataset poisoning (ABD's threat model, ``docs/methods.md``).

A :class:`Trigger` works on ``(B, C, H, W)`` float32 images in pixel units ``[0, 1]`` and knows
the pixels it may change (:meth:`Trigger.mask`), used for tests and for the trigger-localisation
score of saliency maps. Registered names (sizes follow ``illidanlab/ABD:zskt/datasets/backdoor.py``;
lengths are given for a 28×28 image and scale with the image side, ``min(H, W) / 28``, rounded, so a
28×28 trigger is exactly the original one and a 32×32 one the same pattern at the new size):

- ``badnet_grid``: a 3×3 black/white checker in the bottom-right corner (pixels are *set*; 3×3 up
  to 32 px, ABD's own size on CIFAR's 32×32, 4×4 from 33 px);
- ``badnet_sq``: a white 4×4 square one pixel in from the bottom-right corner (set; 5×5 on 32×32);
- ``blend``: ``0.8·x + 0.2·pattern``, a fixed seeded uniform-noise image over the whole image;
- ``trojan_wm``: an additive watermark (a ring logo of intensity 0.5 in the bottom-right
  quadrant, stroke ≈ 1.8 px wide), clipped to [0, 1] — ABD's ``trojan_wm`` adds a watermark image
  the same way;
- ``sig``: an additive horizontal sinusoid ``Δ·sin(2π·f·j / W)``, ``Δ = 0.1``, ``f = 6``
  (Barni et al. 2019), clipped; poisoned clean-label (target images only), as in ABD.

Colour images (C = 3): every trigger acts on each channel. The stamps set all channels (a black /
white patch), ``blend``'s noise pattern is drawn per channel (coloured noise), the watermark and
the sinusoid are added to every channel; :meth:`Trigger.mask` is ``(C, H, W)``.

Poisoning (:func:`poison`): the first ``⌊rate·N⌋`` non-target training images (target images for a
clean-label trigger) receive the trigger and the target label. ASR is measured on the non-target
test images with the trigger (:func:`triggered_test_set`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.registry import Registry


class Trigger(ABC):
    """A backdoor trigger for images of shape ``(C, H, W)``.

    Subclasses implement :meth:`apply`; :meth:`mask` is the set of pixels ``apply`` may change.
    """

    name = "trigger"
    clean_label = False

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        self.shape = tuple(shape)

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Return triggered copies of ``x`` ``(B, C, H, W)`` in [0, 1] (same shape, in [0, 1])."""

    def mask(self) -> torch.Tensor:
        """``(C, H, W)`` bool: the pixels the trigger may change."""
        return torch.ones(self.shape, dtype=torch.bool)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"{self.name} expects images of shape {self.shape}, got {tuple(x.shape[1:])}"
            )


class _StampTrigger(Trigger):
    """Sets the pixels of ``mask`` to ``pattern`` (BadNets)."""

    def __init__(self, shape=(1, 28, 28)) -> None:
        super().__init__(shape)
        self._mask, self._pattern = self._make()

    @abstractmethod
    def _make(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, pattern)``, both ``(C, H, W)``: where the stamp goes and its pixel values."""

    def mask(self) -> torch.Tensor:
        return self._mask.clone()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        m = self._mask.to(x.device)
        return torch.where(m, self._pattern.to(x.device, x.dtype), x)


TRIGGERS: Registry[type[Trigger]] = Registry("trigger")


def scaled(length: float, h: int, w: int, minimum: int = 1) -> int:
    """``length`` (pixels on a 28×28 image) scaled to an ``h×w`` image: ``round(length ·
    min(h, w) / 28)``, at least ``minimum``."""
    return max(minimum, round(length * min(h, w) / 28))


@TRIGGERS.register("badnet_grid")
class BadNetGrid(_StampTrigger):
    name = "badnet_grid"

    def _make(self):
        _c, h, w = self.shape
        k = scaled(3, h, w, minimum=3)
        mask = torch.zeros(self.shape, dtype=torch.bool)
        pattern = torch.zeros(self.shape)
        checker = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
        cells = torch.arange(k) * 3 // k  # nearest-neighbour upscaling of the 3×3 checker
        mask[:, h - k :, w - k :] = True
        pattern[:, h - k :, w - k :] = checker[cells][:, cells]
        return mask, pattern


@TRIGGERS.register("badnet_sq")
class BadNetSquare(_StampTrigger):
    name = "badnet_sq"

    def _make(self):
        _c, h, w = self.shape
        side, gap = scaled(4, h, w), scaled(1, h, w)
        mask = torch.zeros(self.shape, dtype=torch.bool)
        mask[:, h - gap - side : h - gap, w - gap - side : w - gap] = True
        return mask, mask.float()


@TRIGGERS.register("blend")
class Blend(Trigger):
    name = "blend"
    alpha = 0.2

    def __init__(self, shape=(1, 28, 28)) -> None:
        super().__init__(shape)
        g = torch.Generator().manual_seed(1234)
        self.pattern = torch.rand(self.shape, generator=g)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (1 - self.alpha) * x + self.alpha * self.pattern.to(x.device, x.dtype)


@TRIGGERS.register("trojan_wm")
class TrojanWatermark(Trigger):
    name = "trojan_wm"
    intensity = 0.5

    def __init__(self, shape=(1, 28, 28)) -> None:
        super().__init__(shape)
        c, h, w = self.shape
        yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        cy, cx, r = 0.72 * h, 0.72 * w, 0.16 * min(h, w)
        u = min(h, w) / 28  # stroke widths scale with the image
        dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        ring = ((dist - r).abs() <= 0.9 * u) | ((yy - cy).abs() <= 0.5 * u) & ((xx - cx).abs() <= r)
        self.pattern = ring.float().expand(c, h, w).contiguous() * self.intensity

    def mask(self) -> torch.Tensor:
        return self.pattern > 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (x + self.pattern.to(x.device, x.dtype)).clamp(0.0, 1.0)


@TRIGGERS.register("sig")
class Sinusoid(Trigger):
    name = "sig"
    clean_label = True
    delta, freq = 0.1, 6

    def __init__(self, shape=(1, 28, 28)) -> None:
        super().__init__(shape)
        c, h, w = self.shape
        j = torch.arange(w).float()
        wave = self.delta * torch.sin(2 * math.pi * self.freq * j / w)
        wave[wave.abs() < 1e-6] = 0.0  # exact zero crossings (float32 sin leaves ~1e-8 there)
        self.pattern = wave.expand(c, h, w).contiguous()

    def mask(self) -> torch.Tensor:
        """Every pixel except the columns where the sinusoid crosses zero."""
        return self.pattern != 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (x + self.pattern.to(x.device, x.dtype)).clamp(0.0, 1.0)


def make_trigger(name: str, shape: tuple[int, int, int] = (1, 28, 28)) -> Trigger:
    """Create the registered trigger ``name`` for images of ``shape`` ``(C, H, W)``.

    Raises:
        UnknownNameError: unknown trigger name.
    """
    return TRIGGERS.get(name)(shape)


@dataclass(frozen=True)
class Poisoned:
    """A poisoned training set: the dataset and the ``(N,)`` bool mask of poisoned images."""

    dataset: ImageDataset
    poisoned: torch.Tensor


def poison(ds: ImageDataset, trigger: Trigger, rate: float = 0.1, target: int = 0) -> Poisoned:
    """Poison ``ds`` as ABD does: the first ``⌊rate·N⌋`` non-target images (for a clean-label
    trigger: target images, at most all of them) get the trigger and label ``target``.

    Args:
        ds: the clean training set, pixel units.
        trigger: the trigger to stamp.
        rate: poison rate in [0, 1] (share of the whole set).
        target: the target label in ``[0, num_classes)``.

    Raises:
        ValueError: ``rate`` outside [0, 1] or ``target`` outside the label range.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poison rate must be in [0, 1] (got {rate})")
    if not 0 <= target < ds.num_classes:
        raise ValueError(f"target must be in [0, {ds.num_classes}) (got {target})")
    n_poison = int(rate * len(ds))
    eligible = (ds.y == target) if trigger.clean_label else (ds.y != target)
    idx = torch.nonzero(eligible).flatten()[:n_poison]
    mask = torch.zeros(len(ds), dtype=torch.bool)
    mask[idx] = True
    x, y = ds.x.clone(), ds.y.clone()
    x[idx] = trigger.apply(x[idx])
    y[idx] = target
    return Poisoned(ds.replace(name=f"{ds.name}+{trigger.name}", x=x, y=y), mask)


def triggered_test_set(ds: ImageDataset, trigger: Trigger, target: int = 0) -> ImageDataset:
    """The non-target images of ``ds`` with the trigger, all labelled ``target`` (for ASR)."""
    keep = ds.y != target
    x = trigger.apply(ds.x[keep])
    y = torch.full((int(keep.sum()),), target, dtype=torch.long)
    return ds.replace(name=f"{ds.name}+{trigger.name}", x=x, y=y)


def trigger_examples(ds: ImageDataset, trigger: Trigger, n: int = 8, seed: int = 0) -> np.ndarray:
    """``(n, C, H, W)`` triggered copies of ``n`` seeded random images of ``ds`` (for display)."""
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    return trigger.apply(ds.x[torch.from_numpy(idx)]).numpy()
