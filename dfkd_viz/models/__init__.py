"""Model registry (classifiers and generators), in the manner of timm's ``create_model``.

``create_model(name, num_classes=10, in_shape=(1, 28, 28), mean=..., std=...)`` builds a registered
classifier; ``list_models()`` names them. Registered: ``lenet5`` (student), ``lenet5x2`` (the
default teacher, 2× wider), ``resnet8s``, ``resnet14`` (this project's small 3-stage ResNets), and
the CIFAR zoo of ``zju-vipa/CMI`` under its names (:mod:`dfkd_viz.models.cifar`: ``resnet18``,
``resnet34``, ``resnet8`` … ``resnet110``, ``resnet8x4``, ``resnet32x4``, ``wrn16_1`` …
``wrn40_2``, ``vgg8``, ``vgg11``, ``vgg13``, ``mobilenetv2``; default input ``(3, 32, 32)`` with
the CIFAR-10 statistics). Generators: :class:`Generator`, sized for an image shape by
:func:`default_size`.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from dfkd_viz.models.cifar import CIFAR_MODELS
from dfkd_viz.models.classifiers import BasicBlock, Classifier, Features, LeNet5, ResNetSmall
from dfkd_viz.models.generators import Generator, default_size
from dfkd_viz.registry import Registry

MODELS: Registry = Registry("architecture")


@MODELS.register("lenet5")
def lenet5(**kw) -> Classifier:
    """LeNet-5 with BN, width 1 (the default student; ≈62 k parameters on 28×28)."""
    return LeNet5(width=kw.pop("width", 1.0), **kw)


@MODELS.register("lenet5x2")
def lenet5x2(**kw) -> Classifier:
    """LeNet-5 with BN at twice the width (the default teacher)."""
    return LeNet5(width=2.0, **kw)


@MODELS.register("resnet8s")
def resnet8s(**kw) -> Classifier:
    """ResNet-8 (one basic block per stage; 16/32/64 channels). Named ``resnet8s``: ``resnet8`` is
    CMI's CIFAR ResNet-8 (the same widths, another state-dict layout)."""
    return ResNetSmall(blocks=1, **kw)


@MODELS.register("resnet14")
def resnet14(**kw) -> Classifier:
    """ResNet-14 (two basic blocks per stage; a deeper, BN-heavy teacher)."""
    return ResNetSmall(blocks=2, **kw)


for _name, _factory in CIFAR_MODELS.items():  # the CIFAR zoo, under zju-vipa/CMI's names
    MODELS.register(_name)(_factory)


def create_model(name: str, **kw) -> Classifier:
    """Build the registered classifier ``name``.

    Args (all optional): ``num_classes`` (K), ``in_shape`` ``(C, H, W)``, ``mean``, ``std``.

    Raises:
        UnknownNameError: unknown architecture.
        ValueError: an input shape the architecture does not take.
    """
    return MODELS.create(name, **kw)


def fold_bn(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of eval-mode ``model`` with every Conv2d → BatchNorm2d pair folded into one
    convolution (``torch.fx.experimental.optimization.fuse``): the same function (logits agree to
    ~1e-6), ~1.4× faster forward + input-gradient passes on a ResNet-14 on the CPU, for attacks
    and scoring. ``model`` itself is returned, unchanged, when it cannot be traced by torch.fx
    (a user architecture with data-dependent control flow); the copy is not a
    :class:`Classifier` (no ``num_classes``), so read those attributes from ``model``.

    Raises:
        ValueError: ``model`` is in training mode (folding uses the running statistics).
    """
    if model.training:
        raise ValueError("fold_bn needs an eval-mode model (it folds the BN running statistics)")
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model).requires_grad_(False)
    except Exception:  # untraceable: the unfused model computes the same function
        return model


@lru_cache(maxsize=1024)
def _fits(name: str, in_shape: tuple[int, int, int], num_classes: int) -> bool:
    c = in_shape[0]
    try:
        # built on the meta device (no weight initialisation, the global RNG untouched), then
        # given zeroed CPU storage: a forward pass checks the shapes at a fraction of the cost
        with torch.device("meta"):
            model = create_model(
                name, num_classes=num_classes, in_shape=in_shape, mean=(0.5,) * c, std=(0.25,) * c
            )
        model = model.to_empty(device="cpu").eval()
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                t.zero_()
            out = model(torch.zeros(1, *in_shape))
    except Exception:  # any failure to build or to run on such an image: it does not fit
        return False
    return tuple(out.shape) == (1, num_classes)


def input_fits(name: str, in_shape, num_classes: int = 10) -> bool:
    """Whether the registered architecture ``name`` takes images of ``in_shape`` ``(C, H, W)``
    and gives ``num_classes`` logits: it is built without initialisation and runs one zero image
    (eval mode, the global RNG untouched); cached per process (all 21 built-in architectures:
    about 2 s of CPU once per shape). False for an unknown name."""
    if name not in MODELS:
        return False
    return _fits(name, tuple(int(v) for v in in_shape), int(num_classes))


def fitting_models(in_shape, num_classes: int = 10) -> list[str]:
    """The registered architectures that take images of ``in_shape`` (:func:`input_fits`), in
    registry order."""
    return [n for n in MODELS.names() if input_fits(n, in_shape, num_classes)]


def list_models() -> list[str]:
    """Names of the registered classifier architectures."""
    return MODELS.names()


__all__ = [
    "MODELS",
    "BasicBlock",
    "Classifier",
    "Features",
    "Generator",
    "LeNet5",
    "ResNetSmall",
    "create_model",
    "default_size",
    "fitting_models",
    "fold_bn",
    "input_fits",
    "list_models",
]
