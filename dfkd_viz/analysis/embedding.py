"""Embeddings: where synthetic samples fall against real ID and real OOD data (``docs/architecture.md``).

Features are the teacher's penultimate activations. A **reference set** of real images — up to
2,000 ID test images and 2,000 images of the OOD domain's test split — is embedded once per run
with UMAP (umap-learn, fitted on precomputed Euclidean distances, ~3× faster than its own
neighbour search at a few thousand points); synthetic samples are then **placed** into that fixed
map with the fitted reducer's ``transform`` (on their distances to the reference points), which
never moves the reference points: every snapshot lands in the same map, and points keep their
places as training goes on. Measured on 2 cores (``benchmarks/embedding_bench.py``): the fit of
~4,000 points takes seconds once numba has compiled, a ``transform`` of 512 samples a fraction of
a second.

The **OOD-likeness** of a synthetic sample is the share of OOD points among its ``k`` nearest real
reference points in feature space; the run records, per snapshot, the share of synthetic samples
whose neighbourhood is mostly OOD (> 0.5) — the NTL trap made visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfkd_viz.data.datasets import ImageDataset


@dataclass
class ReferenceSet:
    """Real reference points of a map.

    Attributes:
        features: ``(N, D)`` float32 teacher penultimate features.
        images: ``(N, C, H, W)`` uint8 images.
        labels: ``(N,)`` int64 true labels.
        source: ``(N,)`` ``"id"`` or ``"ood"``.
    """

    features: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray


@torch.no_grad()
def teacher_features(
    teacher: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024
) -> np.ndarray:
    """Penultimate features ``(N, D)`` float32 of images ``(N, C, H, W)`` (pixel units)."""
    teacher.eval()
    device = next(teacher.parameters()).device
    out = [
        teacher.penultimate(x[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, teacher.feature_dim), np.float32)


def reference_set(
    teacher: torch.nn.Module,
    id_test: ImageDataset,
    ood_test: ImageDataset | None,
    n_id: int = 2000,
    n_ood: int = 2000,
    seed: int = 0,
) -> ReferenceSet:
    """Up to ``n_id`` ID and ``n_ood`` OOD test images (seeded choice) with their features."""
    rng = np.random.default_rng(seed)
    parts = [("id", id_test, n_id)] + ([("ood", ood_test, n_ood)] if ood_test is not None else [])
    feats, imgs, labels, source = [], [], [], []
    for name, ds, n in parts:
        idx = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
        x = ds.x[torch.from_numpy(idx)]
        feats.append(teacher_features(teacher, x))
        imgs.append((x.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        labels.append(ds.y[torch.from_numpy(idx)].numpy())
        source.append(np.full(len(idx), name))
    return ReferenceSet(
        np.concatenate(feats), np.concatenate(imgs), np.concatenate(labels), np.concatenate(source)
    )


class EmbeddingMap:
    """A 2-D map of a reference set, and the placement of new points into it.

    Args:
        ref: the real reference points.
        k: neighbours used to place points and to measure OOD-likeness.
        n_neighbors, min_dist, n_epochs, seed: UMAP settings.
    """

    def __init__(
        self,
        ref: ReferenceSet,
        k: int = 10,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        n_epochs: int = 200,
        seed: int = 0,
    ) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.ref = ref
        self.k = min(k, len(ref.features))
        self.umap_kw = {
            "n_neighbors": n_neighbors,
            "min_dist": min_dist,
            "n_epochs": n_epochs,
            "random_state": seed,
        }
        self._nn = NearestNeighbors(n_neighbors=self.k).fit(ref.features)
        self.coords: np.ndarray | None = None
        self._reducer = None

    def fit(self) -> np.ndarray:
        """Embed the reference set with UMAP; returns ``(N, 2)`` float32 coordinates.
        (The first call in a process includes ~15–20 s of numba compilation.)"""
        import warnings

        from sklearn.metrics import pairwise_distances

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap

            dist = pairwise_distances(self.ref.features, metric="euclidean")
            reducer = umap.UMAP(metric="precomputed", **self.umap_kw)
            self.coords = reducer.fit_transform(dist).astype(np.float32)
        self._reducer = reducer
        return self.coords

    def _neighbours(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._nn.kneighbors(np.asarray(feats, dtype=np.float32))

    def place(self, feats: np.ndarray) -> np.ndarray:
        """Map positions ``(n, 2)`` float32 of new points with features ``(n, D)``: UMAP's
        ``transform`` into the fitted map (the reference points do not move).

        Raises:
            RuntimeError: :meth:`fit` has not run.
        """
        if self._reducer is None:
            raise RuntimeError("fit the map before placing points")
        import warnings

        from sklearn.metrics import pairwise_distances

        feats = np.asarray(feats, dtype=np.float32)
        if len(feats) == 0:
            return np.zeros((0, 2), np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dist = pairwise_distances(feats, self.ref.features, metric="euclidean")
            return self._reducer.transform(dist).astype(np.float32)

    def ood_likeness(self, feats: np.ndarray) -> np.ndarray:
        """Share of OOD points among each new point's ``k`` nearest reference points, ``(n,)`` in [0, 1]."""
        _, idx = self._neighbours(feats)
        return (self.ref.source[idx] == "ood").mean(1)
