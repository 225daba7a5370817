import numpy as np
import pytest
import torch

from dfkd_viz.analysis.embedding import EmbeddingMap, ReferenceSet, reference_set
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
    ref = _ref()
    m = EmbeddingMap(ref, k=5)
    with pytest.raises(RuntimeError):
        m.place(ref.features[:2])
    m.coords = np.concatenate([np.zeros((40, 2)), np.full((20, 2), 10.0)]).astype(np.float32)
    near_id, near_ood = np.zeros((1, 8), np.float32), np.full((1, 8), 6.0, np.float32)
    assert np.allclose(m.place(near_id), 0.0) and np.allclose(m.place(near_ood), 10.0)
    assert m.ood_likeness(near_id)[0] == 0.0 and m.ood_likeness(near_ood)[0] == 1.0


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
