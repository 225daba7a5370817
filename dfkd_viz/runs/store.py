"""The run store: one directory per run under ``DFKD_VIZ_HOME/runs/<run_id>``::

    config.json          the validated RunConfig
    run.db               SQLite (WAL mode): status, metrics, snapshots, samples, events, checkpoints
    worker.log           the worker's stdout/stderr
    checkpoints/         step-XXXXXXX.safetensors (generator, student, optimisers, RNG; meta JSON
                         in the safetensors header), the last two kept

Schema of ``run.db`` (version 3; an older database gains the ``flag`` column, the ``artifacts``
table and the ``per_class`` table when a writer opens it, and readers treat a missing ``flag`` as
NULL and a missing ``per_class`` table as "no per-class data")::

    meta(key TEXT PRIMARY KEY, value TEXT)                   -- schema_version, run_id, and where
        the run was last distilled: executor (local | ray), node (host name), ray_node_id,
        worker (local runs: standby = a warm standby took it, spawned = a fresh process)
    status(id = 1, state, pid, pid_start, step, total_steps, budget_s, wall_s, progress,
           created, started, updated, finished, device, threads, phase, error)
        state ∈ queued | running | finished | stopped | failed; times are UNIX seconds;
        wall_s = seconds of distillation; progress ∈ [0, 1]; error = one sentence on failure
    metrics(step, name, value, wall_s)  PRIMARY KEY (step, name)
        name ∈ id_acc, ood_acc, asr (fractions), agreement, kept_frac (fractions), it_s
        (iterations/s), lr, and the weighted loss terms g_* / s_* (g_total, s_total)
    snapshots(step PRIMARY KEY, wall_s, n, threshold, score_name)
    samples(step, idx, image PNG BLOB, teacher_label, confidence, student_label, score, keep,
            emb_x, emb_y, flag)  PRIMARY KEY (step, idx)
        -- score/keep NULL without a selecting defense; flag NULL unless the defense flags
           samples (ABD: suspicious)
    artifacts(step, name, data BLOB)  PRIMARY KEY (step, name)
        -- a defense's named arrays at a snapshot step (``.npy`` bytes, float32), e.g. ABD's
           synthesised trigger ``sr_trigger`` (C, H, W)
    per_class(step, name, data BLOB)  PRIMARY KEY (step, name)
        -- the student's evaluation per class (K classes), one zlib-compressed ``.npy`` per row.
           At an evaluated step (≥ 1): id_acc, ood_acc, asr (K,) float32 fractions, NaN for a
           class without test images (asr: per source class, NaN at the target); id_confusion
           (K, K) by true label (row) × student prediction (column) and teacher_confusion
           (K, K) by teacher prediction (row) × student prediction, both on the ID test set,
           unsigned ints of the smallest width that holds the counts. At step 0, the run's
           constants: teacher_id_acc (K,) float32, id_count, ood_count, asr_count (K,) images
           per class. ~0.5 kB per evaluation for K = 10.
    events(id AUTOINCREMENT, t, level, message)      -- level ∈ info | warning | error
    checkpoints(step PRIMARY KEY, path, wall_s, t)
    reference(idx PRIMARY KEY, source, label, image PNG BLOB, emb_x, emb_y)
        -- the real ID / OOD points of the run's embedding map (source ∈ id | ood)

The worker is the only writer (:class:`RunWriter`) and commits in small transactions (metrics
are buffered and committed at least every ``commit_every_s`` seconds and at every evaluation and
snapshot); readers (:class:`RunReader`, the pages, the CLI) never block it (WAL).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.util.io import png_bytes

if TYPE_CHECKING:
    from dfkd_viz.distill.snapshot import Snapshot

SCHEMA_VERSION = 3
STATES = ("queued", "running", "finished", "stopped", "failed")
ACTIVE_STATES = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS status(
    id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, pid INTEGER, pid_start TEXT,
    step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, budget_s REAL,
    wall_s REAL NOT NULL DEFAULT 0, progress REAL NOT NULL DEFAULT 0,
    created REAL, started REAL, updated REAL, finished REAL,
    device TEXT, threads INTEGER, phase TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS metrics(
    step INTEGER NOT NULL, name TEXT NOT NULL, value REAL, wall_s REAL,
    PRIMARY KEY(step, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(
    step INTEGER PRIMARY KEY, wall_s REAL, n INTEGER, threshold REAL, score_name TEXT);
CREATE TABLE IF NOT EXISTS samples(
    step INTEGER NOT NULL, idx INTEGER NOT NULL, image BLOB NOT NULL,
    teacher_label INTEGER, confidence REAL, student_label INTEGER, score REAL, keep INTEGER,
    emb_x REAL, emb_y REAL, flag INTEGER, PRIMARY KEY(step, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts(
    step INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(step, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS per_class(
    step INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(step, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL, level TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS checkpoints(step INTEGER PRIMARY KEY, path TEXT, wall_s REAL, t REAL);
CREATE TABLE IF NOT EXISTS reference(
    idx INTEGER PRIMARY KEY, source TEXT NOT NULL, label INTEGER, image BLOB NOT NULL,
    emb_x REAL, emb_y REAL);
"""


def _wide(name: str) -> type:
    """The dtype a stored per-class array is read back as: counts int64, fractions float64."""
    return np.int64 if name.endswith(("_confusion", "_count")) else np.float64


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA busy_timeout = 10000")
    if readonly:
        con.execute("PRAGMA query_only = 1")
    return con


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})").fetchall()}


def npy_bytes(a: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickle: plain numeric dtypes only)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_to_array(data: bytes) -> np.ndarray:
    """The array of :func:`npy_bytes` output (``allow_pickle=False``: never unpickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def _compact(a: np.ndarray) -> np.ndarray:
    """Integer arrays as the smallest unsigned type that holds them (counts; negatives keep
    int64), anything else as float32."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        top = int(a.max()) if a.size else 0
        if a.size and int(a.min()) < 0:
            return a.astype(np.int64)
        for t in (np.uint8, np.uint16, np.uint32):
            if top <= np.iinfo(t).max:
                return a.astype(t)
        return a.astype(np.uint64)
    return a.astype(np.float32)


def packed_array(a: np.ndarray) -> bytes:
    """zlib-compressed ``.npy`` bytes of ``a`` made compact (:func:`_compact`)."""
    return zlib.compress(npy_bytes(_compact(a)), 6)


def unpacked_array(data: bytes) -> np.ndarray:
    """The array of :func:`packed_array` output (never unpickles)."""
    return npy_to_array(zlib.decompress(data))


class RunWriter:
    """The single writer of a run's database (used by the manager to create the run and by the
    worker while it runs).

    Args:
        run_dir: the run directory (created if missing).
        commit_every_s: longest time buffered metric rows wait before a commit, seconds.

    Raises:
        sqlite3.Error / OSError: the database cannot be created or written (e.g. a full disk).
    """

    def __init__(self, run_dir: str | Path, commit_every_s: float = 0.5) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "run.db"
        self.con = _connect(self.path, readonly=False)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = NORMAL")
        self.con.executescript(_SCHEMA)
        if "flag" not in _columns(self.con, "samples"):  # a version-1 run: migrate in place
            self.con.execute("ALTER TABLE samples ADD COLUMN flag INTEGER")
        with self.transaction():
            self.con.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        self.commit_every_s = commit_every_s
        self._buffer: list[tuple] = []
        self._last_commit = time.time()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error (the
        connection is in autocommit mode, so ``with con:`` alone would commit per statement)."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.con.execute("ROLLBACK")
            raise
        try:
            self.con.execute("COMMIT")
        except sqlite3.Error:  # e.g. SQLITE_FULL at commit: the transaction is still open
            with contextlib.suppress(sqlite3.Error):
                self.con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.flush()
        self.con.close()

    def set_meta(self, **values: str | None) -> None:
        """Set ``meta`` keys (e.g. ``executor="ray", node="host-3"``); None deletes a key."""
        with self.transaction():
            for k, v in values.items():
                if v is None:
                    self.con.execute("DELETE FROM meta WHERE key = ?", (k,))
                else:
                    self.con.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, str(v))
                    )

    def relocate_checkpoints(self, run_dir: str | Path | None = None) -> None:
        """Point every stored checkpoint path at ``run_dir/checkpoints/<file name>`` (default: this
        writer's directory): a run directory that moved to another machine or name keeps finding
        its checkpoints, and never touches files at its old location."""
        ckpt_dir = Path(run_dir or self.dir).resolve() / "checkpoints"
        rows = self.con.execute("SELECT step, path FROM checkpoints").fetchall()
        with self.transaction():
            for step, path in rows:
                self.con.execute(
                    "UPDATE checkpoints SET path = ? WHERE step = ?",
                    (str(ckpt_dir / Path(path).name), step),
                )

    # -- status
    def init_status(self, run_id: str, total_steps: int | None, budget_s: float | None) -> None:
        now = time.time()
        with self.transaction():
            self.con.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('run_id', ?)", (run_id,)
            )
            self.con.execute(
                "INSERT OR IGNORE INTO status(id, state, total_steps, budget_s, created, updated) "
                "VALUES (1, 'queued', ?, ?, ?, ?)",
                (total_steps, budget_s, now, now),
            )

    def set_status(self, **fields: Any) -> None:
        """Update status columns (``state``, ``pid``, ``step``, ``error``...) and commit."""
        bad = set(fields) - {
            "state",
            "pid",
            "pid_start",
            "step",
            "total_steps",
            "budget_s",
            "wall_s",
            "progress",
            "started",
            "finished",
            "device",
            "threads",
            "phase",
            "error",
        }
        if bad:
            raise ValueError(f"unknown status fields {sorted(bad)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.flush(commit=False)
        with self.transaction():
            self.con.execute(f"UPDATE status SET {cols} WHERE id = 1", tuple(fields.values()))
        self._last_commit = time.time()

    def mark_spawned(self, pid: int, pid_start: str | None) -> None:
        """Record a freshly spawned worker: its PID, and ``queued`` unless the worker has already
        reported ``running`` itself (it may start faster than the spawner writes)."""
        with self.transaction():
            self.con.execute(
                "UPDATE status SET pid = ?, pid_start = ?, error = NULL, finished = NULL, updated = ?, "
                "state = CASE WHEN state = 'running' AND pid = ? THEN state ELSE 'queued' END WHERE id = 1",
                (pid, pid_start, time.time(), pid),
            )

    # -- metrics
    def add_metrics(
        self, step: int, wall_s: float, values: dict[str, float | None], commit: bool = False
    ) -> None:
        """Buffer metric rows (``None`` values are skipped); commit when due or asked."""
        self._buffer.extend(
            (step, k, float(v), wall_s)
            for k, v in values.items()
            if v is not None and np.isfinite(v)
        )
        if commit or time.time() - self._last_commit >= self.commit_every_s:
            self.flush()

    def flush(self, commit: bool = True) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        with self.transaction():
            self.con.executemany(
                "INSERT OR REPLACE INTO metrics(step, name, value, wall_s) VALUES (?, ?, ?, ?)",
                rows,
            )
        self._last_commit = time.time()

    # -- samples
    def add_snapshot(self, snap: Snapshot, wall_s: float, score_name: str | None = None) -> None:
        """Store a :class:`~dfkd_viz.distill.snapshot.Snapshot` (images as PNG; map
        coordinates come later with :meth:`set_embedding`)."""
        n = len(snap.images)
        score, keep, flag = snap.score, snap.keep, snap.flag
        rows = []
        for i in range(n):
            rows.append(
                (
                    int(snap.step),
                    i,
                    png_bytes(snap.images[i]),
                    int(snap.teacher_label[i]),
                    float(snap.confidence[i]),
                    None if snap.student_label is None else int(snap.student_label[i]),
                    None if score is None else float(score[i]),
                    None if keep is None else int(bool(keep[i])),
                    None,
                    None,
                    None if flag is None else int(bool(flag[i])),
                )
            )
        self.flush(commit=False)
        with self.transaction():
            self.con.execute(
                "INSERT OR REPLACE INTO snapshots(step, wall_s, n, threshold, score_name) VALUES (?, ?, ?, ?, ?)",
                (int(snap.step), wall_s, n, snap.threshold, score_name),
            )
            self.con.execute("DELETE FROM samples WHERE step = ?", (int(snap.step),))
            self.con.executemany(
                "INSERT INTO samples(step, idx, image, teacher_label, confidence, student_label, "
                "score, keep, emb_x, emb_y, flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.con.execute("DELETE FROM artifacts WHERE step = ?", (int(snap.step),))
            self.con.executemany(
                "INSERT INTO artifacts(step, name, data) VALUES (?, ?, ?)",
                [
                    (int(snap.step), name, npy_bytes(np.asarray(a, dtype=np.float32)))
                    for name, a in snap.artifacts.items()
                ],
            )

    # -- per class
    def add_per_class(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Store named per-class arrays at ``step`` (an evaluated step; 0 for the run's
        constants, see the ``per_class`` table above), replacing earlier ones of the same names;
        committed at once, with any buffered metric rows."""
        rows = [(int(step), name, packed_array(a)) for name, a in arrays.items() if a is not None]
        self.flush(commit=False)
        with self.transaction():
            self.con.executemany(
                "INSERT OR REPLACE INTO per_class(step, name, data) VALUES (?, ?, ?)", rows
            )

    # -- events and checkpoints
    def add_event(self, message: str, level: str = "info") -> None:
        with self.transaction():
            self.con.execute(
                "INSERT INTO events(t, level, message) VALUES (?, ?, ?)",
                (time.time(), level, message),
            )

    def add_checkpoint(self, step: int, path: str, wall_s: float) -> None:
        with self.transaction():
            self.con.execute(
                "INSERT OR REPLACE INTO checkpoints(step, path, wall_s, t) VALUES (?, ?, ?, ?)",
                (step, path, wall_s, time.time()),
            )

    def set_reference(self, source, labels, images, coords) -> None:
        """Store the embedding map's real reference points (replacing any earlier ones);
        ``images``: ``(C, H, W)`` uint8 arrays or PNG bytes already encoded (a stored map's)."""
        rows = [
            (
                i,
                str(source[i]),
                int(labels[i]),
                images[i] if isinstance(images[i], bytes) else png_bytes(images[i]),
                float(coords[i, 0]),
                float(coords[i, 1]),
            )
            for i in range(len(source))
        ]
        with self.transaction():
            self.con.execute("DELETE FROM reference")
            self.con.executemany("INSERT INTO reference VALUES (?, ?, ?, ?, ?, ?)", rows)

    def set_embedding(self, step: int, coords) -> None:
        """Store map coordinates ``(n, 2)`` for the samples of the snapshot at ``step``."""
        with self.transaction():
            self.con.executemany(
                "UPDATE samples SET emb_x = ?, emb_y = ? WHERE step = ? AND idx = ?",
                [(float(c[0]), float(c[1]), step, i) for i, c in enumerate(coords)],
            )

    def remove_checkpoint(self, step: int) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM checkpoints WHERE step = ?", (step,))

    def start_fork(
        self,
        run_id: str,
        step: int,
        wall_s: float,
        checkpoint: str,
        total_steps: int | None,
        budget_s: float | None,
        **meta: str,
    ) -> None:
        """Turn a copy of the parent's store (:func:`copy_store`) into a fork's: the history after
        ``step`` and the parent's events and checkpoints are dropped, ``checkpoint`` (the fork's
        own file, at ``step``) is its only checkpoint, the status is ``queued`` at ``step`` with no
        worker, and ``meta`` (``parent_run``, ``fork_step``…) is recorded."""
        self.truncate_after(step)
        now = time.time()
        progress = step / total_steps if total_steps else wall_s / budget_s if budget_s else 0.0
        with self.transaction():
            self.con.execute("DELETE FROM events")
            self.con.execute("DELETE FROM checkpoints")
            self.con.execute(
                "INSERT INTO checkpoints(step, path, wall_s, t) VALUES (?, ?, ?, ?)",
                (step, checkpoint, wall_s, now),
            )
            self.con.execute(
                "UPDATE status SET state = 'queued', pid = NULL, pid_start = NULL, step = ?, "
                "wall_s = ?, progress = ?, total_steps = ?, budget_s = ?, created = ?, "
                "started = NULL, updated = ?, finished = NULL, phase = NULL, error = NULL "
                "WHERE id = 1",
                (step, wall_s, min(1.0, progress), total_steps, budget_s, now, now),
            )
            for k, v in {"run_id": run_id, **meta}.items():
                self.con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
            for k in ("executor", "node", "ray_node_id"):
                self.con.execute("DELETE FROM meta WHERE key = ?", (k,))

    def truncate_after(self, step: int) -> None:
        """Drop metrics, snapshots and samples recorded after ``step`` (used when resuming from a
        checkpoint older than the last recorded step, so step numbers stay continuous)."""
        with self.transaction():
            self.con.execute("DELETE FROM metrics WHERE step > ?", (step,))
            self.con.execute("DELETE FROM samples WHERE step > ?", (step,))
            self.con.execute("DELETE FROM snapshots WHERE step > ?", (step,))
            self.con.execute("DELETE FROM artifacts WHERE step > ?", (step,))
            self.con.execute("DELETE FROM per_class WHERE step > ?", (step,))


def copy_store(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Copy a run's database from ``src_dir`` into ``dst_dir/run.db`` with SQLite's online backup
    (a consistent copy while the source's worker keeps writing; the source is only read).

    Raises:
        DfkdVizError: the source has no database. sqlite3.Error / OSError: the copy failed.
    """
    src = Path(src_dir) / "run.db"
    if not src.exists():
        raise DfkdVizError(f"run {Path(src_dir).name!r} has no database to copy")
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    s = _connect(src, readonly=True)
    d = sqlite3.connect(str(Path(dst_dir) / "run.db"))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


class RunReader:
    """Read-only view of one run (never blocks the writer).

    Args:
        run_dir: the run directory.

    Raises:
        DfkdVizError: the directory holds no readable run (missing or corrupt ``run.db``/``config.json``).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.run_id = self.dir.name
        db = self.dir / "run.db"
        if not db.exists():
            raise DfkdVizError(
                f"run {self.run_id!r} has no database (half-created or not a run directory)"
            )
        try:
            self.con = _connect(db, readonly=True)
            self.con.execute("SELECT 1 FROM status").fetchall()
            self._has_flag = "flag" in _columns(self.con, "samples")
            self._has_artifacts = bool(_columns(self.con, "artifacts"))
            self._has_per_class = bool(_columns(self.con, "per_class"))
        except sqlite3.DatabaseError as exc:
            raise DfkdVizError(f"run {self.run_id!r} has a corrupt database ({exc})") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _q(self, sql: str, args: Iterable = ()) -> list[tuple]:
        try:
            return self.con.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise DfkdVizError(f"run {self.run_id!r}: cannot read its database ({exc})") from None

    def config(self) -> dict[str, Any]:
        """The run's config as a dict (raises DfkdVizError if missing or unreadable)."""
        try:
            return json.loads((self.dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DfkdVizError(f"run {self.run_id!r}: unreadable config.json ({exc})") from None

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict (``schema_version``, ``run_id``, ``executor``, ``node``…)."""
        return {k: v for k, v in self._q("SELECT key, value FROM meta")}

    def status(self) -> dict[str, Any]:
        """The stored status row as a dict (``state``, ``pid``, ``step``, ``progress``...)."""
        cur = self.con.execute("SELECT * FROM status WHERE id = 1")
        row = cur.fetchone()
        if row is None:
            return {"state": "queued", "step": 0, "progress": 0.0}
        return dict(zip([d[0] for d in cur.description], row))

    def metric_names(self) -> list[str]:
        return [r[0] for r in self._q("SELECT DISTINCT name FROM metrics ORDER BY name")]

    def metrics(self, names: Iterable[str] | None = None, since_step: int = -1) -> pd.DataFrame:
        """Metric rows ``(step, name, value, wall_s)`` as a long DataFrame, ordered by step."""
        sql = "SELECT step, name, value, wall_s FROM metrics WHERE step > ?"
        args: list[Any] = [since_step]
        if names is not None:
            names = list(names)
            sql += f" AND name IN ({', '.join('?' * len(names))})"
            args += names
        rows = self._q(sql + " ORDER BY step", args)
        return pd.DataFrame(rows, columns=["step", "name", "value", "wall_s"])

    def metrics_wide(self, names: Iterable[str] | None = None) -> pd.DataFrame:
        """Metrics pivoted to one row per step (columns: ``step``, ``wall_s``, one per name)."""
        df = self.metrics(names)
        if df.empty:
            return pd.DataFrame(columns=["step", "wall_s"])
        wide = df.pivot_table(index="step", columns="name", values="value", aggfunc="last")
        wide["wall_s"] = df.groupby("step")["wall_s"].max()
        return wide.reset_index()

    def latest(
        self,
        names: Iterable[str] = (
            "id_acc",
            "ood_acc",
            "asr",
            "student_domain_acc",
            "agreement",
            "it_s",
        ),
    ) -> dict[str, Any]:
        """The most recent value of each metric name (missing names are absent)."""
        out = {}
        for name in names:
            row = self._q(
                "SELECT step, value FROM metrics WHERE name = ? ORDER BY step DESC LIMIT 1", [name]
            )
            if row:
                out[name] = row[0][1]
        return out

    def snapshot_steps(self) -> list[int]:
        return [r[0] for r in self._q("SELECT step FROM snapshots ORDER BY step")]

    def snapshot_info(self, step: int) -> dict[str, Any] | None:
        rows = self._q(
            "SELECT step, wall_s, n, threshold, score_name FROM snapshots WHERE step = ?", [step]
        )
        if not rows:
            return None
        return dict(zip(("step", "wall_s", "n", "threshold", "score_name"), rows[0]))

    def samples(self, step: int) -> pd.DataFrame:
        """Per-sample records of the snapshot at ``step`` (``image`` holds PNG bytes)."""
        cols = [
            "idx",
            "image",
            "teacher_label",
            "confidence",
            "student_label",
            "score",
            "keep",
            "emb_x",
            "emb_y",
            "flag",
        ]
        sel = ", ".join(c if c != "flag" or self._has_flag else "NULL" for c in cols)
        rows = self._q(f"SELECT {sel} FROM samples WHERE step = ? ORDER BY idx", [step])
        return pd.DataFrame(rows, columns=cols)

    def artifact_steps(self, name: str) -> list[int]:
        """Snapshot steps at which the artifact ``name`` was recorded."""
        if not self._has_artifacts:
            return []
        return [
            r[0] for r in self._q("SELECT step FROM artifacts WHERE name = ? ORDER BY step", [name])
        ]

    def artifact(self, name: str, step: int | None = None) -> np.ndarray | None:
        """The artifact ``name`` at ``step`` (default: the latest), or None."""
        steps = self.artifact_steps(name)
        if not steps:
            return None
        step = steps[-1] if step is None else step
        rows = self._q("SELECT data FROM artifacts WHERE name = ? AND step = ?", [name, step])
        return npy_to_array(rows[0][0]) if rows else None

    # -- per class (empty / None for a run recorded before the per_class table existed)
    def per_class_steps(self, name: str = "id_acc") -> list[int]:
        """Evaluated steps (≥ 1, ascending) at which the per-class array ``name`` was recorded;
        ``[]`` when none was (or the store predates per-class records)."""
        if not self._has_per_class:
            return []
        return [
            r[0]
            for r in self._q(
                "SELECT step FROM per_class WHERE name = ? AND step > 0 ORDER BY step", [name]
            )
        ]

    def per_class(self, name: str, step: int | None = None) -> np.ndarray | None:
        """The per-class array ``name`` at ``step``: ``(K,)`` fractions (``id_acc``,
        ``ood_acc``, ``asr``; NaN for a class without test images) or ``(K, K)`` counts
        (``id_confusion``, ``teacher_confusion``); default the latest evaluated step. The run's
        constants (``teacher_id_acc``, ``id_count``, ``ood_count``, ``asr_count``) are at step 0
        and found with the default too. None when not recorded."""
        if not self._has_per_class:
            return None
        if step is None:
            rows = self._q(
                "SELECT data FROM per_class WHERE name = ? ORDER BY step DESC LIMIT 1", [name]
            )
        else:
            rows = self._q(
                "SELECT data FROM per_class WHERE name = ? AND step = ?", [name, int(step)]
            )
        return unpacked_array(rows[0][0]).astype(_wide(name)) if rows else None

    def per_class_at(self, step: int, name: str = "id_acc") -> int | None:
        """The evaluated step nearest ``step`` at or before it at which ``name`` was recorded (the
        first one when ``step`` precedes them all), or None when none was."""
        if not self._has_per_class:
            return None
        rows = self._q(
            "SELECT step FROM per_class WHERE name = ? AND step > 0 AND step <= ? "
            "ORDER BY step DESC LIMIT 1",
            [name, int(step)],
        ) or self._q(
            "SELECT step FROM per_class WHERE name = ? AND step > 0 ORDER BY step LIMIT 1", [name]
        )
        return rows[0][0] if rows else None

    def latest_per_class(self) -> dict[str, list[float | None]]:
        """The per-class fractions of the last evaluation that recorded them, as JSON-ready lists
        of K values in [0, 1] rounded to 6 places (None for a class without test images, and in
        ``per_class_asr`` at the target): ``per_class_id_acc`` (None when no per-class
        evaluation was recorded, e.g. a run from before they were), and ``per_class_ood_acc``,
        ``per_class_asr`` only when the run has an OOD set or a trigger."""
        out: dict[str, list[float | None] | None] = {"per_class_id_acc": None}
        if not self._has_per_class:
            return out
        rows = self._q(  # one query: the list of runs asks this of every run
            "SELECT name, data FROM per_class WHERE name IN ('id_acc', 'ood_acc', 'asr') AND "
            "step = (SELECT MAX(step) FROM per_class WHERE name = 'id_acc' AND step > 0)"
        )
        for name, data in sorted(rows, key=lambda r: ("id_acc", "ood_acc", "asr").index(r[0])):
            a = unpacked_array(data)
            out[f"per_class_{name}"] = [None if v != v else round(float(v), 6) for v in a]
        return out

    def per_class_history(
        self, name: str = "id_acc", after: int = 0, upto: int | None = None
    ) -> tuple[list[int], np.ndarray]:
        """The per-class fractions ``name`` at the evaluated steps in ``(after, upto]`` (default:
        all of them): ``(steps, (S, K) float64)``; ``([], (0, 0))`` when there are none. A view
        that polls reads only what is new with ``after`` = the last step it has."""
        if not self._has_per_class:
            return [], np.zeros((0, 0))
        sql = "SELECT step, data FROM per_class WHERE name = ? AND step > ?"
        args: list[Any] = [name, max(0, int(after))]
        if upto is not None:
            sql += " AND step <= ?"
            args.append(int(upto))
        rows = self._q(sql + " ORDER BY step", args)
        if not rows:
            return [], np.zeros((0, 0))
        values = np.stack([unpacked_array(r[1]) for r in rows]).astype(np.float64)
        return [r[0] for r in rows], values

    def reference(self, with_images: bool = False) -> pd.DataFrame:
        """The embedding map's real reference points (``idx, source, label, emb_x, emb_y``
        [, ``image`` PNG bytes]); empty until the teacher's reference map is ready and copied in."""
        cols = ["idx", "source", "label", "emb_x", "emb_y"] + (["image"] if with_images else [])
        rows = self._q(f"SELECT {', '.join(cols)} FROM reference ORDER BY idx")
        return pd.DataFrame(rows, columns=cols)

    def reference_images(self, idx: list[int]) -> dict[int, bytes]:
        """PNG bytes of chosen reference points."""
        if not idx:
            return {}
        rows = self._q(
            f"SELECT idx, image FROM reference WHERE idx IN ({', '.join('?' * len(idx))})", idx
        )
        return {int(i): img for i, img in rows}

    def embedded_steps(self) -> list[int]:
        """Snapshot steps whose samples have map coordinates."""
        return [
            r[0]
            for r in self._q(
                "SELECT DISTINCT step FROM samples WHERE emb_x IS NOT NULL ORDER BY step"
            )
        ]

    def decision_counts(self, by: str = "keep") -> pd.DataFrame:
        """Counts per snapshot step of a decision: ``by="keep"`` → columns ``kept, rejected``;
        ``by="flag"`` → ``not flagged, flagged`` (empty for runs without such decisions)."""
        if by not in ("keep", "flag"):
            raise ValueError(f"by must be 'keep' or 'flag' (got {by!r})")
        names = ["kept", "rejected"] if by == "keep" else ["not flagged", "flagged"]
        if by == "flag" and not self._has_flag:
            return pd.DataFrame(columns=["step", *names])
        col, pos, neg = ("keep", 1, 0) if by == "keep" else ("flag", 0, 1)
        rows = self._q(
            f"SELECT step, SUM({col} = {pos}), SUM({col} = {neg}) FROM samples "
            f"WHERE {col} IS NOT NULL GROUP BY step ORDER BY step"
        )
        return pd.DataFrame(rows, columns=["step", *names])

    def events(self, since_id: int = 0) -> pd.DataFrame:
        rows = self._q(
            "SELECT id, t, level, message FROM events WHERE id > ? ORDER BY id", [since_id]
        )
        return pd.DataFrame(rows, columns=["id", "t", "level", "message"])

    def checkpoints(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT step, path, wall_s, t FROM checkpoints ORDER BY step")
        return [dict(zip(("step", "path", "wall_s", "t"), r)) for r in rows]
