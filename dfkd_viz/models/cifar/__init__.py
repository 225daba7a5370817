"""The CIFAR model zoo of the shared DFKD codebase, with its exact state-dict layouts.

Every architecture of ``zju-vipa/CMI``'s ``datafree/models/classifiers/`` registry (commit
``9e79fa9``; the models used by CMI, Fast-DFKD and most DFKD papers after them), under CMI's names,
written so that ``load_state_dict(strict=True)`` takes that codebase's checkpoints unchanged and
computes the same logits. The models take pixel inputs in [0, 1] and normalise inside (like every
:class:`~dfkd_viz.models.classifiers.Classifier`); a CMI checkpoint, trained on normalised inputs,
gives its logits when built with the statistics it was trained with (:data:`CIFAR10_MEAN`,
:data:`CIFAR10_STD` — the default — or :data:`CIFAR100_MEAN`, :data:`CIFAR100_STD`).

========================  ==========================  =================
CMI name                  family                      parameters (K=10)
========================  ==========================  =================
resnet18, resnet34        :mod:`.resnet`              11.2 M, 21.3 M
resnet8 … resnet110,      :mod:`.resnet_tiny`         0.08 M … 1.7 M,
resnet8x4, resnet32x4                                 1.2 M, 7.4 M
wrn16_1 … wrn40_2         :mod:`.wresnet`             0.18 M … 2.2 M
vgg8, vgg11, vgg13        :mod:`.vgg` (``_bn``)       3.9 M … 9.4 M
mobilenetv2               :mod:`.mobilenetv2`         2.2 M
========================  ==========================  =================

Each factory takes ``num_classes`` (10), ``in_shape`` (``(3, 32, 32)``), ``mean`` and ``std``.
:data:`CIFAR_MODELS` maps the names to the factories (registered in
:data:`dfkd_viz.models.MODELS`).
"""

from __future__ import annotations

from collections.abc import Callable

from dfkd_viz.models.cifar import mobilenetv2, resnet, resnet_tiny, vgg, wresnet
from dfkd_viz.models.cifar.base import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Chain,
    ReferenceLayoutClassifier,
)

CIFAR_MODELS: dict[str, Callable[..., ReferenceLayoutClassifier]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet8": resnet_tiny.resnet8,
    "resnet20": resnet_tiny.resnet20,
    "resnet32": resnet_tiny.resnet32,
    "resnet56": resnet_tiny.resnet56,
    "resnet110": resnet_tiny.resnet110,
    "resnet8x4": resnet_tiny.resnet8x4,
    "resnet32x4": resnet_tiny.resnet32x4,
    "wrn16_1": wresnet.wrn16_1,
    "wrn16_2": wresnet.wrn16_2,
    "wrn40_1": wresnet.wrn40_1,
    "wrn40_2": wresnet.wrn40_2,
    "vgg8": vgg.vgg8,
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "mobilenetv2": mobilenetv2.mobilenetv2,
}

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_MODELS",
    "Chain",
    "ReferenceLayoutClassifier",
]
