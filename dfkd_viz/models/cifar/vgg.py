"""VGG-8/11/13 with BatchNorm for 32×32 images, in ``zju-vipa/CMI``'s layout.

Layout of ``zju-vipa/CMI:datafree/models/classifiers/vgg.py`` (RepDistiller's
``HobbitLong/RepDistiller:models/vgg.py``), whose CMI names ``vgg8``, ``vgg11``, ``vgg13`` are the
``_bn`` variants; architecture of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015, with one 512→K linear layer as the classifier.

Five conv blocks ``block0`` … ``block4``; each is ``[conv 3×3 (with bias), BN, ReLU] × m`` without
its last ReLU, so its keys are ``blockB.{3j}.{weight,bias}`` (conv) and ``blockB.{3j+1}.*`` (BN).
Convs per block: VGG-8 (1, 1, 1, 1, 1), VGG-11 (1, 1, 2, 2, 2), VGG-13 (2, 2, 2, 2, 2);
channels 64, 128, 256, 512, 512. Shapes for a ``(B, 3, 32, 32)`` input::

    block0 → ReLU                                 (B, 64, 32, 32)    stage 0
    pool0 (max 2×2) → block1 → ReLU               (B, 128, 16, 16)   stage 1
    pool1 → block2 → ReLU                         (B, 256, 8, 8)     stage 2
    pool2 → block3 → ReLU                         (B, 512, 4, 4)     stage 3
    block4 → ReLU                                 (B, 512, 4, 4)     stage 4
    pool4 (global average)                        (B, 512)           penultimate
    classifier                                    (B, K)             ``fc``

As in the reference, ``pool3`` (max 2×2, before ``block4``) is applied only to 64 px high inputs,
so ``block4`` runs at the resolution of ``block3`` for 32×32 images. Stage outputs are the
post-ReLU block activations (RepDistiller's ``is_feat`` features).

Parameters (K = 10 / 100): VGG-8 3,918,858 / 3,965,028; VGG-11 9,231,114 / 9,277,284;
VGG-13 9,416,010 / 9,462,180. Inputs must be at least 8 px (16 px wide when 64 px high).
"""

from __future__ import annotations

import torch
from torch import nn

from dfkd_viz.models.cifar.base import ReferenceLayoutClassifier, flatten

CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def conv_block(cin: int, widths) -> nn.Sequential:
    """``[conv 3×3 + bias, BN, ReLU]`` per width, without the final ReLU."""
    layers: list[nn.Module] = []
    for cout in widths:
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers[:-1])


class CifarVGG(ReferenceLayoutClassifier):
    """VGG with BN in RepDistiller's five-block layout.

    Args:
        config: convolution widths per block, e.g. ``CONFIGS["vgg13"]``.
        num_classes, in_shape, mean, std: see :class:`ReferenceLayoutClassifier`.

    Raises:
        ValueError: inputs under 8 px (or under 16 px wide for 64 px high inputs).
    """

    arch = "vgg"
    source = "zju-vipa/CMI:datafree/models/classifiers/vgg.py"

    def __init__(self, config, num_classes=10, in_shape=(3, 32, 32), mean=None, std=None):
        super().__init__(num_classes, in_shape, mean, std)
        self.config = tuple(tuple(int(c) for c in b) for b in config)
        if len(self.config) != 5 or self.config[4][-1] != 512:
            raise ValueError("a VGG config has five blocks, the last ending at 512 channels")
        cin = self.in_shape[0]
        for b, widths in enumerate(self.config):
            setattr(self, f"block{b}", conv_block(cin, widths))
            cin = widths[-1]
        for b in range(4):
            setattr(self, f"pool{b}", nn.MaxPool2d(2, 2))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, self.num_classes)
        # The reference decides per call on the input height (h == 64); the height is fixed here.
        pool3 = [("pool3", self.pool3)] if self.in_shape[1] == 64 else []
        relu = ("relu", torch.relu)
        self._set_views(
            [
                [("block0", self.block0), relu],
                [("pool0", self.pool0), ("block1", self.block1), relu],
                [("pool1", self.pool1), ("block2", self.block2), relu],
                [("pool2", self.pool2), ("block3", self.block3), relu],
                [*pool3, ("block4", self.block4), relu],
            ],
            [("pool4", self.pool4), ("flatten", flatten)],
        )

    def _check_size(self, h: int, w: int) -> None:
        pools_w = 4 if h == 64 else 3
        if h < 8 or w < 2**pools_w:
            raise ValueError(
                f"{type(self).__name__} needs inputs of at least 8×8 px (8×16 at height 64: "
                f"three or four 2×2 max-pools), not {h}×{w}"
            )

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The final linear layer (registered as ``classifier``, the reference's name)."""
        return self.classifier


def vgg8(**kw) -> CifarVGG:
    """VGG-8 with BN (CMI ``vgg8`` = RepDistiller ``vgg8_bn``; 3.9 M parameters at K = 10)."""
    return CifarVGG(CONFIGS["vgg8"], **kw)


def vgg11(**kw) -> CifarVGG:
    """VGG-11 with BN (CMI ``vgg11`` = ``vgg11_bn``; 9.2 M parameters)."""
    return CifarVGG(CONFIGS["vgg11"], **kw)


def vgg13(**kw) -> CifarVGG:
    """VGG-13 with BN (CMI ``vgg13`` = ``vgg13_bn``; 9.4 M parameters)."""
    return CifarVGG(CONFIGS["vgg13"], **kw)
