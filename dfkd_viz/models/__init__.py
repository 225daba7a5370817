"""Model registry (classifiers and generators), in the manner of timm's ``create_model``.

``create_model(name, num_classes=10, in_shape=(1, 28, 28), mean=..., std=...)`` builds a registered
classifier; ``list_models()`` names them. Registered: ``lenet5`` (student), ``lenet5x2`` (the
default teacher, 2× wider), ``resnet8``, ``resnet14``. Generators: :class:`Generator`.
"""

from __future__ import annotations

from dfkd_viz.models.classifiers import BasicBlock, Classifier, Features, LeNet5, ResNetSmall
from dfkd_viz.models.generators import Generator
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


@MODELS.register("resnet8")
def resnet8(**kw) -> Classifier:
    """ResNet-8 (one basic block per stage; 16/32/64 channels)."""
    return ResNetSmall(blocks=1, **kw)


@MODELS.register("resnet14")
def resnet14(**kw) -> Classifier:
    """ResNet-14 (two basic blocks per stage; a deeper, BN-heavy teacher)."""
    return ResNetSmall(blocks=2, **kw)


def create_model(name: str, **kw) -> Classifier:
    """Build the registered classifier ``name``.

    Args (all optional): ``num_classes`` (K), ``in_shape`` ``(C, H, W)``, ``mean``, ``std``.

    Raises:
        UnknownNameError: unknown architecture.
        ValueError: an input shape the architecture does not take.
    """
    return MODELS.create(name, **kw)


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
    "list_models",
]
