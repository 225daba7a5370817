import numpy as np
import pytest
import torch

from dfkd_viz.analysis.embedding import EmbeddingMap, KnnPlacer, ReferenceSet, reference_set
from dfkd_viz.data import load_dataset, load_domain
from dfkd_viz.models import create_model


def _ref(n_id=40, n_ood=20, d=8, seed=0):
    rng = np.random.default_rng(seed)
    feats = np.concatenate([rng.normal(0, 1, (n_id, d)), rng.normal(6, 1, (n_ood, d))]).astype(
        np.float32
    )
    return ReferenceSet(
        feats,
        np.zeros((n_id + n_ood, 1, 28, 28), np.uint8),
        rng.integers(0, 10, n_id + n_ood),
        np.array(["id"] * n_id + ["ood"] * n_ood),
    )


def test_placement_and_ood_likeness_follow_the_nearest_real_points():
    ref = _ref(n_id=60, n_ood=40)
    m = EmbeddingMap(ref, k=5, n_neighbors=10, n_epochs=50)
    with pytest.raises(RuntimeError):
        m.place(ref.features[:2])
    coords = m.fit()
    assert coords.shape == (100, 2) and coords.dtype == np.float32
    c_id, c_ood = coords[:60].mean(0), coords[60:].mean(0)
    rng = np.random.default_rng(1)
    new_id = rng.normal(0, 1, (5, 8)).astype(np.float32)
    new_ood = rng.normal(6, 1, (5, 8)).astype(np.float32)
    p_id, p_ood = m.place(new_id), m.place(new_ood)
    assert p_id.shape == (5, 2)
    # transformed points land in their own cluster of the fixed map, which does not move
    assert (np.linalg.norm(p_id - c_id, axis=1) < np.linalg.norm(p_id - c_ood, axis=1)).all()
    assert (np.linalg.norm(p_ood - c_ood, axis=1) < np.linalg.norm(p_ood - c_id, axis=1)).all()
    assert np.array_equal(m.coords, coords) and m.place(new_id[:0]).shape == (0, 2)
    assert (m.ood_likeness(new_id) == 0.0).all() and (m.ood_likeness(new_ood) == 1.0).all()
    # the k-NN placement runs use (no UMAP in the worker) puts them in the same clusters
    knn = KnnPlacer(ref.features, coords, ref.source, k=10, k_ood=5)
    k_id, k_ood = knn.place(new_id), knn.place(new_ood)
    assert (np.linalg.norm(k_id - c_id, axis=1) < np.linalg.norm(k_id - c_ood, axis=1)).all()
    assert (np.linalg.norm(k_ood - c_ood, axis=1) < np.linalg.norm(k_ood - c_id, axis=1)).all()
    assert (knn.ood_likeness(new_id) == m.ood_likeness(new_id)).all()


def test_reference_set_from_real_data():
    torch.manual_seed(0)
    teacher = create_model("lenet5x2").eval()
    ref = reference_set(
        teacher,
        load_dataset("mnist", "test"),
        load_domain("digits", "mnist", "test"),
        n_id=50,
        n_ood=30,
    )
    assert ref.features.shape == (80, teacher.feature_dim) and ref.images.dtype == np.uint8
    assert (ref.source == "ood").sum() == 30 and ref.labels.shape == (80,)
