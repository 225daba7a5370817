"""The worker: one detached OS process per run (``python -m dfkd_viz.runs.worker RUN_DIR``).

It reads ``config.json``, makes sure the teacher is trained (training it first if needed, with
progress in the events), builds the engine, attaches the store writer as the engine's callbacks,
and runs. SIGTERM / SIGINT request a clean stop at the next step boundary (a final checkpoint is
written and the state becomes ``stopped``). Any exception marks the run ``failed`` with a
one-sentence error (the traceback goes to the events and to ``worker.log``).
"""

from __future__ import annotations

import signal

# A stop may arrive while the worker is still importing torch (a second or two): catch it from the
# very first line so the run still ends as "stopped", never as a process killed mid-import.
_STOP = {"flag": False, "engine": None}


def _on_signal(signum, frame) -> None:
    _STOP["flag"] = True
    if _STOP["engine"] is not None:
        _STOP["engine"].request_stop("signal")


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)

import argparse
import contextlib
import errno
import gc
import json
import os
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from dfkd_viz.jobs.liveness import process_start_time
from dfkd_viz.jobs.priority import lower_priority, worker_nice
from dfkd_viz.runs.checkpoint import checkpoints_to_drop, load_checkpoint, save_checkpoint
from dfkd_viz.runs.config import RunConfig
from dfkd_viz.runs.store import RunReader, RunWriter

if TYPE_CHECKING:
    from dfkd_viz.distill.snapshot import Snapshot


class StoreRecorder:
    """Engine callbacks that write everything a run records into the run store (per-class
    evaluations into its ``per_class`` table, see :mod:`dfkd_viz.runs.store`)."""

    def __init__(
        self,
        writer: RunWriter,
        run_dir: Path,
        score_name: str | None = None,
        checkpoint_every: int = 20,
        keep_checkpoints: int = 25,
    ) -> None:
        self.w = writer
        self.dir = run_dir
        self.score_name = score_name
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self._last_status = 0.0
        self._per_run_written = False

    def attach(self, engine) -> None:
        engine.add_callback("on_step", self.on_step)
        engine.add_callback("on_eval", self.on_eval)
        engine.add_callback("on_samples", self.on_samples)
        engine.add_callback("on_checkpoint", self.on_checkpoint)

    def on_step(self, engine, p: dict) -> None:
        values = dict(p["terms"])
        values["lr_s"] = engine.opt_s.param_groups[0]["lr"]
        self.w.add_metrics(p["step"], p["wall_s"], values)
        now = time.time()
        if now - self._last_status >= 0.5:
            self._last_status = now
            self.w.set_status(
                step=p["step"],
                wall_s=p["wall_s"],
                progress=engine.progress(),
                phase=engine.ctx.phase,
            )

    def on_eval(self, engine, p: dict) -> None:
        vals = {
            k: p.get(k)
            for k in ("id_acc", "ood_acc", "asr", "trigger_loc", "student_domain_acc", "it_s")
        }
        pc = p.get("per_class")  # a ClassBreakdown: stored before the metrics that announce it
        if pc is not None:
            if not self._per_run_written:  # the teacher's and test sets' constants, once
                self.w.add_per_class(0, pc.per_run())
                self._per_run_written = True
            self.w.add_per_class(p["step"], pc.per_eval())
        self.w.add_metrics(p["step"], p["wall_s"], vals, commit=True)
        self.w.set_status(step=p["step"], wall_s=p["wall_s"], progress=engine.progress())

    def on_samples(self, engine, snap: Snapshot) -> None:
        self.w.add_snapshot(snap, engine.wall_s, self.score_name)

    def on_checkpoint(self, engine, p: dict) -> None:
        tensors, meta = engine.state_dict()
        path = self.dir / "checkpoints" / f"step-{p['step']:07d}.safetensors"
        save_checkpoint(path, tensors, meta)
        self.w.add_checkpoint(p["step"], str(path), engine.wall_s)
        with RunReader(self.dir) as r:
            stored = r.checkpoints()
        drop = set(
            checkpoints_to_drop(
                [c["step"] for c in stored], self.checkpoint_every, self.keep_checkpoints
            )
        )
        for c in stored:
            if c["step"] in drop:  # forks hold their own hard link: unlinking here is safe
                Path(c["path"]).unlink(missing_ok=True)
                self.w.remove_checkpoint(c["step"])


class EmbeddingRecorder:
    """Engine callbacks that place every snapshot's synthetic samples into the teacher's
    reference map and record each snapshot's OOD-likeness.

    The map (UMAP of real ID / OOD test points in the teacher's feature space) is computed once per
    teacher weights and OOD domain by a background job (:mod:`dfkd_viz.teachers.maps`); the worker
    never imports UMAP and never fits. Placing a snapshot is a k-NN query and a weighted mean
    (:class:`~dfkd_viz.analysis.embedding.KnnPlacer`, milliseconds). When the map is not stored yet,
    the recorder starts its job (low priority, one thread), keeps the features of up to
    :attr:`MAX_PENDING` snapshots (the oldest are dropped beyond that), checks for the map file
    with one ``stat`` per snapshot, and places the kept snapshots as soon as it appears; after the
    run it waits for the job a while (:meth:`finish`). Every store write happens on the engine's
    thread."""

    MAX_PENDING = 100
    """Snapshots whose features are kept while the map is being computed (64 × D floats each)."""

    def __init__(self, writer: RunWriter, teacher_id: str, domain: str | None) -> None:
        from dfkd_viz.teachers.maps import (
            MAP_JOBS_ENV,
            map_file,
            map_jobs_allowed,
            start_map,
            teacher_digest,
        )

        self.w = writer
        self.teacher_id = teacher_id
        self.domain = domain
        self.placer = None
        self.pending: dict[int, tuple[object, float]] = {}
        self.dropped = 0
        self.error: str | None = None
        self.t0 = time.perf_counter()
        self.path: Path | None = None
        self.digest: str | None = None
        try:
            self.digest = teacher_digest(teacher_id)
            self.path = map_file(self.digest, domain)
            if not self.path.exists() and not map_jobs_allowed():
                self.path = None  # e.g. a Ray cell: no map shipped with it, none computed there
                writer.add_event(
                    f"no reference map of {teacher_id} ({domain or 'no OOD domain'}) here and "
                    f"{MAP_JOBS_ENV}=0: this run has no embedding map"
                )
            elif not self.path.exists():
                pid = start_map(teacher_id, domain or "none", self.digest)
                if pid:
                    writer.add_event(
                        f"the reference map of {teacher_id} ({domain or 'no OOD domain'}) is not "
                        f"computed yet: computing it in the background (job {pid}, low priority); "
                        "snapshots are placed as soon as it is ready"
                    )
        except Exception as exc:  # the map is an observation: it never fails the run
            self._give_up(exc)

    def attach(self, engine) -> None:
        engine.add_callback("on_samples", self.on_samples)
        engine.add_callback("on_end", self.on_end)

    def _give_up(self, exc: BaseException) -> None:
        self.error = _one_line(exc)
        self.path = None
        self.pending.clear()
        self.w.add_event(f"embedding map unavailable: {self.error}", "warning")

    def ready(self) -> bool:
        """True once the map is loaded; checks for its file (one ``stat``) until then, and on
        finding it copies its reference points into the run store and places the kept
        snapshots."""
        if self.placer is not None:
            return True
        if self.path is None or not self.path.exists():
            return False
        from dfkd_viz.teachers.maps import load_map_file

        try:
            m = load_map_file(self.path)
            if m is None:
                raise ValueError(f"the map file {self.path.name} is unreadable")
            self.w.set_reference(m.source, m.labels, m.png, m.coords)
            self.placer = m.placer()
            for step, (feats, wall_s) in sorted(self.pending.items()):
                self._place(step, feats, wall_s)
        except Exception as exc:  # the map is an observation: it never fails the run
            self._give_up(exc)
            return False
        n = len(self.pending)
        self.pending.clear()
        self.w.add_event(
            f"embedding map of {len(m.source)} real points in use after "
            f"{time.perf_counter() - self.t0:.1f} s ({n} waiting snapshot(s) placed"
            + (f", {self.dropped} dropped" if self.dropped else "")
            + ")"
        )
        return True

    def _place(self, step: int, feats, wall_s: float) -> None:
        xy, like = self.placer.place_and_score(feats)
        self.w.set_embedding(step, xy)
        self.w.add_metrics(step, wall_s, {"ood_likeness": float((like > 0.5).mean())}, commit=True)

    def on_samples(self, engine, snap: Snapshot) -> None:
        feats = snap.features
        if feats is None or self.path is None:
            return
        if self.ready():
            self._place(snap.step, feats, engine.wall_s)
            return
        self.pending[snap.step] = (feats, engine.wall_s)
        while len(self.pending) > self.MAX_PENDING:
            del self.pending[min(self.pending)]
            self.dropped += 1

    def on_end(self, engine, p: dict) -> None:
        self.ready()

    def waiting(self) -> bool:
        """True while snapshots wait for a map that may still come (see :meth:`finish`)."""
        return self.path is not None and bool(self.pending) and not self.ready()

    def finish(self, timeout_s: float = 600.0, stop=lambda: False) -> None:
        """After the run: while snapshots wait for a map that is being computed, wait for it (up
        to ``timeout_s``, or until ``stop()``, or until its job ends without a map) and place
        them."""
        if self.path is None or not self.pending or self.ready():
            return
        from dfkd_viz.teachers.maps import progress_for

        self.w.add_event(f"waiting for the reference map to place {len(self.pending)} snapshot(s)")
        deadline = time.time() + timeout_s
        while time.time() < deadline and not stop():
            if self.ready():
                return
            rec = progress_for(self.digest, self.domain)
            if rec is None or rec.state in ("failed", "stopped"):
                why = rec.error if rec is not None and rec.error else "its job is not running"
                self.w.add_event(f"no embedding map for this run: {why}", "warning")
                return
            time.sleep(0.5)
        self.ready()


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _one_line(exc: BaseException) -> str:
    """One sentence for a failure; a full disk says so and how to carry on."""
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        where = f" {Path(exc.filename).name}" if exc.filename else ""
        return f"no room to write{where} ({exc.strerror}): free disk space, then resume the run"
    if isinstance(exc, sqlite3.OperationalError) and ("full" in str(exc) or "I/O" in str(exc)):
        return f"the run store could not grow ({exc}): free disk space, then resume the run"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_worker(run_dir: str | Path, resume: bool = False) -> int:
    """Run the distillation described by ``run_dir/config.json``; returns a process exit code."""
    import torch

    from dfkd_viz.runs.build import build_engine, resolve_device, set_threads
    from dfkd_viz.teachers import is_trained, train_teacher

    run_dir = Path(run_dir)
    writer = RunWriter(run_dir)
    try:
        cfg = RunConfig(**json.loads((run_dir / "config.json").read_text()))
        threads = set_threads(cfg.threads)
        device = resolve_device(cfg.device)
        writer.set_status(
            state="running",
            pid=os.getpid(),
            pid_start=process_start_time(os.getpid()),
            started=time.time(),
            device=str(device),
            threads=threads,
            error=None,
            phase="setup",
        )
        if not is_trained(cfg.teacher):
            writer.add_event(f"training teacher {cfg.teacher} (first use; cached afterwards)")
            writer.set_status(phase="teacher")
            last = {"t": 0.0}

            def progress(frac: float, msg: str) -> None:
                if time.time() - last["t"] > 1.0 or frac >= 1.0:
                    last["t"] = time.time()
                    writer.set_status(phase=f"teacher {frac:.0%}")

            c = train_teacher(cfg.teacher, progress=progress)
            writer.add_event(
                f"teacher {cfg.teacher} trained in {c['train_s']:.1f} s (ID accuracy {c['id_acc']:.1%})"
            )
        torch.manual_seed(cfg.seed)
        engine = build_engine(cfg, device)
        if engine.amp.warning:  # bf16 asked for where it is not native: the run is fp32
            writer.add_event(engine.amp.warning, "warning")
        _STOP["engine"] = engine
        if _STOP["flag"]:
            engine.request_stop("signal")
        if resume:
            with RunReader(run_dir) as r:
                ckpts = r.checkpoints()
                run_meta = r.meta()
            if ckpts:
                tensors, meta = load_checkpoint(ckpts[-1]["path"], device)
                first_of_fork = run_meta.get("fork_step") == str(ckpts[-1]["step"])
                # the defense whose state the checkpoint holds (checkpoints before this field:
                # the parent's defense for a fork's first checkpoint, else the run's own)
                was = meta.get("defense") or (
                    run_meta.get("parent_defense") if first_of_fork else engine.defense.name
                )
                engine.load_state_dict(tensors, meta, defense_state=was == engine.defense.name)
                writer.truncate_after(engine.step)
                if first_of_fork and len(ckpts) == 1:
                    writer.add_event(
                        f"fork of {run_meta.get('parent_run')}: continuing from its checkpoint "
                        f"at step {engine.step}"
                        + (
                            f"; defense {engine.defense.name} starts fresh here ({was} before)"
                            if was != engine.defense.name
                            else ""
                        )
                    )
                else:
                    writer.add_event(f"resumed from the checkpoint at step {engine.step}")
            else:
                writer.add_event("no checkpoint to resume from: starting at step 0", "warning")
        recorder = StoreRecorder(
            writer,
            run_dir,
            getattr(engine.defense, "score_name", None),
            cfg.checkpoint_every,
            cfg.keep_checkpoints,
        )
        recorder.attach(engine)
        emb = None
        if cfg.embedding:
            # an out-of-domain run maps the student's domain as the "OOD" side of the map
            emb = EmbeddingRecorder(
                writer, cfg.teacher, cfg.student_domain or engine.evals.ood_domain
            )
            emb.attach(engine)
        writer.set_status(phase=engine.ctx.phase, total_steps=cfg.steps, budget_s=cfg.seconds)
        final = engine.run()
        writer.flush()
        state = final["status"]
        writer.set_status(
            state=state,
            step=final["step"],
            wall_s=final["wall_s"],
            progress=engine.progress(),
            finished=time.time(),
            phase="done",
        )
        writer.add_event(
            f"{state} at step {final['step']} after {final['wall_s']:.1f} s: ID accuracy {final.get('id_acc', 0):.1%}"
        )
        if emb is not None and emb.waiting():
            # snapshots still wait for the teacher's map: free the engine (teacher, student,
            # generator, replay memory) first, then wait for the map with the features alone;
            # `runs delete` ends this wait with SIGTERM
            _STOP["engine"] = None
            del engine
            gc.collect()
            with contextlib.suppress(Exception):  # the run's recorded end stands, whatever happens
                emb.finish(stop=lambda: _STOP["flag"])
        return 0
    except BaseException as exc:  # the run must end in a recorded state, whatever happened
        msg = _one_line(exc)
        traceback.print_exc()
        with contextlib.suppress(Exception):
            writer.flush()
        try:
            writer.add_event(traceback.format_exc(), "error")
            writer.set_status(state="failed", error=msg, finished=time.time())
        except Exception:
            print(f"could not record the failure in the store: {msg}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dfkd-viz worker: runs one distillation")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    lower_priority(worker_nice())  # the app's pages first (checked when the run was launched)
    return run_worker(args.run_dir, args.resume)


if __name__ == "__main__":
    sys.exit(main())
