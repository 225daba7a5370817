"""Reference maps: the UMAP map of a teacher's feature space, computed once per teacher.

The map of real ID and OOD test points in a teacher's penultimate feature space depends only on
the teacher's **weights and input normalisation** (their SHA-256 digest, :func:`weights_digest`:
an imported copy of a zoo teacher shares its map) and the **OOD domain** (plus the sample sizes, the seed, the UMAP
settings and :data:`MAP_VERSION`, all part of the key). It is fitted in a background job
(:mod:`dfkd_viz.jobs`) and stored under ``DFKD_VIZ_HOME/maps/`` as ``<key>.npz`` — plain arrays
written with :func:`numpy.savez` through an atomic rename and read with
``np.load(allow_pickle=False)``:

=============== ================= ==========================================================
array           dtype, shape      what
=============== ================= ==========================================================
``features``    float32 (N, D)    the teacher's penultimate features of the real points
``coords``      float32 (N, 2)    their UMAP coordinates
``labels``      int64 (N,)        true labels
``source``      <U3 (N,)          ``"id"`` or ``"ood"`` (fixed-width unicode, no objects)
``png_data``    uint8 (B,)        the images as PNG files, one after the other
``png_offsets`` int64 (N + 1,)    where image i is: ``png_data[off[i]:off[i + 1]]``
``meta``        <U… ()            JSON: teacher, digest, domain, sizes, seed, UMAP settings,
                                  version, fit seconds
=============== ================= ==========================================================

Every run reuses the map (the worker places its snapshots with
:class:`~dfkd_viz.analysis.embedding.KnnPlacer`, never fits), and so do the Embeddings page and the
HTML report through the run store. The job is started when a teacher is trained (the training job
and ``dfkd-viz teachers train``), imported, or on first use (a run whose map is missing); it lowers
its own priority (``os.nice(19)``) and runs single-threaded, so on two cores it leaves a running
distillation almost all the CPU (measured in ``docs/results/performance.md``).

    python -m dfkd_viz.teachers.maps TEACHER_ID [DOMAIN|none] [DIGEST]

Progress: ``DFKD_VIZ_HOME/maps/.<key>.progress.json`` (a :class:`~dfkd_viz.jobs.JobProgress`),
read by :func:`map_progress`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.jobs import JobProgress, read_progress, report, start_job
from dfkd_viz.paths import home
from dfkd_viz.util.io import file_lock

KIND = "reference-map"
MAP_VERSION = 1
"""Bump when the map's recipe changes: older files are no longer found."""
N_ID = 2000
N_OOD = 2000
"""Real test points per side of a map (``DFKD_VIZ_MAP_POINTS=N`` sets both, for tests)."""
MAP_SEED = 0
UMAP_SETTINGS = {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200}
ARRAYS = ("features", "coords", "labels", "source", "png_data", "png_offsets", "meta")


MAP_JOBS_ENV = "DFKD_VIZ_MAP_JOBS"
"""Set to ``0`` where no map job may start (a Ray cell: a detached job would outlive the cell's
temporary home); a run there uses the map file shipped with its teacher, or has no map."""


def map_jobs_allowed() -> bool:
    """False when :data:`MAP_JOBS_ENV` is ``0`` in the environment."""
    return os.environ.get(MAP_JOBS_ENV, "1").strip() != "0"


def map_points() -> tuple[int, int]:
    """``(ID, OOD)`` real points of a map: :data:`N_ID`, :data:`N_OOD`, or both set by the
    ``DFKD_VIZ_MAP_POINTS`` environment variable (tests use a few hundred)."""
    env = os.environ.get("DFKD_VIZ_MAP_POINTS")
    if env and env.isdigit() and int(env) > 0:
        return int(env), int(env)
    return N_ID, N_OOD


def maps_dir() -> Path:
    """``DFKD_VIZ_HOME/maps``: one ``<key>.npz`` per (weights digest, OOD domain)."""
    p = home() / "maps"
    p.mkdir(parents=True, exist_ok=True)
    return p


def weights_digest(model) -> str:
    """SHA-256 over the state dict's names, shapes, dtypes and bytes (sorted by name), then the
    input normalisation (the classifiers' non-persistent ``mean`` / ``std`` buffers, which change
    the features but are not in the state dict): equal for equal teachers whatever file they came
    from. Without normalisation buffers it equals :func:`dfkd_viz.audit.scores.weights_digest`."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    for name in ("mean", "std"):
        t = getattr(model, name, None)
        if isinstance(t, torch.Tensor):
            h.update(f"|{name}|".encode() + t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def teacher_digest(teacher_id: str) -> str:
    """The weights digest of a trained teacher, cached per process by its weights file's path,
    size and modification time (a page asks every second; the teacher loads once).

    Raises:
        UnknownNameError, DfkdVizError: unknown or untrained teacher, weights that do not load.
    """
    from dfkd_viz.teachers.zoo import load_teacher, weights_path

    p = weights_path(teacher_id)
    try:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _DIGESTS:
        return _DIGESTS[key]
    model, _ = load_teacher(teacher_id)
    digest = weights_digest(model)
    if key is not None:
        _DIGESTS[key] = digest
    return digest


def teacher_domain(teacher_id: str, domain: str | None = None) -> str | None:
    """The OOD domain of a map: ``domain`` when given (``"none"``: ID points only), else the
    teacher card's ``ood_domain``."""
    if domain is not None:
        return None if domain == "none" else domain
    from dfkd_viz.teachers.zoo import card

    return card(teacher_id).get("ood_domain")


def map_key(digest: str, domain: str | None) -> str:
    """The file stem of a map: the digest's start, the domain, and a hash of everything the map
    depends on (digest, domain, sizes, seed, UMAP settings, version)."""
    dom = domain or "none"
    recipe = json.dumps([digest, dom, *map_points(), MAP_SEED, UMAP_SETTINGS, MAP_VERSION])
    h = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", dom)[:40]
    return f"{digest[:16]}-{safe}-{h}"


def map_file(digest: str, domain: str | None) -> Path:
    """Where the map of weights ``digest`` and ``domain`` is (or will be) stored."""
    return maps_dir() / f"{map_key(digest, domain)}.npz"


def _record(digest: str, domain: str | None) -> Path:
    return maps_dir() / f".{map_key(digest, domain)}.progress.json"


def map_path(teacher_id: str, domain: str | None = None) -> Path:
    """The map file of a trained teacher (its own OOD domain unless ``domain`` is given)."""
    return map_file(teacher_digest(teacher_id), teacher_domain(teacher_id, domain))


def _locked(digest: str, domain: str | None):
    return file_lock(maps_dir() / f".{map_key(digest, domain)}.lock")


def start_map(teacher_id: str, domain: str | None = None, digest: str | None = None) -> int | None:
    """Start the background job that computes the map of ``teacher_id`` (its own OOD domain
    unless ``domain`` is given; ``digest``: its weights digest, when the caller knows it).
    Returns the job's PID, or None when the map is already stored (or map jobs are switched off
    with :data:`MAP_JOBS_ENV`). A job for the same weights
    and domain that is still running is reused (also across processes: the check and the start
    hold a file lock), so many runs of one teacher start one job.

    Raises:
        UnknownNameError, DfkdVizError: unknown or untrained teacher.
        OSError: the process cannot be started.
    """
    digest = digest or teacher_digest(teacher_id)
    domain = teacher_domain(teacher_id, domain)
    if map_file(digest, domain).exists() or not map_jobs_allowed():
        return None
    with _locked(digest, domain):
        if map_file(digest, domain).exists():
            return None
        rec = read_progress(_record(digest, domain))
        if rec is not None and rec.active:
            return int(rec.pid or 0)
        return start_job(
            KIND,
            map_key(digest, domain),
            "dfkd_viz.teachers.maps",
            [teacher_id, domain or "none", digest],
            _record(digest, domain),
            maps_dir() / ".maps.log",
        )


def start_maps_quietly(teacher_ids: list[str]) -> None:
    """:func:`start_map` for each teacher, ignoring failures (a map is never worth failing a
    training or an import for); used after training and importing teachers."""
    for tid in teacher_ids:
        with contextlib.suppress(Exception):
            start_map(tid)


def progress_for(digest: str, domain: str | None) -> JobProgress | None:
    """The map job's progress for weights ``digest`` and ``domain`` (liveness applied); a stored
    map reads as ``done`` even without a record; None when neither exists."""
    path = map_file(digest, domain)
    rec = read_progress(_record(digest, domain))
    if path.exists() and (rec is None or rec.state != "done"):
        return JobProgress(
            kind=KIND, job_id=map_key(digest, domain), state="done", frac=1.0, msg="ready"
        )
    if rec is not None and rec.state == "done" and not path.exists():
        return None  # computed once, deleted since
    return rec


def map_progress(teacher_id: str, domain: str | None = None) -> JobProgress | None:
    """The progress of ``teacher_id``'s map (see :func:`progress_for`); None also for a teacher
    that is not trained."""
    try:
        digest = teacher_digest(teacher_id)
        domain = teacher_domain(teacher_id, domain)
    except DfkdVizError:
        return None
    return progress_for(digest, domain)


def progress_text(rec: JobProgress | None) -> str | None:
    """One line for the pages: ``reference map: computing… 40 %``, ``… ready``, ``… failed``."""
    if rec is None:
        return None
    if rec.state == "done":
        return "reference map: ready"
    if rec.active:
        return f"reference map: computing… {rec.frac:.0%}" + (f" ({rec.msg})" if rec.msg else "")
    return f"reference map: {rec.state}" + (f" ({rec.error})" if rec.error else "")


@dataclass
class ReferenceMap:
    """A stored map: the real reference points, their features and their 2-D coordinates.

    Attributes:
        features: ``(N, D)`` float32 teacher penultimate features.
        coords: ``(N, 2)`` float32 UMAP coordinates.
        labels: ``(N,)`` int64 true labels.
        source: ``(N,)`` ``"id"`` / ``"ood"``.
        png: ``N`` PNG images (bytes).
        meta: what the map was computed from (teacher, digest, domain, sizes, settings).
    """

    features: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    png: list[bytes]
    meta: dict[str, Any] = field(default_factory=dict)

    def placer(self, k: int | None = None, k_ood: int = 10):
        """A :class:`~dfkd_viz.analysis.embedding.KnnPlacer` on this map (``k``: UMAP's
        ``n_neighbors`` of the map unless given)."""
        from dfkd_viz.analysis.embedding import KnnPlacer

        k = k or int(self.meta.get("umap", UMAP_SETTINGS)["n_neighbors"])
        return KnnPlacer(self.features, self.coords, self.source, k=k, k_ood=k_ood)


def save_map(path: Path, m: ReferenceMap) -> Path:
    """Write ``m`` to ``path`` (``.npz``, atomically: readers see the old file or the new one)."""
    from dfkd_viz.util.io import atomic_path

    lengths = np.array([len(b) for b in m.png], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = np.frombuffer(b"".join(m.png), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            features=np.asarray(m.features, np.float32),
            coords=np.asarray(m.coords, np.float32),
            labels=np.asarray(m.labels, np.int64),
            source=np.asarray(m.source).astype("<U3"),
            png_data=data,
            png_offsets=offsets,
            meta=np.array(json.dumps(m.meta)),
        )
    return path


def load_map_file(path: str | os.PathLike) -> ReferenceMap | None:
    """Read a stored map (``np.load(allow_pickle=False)``: object arrays are refused), or None
    when it is missing, unreadable or inconsistent."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not set(ARRAYS) <= set(z.files):
                return None
            a = {k: z[k] for k in ARRAYS}
        n = len(a["coords"])
        off = a["png_offsets"]
        ok = (
            a["features"].ndim == 2
            and len(a["features"]) == n
            and a["coords"].shape == (n, 2)
            and len(a["labels"]) == n
            and len(a["source"]) == n
            and off.shape == (n + 1,)
            and a["source"].dtype.kind == "U"
        )
        if not ok:
            return None
        data = a["png_data"].tobytes()
        png = [data[off[i] : off[i + 1]] for i in range(n)]
        meta = json.loads(str(a["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return ReferenceMap(a["features"], a["coords"], a["labels"], a["source"], png, meta)


def load_map(teacher_id: str, domain: str | None = None) -> ReferenceMap | None:
    """The stored map of ``teacher_id`` (its own OOD domain unless ``domain`` is given), or None
    when it is not computed yet (or the teacher is not trained)."""
    try:
        path = map_path(teacher_id, domain)
    except DfkdVizError:
        return None
    return load_map_file(path) if path.exists() else None


def compute_map(
    teacher_id: str,
    domain: str | None = None,
    progress=None,
    expect_digest: str | None = None,
) -> Path:
    """Compute and store the map of ``teacher_id`` and ``domain`` (what the job runs; in the
    calling process). ``progress(frac, msg)`` is called as it goes. Returns the file.

    Raises:
        UnknownNameError, DfkdVizError: unknown or untrained teacher, missing data, or weights
            that changed since the job was started (``expect_digest``).
    """
    import torch

    from dfkd_viz.analysis.embedding import fit_umap, reference_set
    from dfkd_viz.data import load_dataset, load_domain
    from dfkd_viz.teachers.zoo import load_teacher
    from dfkd_viz.util.io import png_bytes

    say = progress or (lambda frac, msg: None)
    t0 = time.perf_counter()
    say(0.02, "loading the teacher")
    model, card = load_teacher(teacher_id)
    digest = weights_digest(model)
    if expect_digest and digest != expect_digest:
        raise DfkdVizError(f"the weights of {teacher_id} changed since the map job was started")
    domain = teacher_domain(teacher_id, domain)
    out = map_file(digest, domain)
    if out.exists():
        say(1.0, "already stored")
        return out
    say(0.05, "teacher features of the real test points")
    ds = card["dataset"]
    n_id, n_ood = map_points()
    ood = load_domain(domain, ds, "test") if domain else None
    with torch.inference_mode():
        ref = reference_set(
            model, load_dataset(ds, "test"), ood, n_id=n_id, n_ood=n_ood, seed=MAP_SEED
        )
    say(0.12, "fitting UMAP (numba compiles first: ~15–20 s)")
    state = {"epoch": None}
    stop = threading.Event()

    def tick() -> None:  # before the first epoch: an estimate that creeps towards 45 %
        t1 = time.perf_counter()
        while not stop.wait(1.0) and state["epoch"] is None:
            frac = 0.12 + 0.33 * (1 - math.exp(-(time.perf_counter() - t1) / 15.0))
            say(frac, "fitting UMAP (numba compiles first: ~15–20 s)")

    def on_epoch(done: int, total: int) -> None:
        state["epoch"] = done
        say(0.45 + 0.5 * done / total, f"UMAP epoch {done} of {total}")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        reducer = fit_umap(ref.features, seed=MAP_SEED, epoch_progress=on_epoch, **UMAP_SETTINGS)
    finally:
        stop.set()
        ticker.join()
    say(0.96, "writing the map")
    m = ReferenceMap(
        ref.features,
        np.asarray(reducer.embedding_, np.float32),
        ref.labels,
        ref.source,
        [png_bytes(img) for img in ref.images],
        {
            "teacher": teacher_id,
            "digest": digest,
            "domain": domain,
            "n_id": n_id,
            "n_ood": n_ood,
            "seed": MAP_SEED,
            "umap": UMAP_SETTINGS,
            "version": MAP_VERSION,
            "fit_s": round(time.perf_counter() - t0, 2),
            "created": time.time(),
        },
    )
    return save_map(out, m)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the job process: ``python -m dfkd_viz.teachers.maps TEACHER_ID [DOMAIN]
    [DIGEST]``. Lowers its priority first (``os.nice(19)``, one thread) so that it does not slow
    a running distillation."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 3:
        print("usage: python -m dfkd_viz.teachers.maps TEACHER_ID [DOMAIN|none] [DIGEST]")
        return 2
    with contextlib.suppress(OSError):
        os.nice(19)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # read when numba is imported (by umap)

    def on_term(signum, frame):  # a stop records "stopped" (below), never a half-written map
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    teacher_id = args[0]
    domain_arg = args[1] if len(args) > 1 else None
    expect = args[2] if len(args) > 2 else None
    digest = expect or teacher_digest(teacher_id)
    domain = teacher_domain(teacher_id, domain_arg)
    path, key = _record(digest, domain), map_key(digest, domain)
    # one fit at a time on this machine (training the whole zoo starts one job per teacher): the
    # others wait here, before importing torch and umap
    report(path, KIND, key, state="queued", frac=0.0, msg="waiting for another map to finish")
    fit_lock = open(maps_dir() / ".fit.lock", "w")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(fit_lock, fcntl.LOCK_EX)
    except SystemExit:
        report(path, KIND, key, state="stopped", msg="stopped before it started")
        return 1
    import torch

    torch.set_num_threads(1)
    last, lock = [0.0], threading.Lock()

    def progress(frac: float, msg: str) -> None:  # called from two threads (see compute_map)
        with lock:
            if time.time() - last[0] > 0.5 or frac >= 1:
                last[0] = time.time()
                frac = min(max(float(frac), 0.0), 1.0)
                report(path, KIND, key, state="running", frac=frac, msg=msg)

    report(path, KIND, key, state="running", frac=0.0, msg="starting", error=None)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            out = compute_map(teacher_id, domain or "none", progress, expect_digest=expect)
    except SystemExit:
        report(path, KIND, key, state="stopped", msg="stopped")
        return 1
    except Exception as exc:  # the pages show the sentence; nothing is stored
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report(path, KIND, key, state="failed", error=error)
        print(f"reference map of {teacher_id} failed: {error}", file=sys.stderr, flush=True)
        return 1
    report(path, KIND, key, state="done", frac=1.0, msg="ready", result={"file": out.name})
    return 0


if __name__ == "__main__":
    sys.exit(main())
