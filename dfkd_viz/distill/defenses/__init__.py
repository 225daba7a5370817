"""Defenses against untrusted teachers, looked up by name (:data:`DEFENSES`): ``none``,
``ta-select`` (TA-DFKD's lenient-expert GMM selection), ``atesc`` (ATEsc, adversarial trap escaping for NTL teachers), ``abd`` (ABD: Shuffling Vaccine +
Self-Retrospection against backdoored teachers) and ``domain-oracle`` (an analysis upper bound for
sample-selection defenses; not data-free)."""

from dfkd_viz.distill.defenses import abd as _abd  # noqa: F401  (registers "abd")
from dfkd_viz.distill.defenses import atesc as _atesc  # noqa: F401  (registers "atesc")
from dfkd_viz.distill.defenses import lenient as _lenient  # noqa: F401  (registers "ta-select")
from dfkd_viz.distill.defenses import oracle as _oracle  # noqa: F401  (registers "domain-oracle")
from dfkd_viz.distill.defenses.base import (
    DEFENSES,
    Defense,
    DefenseParams,
    Selection,
    create_defense,
)

__all__ = ["DEFENSES", "Defense", "DefenseParams", "Selection", "create_defense"]
