"""Validation of ``dfkd-viz audit``: every zoo teacher plus the extra teachers of
``benchmarks/audit_teachers.py`` (other seeds, OOD domains, triggers and targets), audited from
their weights alone; the true kind (from the card) is used only to score the verdicts.

    python benchmarks/audit_validation.py [--home DIR] [--fresh] [--readme]

Uses its own home (default ``~/.cache/dfkd-viz-audit``) so the extra teachers never appear in the
app's zoo; trained zoo teachers are copied from the default home when present, the rest trained.
Also imports a copy of ``mnist-ntl-digits`` as a ``kind: user`` teacher and checks that it gets the
same report. Prints and writes ``benchmarks/results/audit.json`` and a Markdown section (confusion
tables, AUROC per score, one row per teacher); ``--readme`` puts it in README.md between
``<!-- audit:begin -->`` and ``<!-- audit:end -->``. ~15 min on 2 cores (plus training).
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


def _auroc(rows: list[dict], risk: str, key: str, sign: float) -> float:
    from sklearn.metrics import roc_auc_score

    y = [r["kind"] in POSITIVE[risk] for r in rows]
    s = [sign * r["scores"][risk][key] for r in rows]
    return float(roc_auc_score(y, s))


def markdown(rows: list[dict], copy_check: dict) -> str:
    from dfkd_viz.analysis.audit import BACKDOOR_THRESHOLDS, NTL_THRESHOLDS

    out = []
    zoo = [r for r in rows if not r["extra"]]
    right_zoo = sum(all(right(r, k) for k in ("ntl", "backdoor")) for r in zoo)
    out.append(
        f"{len(rows)} teachers ({len(zoo)} of the zoo, {len(rows) - len(zoo)} extra), audited "
        f"from their weights only. Zoo teachers with the right NTL and backdoor verdicts: "
        f"**{right_zoo} / {len(zoo)}**; all teachers: "
        f"{sum(all(right(r, k) for k in ('ntl', 'backdoor')) for r in rows)}"
        f" / {len(rows)}."
    )
    out.append("")
    out.append("| score | AUROC (all teachers) | AUROC (zoo) | thresholds suspicious / high |")
    out.append("|---|---|---|---|")
    for risk, key, sign, thr in (
        ("ntl", "lure_share", 1.0, NTL_THRESHOLDS),
        ("ntl", "robust_lure", 1.0, None),
        ("backdoor", "norm_ratio", -1.0, BACKDOOR_THRESHOLDS),
        ("backdoor", "anomaly_index", 1.0, None),
    ):
        t = "—" if thr is None else f"{thr[0]} / {thr[1]}"
        out.append(
            f"| {risk}: `{key}`{' (lower = worse)' if sign < 0 else ''} | "
            f"{_auroc(rows, risk, key, sign):.3f} | {_auroc(zoo, risk, key, sign):.3f} | {t} |"
        )
    for risk in ("ntl", "backdoor"):
        out.append("")
        out.append(f"**{risk} verdict** by true kind (all teachers):")
        out.append("")
        out.append("| true kind | low | suspicious | high |")
        out.append("|---|---|---|---|")
        for kind in ("clean", "ntl", "cuti", "backdoor"):
            sub = [r for r in rows if r["kind"] == kind]
            if sub:
                n = {
                    v: sum(r["verdict"][risk] == v for r in sub)
                    for v in ("low", "suspicious", "high")
                }
                out.append(
                    f"| {kind} ({len(sub)}) | {n['low']} | {n['suspicious']} | {n['high']} |"
                )
    out.append("")
    out.append(
        "| teacher | kind | NTL: lure share (class) · robust | backdoor: norm ratio (target) · "
        "shuffle survival | collapse: coverage | verdict NTL / backdoor / collapse | s |"
    )
    out.append("|---|---|---|---|---|---|---|")
    for r in rows:
        n, b, c = r["scores"]["ntl"], r["scores"]["backdoor"], r["scores"]["collapse"]
        v = r["verdict"]
        mark = "" if all(right(r, k) for k in ("ntl", "backdoor")) else " ✗"
        truth = f" (target {r['target']})" if r.get("target") is not None else ""
        out.append(
            f"| {r['id']}{' (extra)' if r['extra'] else ''} | {r['kind']}{truth} | "
            f"{n['lure_share']:.2f} ({n['lure_class']}) · {n['robust_lure']:.2f} | "
            f"{b['norm_ratio']:.2f} ({b['target']}) · {b['target_shuffle_survival']:.2f} | "
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
    ap.add_argument("--readme", action="store_true", help="write the section into README.md")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit.json"))
    args = ap.parse_args()
    _setup_home(Path(args.home))

    import torch

    torch.set_num_threads(2)
    from audit_teachers import register

    from dfkd_viz.analysis.audit import audit_teacher
    from dfkd_viz.data import dataset_available
    from dfkd_viz.teachers import card, train_teacher
    from dfkd_viz.teachers.importer import delete_teacher, import_teacher
    from dfkd_viz.teachers.zoo import specs, weights_path

    extra = set(register())
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
                "extra": spec.id in extra,
                "verdict": s["verdict"],
                "scores": s["scores"],
                "seconds": rep.seconds,
            }
        )
        print(
            f"{spec.id:28} {c['kind']:9} verdict {s['verdict']} lure {rep.ntl.lure_share:.2f} "
            f"ratio {rep.backdoor.norm_ratio:.2f}@{rep.backdoor.target} "
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
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        begin, end = "<!-- audit:begin -->", "<!-- audit:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            readme.write_text(f"{head}{begin}\n{md}\n{end}{tail}")
    return 0


def card_exists(teacher_id: str) -> bool:
    from dfkd_viz.teachers.zoo import card_path

    return card_path(teacher_id).exists()


if __name__ == "__main__":
    raise SystemExit(main())
