"""The base class of the CIFAR zoo: classifiers whose state dicts follow a reference layout exactly.

A :class:`ReferenceLayoutClassifier` registers its submodules under the names the reference code
uses (``conv1``, ``layer1``, ``block0``, ``features.3.conv.1.0``...), so
``load_state_dict(strict=True)`` takes the reference's checkpoints unchanged. The
:class:`~dfkd_viz.models.classifiers.Classifier` interface is provided on top without adding a
single key:

- ``stages`` is a property returning keyless *views* (:class:`Chain`): each view holds references
  to registered submodules (and parameter-free functions such as ``torch.relu``) but registers
  nothing itself, so no parameter appears twice in the state dict. ``stages[0]`` includes the stem,
  so ``model.stages[0](model.normalize(x))`` followed by ``model.forward_from(h, 0)`` is the
  model's forward, as for the other classifiers.
- ``head`` is such a view too (last stage output → penultimate features ``(B, D)``).
- ``fc`` is the final ``nn.Linear`` under whatever name the reference gives it (``fc``,
  ``linear``, ``classifier``, ``classifier.1``), exposed as a property where the name differs.

The model's own forward runs the parts of the views directly rather than calling the views, so
``torch.fx`` can trace it (:func:`dfkd_viz.models.fold_bn` folds its BatchNorms). A forward hook
on a view therefore fires only when the view itself is called; hook the registered modules
(``layer1``, ``block2``...) to observe the model's forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_viz.models.classifiers import Classifier, Features

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

Part = Callable[[torch.Tensor], torch.Tensor]


def global_avg_pool(h: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, C)``: the mean over all spatial positions."""
    return F.adaptive_avg_pool2d(h, 1).flatten(1)


def flatten(h: torch.Tensor) -> torch.Tensor:
    """``(B, C, 1, 1)`` → ``(B, C)``."""
    return torch.flatten(h, 1)


class Chain(nn.Module):
    """A keyless view applying ``parts`` in order: registered submodules of the owning model, or
    parameter-free module-level functions (picklable, traceable). The parts are kept in a plain
    tuple, not registered, so the view adds no state-dict key; ``parameters()`` of the view are
    those of its module parts."""

    def __init__(self, parts: Sequence[Part], names: Sequence[str]) -> None:
        super().__init__()
        self._parts = tuple(parts)
        self._names = tuple(names)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for part in self._parts:
            h = part(h)
        return h

    def parts(self) -> tuple[Part, ...]:
        return self._parts

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate=True):
        for name, part in zip(self._names, self._parts):
            if isinstance(part, nn.Module):
                sub = f"{prefix}.{name}" if prefix else name
                yield from part.named_parameters(sub, recurse, remove_duplicate)

    def extra_repr(self) -> str:
        return " → ".join(self._names)


class ReferenceLayoutClassifier(Classifier):
    """A :class:`Classifier` whose registered submodules follow a reference implementation's
    layout. Subclasses build their modules under the reference names, then call
    :meth:`_set_views` with the parts of each stage and of the head.

    Args:
        num_classes: K.
        in_shape: ``(C, H, W)``; the stem takes C channels (the reference checkpoints have C = 3).
        mean, std: per-channel normalisation; None → the CIFAR-10 statistics when C = 3.

    Raises:
        ValueError: mean/std missing for C ≠ 3, or an input size the architecture cannot take
            (:meth:`_check_size`).
    """

    arch = "cifar"
    source = ""  # "zju-vipa/CMI:datafree/models/classifiers/<file>.py"

    def __init__(self, num_classes: int, in_shape, mean=None, std=None) -> None:
        if len(in_shape) != 3 or min(int(v) for v in in_shape) < 1:
            raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {in_shape}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        c = int(in_shape[0])
        if mean is None or std is None:
            if c != 3:
                raise ValueError(
                    f"pass mean and std for {c}-channel inputs (defaults are CIFAR-10)"
                )
            mean = CIFAR10_MEAN if mean is None else mean
            std = CIFAR10_STD if std is None else std
        super().__init__(num_classes, in_shape, mean, std)
        # The base class registers an empty ``stages`` ModuleList and an Identity ``head``; here both
        # are views (properties), so drop the registrations (they hold no tensors).
        self._modules.pop("stages", None)
        self._modules.pop("head", None)
        self._check_size(*self.in_shape[1:])
        self._views: tuple[Chain, ...] = ()
        self._head_view: Chain | None = None

    def _check_size(self, h: int, w: int) -> None:
        """Raise ValueError for an input size the architecture cannot take (default: any)."""

    def _set_views(self, stages: Sequence[Sequence[tuple[str, Part]]], head) -> None:
        """Define the stages and the head as sequences of ``(name, part)``."""
        # A tuple is a plain attribute; a Chain assigned directly would be registered (nn.Module's
        # __setattr__), so the head view bypasses it.
        self._views = tuple(Chain([p for _, p in s], [n for n, _ in s]) for s in stages)
        object.__setattr__(self, "_head_view", Chain([p for _, p in head], [n for n, _ in head]))

    @property
    def stages(self) -> list[Chain]:  # type: ignore[override]
        """Views of the stages (``stages[0]`` starts at the normalised input)."""
        return list(self._views)

    @property
    def head(self) -> Chain:  # type: ignore[override]
        """View from the last stage output to the penultimate features ``(B, D)``."""
        assert self._head_view is not None
        return self._head_view

    @property
    def num_parameters(self) -> int:
        """Number of learned parameters (the BN running statistics excluded)."""
        return sum(p.numel() for p in self.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        for view in (*self._views, self._head_view):
            if view is not None:
                view.training = mode
        return self

    def _run(self, view: Chain, h: torch.Tensor) -> torch.Tensor:
        for part in view.parts():
            h = part(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        for view in self._views:
            h = self._run(view, h)
        return self.fc(self._run(self.head, h))

    def forward_features(self, x: torch.Tensor) -> Features:
        h = self.normalize(x)
        blocks = []
        for view in self._views:
            h = self._run(view, h)
            blocks.append(h)
        f = self._run(self.head, h)
        return Features(self.fc(f), blocks, f)

    def forward_from(self, h: torch.Tensor, stage: int) -> Features:
        blocks = [h]
        for view in self._views[stage + 1 :]:
            h = self._run(view, h)
            blocks.append(h)
        f = self._run(self.head, h)
        return Features(self.fc(f), blocks, f)
