"""Reference maps: the k-NN placement (UMAP's out-of-sample start), the map store, the map job
through the jobs layer, and the worker placing snapshots once the teacher's map appears."""

from __future__ import annotations

import json
import types
import zipfile

import numpy as np
import pytest
from conftest import wait_until

from dfkd_viz.analysis.embedding import (
    KnnPlacer,
    knn_place,
    membership_weights,
    nearest,
    smooth_knn_dist,
)
from dfkd_viz.distill.snapshot import Snapshot


def _points(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    feats = np.concatenate([rng.normal(0, 1, (n // 2, d)), rng.normal(5, 1, (n - n // 2, d))])
    coords = np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(10, 1, (n - n // 2, 2))])
    source = np.array(["id"] * (n // 2) + ["ood"] * (n - n // 2))
    return feats.astype(np.float32), coords.astype(np.float32), source


def test_sigma_search_on_a_hand_case():
    # k = 4: ρ = 0.5 and the weights 1, q, q², q³ (q = exp(−0.5 / σ)) must sum to log2 4 = 2,
    # so q + q² + q³ = 1: q = 0.543689 (the inverse of the tribonacci constant)
    d = np.array([[0.5, 1.0, 1.5, 2.0]])
    sigma, rho = smooth_knn_dist(d)
    q = 0.5436890126920764
    assert rho[0] == 0.5
    assert sigma[0] == pytest.approx(-0.5 / np.log(q), rel=1e-4)
    w = membership_weights(d)
    assert w[0, 0] == 1.0 and w.sum() == pytest.approx(2.0, abs=1e-4)
    # many rows at once, every row sums to log2 k (k = 15)
    rng = np.random.default_rng(0)
    many = np.sort(rng.random((50, 15)) * 3 + 0.1, axis=1)
    assert np.allclose(membership_weights(many).sum(1), np.log2(15), atol=1e-4)
    # k = 2 with a tie: no σ gives log2 2 = 1 (the sum is 2): σ stops at its floor
    sigma, _ = smooth_knn_dist(np.array([[1.0, 1.0]]))
    assert sigma[0] == pytest.approx(1e-3)


def test_nearest_matches_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    feats, _, _ = _points()
    q = np.random.default_rng(3).normal(2, 2, (40, feats.shape[1])).astype(np.float32)
    d, idx = nearest(q, feats, 15)
    d2, idx2 = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(feats).kneighbors(q)
    assert (idx == idx2).all() and np.allclose(d, d2, atol=1e-4)


def test_a_reference_point_lands_on_itself_and_new_points_in_their_cluster():
    feats, coords, source = _points()
    p = KnnPlacer(feats, coords, source, k=15, k_ood=10)
    chosen = [0, 7, 151, 299]
    xy, like = p.place_and_score(feats[chosen])
    assert np.array_equal(xy, coords[chosen])
    assert list(like) == [0.0, 0.0, 1.0, 1.0]
    rng = np.random.default_rng(1)
    new_id = rng.normal(0, 1, (5, feats.shape[1])).astype(np.float32)
    new_ood = rng.normal(5, 1, (5, feats.shape[1])).astype(np.float32)
    assert (np.linalg.norm(p.place(new_id), axis=1) < 4).all()
    assert (np.linalg.norm(p.place(new_ood) - 10, axis=1) < 4).all()
    assert p.place(new_id[:0]).shape == (0, 2)
    # the weighted mean by hand (k = 3): weights 1, q, q with 1 + 2q = log2 3, whatever the gap
    d = np.array([[0.1, 5.0, 5.0]])
    ref_xy = np.array([[0, 0], [9, 9], [9, -9]], np.float32)
    out = knn_place(d, np.array([[0, 1, 2]]), ref_xy)
    q = (np.log2(3) - 1) / 2
    assert out[0] == pytest.approx([18 * q / (1 + 2 * q), 0.0], abs=1e-4)


def _map_for(digest_domain, n=120, d=168, seed=0):
    from dfkd_viz.teachers.maps import ReferenceMap

    feats, coords, source = _points(n, d, seed)
    return ReferenceMap(
        feats,
        coords,
        np.arange(n) % 10,
        source,
        [bytes([137, 80, 78, 71, i % 256]) for i in range(n)],
        {"domain": digest_domain[1], "digest": digest_domain[0]},
    )


def test_map_store_roundtrip_without_pickle(home):
    from dfkd_viz.teachers.maps import load_map_file, map_file, map_key, save_map

    a, b = map_file("ab" * 32, "mnist-m"), map_file("ab" * 32, None)
    assert a != b and a.name.startswith("abababab") and "mnist-m" in a.name
    assert map_key("ab" * 32, "my data/../x").count("/") == 0
    m = _map_for(("ab" * 32, "mnist-m"))
    save_map(a, m)
    with np.load(a, allow_pickle=False) as z:  # plain arrays only: no object dtype anywhere
        assert all(z[k].dtype != object for k in z.files)
        assert z["source"].dtype.kind == "U"
    back = load_map_file(a)
    assert np.array_equal(back.coords, m.coords) and back.png == m.png
    assert back.meta["domain"] == "mnist-m" and list(back.source[:2]) == ["id", "id"]
    # a file with an object array is refused, not unpickled
    bad = a.with_name("bad.npz")
    np.savez(bad, features=np.array([{"x": 1}], dtype=object))
    assert load_map_file(bad) is None
    assert load_map_file(a.with_name("missing.npz")) is None
    with zipfile.ZipFile(a.with_name("junk.npz"), "w") as z:
        z.writestr("coords.npy", b"not an array")
    assert load_map_file(a.with_name("junk.npz")) is None


def test_worker_places_waiting_snapshots_once_the_map_appears(trained_home, monkeypatch):
    from dfkd_viz.runs.store import RunReader, RunWriter
    from dfkd_viz.runs.worker import EmbeddingRecorder
    from dfkd_viz.teachers import maps

    started = []
    monkeypatch.setattr(maps, "start_map", lambda *a: started.append(a) or 4242)
    run_dir = trained_home / "runs" / "r1"
    w = RunWriter(run_dir)
    rec = EmbeddingRecorder(w, "mnist-clean", "mnist-m")
    rec.MAX_PENDING = 3
    digest = maps.teacher_digest("mnist-clean")
    assert started == [("mnist-clean", "mnist-m", digest)]
    engine = types.SimpleNamespace(wall_s=1.0)
    rng = np.random.default_rng(0)

    def snap(step):
        n = 6
        return Snapshot(
            step=step,
            images=np.zeros((n, 1, 28, 28), np.uint8),
            teacher_label=np.zeros(n, int),
            confidence=np.ones(n),
            features=rng.normal(5, 1, (n, 168)).astype(np.float32),
        )

    for step in (1, 2, 3, 4):  # the map is not there yet: kept (at most 3), nothing placed
        w.add_snapshot(snap(step), 1.0)
        rec.on_samples(engine, snap(step))
    assert sorted(rec.pending) == [2, 3, 4] and rec.dropped == 1
    with RunReader(run_dir) as r:
        assert r.reference().empty and r.embedded_steps() == []
    m = _map_for((digest, "mnist-m"))
    maps.save_map(maps.map_file(digest, "mnist-m"), m)
    w.add_snapshot(snap(5), 1.0)
    rec.on_samples(engine, snap(5))  # one stat finds the map: the waiting ones are placed too
    w.flush()
    with RunReader(run_dir) as r:
        assert len(r.reference()) == len(m.coords)
        assert r.embedded_steps() == [2, 3, 4, 5]
        assert r.samples(5)["emb_x"].notna().all()
        like = r.metrics(["ood_likeness"])
        assert sorted(like["step"]) == [2, 3, 4, 5] and (like["value"] == 1.0).all()
        assert any("in use" in e for e in r.events()["message"])
    assert rec.pending == {} and rec.placer is not None
    w.close()


def test_no_map_job_where_map_jobs_are_switched_off(trained_home, monkeypatch):
    """With ``DFKD_VIZ_MAP_JOBS=0`` (a Ray cell) and no map file, the recorder starts no job,
    keeps no features and does not wait; a map file already there is used."""
    from dfkd_viz.runs.store import RunReader, RunWriter
    from dfkd_viz.runs.worker import EmbeddingRecorder
    from dfkd_viz.teachers import maps

    monkeypatch.setenv(maps.MAP_JOBS_ENV, "0")
    assert not maps.map_jobs_allowed()
    assert maps.start_map("mnist-clean") is None  # nothing started
    w = RunWriter(trained_home / "runs" / "r2")
    rec = EmbeddingRecorder(w, "mnist-clean", "mnist-m")
    feats = np.zeros((4, 168), np.float32)
    snap = Snapshot(
        step=1,
        images=np.zeros((4, 1, 28, 28), np.uint8),
        teacher_label=np.zeros(4, int),
        confidence=np.ones(4),
        features=feats,
    )
    rec.on_samples(types.SimpleNamespace(wall_s=1.0), snap)
    assert rec.path is None and rec.pending == {} and not rec.waiting()
    w.flush()
    with RunReader(trained_home / "runs" / "r2") as r:
        assert any("DFKD_VIZ_MAP_JOBS=0" in e for e in r.events()["message"])
    w.close()
    digest = maps.teacher_digest("mnist-clean")
    maps.save_map(maps.map_file(digest, "mnist-m"), _map_for((digest, "mnist-m")))
    w = RunWriter(trained_home / "runs" / "r3")
    rec = EmbeddingRecorder(w, "mnist-clean", "mnist-m")
    rec.on_samples(types.SimpleNamespace(wall_s=1.0), snap)
    assert rec.placer is not None
    w.close()


@pytest.mark.slow
def test_first_use_starts_one_map_job_whose_file_is_reused(trained_home, monkeypatch, tiny_run):
    """A run whose teacher has no map starts the job (jobs layer, low priority); the job writes a
    no-pickle file keyed by weights digest and OOD domain; the finished run's waiting snapshots
    are placed when it appears; a second teacher with the same weights reuses the file."""
    from dfkd_viz.jobs import wait_job
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.store import RunReader
    from dfkd_viz.teachers import maps
    from dfkd_viz.teachers.importer import import_teacher
    from dfkd_viz.teachers.zoo import weights_path

    monkeypatch.setenv("DFKD_VIZ_MAP_POINTS", "150")  # inherited by the worker and the job
    cfg = {**tiny_run, "embedding": True, "snapshot_every": 1}
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 2, **cfg})
    path = maps.map_path("mnist-clean")
    digest = maps.teacher_digest("mnist-clean")
    assert wait_until(lambda: maps.map_progress("mnist-clean") is not None, 60)
    rec = maps.map_progress("mnist-clean")
    assert rec.kind == "reference-map" and rec.job_id == path.stem
    assert manager.wait(run_id, timeout_s=300)["state"] == "finished"
    done = wait_job(maps._record(digest, "mnist-m"), 400)
    assert done.state == "done", done
    assert path.name.startswith(digest[:16]) and "-mnist-m-" in path.name
    with np.load(path, allow_pickle=False) as z:
        assert z["coords"].shape == (300, 2) and z["features"].shape[0] == 300
        assert json.loads(str(z["meta"]))["digest"] == digest
    # the worker waited for the map and placed the run's snapshots after the run ended
    with RunReader(manager.run_dir(run_id)) as r:
        assert wait_until(lambda: r.embedded_steps() == [1, 2], 60), r.events()
        assert len(r.reference()) == 300
    # the same weights under another id: the same map, no new job
    copy = import_teacher(
        weights_path("mnist-clean"), arch="lenet5x2", dataset="mnist", teacher_id="same-weights"
    )
    assert copy["ood_domain"] in ("mnist-m", None)
    assert maps.map_path("same-weights", "mnist-m") == path
    assert maps.start_map("same-weights", "mnist-m") is None
    assert maps.load_map("same-weights", "mnist-m") is not None
