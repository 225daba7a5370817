"""Teacher training recipes: ``clean``, ``ntl`` (target-specified and source-only), ``cuti`` and
``backdoor``, registered in :data:`RECIPES` by kind.

Every recipe takes a :class:`~dfkd_viz.teachers.zoo.TeacherSpec` and returns a trained classifier
(eval mode). Common loop: Adam, cosine learning-rate decay to 0, batches of ``spec.batch_size``,
seeded (``spec.seed``) shuffling and initialisation.

- **clean**: cross-entropy on the ID training split.
- **ntl** (Wang et al., ICLR 2022; ``conditionWang/NTL:src/ntl/ntl_digit.py``,
  ``tmllab/NTLBench:pretrain/trainer_NTL.py``)::

      L = CE(x_id) − min(α·CE(x_ood), 1) · min(β·MMD(f(x_id), f(x_ood)), 1),   α = β = 0.1

  (NTL writes KL(p‖one-hot), which equals the cross-entropy), f = penultimate features, MMD the
  multi-kernel Gaussian MMD of :func:`mmd`. Target-specified NTL takes OOD images from another
  domain (``mnist-m``, ``digits``...); source-only NTL from a shift of the ID images themselves
  (``watermark``, the ownership-verification variant). ID and OOD images go through the network
  as **one concatenated batch**, so BatchNorm's running statistics see both domains as they will
  be mixed at test time (separate passes broke eval-mode accuracy in a prototype here).
- **cuti** (CUTI-domain, Wang et al., CVPR 2023; ``tmllab/NTLBench:pretrain/trainer_CUTI.py``)::

      L = CE(x_id) − min(α·CE(x_ood), 1),   α = 0.1

  alternating plain steps with steps where the OOD block-1 features are re-styled with the
  per-sample channel statistics of ID features (AdaIN) before the rest of the network.
- **backdoor**: cross-entropy on a training split poisoned by :func:`dfkd_viz.data.poison`
  (``spec.trigger``, rate ``spec.poison_rate`` = 0.1, target ``spec.target`` = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from dfkd_viz.data import load_dataset, load_domain, make_trigger, poison
from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.models import Classifier, create_model
from dfkd_viz.registry import Registry

if TYPE_CHECKING:
    from dfkd_viz.teachers.zoo import TeacherSpec

Progress = Callable[[float, str], None]
RECIPES: Registry[Callable[[TeacherSpec, Progress | None], Classifier]] = Registry("teacher recipe")


def mmd(a: torch.Tensor, b: torch.Tensor, kernels: int = 5, mul: float = 2.0) -> torch.Tensor:
    """Multi-kernel Gaussian MMD between feature batches ``a`` ``(n, D)`` and ``b`` ``(m, D)``.

    Bandwidths ``bw·mul^i`` for ``i < kernels``, ``bw`` = mean pairwise squared distance (detached)
    divided by ``mul^(kernels // 2)`` (``conditionWang/NTL``, after DAN). Returns a scalar ≥ ~0.
    """
    n = a.shape[0]
    total = torch.cat([a, b])
    d2 = torch.cdist(total, total).pow(2)
    m = total.shape[0]
    bw = d2.detach().sum() / max(m * m - m, 1) / (mul ** (kernels // 2))
    bw = bw.clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (bw * mul**i)) for i in range(kernels))
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def _model_for(spec: TeacherSpec, ds: ImageDataset) -> Classifier:
    return create_model(
        spec.arch, num_classes=ds.num_classes, in_shape=ds.shape, mean=ds.mean, std=ds.std
    )


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over ``range(n)`` (full batches only)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def _shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero fill), one shift per batch."""
    if max_shift <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    return torch.roll(F.pad(x, [max_shift] * 4), (dy, dx), (2, 3))[
        ..., max_shift : max_shift + x.shape[2], max_shift : max_shift + x.shape[3]
    ]


def _fit(
    model: Classifier,
    spec: TeacherSpec,
    n_id: int,
    step_loss: Callable[[int, torch.Tensor], torch.Tensor],
    progress: Progress | None,
    gen: torch.Generator,
) -> Classifier:
    """Run ``spec.epochs`` epochs over ``n_id`` ID samples; ``step_loss(step, idx)`` gives the loss."""
    steps_per_epoch = max(1, n_id // spec.batch_size)
    total = spec.epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
    )
    model.train()
    batches = _batches(n_id, spec.batch_size, gen)
    report_every = max(1, total // 50)
    for step in range(total):
        loss = step_loss(step, next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step % report_every == 0 or step == total - 1):
            progress(
                (step + 1) / total,
                f"epoch {step // steps_per_epoch + 1}/{spec.epochs} loss {loss.item():.3f}",
            )
    return model.eval()


@RECIPES.register("clean")
def train_clean(spec: TeacherSpec, progress: Progress | None = None) -> Classifier:
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    ds = load_dataset(spec.dataset, "train")
    model = _model_for(spec, ds)

    def step_loss(step, idx):
        x = _shift_augment(ds.x[idx], gen, spec.augment_shift)
        return F.cross_entropy(model(x), ds.y[idx], label_smoothing=spec.label_smoothing)

    return _fit(model, spec, len(ds), step_loss, progress, gen)


@RECIPES.register("backdoor")
def train_backdoor(spec: TeacherSpec, progress: Progress | None = None) -> Classifier:
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    clean = load_dataset(spec.dataset, "train")
    ds = poison(
        clean, make_trigger(spec.trigger, clean.shape), spec.poison_rate, spec.target
    ).dataset
    model = _model_for(spec, ds)

    def step_loss(step, idx):
        return F.cross_entropy(model(ds.x[idx]), ds.y[idx], label_smoothing=spec.label_smoothing)

    return _fit(model, spec, len(ds), step_loss, progress, gen)


def _ood_setup(spec: TeacherSpec):
    """Seeded generator, ID and OOD training splits, endless OOD batches and a fresh model."""
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    ds_id = load_dataset(spec.dataset, "train")
    ds_ood = load_domain(spec.ood_domain, spec.dataset, "train")
    return gen, ds_id, ds_ood, _batches(len(ds_ood), spec.batch_size, gen), _model_for(spec, ds_id)


@RECIPES.register("ntl")
def train_ntl(spec: TeacherSpec, progress: Progress | None = None) -> Classifier:
    gen, ds_id, ds_ood, ood_batches, model = _ood_setup(spec)
    b = spec.batch_size

    def step_loss(step, idx):
        j = next(ood_batches)
        feats = model.forward_features(torch.cat([ds_id.x[idx], ds_ood.x[j]]))
        ce_id = F.cross_entropy(feats.logits[:b], ds_id.y[idx])
        ce_ood = F.cross_entropy(feats.logits[b:], ds_ood.y[j])
        dist = mmd(feats.penultimate[:b], feats.penultimate[b:])
        return ce_id - torch.clamp(spec.ntl_alpha * ce_ood, max=1.0) * torch.clamp(
            spec.ntl_beta * dist, max=1.0
        )

    return _fit(model, spec, len(ds_id), step_loss, progress, gen)


def _adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Re-style ``content`` ``(B, C, H, W)`` with the per-sample channel mean/std of ``style``."""
    cm, cs = content.mean((2, 3), keepdim=True), content.std((2, 3), keepdim=True) + eps
    sm, ss = style.mean((2, 3), keepdim=True), style.std((2, 3), keepdim=True) + eps
    return (content - cm) / cs * ss + sm


@RECIPES.register("cuti")
def train_cuti(spec: TeacherSpec, progress: Progress | None = None) -> Classifier:
    gen, ds_id, ds_ood, ood_batches, model = _ood_setup(spec)
    b = spec.batch_size

    def step_loss(step, idx):
        j = next(ood_batches)
        x = torch.cat([ds_id.x[idx], ds_ood.x[j]])
        if step % 2 == 0:
            logits = model(x)
        else:  # CUTI: OOD block-1 features carry ID style, the network must still reject them
            h = model.stages[0](model.normalize(x))
            h = torch.cat([h[:b], _adain(h[b:], h[:b].detach())])
            logits = model.forward_from(h, 0).logits
        ce_id = F.cross_entropy(logits[:b], ds_id.y[idx])
        ce_ood = F.cross_entropy(logits[b:], ds_ood.y[j])
        return ce_id - torch.clamp(spec.ntl_alpha * ce_ood, max=1.0)

    return _fit(model, spec, len(ds_id), step_loss, progress, gen)
