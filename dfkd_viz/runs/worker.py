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
import json
import os
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from dfkd_viz.jobs.liveness import process_start_time
from dfkd_viz.runs.checkpoint import load_checkpoint, save_checkpoint
from dfkd_viz.runs.config import RunConfig
from dfkd_viz.runs.store import RunReader, RunWriter

if TYPE_CHECKING:
    from dfkd_viz.distill.snapshot import Snapshot

KEEP_CHECKPOINTS = 2


class StoreRecorder:
    """Engine callbacks that write everything a run records into the run store."""

    def __init__(self, writer: RunWriter, run_dir: Path, score_name: str | None = None) -> None:
        self.w = writer
        self.dir = run_dir
        self.score_name = score_name
        self._last_status = 0.0

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
            old = r.checkpoints()[:-KEEP_CHECKPOINTS]
        for c in old:
            Path(c["path"]).unlink(missing_ok=True)
            self.w.remove_checkpoint(c["step"])


class EmbeddingRecorder:
    """Engine callbacks that fit the run's UMAP map of real ID / OOD data in a background thread,
    place every snapshot's synthetic samples into it, and record the OOD-likeness of each snapshot
    (:mod:`dfkd_viz.analysis.embedding`).

    UMAP's fit is single-threaded (a fixed ``random_state``): while it runs, torch gets one thread
    fewer, so the fit has a core of its own instead of fighting the engine's threads (measured, 2
    cores: a fit thread at low priority beside a 2-thread engine put the first map at ~60 s; a
    core of its own, at 15 s — benchmarks/embedding_bench.py). All store writes happen on the engine's thread; the fitting thread
    only computes."""

    def __init__(self, writer: RunWriter, engine, seed: int = 0) -> None:
        from dfkd_viz.analysis.embedding import EmbeddingMap, reference_set

        self.w = writer
        ev = engine.evals
        # an out-of-domain run maps the student's domain as the "OOD" side of the map
        other = ev.student_test if ev.student_test is not None else ev.ood_test
        self.ref = reference_set(engine.teacher, ev.id_test, other, seed=seed)
        self.map = EmbeddingMap(self.ref, seed=seed)
        self.pending: dict[int, object] = {}
        self.written = False
        self.error: str | None = None
        self.t0 = time.perf_counter()
        import torch

        self._torch_threads = torch.get_num_threads()
        if self._torch_threads > 1:
            torch.set_num_threads(self._torch_threads - 1)
        self.thread = threading.Thread(target=self._fit, name="umap-fit", daemon=True)
        self.thread.start()

    def _restore_threads(self) -> None:
        import torch

        if torch.get_num_threads() != self._torch_threads:
            torch.set_num_threads(self._torch_threads)

    def _fit(self) -> None:
        try:
            self.map.fit()
        except Exception as exc:  # the map is an observation: it never fails the run
            self.error = _one_line(exc)

    def attach(self, engine) -> None:
        engine.add_callback("on_samples", self.on_samples)
        engine.add_callback("on_step", self.on_step)
        engine.add_callback("on_end", self.on_end)

    def _flush_map(self) -> None:
        if self.written or self.thread.is_alive():
            return
        self.written = True
        self._restore_threads()
        if self.error or self.map.coords is None:
            self.w.add_event(f"embedding map failed: {self.error}", "warning")
            return
        self.w.set_reference(self.ref.source, self.ref.labels, self.ref.images, self.map.coords)
        for step, feats in self.pending.items():
            self.w.set_embedding(step, self.map.place(feats))
        self.pending.clear()
        self.w.add_event(
            f"embedding map of {len(self.ref.source)} real points ready after {time.perf_counter() - self.t0:.1f} s"
        )

    def on_samples(self, engine, snap: Snapshot) -> None:
        feats = snap.features
        if feats is None:
            return
        like = self.map.ood_likeness(feats)
        self.w.add_metrics(
            snap.step, engine.wall_s, {"ood_likeness": float((like > 0.5).mean())}, commit=True
        )
        if self.written and self.map.coords is not None:
            self.w.set_embedding(snap.step, self.map.place(feats))
        else:
            self.pending[snap.step] = feats
            self._flush_map()

    def on_step(self, engine, p: dict) -> None:
        if not self.written and not self.thread.is_alive():
            self._flush_map()

    def on_end(self, engine, p: dict) -> None:
        self.thread.join(timeout=180)
        self._flush_map()


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
        _STOP["engine"] = engine
        if _STOP["flag"]:
            engine.request_stop("signal")
        if resume:
            with RunReader(run_dir) as r:
                ckpts = r.checkpoints()
            if ckpts:
                tensors, meta = load_checkpoint(ckpts[-1]["path"], device)
                engine.load_state_dict(tensors, meta)
                writer.truncate_after(engine.step)
                writer.add_event(f"resumed from the checkpoint at step {engine.step}")
            else:
                writer.add_event("no checkpoint to resume from: starting at step 0", "warning")
        recorder = StoreRecorder(writer, run_dir, getattr(engine.defense, "score_name", None))
        recorder.attach(engine)
        if cfg.embedding:
            EmbeddingRecorder(writer, engine, cfg.seed).attach(engine)
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
    return run_worker(args.run_dir, args.resume)


if __name__ == "__main__":
    sys.exit(main())
