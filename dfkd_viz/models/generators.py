"""Generators for DFKD synthesis.

:class:`Generator` is the DCGAN-style generator of the CMI / Fast-Datafree family
(``zju-vipa/CMI:datafree/models/generator.py``): ``z (B, nz)`` → Linear → ``2·ngf × (H/4) × (W/4)``
→ BN → [nearest ×2, 3×3 conv, BN, LeakyReLU(0.2)] × 2 → 3×3 conv → sigmoid, so synthetic samples
are images ``(B, C, H, W)`` in pixel units [0, 1] (classifiers normalise inside). On 28×28 the
generator dominates a DFKD step's cost (≈5.7 M multiply-adds per image at ``ngf = 16``).
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """DCGAN-style generator.

    Args:
        nz: latent size.
        ngf: base channel count (16–32 is enough on 28×28).
        img_shape: ``(C, H, W)``; H and W divisible by 4.
    """

    def __init__(self, nz: int = 100, ngf: int = 16, img_shape=(1, 28, 28)) -> None:
        super().__init__()
        c, h, w = img_shape
        if h % 4 or w % 4:
            raise ValueError(f"image height and width must be divisible by 4 (got {h}×{w})")
        self.nz, self.ngf, self.img_shape = nz, ngf, tuple(img_shape)
        self.init_hw = (h // 4, w // 4)
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_hw[0] * self.init_hw[1])
        self.blocks = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, c, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] from latents ``z`` ``(B, nz)``."""
        h = self.l1(z).view(z.shape[0], 2 * self.ngf, *self.init_hw)
        return self.blocks(h)
