"""Placing synthetic samples into a teacher's reference map without UMAP: how close the k-NN
placement (:class:`dfkd_viz.analysis.embedding.KnnPlacer`) comes to UMAP's own ``transform``, what
it costs a run, and what the low-priority map job costs a run going beside it.

    python benchmarks/map_placement.py [--steps 100] [--sections agreement cost nice] [--docs]
        [--out benchmarks/results/map_placement.json]

- ``agreement``: real runs' synthetic features: the ``clean-dfq`` and ``ntl-trap`` presets run
  in this process for ``--steps`` steps with a snapshot (64 samples) every 10 steps. Each
  teacher's map is fitted exactly as the map job fits it (same reference set, seed and UMAP
  settings), and every snapshot is placed twice: k-NN placement and UMAP's ``transform``.
  Figures: the median (and 90th percentile) distance between the two placements relative to the
  map's extent (the diagonal of the reference points' bounding box), and the share of samples
  whose nearest reference point in the map is the same; beside them, the same figures for the
  simplest placement (on the nearest reference point in feature space, k = 1).
- ``cost``: the median time to place one snapshot against the time of one step of the default
  ``dfq`` engine (2 threads), per step and per snapshot interval (``snapshot_every`` = 20 steps,
  the default): the share of the run's throughput; and the once-per-run cost of loading a map
  and copying its 4,000 points into a run store.
- ``nice``: the default ``dfq`` engine's iterations/s alone, then while a map job fits at
  ``nice 19`` (the job as the app starts it), then while the same fit runs at normal priority.

Uses a temporary DFKD_VIZ_HOME (trains the two teachers there, ~20 s). ``--docs`` writes the
summary between ``<!-- placement:begin -->`` and ``<!-- placement:end -->`` in
``docs/results/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from machine import load_avg  # noqa: E402

RUNS = {"clean-dfq": "mnist-clean", "ntl-trap": "mnist-ntl-watermark"}


def snapshot_features(preset: str, steps: int) -> list[np.ndarray]:
    """Teacher features of every snapshot of a real run of ``preset`` (in this process)."""
    import torch

    from dfkd_viz.runs.build import build_engine
    from dfkd_viz.runs.config import validate_config
    from dfkd_viz.runs.presets import preset_config

    cfg = validate_config(
        preset_config(
            preset,
            {"steps": steps, "seed": 0, "snapshot_every": 10, "eval_every": 50, "embedding": False},
        )
    )
    torch.manual_seed(cfg.seed)
    eng = build_engine(cfg)
    feats: list[np.ndarray] = []
    eng.add_callback("on_samples", lambda e, snap: feats.append(np.asarray(snap.features)))
    eng.run()
    return feats


def compare(
    xy: np.ndarray,
    umap_xy: np.ndarray,
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    source: np.ndarray | None = None,
) -> dict:
    """How far placements ``xy`` are from UMAP's (relative to the map's extent: the diagonal of
    the reference points' bounding box), the share with the same nearest reference point in the
    map, and (coarser) the share whose nearest reference point has the same class and source."""
    from dfkd_viz.analysis.embedding import nearest

    extent = float(np.linalg.norm(coords.max(0) - coords.min(0)))
    rel = np.linalg.norm(xy - umap_xy, axis=1) / extent
    a, b = nearest(xy, coords, 1)[1][:, 0], nearest(umap_xy, coords, 1)[1][:, 0]
    out = {
        "median_rel_dist": round(float(np.median(rel)), 4),
        "p90_rel_dist": round(float(np.quantile(rel, 0.9)), 4),
        "same_nearest_ref": round(float((a == b).mean()), 3),
    }
    if labels is not None and source is not None:
        same_kind = (labels[a] == labels[b]) & (source[a] == source[b])
        out["same_nearest_class_and_source"] = round(float(same_kind.mean()), 3)
    return out


def agreement(steps: int, save: Path | None = None) -> dict:
    from dfkd_viz.analysis.embedding import EmbeddingMap, KnnPlacer, nearest, reference_set
    from dfkd_viz.data import load_dataset, load_domain
    from dfkd_viz.teachers import load_teacher
    from dfkd_viz.teachers.maps import MAP_SEED, UMAP_SETTINGS, map_points

    out = {}
    for preset, teacher_id in RUNS.items():
        feats = snapshot_features(preset, steps)
        teacher, card = load_teacher(teacher_id)
        n_id, n_ood = map_points()
        domain = "watermark" if preset == "ntl-trap" else card["ood_domain"]
        ref = reference_set(
            teacher,
            load_dataset(card["dataset"], "test"),
            load_domain(domain, card["dataset"], "test"),
            n_id=n_id,
            n_ood=n_ood,
            seed=MAP_SEED,
        )
        m = EmbeddingMap(ref, seed=MAP_SEED, **UMAP_SETTINGS)
        coords = m.fit()
        placer = KnnPlacer(ref.features, coords, ref.source, k=UMAP_SETTINGS["n_neighbors"])
        x = np.concatenate(feats)
        t0 = time.perf_counter()
        umap_xy = np.concatenate([m.place(f) for f in feats])
        t_umap = (time.perf_counter() - t0) / len(feats)
        knn_xy = np.concatenate([placer.place(f) for f in feats])
        _, nn1 = nearest(x, ref.features, 1)
        one_xy = coords[nn1[:, 0]]
        extent = float(np.linalg.norm(coords.max(0) - coords.min(0)))

        out[preset] = {
            "teacher": teacher_id,
            "domain": domain,
            "snapshots": len(feats),
            "samples": len(x),
            "map_extent": round(extent, 2),
            "knn": compare(knn_xy, umap_xy, coords, ref.labels, ref.source),
            "nearest_only": compare(one_xy, umap_xy, coords, ref.labels, ref.source),
            # how far apart neighbouring reference points are in the map (the scale of "same")
            "ref_spacing_rel": round(
                float(np.median(nearest(coords, coords, 2)[0][:, 1])) / extent, 4
            ),
            "umap_transform_s_per_snapshot_warm": round(t_umap, 3),
            "load": load_avg(),
        }
        print(f"[placement] agreement {preset}: {out[preset]}", file=sys.stderr, flush=True)
        if save:
            np.savez(
                save / f"{preset}.npz",
                feats=x,
                ref_features=ref.features,
                coords=coords,
                umap_xy=umap_xy,
                labels=ref.labels,
                source=ref.source,
            )
    return {"agreement": out}


def _median_time(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def cost() -> dict:
    import torch
    from machine import quiet_engine

    from dfkd_viz.runs.store import RunWriter
    from dfkd_viz.teachers.maps import compute_map, load_map_file, map_path

    torch.set_num_threads(os.cpu_count() or 1)
    path = map_path("mnist-clean")
    if not path.exists():
        compute_map("mnist-clean")
    eng, step = quiet_engine()
    for _ in range(3):
        step()
    t_step = _median_time(step, 30)
    with torch.no_grad():
        snap = eng.snapshot()
    t0 = time.perf_counter()
    m = load_map_file(path)
    placer = m.placer()
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        w = RunWriter(tmp)
        t0 = time.perf_counter()
        w.set_reference(m.source, m.labels, m.png, m.coords)
        t_ref = time.perf_counter() - t0
        w.close()
    feats = np.asarray(snap.features)
    placer.place_and_score(feats)
    t_place = _median_time(lambda: placer.place_and_score(feats), 50)
    out = {
        "step_s": round(t_step, 4),
        "place_snapshot_s": round(t_place, 4),
        "place_vs_step": round(t_place / t_step, 4),
        "place_share_of_throughput": round(t_place / (20 * t_step + t_place), 4),
        "map_load_s": round(t_load, 3),
        "map_copy_to_store_s": round(t_ref, 3),
        "snapshot_samples": len(feats),
        "load": load_avg(),
    }
    print(f"[placement] cost {out}", file=sys.stderr, flush=True)
    return {"cost": out}


def _rate_for(step, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def nice() -> dict:
    """The engine's rate alone, beside the map job (nice 19), beside the same fit un-niced."""
    import torch
    from machine import quiet_engine

    from dfkd_viz.teachers import train_teacher
    from dfkd_viz.teachers.maps import map_path

    torch.set_num_threads(os.cpu_count() or 1)
    train_teacher("mnist-ntl-digits")
    _, step = quiet_engine()
    for _ in range(3):
        step()
    rows = {}
    rows["alone_it_s"] = round(_rate_for(step, 15), 2)
    py = sys.executable
    home = Path(os.environ["DFKD_VIZ_HOME"])
    for label, cmd in (
        ("beside_nice19", [py, "-m", "dfkd_viz.teachers.maps", "mnist-ntl-digits", "digits"]),
        (
            "beside_normal_priority",
            [
                py,
                "-c",
                "import sys; from dfkd_viz.teachers.maps import compute_map; "
                "compute_map('mnist-ntl-digits', 'digits')",
            ],
        ),
    ):
        target = map_path("mnist-ntl-digits", "digits")
        target.unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=dict(os.environ, DFKD_VIZ_HOME=str(home)), stdout=subprocess.DEVNULL
        )
        n, t_eng = 0, 0.0
        while proc.poll() is None:
            t1 = time.perf_counter()
            step()
            t_eng += time.perf_counter() - t1
            n += 1
        job_s = time.perf_counter() - t0
        rows[f"{label}_it_s"] = round(n / t_eng, 2) if n else None
        rows[f"{label}_job_s"] = round(job_s, 1)
        rows[f"{label}_ok"] = target.exists()
    rows["alone_after_it_s"] = round(_rate_for(step, 15), 2)
    rows["load"] = load_avg()
    print(f"[placement] nice {rows}", file=sys.stderr, flush=True)
    return {"nice": rows}


def markdown(res: dict) -> str:
    lines = [
        f"Machine: {res.get('cpu')} · {res.get('cores')} cores · {res.get('created')}",
        "",
    ]
    ag = res.get("agreement")
    if ag:
        lines += [
            "| run (snapshots × 64) | k-NN vs UMAP `transform`: median / p90 distance ÷ map "
            "extent | same nearest reference point (same class and source) | nearest feature "
            "neighbour only: median / p90, same | reference spacing | load |",
            "|---|---|---|---|---|---|",
        ]
        for preset, r in ag.items():
            k, o = r["knn"], r["nearest_only"]
            kind = k.get("same_nearest_class_and_source")
            lines.append(
                f"| `{preset}` ({r['snapshots']} × 64, map of {r['teacher']} / {r['domain']}) | "
                f"{k['median_rel_dist']:.1%} / {k['p90_rel_dist']:.1%} | "
                f"{k['same_nearest_ref']:.0%}"
                + (f" ({kind:.0%})" if kind is not None else "")
                + " | "
                f"{o['median_rel_dist']:.1%} / {o['p90_rel_dist']:.1%}, {o['same_nearest_ref']:.0%} | "
                + (f"{r['ref_spacing_rel']:.2%}" if "ref_spacing_rel" in r else "—")
                + f" | {r['load']} |"
            )
        lines.append("")
    c = res.get("cost")
    if c:
        lines += [
            f"Cost (load {c['load']}): placing a snapshot of {c['snapshot_samples']} samples takes "
            f"{c['place_snapshot_s'] * 1000:.1f} ms, {c['place_vs_step']:.1%} of one default `dfq` "
            f"step ({c['step_s'] * 1000:.0f} ms); with a snapshot every 20 steps that is "
            f"{c['place_share_of_throughput']:.2%} of the run's throughput (goal ≤ 5 %). Once per "
            f"run: loading the map {c['map_load_s'] * 1000:.0f} ms, copying its points into the run "
            f"store {c['map_copy_to_store_s'] * 1000:.0f} ms.",
            "",
        ]
    n = res.get("nice")
    if n:
        lines += [
            f"The map job beside a run (load {n['load']}): the default `dfq` engine runs at "
            f"{n['alone_it_s']} it/s alone ({n['alone_after_it_s']} after), "
            f"{n['beside_nice19_it_s']} it/s while the map job fits at nice 19 (the job took "
            f"{n['beside_nice19_job_s']} s), and {n['beside_normal_priority_it_s']} it/s while the "
            f"same fit runs at normal priority ({n['beside_normal_priority_job_s']} s).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["agreement", "cost", "nice"],
        choices=["agreement", "cost", "nice"],
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "map_placement.json")
    ap.add_argument("--docs", action="store_true", help="write the summary into performance.md")
    ap.add_argument("--save-arrays", type=Path, help="keep features and placements here (.npz)")
    args = ap.parse_args()
    if args.save_arrays:
        args.save_arrays.mkdir(parents=True, exist_ok=True)
    os.environ["DFKD_VIZ_HOME"] = tempfile.mkdtemp(prefix="dfkd-viz-placement-")
    from machine import cpu_model

    from dfkd_viz.teachers import train_teacher

    for t in RUNS.values():
        train_teacher(t)
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.update(cpu=cpu_model(), cores=os.cpu_count(), created=time.strftime("%Y-%m-%d"))
    for name in args.sections:
        res.update(
            agreement(args.steps, args.save_arrays) if name == "agreement" else globals()[name]()
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    print(md)
    if args.docs:
        from _docs import write_section

        if not write_section("results/performance.md", "placement", md):
            print("performance.md has no placement markers", file=sys.stderr)


if __name__ == "__main__":
    main()
