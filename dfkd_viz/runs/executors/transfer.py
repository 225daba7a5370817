"""Moving runs and teachers between machines as bytes (no shared filesystem assumed).

- :func:`teacher_bundle` / :func:`write_bundle`: a teacher's weights and card (and the imported
  datasets and stored reference maps its runs need) as ``{relative path: bytes}``, written into
  another ``DFKD_VIZ_HOME``;
- :func:`new_run_dir`: a run directory for a given run id and config, as
  :func:`dfkd_viz.runs.manager.create_run` makes one;
- :func:`finish_run`: after the worker process ended, a run still marked active is recorded
  ``failed`` (its worker died without recording an end);
- :func:`pack_run`: a finished (stopped, failed) run directory as a gzip'd tar, its SQLite WAL
  checkpointed and every connection closed first;
- :func:`unpack_run`: such a tar unpacked safely (at most :data:`MAX_RUN_MEMBERS` members and
  :data:`MAX_RUN_BYTES` in all, checked before anything is written; ``tarfile`` ``filter="data"``;
  regular files and directories only) into a temporary name beside the target, its checkpoint
  paths pointed at the target, then renamed into place (an older copy of the run is replaced
  whole).

None of this imports Ray: the Ray executor calls it on both sides.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import time
from pathlib import Path
from typing import Any

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs.manager import RUN_ID_RE
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader, RunWriter
from dfkd_viz.util.io import write_atomic

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}$")
BUNDLE_DIRS = ("teachers", "user-data", "maps")
"""The only ``DFKD_VIZ_HOME`` sub-directories a bundle may write into."""
MAX_BUNDLE_BYTES = 2 * 2**30
"""A teacher bundle's total size, bytes (an imported teacher is at most 256 MiB, and so is each
imported dataset)."""
MAX_BUNDLE_FILES = 256
"""Files in one teacher bundle."""
MAX_BUNDLE_MAP_BYTES = 256 * 2**20
"""The reference maps a bundle carries, bytes in all; a map beyond that stays behind (the cell's
run then has no embedding map: maps are an observation, never a reason to fail)."""
MAX_RUN_BYTES = 8 * 2**30
"""A run archive's total uncompressed size (the sum of its members' sizes), bytes. A run is a few
MB for MNIST and a few hundred MB with CIFAR checkpoints (the last two are kept)."""
MAX_RUN_MEMBERS = 10_000
"""Members of one run archive (a run directory holds a handful of files)."""


# ------------------------------------------------------------------------------- teachers
def _strings(obj: Any) -> set[str]:
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(_strings(v) for v in obj.values())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(_strings(v) for v in obj)) if obj else set()
    return set()


def teacher_bundle(
    teacher_id: str, configs: list[dict[str, Any]], embedding: bool = False
) -> dict[str, bytes]:
    """The files a node needs to distil ``teacher_id`` with ``configs`` (raw or validated run
    configs; every one is scanned, duplicates cost nothing): ``teachers/<id>.*`` (weights and
    card), every imported dataset (``user-data/<name>.*``) whose name the card or a config
    mentions, and — with ``embedding``, or when a config asks for it — the teacher's stored
    reference map of each OOD domain the configs' runs map (``maps/<key>.npz``, the name
    :func:`dfkd_viz.teachers.maps.map_file` gives for the teacher's weights digest and the run's
    ``student_domain`` or ``ood_domain`` or the card's ``ood_domain``). Maps that are not stored
    here, or that would take the maps past :data:`MAX_BUNDLE_MAP_BYTES`, stay behind.

    Raises:
        DfkdVizError: the teacher is not trained here, or the bundle would exceed
            :data:`MAX_BUNDLE_BYTES` / :data:`MAX_BUNDLE_FILES`.
    """
    from dfkd_viz.data.user import discover
    from dfkd_viz.paths import user_data_dir
    from dfkd_viz.teachers.zoo import card_path, weights_path

    files: dict[str, bytes] = {}
    w, c = weights_path(teacher_id), card_path(teacher_id)
    if not (w.is_file() and c.is_file()):
        raise DfkdVizError(f"teacher {teacher_id} is not trained on this machine")
    files[f"teachers/{w.name}"] = w.read_bytes()
    files[f"teachers/{c.name}"] = c.read_bytes()
    tcard = json.loads(files[f"teachers/{c.name}"])
    mentioned = _strings(tcard) | _strings(configs)
    for name in sorted(mentioned & set(discover())):
        for p in (user_data_dir() / f"{name}.npz", user_data_dir() / f"{name}.json"):
            files[f"user-data/{p.name}"] = p.read_bytes()
    if embedding or any(cfg.get("embedding") for cfg in configs):
        files.update(_map_files(teacher_id, tcard, configs))
    _check_bundle(files)
    return files


def _map_files(
    teacher_id: str, tcard: dict[str, Any], configs: list[dict[str, Any]]
) -> dict[str, bytes]:
    """The driver's stored reference maps of ``teacher_id`` for the domains ``configs`` map (see
    :func:`teacher_bundle`), within :data:`MAX_BUNDLE_MAP_BYTES`; never raises."""
    out: dict[str, bytes] = {}
    try:  # the map is an observation: without it the cell's run has no embedding map
        from dfkd_viz.teachers.maps import map_file, teacher_digest

        digest = teacher_digest(teacher_id)
        domains = {
            cfg.get("student_domain") or cfg.get("ood_domain") or tcard.get("ood_domain")
            for cfg in configs
        } or {tcard.get("ood_domain")}
        budget = MAX_BUNDLE_MAP_BYTES
        for domain in sorted(domains, key=lambda d: d or ""):
            p = map_file(digest, domain)
            with contextlib.suppress(OSError):
                size = p.stat().st_size
                if size <= budget:
                    out[f"maps/{p.name}"] = p.read_bytes()
                    budget -= size
    except Exception:
        return out
    return out


def _check_bundle(files: dict[str, bytes]) -> None:
    """Raise DfkdVizError (one sentence) for a bundle beyond the size or file-count limits."""
    total = sum(len(v) for v in files.values())
    if len(files) > MAX_BUNDLE_FILES or total > MAX_BUNDLE_BYTES:
        raise DfkdVizError(
            f"a teacher bundle may hold at most {MAX_BUNDLE_FILES} files and "
            f"{MAX_BUNDLE_BYTES / 2**30:g} GiB (this one: {len(files)} files, "
            f"{total / 2**20:.0f} MiB)"
        )


def write_bundle(home: Path, files: dict[str, bytes]) -> None:
    """Write a :func:`teacher_bundle` into the ``DFKD_VIZ_HOME`` at ``home`` (atomically per file;
    cards last, as the zoo writes them). Nothing is written unless every path and the limits
    (:data:`MAX_BUNDLE_FILES`, :data:`MAX_BUNDLE_BYTES`) pass.

    Raises:
        DfkdVizError: a path outside :data:`BUNDLE_DIRS` or not a plain file name; a bundle beyond
            the limits.
    """
    home = Path(home)
    _check_bundle(files)
    for rel in files:
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in BUNDLE_DIRS or not _NAME_RE.match(parts[1]):
            raise DfkdVizError(f"a teacher bundle may not write {rel!r}")
    for rel in sorted(files, key=lambda r: r.endswith(".json")):
        parts = rel.split("/")
        write_atomic(home / parts[0] / parts[1], files[rel])


# ------------------------------------------------------------------------------- runs
def new_run_dir(runs_dir: Path, run_id: str, config_json: str) -> Path:
    """Create ``runs_dir/run_id`` with ``config.json`` and a ``queued`` store (as
    :func:`dfkd_viz.runs.manager.create_run` does, with the id given)."""
    from dfkd_viz.runs.config import RunConfig

    if not RUN_ID_RE.match(run_id):
        raise DfkdVizError(f"{run_id!r} is not a valid run id")
    cfg = RunConfig(**json.loads(config_json))
    d = Path(runs_dir) / run_id
    d.mkdir(parents=True)
    write_atomic(d / "config.json", config_json)
    w = RunWriter(d)
    w.init_status(run_id, cfg.steps, cfg.seconds)
    w.close()
    return d


def run_status(run_dir: Path) -> dict[str, Any]:
    """The stored status row of a run (empty when it cannot be read right now)."""
    try:
        with RunReader(run_dir) as r:
            return r.status()
    except Exception:
        return {}


def finish_run(run_dir: Path, returncode: int | None) -> dict[str, Any]:
    """After the run's worker process ended: a run still ``queued``/``running`` is recorded
    ``failed`` with one sentence. Returns the final status row."""
    w = RunWriter(run_dir)
    try:
        st = w.con.execute("SELECT state FROM status WHERE id = 1").fetchone()
        if st is not None and st[0] in ACTIVE_STATES:
            error = f"the worker process ended with exit code {returncode} without recording an end"
            w.add_event(error, "error")
            w.set_status(state="failed", error=error, finished=time.time())
    finally:
        w.close()
    return run_status(run_dir)


def checkpoint_wal(db: Path) -> None:
    """Move everything in ``db``'s WAL into the database file and close (``TRUNCATE``)."""
    con = sqlite3.connect(str(db), timeout=10.0)
    try:
        con.execute("PRAGMA busy_timeout = 10000")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        con.close()


def pack_run(run_dir: Path) -> bytes:
    """The run directory as gzip'd tar bytes (member names relative to the directory). The WAL is
    checkpointed and closed first; ``run.db-shm`` is never packed, and ``run.db-wal`` only when a
    reader kept the checkpoint from emptying it (SQLite then replays it on the other side)."""
    run_dir = Path(run_dir)
    checkpoint_wal(run_dir / "run.db")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for p in sorted(run_dir.rglob("*")):
            if p.is_symlink() or p.name == "run.db-shm":
                continue
            if p.name == "run.db-wal" and p.stat().st_size == 0:
                continue
            if p.is_file() or p.is_dir():
                tf.add(p, arcname=p.relative_to(run_dir).as_posix(), recursive=False)
    return buf.getvalue()


def _listed_members(tf: tarfile.TarFile, run_id: str) -> list[tarfile.TarInfo]:
    """The members of ``tf``, read header by header and refused (DfkdVizError) as soon as one is
    not a regular file or directory or the archive passes :data:`MAX_RUN_MEMBERS` /
    :data:`MAX_RUN_BYTES` (so a bomb's data is never inflated past the header that gives it
    away)."""
    members: list[tarfile.TarInfo] = []
    total = 0
    while (m := tf.next()) is not None:
        if not (m.isfile() or m.isdir()):
            raise DfkdVizError(f"the archive of run {run_id} holds {m.name!r}, not a regular file")
        members.append(m)
        total += max(m.size, 0)
        if len(members) > MAX_RUN_MEMBERS or total > MAX_RUN_BYTES:
            raise DfkdVizError(
                f"the archive of run {run_id} is too large to unpack (more than "
                f"{MAX_RUN_MEMBERS} members or {MAX_RUN_BYTES / 2**30:g} GiB uncompressed)"
            )
    return members


def unpack_run(data: bytes, runs_dir: Path, run_id: str) -> Path:
    """Unpack :func:`pack_run` bytes as ``runs_dir/run_id``, replacing any earlier copy.

    Before anything is written, the members are listed and the archive is refused when it has
    more than :data:`MAX_RUN_MEMBERS` members or their sizes add up to more than
    :data:`MAX_RUN_BYTES` (a decompression bomb is refused from its headers, before its data is
    inflated), or when a member is anything but a regular file or a directory (links, FIFOs,
    devices). It is then extracted with ``filter="data"`` (no absolute paths, no ``..``, no links
    out, no device files) and must hold ``config.json`` and a ``run.db`` of the same run id; it
    lands under a temporary name and is renamed into place, so readers see the old run or the new
    one, never half of one.

    Raises:
        DfkdVizError: a malformed id or archive, or one beyond the limits (one sentence; nothing
            is left behind).
    """
    if not RUN_ID_RE.match(run_id):
        raise DfkdVizError(f"{run_id!r} is not a valid run id")
    if not hasattr(tarfile, "data_filter"):
        raise DfkdVizError("receiving runs needs Python ≥ 3.10.12 (tarfile's data filter)")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    final = runs_dir / run_id
    tmp = runs_dir / f".incoming-{run_id}-{secrets.token_hex(4)}"
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                members = _listed_members(tf, run_id)
                tf.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DfkdVizError(f"the archive of run {run_id} is unreadable ({exc})") from None
        if not (tmp / "config.json").is_file() or not (tmp / "run.db").is_file():
            raise DfkdVizError(f"the archive of run {run_id} holds no run")
        with RunReader(tmp) as r:
            got = r.meta().get("run_id")
        if got != run_id:
            raise DfkdVizError(f"the archive of run {run_id} holds run {got!r}")
        w = RunWriter(tmp)
        try:
            w.relocate_checkpoints(final)
        finally:
            w.close()
        if final.exists():
            old = runs_dir / f".replaced-{run_id}-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
