"""Validation of ``dfkd-viz audit``: every zoo teacher plus the extra teachers of
``benchmarks/audit_teachers.py`` (other seeds, OOD domains, triggers and targets), audited from
their weights alone; the true kind (from the card) is used only to score the verdicts.

    python benchmarks/audit_validation.py [--home DIR] [--fresh] [--docs]

The held-out teachers (``HOLDOUT``: never used to choose the scores and thresholds, which were
set on the zoo and ``EXTRA``) are reported separately.

Uses its own home (default ``~/.cache/dfkd-viz-audit``) so the extra teachers never appear in the
app's zoo; trained zoo teachers are copied from the default home when present, the rest trained.
Also imports a copy of ``mnist-ntl-digits`` as a ``kind: user`` teacher and checks that it gets the
same report. Prints and writes ``benchmarks/results/audit.json`` and a Markdown section (confusion
tables, AUROC per score, one row per teacher); ``--docs`` puts it in ``docs/results/audit.md``
between ``<!-- audit:begin -->`` and ``<!-- audit:end -->``. ~15 min on 2 cores (plus training).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _setup_home(home: Path) -> None:
    os.environ["DFKD_VIZ_HOME"] = str(home)
    src = Path(os.path.expanduser("~/.cache/dfkd-viz/teachers"))
    dst = home / "teachers"
    dst.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and src != dst:
        for f in src.glob("*.safetensors"):
            card = f.with_suffix(".json")
            if card.exists() and not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)
                shutil.copy2(card, dst / card.name)


POSITIVE = {"ntl": {"ntl", "cuti"}, "backdoor": {"backdoor"}}


def right(row: dict, risk: str) -> bool:
    """A teacher of the risk's kind is caught (suspicious or high); any other gets ``low``."""
    return (row["verdict"][risk] != "low") == (row["kind"] in POSITIVE[risk])


def _auroc(rows: list[dict], risk: str, key: str) -> float:
    from sklearn.metrics import roc_auc_score

    y = [r["kind"] in POSITIVE[risk] for r in rows]
    s = [r["scores"][risk][key] for r in rows]
    return float(roc_auc_score(y, s))


def _auroc_cell(rows: list[dict], risk: str, key: str) -> str:
    y = {r["kind"] in POSITIVE[risk] for r in rows}
    return f"{_auroc(rows, risk, key):.3f}" if len(y) == 2 else "—"


def _confusion(rows: list[dict], risk: str) -> list[str]:
    out = ["| true kind | low | suspicious | high |", "|---|---|---|---|"]
    for kind in ("clean", "ntl", "cuti", "backdoor"):
        sub = [r for r in rows if r["kind"] == kind]
        if sub:
            n = {
                v: sum(r["verdict"][risk] == v for r in sub) for v in ("low", "suspicious", "high")
            }
            out.append(f"| {kind} ({len(sub)}) | {n['low']} | {n['suspicious']} | {n['high']} |")
    return out


def markdown(rows: list[dict], copy_check: dict) -> str:
    from dfkd_viz.audit import BACKDOOR_THRESHOLDS, NTL_THRESHOLDS

    def n_right(sub: list[dict]) -> int:
        return sum(all(right(r, k) for k in ("ntl", "backdoor")) for r in sub)

    zoo = [r for r in rows if r["set"] == "zoo"]
    calib = [r for r in rows if r["set"] != "holdout"]
    held = [r for r in rows if r["set"] == "holdout"]
    out = [
        f"{len(rows)} teachers audited from their weights only: {len(zoo)} of the zoo, "
        f"{len(calib) - len(zoo)} extra (the scores and thresholds were chosen on these "
        f"{len(calib)}), {len(held)} held out (never used to choose; their first audit was seen "
        f"before the last revision of the rules, so they are not strictly blind). "
        f"Right NTL and backdoor verdicts: zoo **{n_right(zoo)} / {len(zoo)}**, zoo + extra "
        f"{n_right(calib)} / {len(calib)}, held out **{n_right(held)} / {len(held)}**.",
        "",
        "| score | AUROC zoo + extra | AUROC held out | AUROC zoo | thresholds suspicious / high |",
        "|---|---|---|---|---|",
    ]
    for risk, key, thr in (
        ("ntl", "robust_mass", NTL_THRESHOLDS),
        ("ntl", "lure_share", None),
        ("ntl", "robust_lure", None),
        ("backdoor", "shortcut_gain", BACKDOOR_THRESHOLDS),
        ("backdoor", "target_shuffle_survival", None),
    ):
        t = "—" if thr is None else f"{thr[0]} / {thr[1]}"
        out.append(
            f"| {risk}: `{key}` | {_auroc_cell(calib, risk, key)} | {_auroc_cell(held, risk, key)} "
            f"| {_auroc_cell(zoo, risk, key)} | {t} |"
        )
    for risk in ("ntl", "backdoor"):
        for name, sub in (("zoo + extra", calib), ("held out", held)):
            if sub:
                out += ["", f"**{risk} verdict** by true kind ({name}):", ""]
                out += _confusion(sub, risk)
    out += [
        "",
        "| teacher | kind | NTL: robust mass = lure share (class) × robust | backdoor: shortcut gain (target) · "
        "shuffle survival | collapse: coverage | verdict NTL / backdoor / collapse | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, b, c = r["scores"]["ntl"], r["scores"]["backdoor"], r["scores"]["collapse"]
        v = r["verdict"]
        mark = "" if all(right(r, k) for k in ("ntl", "backdoor")) else " ✗"
        truth = f" (target {r['target']})" if r.get("target") is not None else ""
        aside = "; lure set aside" if b.get("lure_set_aside") else ""
        tag = "" if r["set"] == "zoo" else f" ({r['set']})"
        out.append(
            f"| {r['id']}{tag} | {r['kind']}{truth} | "
            f"{n['robust_mass']:.2f} = {n['lure_share']:.2f} ({n['lure_class']}) × "
            f"{n['robust_lure']:.2f} | "
            f"{b['shortcut_gain']:.2f} ({b['target']}{aside}) · "
            f"{b['target_shuffle_survival']:.2f} | "
            f"{c['coverage']:.2f} | {v['ntl']} / {v['backdoor']} / {v['collapse']}{mark} | "
            f"{r['seconds']:.0f} |"
        )
    out.append("")
    out.append(
        f"Imported copy check: `{copy_check['source']}` imported as `{copy_check['copy']}` "
        f"(kind user): same verdict {copy_check['same_verdict']}, same scores "
        f"{copy_check['same_scores']}."
    )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.path.expanduser("~/.cache/dfkd-viz-audit"))
    ap.add_argument("--fresh", action="store_true", help="audit again (ignore stored reports)")
    ap.add_argument(
        "--docs", action="store_true", help="write the section into docs/results/audit.md"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit.json"))
    args = ap.parse_args()
    _setup_home(Path(args.home))

    import torch

    torch.set_num_threads(2)
    from audit_teachers import HOLDOUT, register

    from dfkd_viz.audit import audit_teacher
    from dfkd_viz.data import dataset_available
    from dfkd_viz.teachers import card, train_teacher
    from dfkd_viz.teachers.importer import delete_teacher, import_teacher
    from dfkd_viz.teachers.zoo import specs, weights_path

    extra = set(register())
    holdout = {h.id for h in HOLDOUT}
    rows = []
    for spec in specs():
        if not dataset_available(spec.dataset):
            print(f"skip {spec.id}: no {spec.dataset} data here", flush=True)
            continue
        t0 = time.perf_counter()
        c = train_teacher(spec.id)
        trained = time.perf_counter() - t0
        rep = audit_teacher(spec.id, use_cache=not args.fresh)
        s = rep.summary()
        rows.append(
            {
                "id": spec.id,
                "kind": c["kind"],
                "target": c.get("target"),
                "set": "holdout" if spec.id in holdout else "extra" if spec.id in extra else "zoo",
                "verdict": s["verdict"],
                "scores": s["scores"],
                "seconds": rep.seconds,
            }
        )
        print(
            f"{spec.id:28} {c['kind']:9} verdict {s['verdict']} mass {rep.ntl.robust_mass:.2f} "
            f"gain {rep.backdoor.shortcut_gain:.2f}@{rep.backdoor.target} "
            f"({rep.seconds:.0f} s audit{f', {trained:.0f} s training' if trained > 1 else ''})",
            flush=True,
        )

    src = "mnist-ntl-digits"
    copy_id = "audit-copy-of-ntl-digits"
    if card_exists(copy_id):
        delete_teacher(copy_id)
    import_teacher(weights_path(src), arch=card(src)["arch"], dataset="mnist", teacher_id=copy_id)
    try:
        a = audit_teacher(src).summary()
        b = audit_teacher(copy_id, use_cache=False).summary()
    finally:
        delete_teacher(copy_id)
    copy_check = {
        "source": src,
        "copy": copy_id,
        "same_verdict": a["verdict"] == b["verdict"],
        "same_scores": a["scores"] == b["scores"],
    }
    md = markdown(rows, copy_check)
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "copy_check": copy_check}, indent=1) + "\n")
    if args.docs:
        from _docs import write_section

        if not write_section("results/audit.md", "audit", md):
            print("docs/results/audit.md has no audit markers: section not written", flush=True)
    return 0


def card_exists(teacher_id: str) -> bool:
    from dfkd_viz.teachers.zoo import card_path

    return card_path(teacher_id).exists()


if __name__ == "__main__":
    raise SystemExit(main())
