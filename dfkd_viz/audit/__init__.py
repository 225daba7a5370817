"""The teacher audit: a data-free trust report before distilling (``dfkd-viz audit``, page
``/audit``). :mod:`~dfkd_viz.audit.scores` measures the NTL, backdoor and collapse risks from the
weights alone, :mod:`~dfkd_viz.audit.store` keeps one report per weight digest, and
:mod:`~dfkd_viz.audit.job` runs an audit as a background job."""

from dfkd_viz.audit.job import audit_progress, start_audit
from dfkd_viz.audit.scores import (
    BACKDOOR_THRESHOLDS,
    COLLAPSE_THRESHOLDS,
    DEFENSE_FOR,
    NTL_THRESHOLDS,
    AuditParams,
    AuditReport,
    audit_model,
    weights_digest,
)
from dfkd_viz.audit.store import audit_teacher, audits_dir, cached_report

__all__ = [
    "BACKDOOR_THRESHOLDS",
    "COLLAPSE_THRESHOLDS",
    "DEFENSE_FOR",
    "NTL_THRESHOLDS",
    "AuditParams",
    "AuditReport",
    "audit_model",
    "audit_progress",
    "audit_teacher",
    "audits_dir",
    "cached_report",
    "start_audit",
    "weights_digest",
]
