"""The 3-stage CIFAR ResNets (ResNet-8/20/32/56/110, ResNet-8×4/32×4), in ``zju-vipa/CMI``'s layout.

Layout of ``zju-vipa/CMI:datafree/models/classifiers/resnet_tiny.py`` (RepDistiller's
``HobbitLong/RepDistiller:models/resnet.py``); architecture of He et al., "Deep Residual Learning
for Image Recognition", CVPR 2016, §4.2 (depth 6n + 2, n basic blocks per stage).

Shapes for a ``(B, 3, 32, 32)`` input, widths ``(w0, w1, w2, w3)``::

    conv1 3×3/1 (no bias) → bn1 → relu        (B, w0, 32, 32)
    layer1  n blocks, w1 ch, stride 1          (B, w1, 32, 32)   stage 0 (with the stem)
    layer2  n blocks, w2 ch, stride 2          (B, w2, 16, 16)   stage 1
    layer3  n blocks, w3 ch, stride 2          (B, w3, 8, 8)     stage 2
    avgpool                                    (B, w3)           penultimate
    fc                                         (B, K)

Widths ``(16, 16, 32, 64)`` for ResNet-8/20/32/56/110, ``(32, 64, 128, 256)`` for the ×4 models
(whose ``layer1`` therefore starts with a projection too). Block ``layerK.i.{conv1,bn1,conv2,bn2}``
as in the 4-stage ResNet; the projection shortcut is called ``layerK.0.downsample.{0,1}``.

Parameters (K = 10 / 100): ResNet-8 78,042 / 83,892; ResNet-20 272,474 / 278,324;
ResNet-32 466,906 / 472,756; ResNet-56 855,770 / 861,620; ResNet-110 1,730,714 / 1,736,564;
ResNet-8×4 1,210,410 / 1,233,540; ResNet-32×4 7,410,730 / 7,433,860.

The reference pools with ``nn.AvgPool2d(8)``: the global average of the 8×8 map of a 29–32 px
input, a failure below 29 px, the top-left 8×8 window only from 33 px on. This implementation takes
the global average, the same function at 29–32 px that also serves smaller inputs (28×28 gives a
7×7 map), and refuses inputs over 32 px.
"""

from __future__ import annotations

from torch import nn

from dfkd_viz.models.cifar.base import ReferenceLayoutClassifier, flatten


class TinyBasicBlock(nn.Module):
    """Basic block ``relu(bn2(conv2(relu(bn1(conv1 x)))) + downsample(x))``; ``downsample`` is a
    1×1 conv + BN where the shape changes, else the identity (no key)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetTiny(ReferenceLayoutClassifier):
    """A 3-stage CIFAR ResNet of ``depth`` = 6n + 2 layers.

    Args:
        depth: 8, 14, 20, 32, 44, 56, 110... (6n + 2).
        widths: ``(stem, stage 1, stage 2, stage 3)`` channels.
        num_classes, in_shape, mean, std: see :class:`ReferenceLayoutClassifier`.

    Raises:
        ValueError: ``depth`` not 6n + 2, or inputs over 32 px.
    """

    arch = "resnet-tiny"
    source = "zju-vipa/CMI:datafree/models/classifiers/resnet_tiny.py"

    def __init__(
        self,
        depth: int,
        widths=(16, 16, 32, 64),
        num_classes=10,
        in_shape=(3, 32, 32),
        mean=None,
        std=None,
    ):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (8, 20, 32...), got {depth}")
        super().__init__(num_classes, in_shape, mean, std)
        n = (depth - 2) // 6
        self.depth, self.widths = depth, tuple(int(w) for w in widths)
        w0, *rest = self.widths
        self.conv1 = nn.Conv2d(self.in_shape[0], w0, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU()
        cin = w0
        for k, cout in enumerate(rest, start=1):
            stride = 1 if k == 1 else 2
            blocks = [TinyBasicBlock(cin, cout, stride)]
            blocks += [TinyBasicBlock(cout, cout) for _ in range(n - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, self.num_classes)
        self._set_views(
            [
                [
                    ("conv1", self.conv1),
                    ("bn1", self.bn1),
                    ("relu", self.relu),
                    ("layer1", self.layer1),
                ],
                [("layer2", self.layer2)],
                [("layer3", self.layer3)],
            ],
            [("avgpool", self.avgpool), ("flatten", flatten)],
        )

    def _check_size(self, h: int, w: int) -> None:
        if max(h, w) > 32:
            raise ValueError(
                f"{type(self).__name__} takes inputs of at most 32×32 px (the reference's "
                f"AvgPool2d(8) head), not {h}×{w}"
            )


def _factory(depth: int, widths, doc: str):
    def make(**kw) -> ResNetTiny:
        return ResNetTiny(depth, widths, **kw)

    make.__doc__ = doc
    return make


resnet8 = _factory(8, (16, 16, 32, 64), "ResNet-8 (CMI ``resnet8``; 78 k parameters at K = 10).")
resnet20 = _factory(20, (16, 16, 32, 64), "ResNet-20 (CMI ``resnet20``; 0.27 M parameters).")
resnet32 = _factory(32, (16, 16, 32, 64), "ResNet-32 (CMI ``resnet32``; 0.47 M parameters).")
resnet56 = _factory(56, (16, 16, 32, 64), "ResNet-56 (CMI ``resnet56``; 0.86 M parameters).")
resnet110 = _factory(110, (16, 16, 32, 64), "ResNet-110 (CMI ``resnet110``; 1.7 M parameters).")
resnet8x4 = _factory(8, (32, 64, 128, 256), "ResNet-8×4 (CMI ``resnet8x4``; 1.2 M parameters).")
resnet32x4 = _factory(32, (32, 64, 128, 256), "ResNet-32×4 (CMI ``resnet32x4``; 7.4 M parameters).")
