"""Classifiers for teachers and students.

Every classifier is a :class:`Classifier`: it takes images ``(B, C, H, W)`` float32 in **pixel units
[0, 1]**, normalises them inside (``(x − mean) / std``, non-persistent buffers: weight files hold
only learned tensors), runs its ``stages`` (convolutional blocks whose outputs are the block
activations used by attention transfer and feature re-styling), its ``head`` (to the penultimate
feature vector, the embedding UMAP plots) and its final linear layer ``fc`` (logits ``(B, K)``).
BatchNorm follows every convolution, so a teacher carries the BN statistics DeepInversion-style
synthesis matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Features:
    """Outputs of :meth:`Classifier.forward_features`.

    Attributes:
        logits: ``(B, K)``.
        blocks: activations after each stage, ``(B, C_l, H_l, W_l)``.
        penultimate: ``(B, D)`` features before the final linear layer.
    """

    logits: torch.Tensor
    blocks: list[torch.Tensor]
    penultimate: torch.Tensor


class Classifier(nn.Module):
    """Base class: ``fc(head(stages(normalise(x))))``.

    Args:
        num_classes: K.
        in_shape: ``(C, H, W)`` of the input images.
        mean, std: per-channel normalisation statistics (length C).
    """

    arch = "classifier"

    def __init__(self, num_classes: int, in_shape, mean, std) -> None:
        super().__init__()
        c = in_shape[0]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel)")
        self.num_classes = int(num_classes)
        self.in_shape = tuple(int(v) for v in in_shape)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), False)
        self.stages = nn.ModuleList()
        self.head: nn.Module = nn.Identity()
        self.fc: nn.Linear
        self.input_format = torch.contiguous_format

    def set_memory_format(self, fmt: torch.memory_format) -> Classifier:
        """Move weights and every input to ``fmt`` (``torch.channels_last`` or
        ``torch.contiguous_format``). Measured on 2 CPU cores: channels-last halves the inference
        time of the 2×-wide LeNet but doubles the training time of the 1× LeNet, so the engine
        sets it per model."""
        self.to(memory_format=fmt)
        self.input_format = fmt
        return self

    @property
    def feature_dim(self) -> int:
        """Length D of the penultimate feature vector."""
        return self.fc.in_features

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x − mean) / std`` in the model's input memory format."""
        return ((x - self.mean) / self.std).contiguous(memory_format=self.input_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of images ``(B, C, H, W)`` in [0, 1]."""
        h = self.normalize(x)
        for stage in self.stages:
            h = stage(h)
        return self.fc(self.head(h))

    def forward_features(self, x: torch.Tensor) -> Features:
        """Logits, per-stage activations and penultimate features in one pass."""
        h = self.normalize(x)
        blocks = []
        for stage in self.stages:
            h = stage(h)
            blocks.append(h)
        f = self.head(h)
        return Features(self.fc(f), blocks, f)

    def forward_from(self, h: torch.Tensor, stage: int) -> Features:
        """Continue a forward pass from the output ``h`` of stage ``stage`` (0-based)."""
        blocks = [h]
        for s in self.stages[stage + 1 :]:
            h = s(h)
            blocks.append(h)
        f = self.head(h)
        return Features(self.fc(f), blocks, f)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, D)`` (the embedding used by UMAP maps)."""
        return self.forward_features(x).penultimate


class LeNet5(Classifier):
    """LeNet-5 with BatchNorm: two 5×5 conv blocks (6w, 16w channels), fc 120w → 84w → K.

    28×28 inputs are padded by 2 in the first conv, 32×32 are not (both reach 5×5 before the head).
    About 0.4 M multiply-adds per 28×28 image at width 1, 1.4 M at width 2.
    """

    arch = "lenet5"

    def __init__(
        self, num_classes=10, in_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,), width=1.0
    ):
        super().__init__(num_classes, in_shape, mean, std)
        c, h, w = self.in_shape
        if (h, w) not in ((28, 28), (32, 32)):
            raise ValueError(f"LeNet5 takes 28×28 or 32×32 images, not {h}×{w}")
        c1, c2, f1, f2 = (max(1, round(v * width)) for v in (6, 16, 120, 84))
        self.width = width
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(c, c1, 5, padding=2 if h == 28 else 0, bias=False),
                    nn.BatchNorm2d(c1),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                ),
                nn.Sequential(
                    nn.Conv2d(c1, c2, 5, bias=False),
                    nn.BatchNorm2d(c2),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                ),
            ]
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 25, f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(f2, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv+BN with an identity (or 1×1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(Classifier):
    """A CIFAR-style ResNet: 3×3 stem, three stages of ``blocks`` basic blocks (16w, 32w, 64w
    channels, strides 1, 2, 2), global average pooling, fc. ``blocks=1`` is ResNet-8,
    ``blocks=2`` ResNet-14 (He et al. 2016, §4.2 layout)."""

    arch = "resnet"

    def __init__(
        self,
        num_classes=10,
        in_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        width=1.0,
        blocks=1,
    ):
        super().__init__(num_classes, in_shape, mean, std)
        c = self.in_shape[0]
        w1, w2, w3 = (max(4, round(v * width)) for v in (16, 32, 64))
        self.width, self.blocks = width, blocks

        def stage(cin, cout, stride):
            layers = [BasicBlock(cin, cout, stride)] + [
                BasicBlock(cout, cout) for _ in range(blocks - 1)
            ]
            return nn.Sequential(*layers)

        stem = nn.Sequential(
            nn.Conv2d(c, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True)
        )
        self.stages = nn.ModuleList(
            [nn.Sequential(stem, stage(w1, w1, 1)), stage(w1, w2, 2), stage(w2, w3, 2)]
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(w3, num_classes)
