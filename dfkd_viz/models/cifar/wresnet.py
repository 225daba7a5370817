"""Wide ResNets WRN-16-1/16-2/40-1/40-2 (pre-activation), in ``zju-vipa/CMI``'s layout.

Layout of ``zju-vipa/CMI:datafree/models/classifiers/wresnet.py`` (ZSKT's
``polo5/ZeroShotKnowledgeTransfer:models/wresnet.py``); architecture of Zagoruyko & Komodakis,
"Wide Residual Networks", BMVC 2016 (depth 6n + 4, widen factor k).

Shapes for a ``(B, 3, 32, 32)`` input::

    conv1 3×3/1 (no bias, no BN after it)       (B, 16, 32, 32)
    block1.layer  n blocks, 16k ch, stride 1     (B, 16k, 32, 32)   stage 0 (with conv1)
    block2.layer  n blocks, 32k ch, stride 2     (B, 32k, 16, 16)   stage 1
    block3.layer  n blocks, 64k ch, stride 2     (B, 64k, 8, 8)     stage 2
    bn1 → ReLU → global average pool             (B, 64k)           penultimate
    fc                                           (B, K)

Stage outputs are the blocks' sums before the next pre-activation (the activations ZSKT's
attention transfer compares). Block ``blockS.layer.i.{bn1,conv1,bn2,conv2}``:
``a = relu(bn1 x)``, ``out = conv2(relu(bn2(conv1 a)))``; the result is ``x + out`` where the
channels stay, else ``convShortcut(a) + out`` (a 1×1 conv, on the pre-activated input, only in the
first block of a group whose channels change, so WRN-16-1 and WRN-40-1 have none in ``block1``).

Parameters (K = 10 / 100): WRN-16-1 175,066 / 180,916; WRN-16-2 691,674 / 703,284;
WRN-40-1 563,930 / 569,780; WRN-40-2 2,243,546 / 2,255,156.
The reference's dropout (rate 0 in every CMI model) is left out: it holds no tensor.
Any input size works (global average pooling).
"""

from __future__ import annotations

import torch
from torch import nn

from dfkd_viz.models.cifar.base import ReferenceLayoutClassifier, global_avg_pool


class WideBasicBlock(nn.Module):
    """Pre-activation basic block (see the module docstring)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout
        # Like the reference, a stride-2 block with equal channels would keep an identity shortcut
        # (and fail on the shape); WRNs never build one.
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return (x if self.convShortcut is None else self.convShortcut(a)) + out


class BlockGroup(nn.Module):
    """``n`` wide blocks in ``layer`` (the reference's ``NetworkBlock``)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ReferenceLayoutClassifier):
    """WRN-``depth``-``widen``.

    Args:
        depth: 6n + 4 (16, 22, 28, 40...).
        widen: width factor k.
        num_classes, in_shape, mean, std: see :class:`ReferenceLayoutClassifier`.

    Raises:
        ValueError: ``depth`` not 6n + 4.
    """

    arch = "wrn"
    source = "zju-vipa/CMI:datafree/models/classifiers/wresnet.py"

    def __init__(
        self, depth: int, widen: int, num_classes=10, in_shape=(3, 32, 32), mean=None, std=None
    ):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 (16, 22, 28, 40...), got {depth}")
        super().__init__(num_classes, in_shape, mean, std)
        n = (depth - 4) // 6
        self.depth, self.widen = depth, int(widen)
        w = [16, 16 * self.widen, 32 * self.widen, 64 * self.widen]
        self.conv1 = nn.Conv2d(self.in_shape[0], w[0], 3, 1, 1, bias=False)
        self.block1 = BlockGroup(n, w[0], w[1], 1)
        self.block2 = BlockGroup(n, w[1], w[2], 2)
        self.block3 = BlockGroup(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(w[3], self.num_classes)
        self._set_views(
            [
                [("conv1", self.conv1), ("block1", self.block1)],
                [("block2", self.block2)],
                [("block3", self.block3)],
            ],
            [("bn1", self.bn1), ("relu", self.relu), ("avgpool", global_avg_pool)],
        )


def wrn16_1(**kw) -> WideResNet:
    """WRN-16-1 (CMI ``wrn16_1``; 0.18 M parameters at K = 10)."""
    return WideResNet(16, 1, **kw)


def wrn16_2(**kw) -> WideResNet:
    """WRN-16-2 (CMI ``wrn16_2``; 0.69 M parameters)."""
    return WideResNet(16, 2, **kw)


def wrn40_1(**kw) -> WideResNet:
    """WRN-40-1 (CMI ``wrn40_1``; 0.56 M parameters)."""
    return WideResNet(40, 1, **kw)


def wrn40_2(**kw) -> WideResNet:
    """WRN-40-2 (CMI ``wrn40_2``; 2.2 M parameters)."""
    return WideResNet(40, 2, **kw)
