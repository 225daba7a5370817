"""The teacher zoo: recipes (clean, NTL, CUTI, backdoor) and cached, carded teachers."""

from dfkd_viz.teachers.recipes import RECIPES, mmd
from dfkd_viz.teachers.zoo import (
    TeacherSpec,
    card,
    evaluate_teacher,
    get_spec,
    is_trained,
    list_cards,
    load_teacher,
    register_teacher,
    specs,
    train_teacher,
)

__all__ = [
    "RECIPES",
    "TeacherSpec",
    "card",
    "evaluate_teacher",
    "get_spec",
    "is_trained",
    "list_cards",
    "load_teacher",
    "mmd",
    "register_teacher",
    "specs",
    "train_teacher",
]
