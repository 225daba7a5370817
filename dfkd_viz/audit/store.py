"""The audit's report store: one JSON report per audited weight set, found by the weights'
SHA-256 digest (so the same weights — also an imported copy under another id — are audited once).
Verdicts are recomputed from the stored scores with the current thresholds when read."""

from __future__ import annotations

import json
from pathlib import Path

from dfkd_viz.audit.scores import (
    AUDIT_VERSION,
    AuditParams,
    AuditReport,
    Progress,
    _set_aside,
    audit_model,
    count_gain,
    suggestions,
    verdicts,
    weights_digest,
)
from dfkd_viz.paths import home
from dfkd_viz.util.io import write_atomic


def audits_dir() -> Path:
    """``DFKD_VIZ_HOME/audits``: one ``<weights sha256>.json`` report per audited weight set."""
    p = home() / "audits"
    p.mkdir(parents=True, exist_ok=True)
    return p


def cached_report(teacher_id: str) -> AuditReport | None:
    """The stored report of ``teacher_id``'s current weights, or None (never audited, or the
    weights changed since)."""
    from dfkd_viz.teachers import load_teacher

    try:
        model, _ = load_teacher(teacher_id)
    except Exception:  # an unloadable teacher simply has no report
        return None
    return _read(weights_digest(model), teacher_id)


def _read(digest: str, teacher_id: str) -> AuditReport | None:
    path = audits_dir() / f"{digest}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("version") != AUDIT_VERSION:
            return None
        data["teacher"] = teacher_id
        report = AuditReport.model_validate(data)
    except (OSError, ValueError):
        return None
    # verdicts follow the current thresholds, not the ones of the day it was stored
    count_gain(report.backdoor, _set_aside(report.ntl))
    report.verdict = verdicts(report.ntl, report.backdoor, report.collapse)
    report.suggestions = suggestions(report.verdict, report.backdoor.target, report.ntl.lure_class)
    return report


def audit_teacher(
    teacher_id: str,
    params: AuditParams | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> AuditReport:
    """Audit a cached zoo or imported teacher by id; the report is stored under its weights'
    digest, so a second audit of the same weights (also under another id) is read back.

    Raises:
        UnknownNameError: unknown teacher id.
        DfkdVizError: the teacher is not trained yet or its weights do not load.
        ValueError: the architecture has no BatchNorm2d layer.
    """
    from dfkd_viz.teachers import load_teacher

    model, card = load_teacher(teacher_id)
    params = params or AuditParams()
    digest = weights_digest(model)
    if use_cache and params == AuditParams():
        cached = _read(digest, teacher_id)
        if cached is not None:
            if progress:
                progress(1.0, "read the stored report")
            return cached
    report = audit_model(model, teacher_id, card.get("arch", ""), params, progress)
    if params == AuditParams():
        write_atomic(audits_dir() / f"{digest}.json", report.model_dump_json())
    return report
