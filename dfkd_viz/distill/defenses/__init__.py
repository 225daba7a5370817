"""Defenses against untrusted teachers, looked up by name (:data:`DEFENSES`)."""

from dfkd_viz.distill.defenses.base import (
    DEFENSES,
    Defense,
    DefenseParams,
    Selection,
    create_defense,
)

__all__ = ["DEFENSES", "Defense", "DefenseParams", "Selection", "create_defense"]
