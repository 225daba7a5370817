"""MobileNetV2 (width 1.0) in ``zju-vipa/CMI``'s layout: torchvision's ImageNet network, unchanged.

Layout of ``zju-vipa/CMI:datafree/models/classifiers/mobilenetv2.py`` (a copy of torchvision's
``mobilenet_v2``); architecture of Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018. CMI uses it for CIFAR as is: the stem keeps its stride 2, so a 32×32 image
is down to 1×1 after the last stride.

``features.0``: conv 3×3/2 (no bias), BN, ReLU6 (keys ``features.0.{0,1}``). ``features.1`` …
``features.17``: inverted residual blocks ``(t, c, n, s)`` = (1, 16, 1, 1), (6, 24, 2, 2),
(6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1); each is
``features.i.conv``: [1×1 expansion conv+BN+ReLU6 (``conv.0.{0,1}``, absent for t = 1)],
3×3 depthwise conv+BN+ReLU6, 1×1 linear projection conv, BN; a residual sum where stride 1 and
channels stay. ``features.18``: 1×1 conv to 1280 + BN + ReLU6. ``classifier``: Dropout,
Linear(1280, K) (``classifier.1``, ``fc`` here). The reference's dropout rate is 0.2; it is 0 here
unless asked for (``dropout=0.2``), since every classifier of this project computes the same logits
in two training-mode passes (``forward`` and ``forward_features`` agree); eval mode is unaffected.

Stages (one per output resolution) for a ``(B, 3, 32, 32)`` input::

    features[0:2]     (B, 16, 16, 16)    stage 0
    features[2:4]     (B, 24, 8, 8)      stage 1
    features[4:7]     (B, 32, 4, 4)      stage 2
    features[7:14]    (B, 96, 2, 2)      stage 3
    features[14:19]   (B, 1280, 1, 1)    stage 4
    global average pool, dropout         (B, 1280)   penultimate
    classifier.1                         (B, K)

Parameters (K = 10 / 100): 2,236,682 / 2,351,972. Any input size works (global average
pooling); the stage split follows the strides, so it holds at every size.
"""

from __future__ import annotations

from torch import nn

from dfkd_viz.models.cifar.base import ReferenceLayoutClassifier, global_avg_pool

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
SETTINGS += ((6, 160, 3, 2), (6, 320, 1, 1))
STAGE_ENDS = (2, 4, 7, 14, 19)  # features[previous end : end] per stage


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    """Conv (no bias, 'same' padding) → BN → ReLU6, keys ``{0,1}``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expansion (ratio ``t``) → depthwise 3×3 (``stride``) → linear 1×1 projection, with a
    residual sum when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = round(cin * t)
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, 1)] if t != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(ReferenceLayoutClassifier):
    """MobileNetV2, width 1.0 (see the module docstring).

    Args:
        num_classes, in_shape, mean, std: see :class:`ReferenceLayoutClassifier`.
        dropout: rate of ``classifier.0`` (the reference has 0.2; default 0, see above).
    """

    arch = "mobilenetv2"
    source = "zju-vipa/CMI:datafree/models/classifiers/mobilenetv2.py"

    def __init__(self, num_classes=10, in_shape=(3, 32, 32), mean=None, std=None, dropout=0.0):
        super().__init__(num_classes, in_shape, mean, std)
        cin = 32
        layers: list[nn.Module] = [conv_bn_relu6(self.in_shape[0], cin, 3, 2)]
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, self.num_classes))
        starts = (0, *STAGE_ENDS[:-1])
        self._set_views(
            [
                [(f"features.{i}", self.features[i]) for i in range(a, b)]
                for a, b in zip(starts, STAGE_ENDS)
            ],
            [("avgpool", global_avg_pool), ("classifier.0", self.classifier[0])],
        )

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The final linear layer (registered as ``classifier.1``, the reference's name)."""
        return self.classifier[1]


def mobilenetv2(**kw) -> MobileNetV2:
    """MobileNetV2 (CMI ``mobilenetv2``; 2.2 M parameters at K = 10, stem stride 2 as in
    torchvision)."""
    return MobileNetV2(**kw)
