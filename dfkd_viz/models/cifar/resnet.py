"""ResNet-18/34 for 32×32 images, in the state-dict layout of ``zju-vipa/CMI``.

Layout of ``zju-vipa/CMI:datafree/models/classifiers/resnet.py`` (itself DAFL's CIFAR ResNet,
``huawei-noah/Data-Efficient-Model-Compression:DAFL/resnet.py``); architecture of He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016, with the ImageNet stem replaced by a
stride-1 3×3 convolution and no max-pooling.

Shapes for a ``(B, 3, 32, 32)`` input::

    conv1 3×3/1 (no bias) → bn1 → ReLU            (B, 64, 32, 32)
    layer1  basic blocks, 64 ch, stride 1          (B, 64, 32, 32)   stage 0 (with the stem)
    layer2  128 ch, first block stride 2           (B, 128, 16, 16)  stage 1
    layer3  256 ch, stride 2                       (B, 256, 8, 8)    stage 2
    layer4  512 ch, stride 2                       (B, 512, 4, 4)    stage 3
    global average pool                            (B, 512)          penultimate
    linear                                         (B, K)            ``fc``

Blocks per stage: ResNet-18 [2, 2, 2, 2], ResNet-34 [3, 4, 6, 3]. Each block
``layerK.i.{conv1,bn1,conv2,bn2}`` computes ``relu(bn2(conv2(relu(bn1(conv1 x)))) + s(x))``; the
first block of layers 2–4 has the projection shortcut ``layerK.0.shortcut.{0,1}`` (1×1 conv, BN).
Parameters (K = 10 / 100): ResNet-18 11,173,962 / 11,220,132; ResNet-34 21,282,122 / 21,328,292.
Any input size works (global average pooling).
"""

from __future__ import annotations

import torch
from torch import nn

from dfkd_viz.models.cifar.base import ReferenceLayoutClassifier, global_avg_pool
from dfkd_viz.models.classifiers import BasicBlock


class CifarResNet(ReferenceLayoutClassifier):
    """ResNet with four stages of :class:`~dfkd_viz.models.classifiers.BasicBlock` (64, 128, 256,
    512 channels; its ``shortcut`` naming is the reference's) and a ``linear`` head.

    Args:
        blocks: basic blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes, in_shape, mean, std: see :class:`ReferenceLayoutClassifier`.
    """

    arch = "resnet-cifar"
    source = "zju-vipa/CMI:datafree/models/classifiers/resnet.py"

    def __init__(self, blocks, num_classes=10, in_shape=(3, 32, 32), mean=None, std=None):
        super().__init__(num_classes, in_shape, mean, std)
        self.blocks = tuple(int(b) for b in blocks)
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(self.in_shape[0], 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for k, (n, cout) in enumerate(zip(self.blocks, widths), start=1):
            stride = 1 if k == 1 else 2
            layers = [BasicBlock(cin, cout, stride)] + [
                BasicBlock(cout, cout) for _ in range(n - 1)
            ]
            setattr(self, f"layer{k}", nn.Sequential(*layers))
            cin = cout
        self.linear = nn.Linear(512, self.num_classes)
        self._set_views(
            [
                [
                    ("conv1", self.conv1),
                    ("bn1", self.bn1),
                    ("relu", torch.relu),
                    ("layer1", self.layer1),
                ],
                [("layer2", self.layer2)],
                [("layer3", self.layer3)],
                [("layer4", self.layer4)],
            ],
            [("avgpool", global_avg_pool)],
        )

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The final linear layer (registered as ``linear``, the reference's name)."""
        return self.linear


def resnet18(**kw) -> CifarResNet:
    """ResNet-18 for 32×32 inputs (CMI ``resnet18``; 11.2 M parameters at K = 10)."""
    return CifarResNet((2, 2, 2, 2), **kw)


def resnet34(**kw) -> CifarResNet:
    """ResNet-34 for 32×32 inputs (CMI ``resnet34``; 21.3 M parameters at K = 10)."""
    return CifarResNet((3, 4, 6, 3), **kw)
