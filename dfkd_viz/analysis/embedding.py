"""Embeddings: where synthetic samples fall against real ID and real OOD data (``docs/architecture.md``).

Features are the teacher's penultimate activations. A **reference set** of real images — up to
2,000 ID test images and 2,000 images of the OOD domain's test split — is embedded with UMAP
(umap-learn, fitted on precomputed Euclidean distances, ~3× faster than its own neighbour search at
a few thousand points) by :func:`fit_umap`. The map depends only on the teacher's weights and the
OOD domain, so it is fitted **once per teacher** in a background job
(:mod:`dfkd_viz.teachers.maps`) and reused by every run; a run never imports UMAP.

**Placing** synthetic samples into the fixed map (:class:`KnnPlacer`) follows the out-of-sample
initialisation UMAP's own ``transform`` starts from (McInnes, Healy & Melville 2018, *UMAP*, §3;
umap-learn ``umap/umap_.py``: ``smooth_knn_dist``, ``init_graph_transform``), written in numpy: a
new point's ``k`` nearest reference points in feature space (exact brute-force Euclidean search,
:func:`nearest`, the neighbours scikit-learn's brute-force ``NearestNeighbors`` finds), membership
weights ``exp(−max(d − ρ, 0) / σ)`` with σ found by a vectorised binary search so that the weights
sum to ``log2 k`` (:func:`smooth_knn_dist`), and the weighted mean of those neighbours' map
coordinates (:func:`knn_place`). Two differences from umap-learn's ``transform``, kept because they
place a point nearer its closest real neighbour: ρ is the distance to the nearest neighbour (UMAP's
fit-time local connectivity of 1; its ``transform`` uses ρ = 0) and the sum runs over all ``k``
neighbours (umap-learn skips the first, which at fit time is the point itself); and where UMAP
snaps a point to any neighbour of weight 1, here only a point at distance ~0 from a reference point
lands on it. UMAP's ``transform`` then refines its start with ``n_epochs / 3`` epochs of SGD; that
refinement, and the numba compilation it needs, is what a run no longer pays. The reference points
never move: every snapshot lands in the same map.

Agreement with UMAP's ``transform`` on real runs' synthetic features and the placement's cost are
measured by ``benchmarks/map_placement.py`` (``docs/results/performance.md``, "Placing synthetic
samples in the teacher's map").

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


MIN_K_DIST_SCALE = 1e-3
"""σ never falls below this share of the mean neighbour distance (umap-learn's floor)."""


def smooth_knn_dist(
    dists: np.ndarray, n_iter: int = 64, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """UMAP's smooth k-NN distances, vectorised over points.

    For each row of ``dists`` (``(n, k)``, ascending distances of a point to its ``k`` nearest
    reference points) ρ is the nearest distance and σ > 0 is found by binary search (at most
    ``n_iter`` halvings, to ``|Σ w − log2 k| < tol``) so that the membership weights
    ``w_j = exp(−max(d_j − ρ, 0) / σ)`` sum to ``log2 k`` over the ``k`` neighbours. Where no σ can
    reach it (``k ≤ 2``, or ties at ρ) σ stops at its floor, ``MIN_K_DIST_SCALE`` × the row's mean
    distance. Source: umap-learn ``umap/umap_.py: smooth_knn_dist`` (McInnes et al. 2018, §3).

    Returns:
        ``(sigma, rho)``, each ``(n,)`` float64.
    """
    d = np.asarray(dists, dtype=np.float64)
    n, k = d.shape
    rho = d[:, 0].copy() if k else np.zeros(n)
    excess = np.maximum(d - rho[:, None], 0.0)
    target = np.log2(k) if k else 0.0
    lo, hi, mid = np.zeros(n), np.full(n, np.inf), np.ones(n)
    todo = np.ones(n, dtype=bool)
    for _ in range(n_iter):
        psum = np.exp(-excess[todo] / mid[todo, None]).sum(1)
        close = np.abs(psum - target) < tol
        idx = np.flatnonzero(todo)
        big = psum > target  # too many neighbours count: σ smaller
        hi[idx[big]] = mid[idx[big]]
        lo[idx[~big]] = mid[idx[~big]]
        new = np.where(np.isinf(hi[idx]), mid[idx] * 2.0, (lo[idx] + hi[idx]) / 2.0)
        mid[idx[~close]] = new[~close]
        todo[idx[close]] = False
        if not todo.any():
            break
    floor = MIN_K_DIST_SCALE * (d.mean(1) if k else np.zeros(n))
    return np.maximum(mid, floor), rho


def membership_weights(dists: np.ndarray) -> np.ndarray:
    """UMAP's membership strengths ``exp(−max(d − ρ, 0) / σ)`` ``(n, k)`` of each point to its
    ``k`` nearest reference points (``dists`` ascending per row), ρ and σ from
    :func:`smooth_knn_dist`: the nearest neighbour has weight 1, each row sums to ``log2 k``
    where σ can reach it."""
    d = np.asarray(dists, dtype=np.float64)
    sigma, rho = smooth_knn_dist(d)
    return np.exp(-np.maximum(d - rho[:, None], 0.0) / sigma[:, None])


def knn_place(
    dists: np.ndarray, idx: np.ndarray, coords: np.ndarray, same_tol: float = 1e-6
) -> np.ndarray:
    """Map positions ``(n, 2)`` float32 of new points from their ``k`` nearest reference points:
    the :func:`membership_weights`-weighted mean of the neighbours' map coordinates ``coords[idx]``
    (umap-learn ``init_graph_transform``). A point whose nearest distance is ≤ ``same_tol`` × its
    mean neighbour distance is the reference point itself and lands exactly on it.

    Args:
        dists, idx: ``(n, k)`` ascending distances and indices of the nearest reference points.
        coords: ``(N, 2)`` map coordinates of the reference points.
    """
    if len(idx) == 0:
        return np.zeros((0, coords.shape[1]), np.float32)
    w = membership_weights(dists)
    out = (w[:, :, None] * coords[idx].astype(np.float64)).sum(1) / w.sum(1, keepdims=True)
    d = np.asarray(dists, dtype=np.float64)
    same = d[:, 0] <= same_tol * np.maximum(d.mean(1), 1e-12)
    out[same] = coords[idx[same, 0]]
    return out.astype(np.float32)


def nearest(
    feats: np.ndarray, ref: np.ndarray, k: int, ref_sq: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean ``k`` nearest reference points of each new point, brute force in numpy:
    ``(dists, idx)`` ``(n, k)``, ascending per row (the neighbours scikit-learn's
    ``NearestNeighbors(algorithm="brute")`` finds, without its 1–3 s import in a worker).
    ``k + 8`` candidates come from one float32 matrix product (``ref_sq``: the reference rows'
    squared norms, precomputed); their distances are then recomputed exactly in float64 and the
    ``k`` nearest kept, so a point equal to a reference point is at distance 0 exactly."""
    x = np.asarray(feats, dtype=np.float32)
    r = np.asarray(ref, dtype=np.float32)
    if ref_sq is None:
        ref_sq = (r * r).sum(1)
    n_ref = len(r)
    k = min(k, n_ref)
    m = min(k + 8, n_ref)
    d2 = ref_sq[None, :] - 2.0 * (x @ r.T)  # + |x|², the same for a whole row
    if m < n_ref:
        cand = np.argpartition(d2, m - 1, axis=1)[:, :m]
    else:
        cand = np.tile(np.arange(n_ref), (len(x), 1))
    diff = x[:, None, :].astype(np.float64) - r[cand].astype(np.float64)
    dist = np.sqrt((diff * diff).sum(2))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)


class KnnPlacer:
    """Places new points into a fixed map of reference points without UMAP (no numba, no fit, no
    scikit-learn import): one exact k-NN query in feature space per batch (:func:`nearest`), then
    :func:`knn_place`; also the OOD-likeness from the same neighbours.

    Args:
        features: ``(N, D)`` reference features (the map's input).
        coords: ``(N, 2)`` the reference points' map coordinates.
        source: ``(N,)`` ``"id"`` / ``"ood"`` (for the OOD-likeness).
        k: neighbours that place a point (UMAP's ``n_neighbors`` of the map).
        k_ood: neighbours that measure OOD-likeness.
    """

    def __init__(
        self,
        features: np.ndarray,
        coords: np.ndarray,
        source: np.ndarray | None = None,
        k: int = 15,
        k_ood: int = 10,
    ) -> None:
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.coords = np.asarray(coords, dtype=np.float32)
        self.source = None if source is None else np.asarray(source)
        n = len(self.features)
        self.k, self.k_ood = min(k, n), min(k_ood, n)
        self._sq = (self.features * self.features).sum(1)

    def neighbours(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dists, idx)`` ``(n, max(k, k_ood))`` of new points' nearest reference points."""
        return nearest(feats, self.features, max(self.k, self.k_ood), self._sq)

    def place_and_score(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(coords (n, 2) float32, OOD-likeness (n,) or None without sources)`` from one
        neighbour query."""
        feats = np.asarray(feats, dtype=np.float32)
        if len(feats) == 0:
            return np.zeros((0, 2), np.float32), np.zeros(0)
        d, idx = self.neighbours(feats)
        xy = knn_place(d[:, : self.k], idx[:, : self.k], self.coords)
        like = None
        if self.source is not None:
            like = (self.source[idx[:, : self.k_ood]] == "ood").mean(1)
        return xy, like

    def place(self, feats: np.ndarray) -> np.ndarray:
        """Map positions ``(n, 2)`` float32 of new points with features ``(n, D)``."""
        return self.place_and_score(feats)[0]

    def ood_likeness(self, feats: np.ndarray) -> np.ndarray:
        """Share of OOD points among each point's ``k_ood`` nearest reference points, ``(n,)``."""
        _, idx = self.neighbours(feats)
        return (self.source[idx[:, : self.k_ood]] == "ood").mean(1)


class _EpochSink:
    """A file for tqdm that turns umap-learn's epoch bar (``{n}/{total}``) into calls of
    ``progress(done, total)``."""

    def __init__(self, progress) -> None:
        self.progress = progress

    def write(self, text: str) -> None:
        import re

        m = re.search(r"(\d+)/(\d+)", text)
        if m and int(m.group(2)) > 0:
            self.progress(int(m.group(1)), int(m.group(2)))

    def flush(self) -> None:
        pass


def fit_umap(
    features: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int = 200,
    seed: int = 0,
    epoch_progress=None,
):
    """Fit UMAP on ``(N, D)`` features (precomputed Euclidean distances, fixed ``seed``); returns
    the fitted ``umap.UMAP`` (its ``embedding_`` is the ``(N, 2)`` map). The first fit in a process
    includes ~15–20 s of numba compilation. ``epoch_progress(done, total)`` is called as the
    layout's epochs go."""
    import warnings

    from sklearn.metrics import pairwise_distances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap

        dist = pairwise_distances(np.asarray(features, dtype=np.float32), metric="euclidean")
        kw = {}
        if epoch_progress is not None:
            kw["tqdm_kwds"] = {
                "disable": False,
                "file": _EpochSink(epoch_progress),
                "bar_format": "{n}/{total}\n",
                "mininterval": 0.5,
            }
        reducer = umap.UMAP(
            metric="precomputed",
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            n_epochs=n_epochs,
            random_state=seed,
            **kw,
        )
        reducer.fit(dist)
    return reducer


class EmbeddingMap:
    """A UMAP map of a reference set with UMAP's own ``transform`` for new points: the reference
    implementation that :class:`KnnPlacer` is measured against (``benchmarks/map_placement.py``).
    Runs do not use it: they place points with :class:`KnnPlacer` into a map fitted once per
    teacher (:mod:`dfkd_viz.teachers.maps`).

    Args:
        ref: the real reference points.
        k: neighbours used to measure OOD-likeness.
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
            "seed": seed,
        }
        self._nn = NearestNeighbors(n_neighbors=self.k).fit(ref.features)
        self.coords: np.ndarray | None = None
        self._reducer = None

    def fit(self) -> np.ndarray:
        """Embed the reference set with UMAP (:func:`fit_umap`); returns ``(N, 2)`` float32."""
        self._reducer = fit_umap(self.ref.features, **self.umap_kw)
        self.coords = np.asarray(self._reducer.embedding_, dtype=np.float32)
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
