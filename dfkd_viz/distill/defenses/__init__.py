"""Defenses against untrusted teachers, looked up by name (:data:`DEFENSES`): ``none``,
``atesc`` (ATEsc, adversarial trap escaping for NTL teachers)."""

from dfkd_viz.distill.defenses import atesc as _atesc  # noqa: F401  (registers "atesc")
from dfkd_viz.distill.defenses.base import (
    DEFENSES,
    Defense,
    DefenseParams,
    Selection,
    create_defense,
)

__all__ = ["DEFENSES", "Defense", "DefenseParams", "Selection", "create_defense"]
