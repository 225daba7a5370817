"""Attribution maps for backdoor diagnosis, through captum, and the trigger-localisation score.

A backdoored classifier that sees a triggered image decides from the trigger: its attribution mass
moves from the digit to the trigger's pixels. The *trigger-localisation score* of an image is the
share of the absolute attribution inside the trigger's mask; its chance level is the mask's area
share. Tracked for the student over training, it shows whether the backdoor transfers (ABD, Hong et
al., ICML 2023, uses saliency the same way to show what the student inherited).

Methods (captum 0.9, ``pytorch/captum:captum/attr``):

- ``integrated-gradients``: Sundararajan et al. 2017, black-image baseline (MNIST's background),
  ``ig_steps`` Riemann steps.
- ``saliency``: |∂ logit / ∂ x| (Simonyan et al. 2014).
- ``grad-cam``: Layer Grad-CAM (Selvaraju et al. 2017) on the last convolution, ReLU'd and
  bilinearly upsampled to the input size.

Every map is ``(N, H, W)`` float32, ≥ 0 (absolute attribution summed over channels), per the class
the model predicts unless ``target`` is given.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

METHODS = ("integrated-gradients", "saliency", "grad-cam")
LABELS = {
    "integrated-gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "grad-cam": "Layer Grad-CAM",
}
MAX_LOCAL_AREA = 0.5  # a trigger covering more of the image (blend) has no meaningful localisation


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last ``nn.Conv2d`` (Grad-CAM's layer). Raises ValueError if it has none."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "integrated-gradients",
    target: torch.Tensor | int | None = None,
    ig_steps: int = 16,
) -> np.ndarray:
    """Attribution maps of ``model`` on images ``x``.

    Args:
        model: a classifier taking ``(N, C, H, W)`` images in [0, 1] (pixel units); put in eval mode
            for the call and restored afterwards.
        x: ``(N, C, H, W)`` images in [0, 1].
        method: one of :data:`METHODS`.
        target: class per image ``(N,)`` or one class for all; None → the model's prediction.
        ig_steps: Integrated Gradients' number of interpolation steps.

    Returns:
        ``(N, H, W)`` float32 ≥ 0: absolute attribution summed over channels.

    Raises:
        ValueError: unknown ``method``, or ``x`` not 4-D.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    try:
        x = x.detach().float().contiguous()
        if target is None:
            with torch.no_grad():
                target = model(x).argmax(1)
        elif isinstance(target, int):
            target = torch.full((len(x),), target, dtype=torch.long, device=x.device)
        inp = x.clone().requires_grad_(True)
        if method == "integrated-gradients":
            attr = IntegratedGradients(model).attribute(
                inp, baselines=torch.zeros_like(x), target=target, n_steps=ig_steps
            )
        elif method == "saliency":
            attr = Saliency(model).attribute(inp, target=target, abs=True)
        else:
            cam = LayerGradCam(model, last_conv(model)).attribute(
                inp, target=target, relu_attributions=True
            )
            attr = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")
        return attr.detach().abs().sum(1).float().cpu().numpy()
    finally:
        model.train(was_training)


def localisation(attr: np.ndarray, mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of each map's attribution mass inside ``mask``.

    Args:
        attr: ``(N, H, W)`` ≥ 0 attribution maps (:func:`attribute`).
        mask: ``(H, W)`` or ``(C, H, W)`` bool trigger mask (:meth:`Trigger.mask`; channels are
            merged with "any").

    Returns:
        ``(N,)`` float in [0, 1]; 0 for an all-zero map. Chance level = ``mask.mean()``.
    """
    m = torch.as_tensor(mask)
    if m.dim() == 3:
        m = m.any(0)
    m = m.cpu().numpy().astype(bool)
    a = np.abs(np.asarray(attr, dtype=np.float64))
    total = a.sum(axis=(1, 2))
    inside = a[:, m].sum(axis=1)
    return np.where(total > 0, inside / np.maximum(total, 1e-30), 0.0)


def local_mask(trigger) -> np.ndarray | None:
    """The trigger's ``(H, W)`` mask, or None when it covers more than :data:`MAX_LOCAL_AREA` of
    the image (a blend or a sinusoid: no region to localise)."""
    m = trigger.mask()
    m = (m.any(0) if m.dim() == 3 else m).cpu().numpy().astype(bool)
    return m if m.mean() <= MAX_LOCAL_AREA else None


def trigger_localisation(
    model: nn.Module, x_triggered: torch.Tensor, trigger, ig_steps: int = 16
) -> float | None:
    """Mean trigger-localisation score (Integrated Gradients, predicted class) of ``model`` on
    triggered images ``(N, C, H, W)`` in [0, 1]; None for a non-local trigger (:func:`local_mask`)."""
    mask = local_mask(trigger)
    if mask is None or len(x_triggered) == 0:
        return None
    attr = attribute(model, x_triggered, "integrated-gradients", ig_steps=ig_steps)
    return float(localisation(attr, mask).mean())
