"""Generators for DFKD synthesis.

:class:`Generator` is the DCGAN-style generator of the CMI / Fast-Datafree family
(``zju-vipa/CMI:datafree/models/generator.py``): ``z (B, nz)`` → Linear → ``2·ngf × (H/4) × (W/4)``
→ BN → [nearest ×2, 3×3 conv, BN, LeakyReLU(0.2)] × 2 → 3×3 conv → sigmoid, so synthetic samples
are images ``(B, C, H, W)`` in pixel units. Two output heads:

- ``out="bn"`` (default): a BatchNorm without affine parameters, then ``· std + mean`` of the
  teacher's normalisation — every synthetic batch has exactly the per-channel mean and spread of
  the real data (the head of CMI's DFQ / DeepInversion generators, in normalised units). Pixel
  values may leave [0, 1] a little; plots clamp them. Measured here: a DFQ student reached 94.8 %
  in 30 s with this head against 88.5 % with the sigmoid head (same seed and budget).
- ``out="sigmoid"``: images strictly in [0, 1].

On 28×28 the generator dominates a DFKD step's cost (≈5.7 M multiply-adds per image at ``ngf = 16``).

Sizes (:func:`default_size`): 28×28 grey images keep this project's small generator (``nz = 100``,
``ngf = 16``); 32×32 colour images get CMI's CIFAR generator, ``Generator(nz=256, ngf=64,
img_size=32, nc=3)`` of ``zju-vipa/CMI:datafree/models/generator.py`` (Linear 256 → 128·8·8, BN,
×2, conv 128→128, BN, LeakyReLU 0.2, ×2, conv 128→64, BN, LeakyReLU, conv 64→3, head; ≈115 M
multiply-adds per image). The optimiser (the engine's) is CMI's too: Adam, betas (0.5, 0.999),
lr 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``(nz, ngf)`` of CMI's generator for 32×32 colour images
CMI_32_SIZE = (256, 64)
#: ``(nz, ngf)`` of this project's generator for 28×28 grey images (and every other shape)
SMALL_SIZE = (100, 16)


def default_size(img_shape) -> tuple[int, int]:
    """The default ``(nz, ngf)`` for images of ``img_shape`` ``(C, H, W)``: CMI's ``(256, 64)``
    for colour images of at least 32×32, else ``(100, 16)`` (28×28 grey MNIST-like data)."""
    c, h, w = (int(v) for v in img_shape)
    return CMI_32_SIZE if c == 3 and min(h, w) >= 32 else SMALL_SIZE


class Generator(nn.Module):
    """DCGAN-style generator.

    Args:
        nz: latent size.
        ngf: base channel count (16–32 is enough on 28×28).
        img_shape: ``(C, H, W)``; H and W divisible by 4.
        out: ``"bn"`` or ``"sigmoid"`` (see the module docstring).
        mean, std: per-channel pixel statistics used by the ``bn`` head (length C).
    """

    def __init__(
        self,
        nz: int = 100,
        ngf: int = 16,
        img_shape=(1, 28, 28),
        out: str = "bn",
        mean=(0.1307,),
        std=(0.3081,),
    ) -> None:
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
        )
        if out not in ("bn", "sigmoid"):
            raise ValueError(f"out must be 'bn' or 'sigmoid' (got {out!r})")
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel)")
        self.out = out
        self.out_bn = nn.BatchNorm2d(c, affine=False) if out == "bn" else None
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in pixel units from latents ``z`` ``(B, nz)``."""
        h = self.blocks(self.l1(z).view(z.shape[0], 2 * self.ngf, *self.init_hw))
        if self.out_bn is None:
            return torch.sigmoid(h)
        return self.out_bn(h) * self.std + self.mean
