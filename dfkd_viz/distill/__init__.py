"""Distillation: the engine, loss terms, methods and defenses."""

from dfkd_viz.distill import augkd  # noqa: F401  (registers ce, kd, augkd)
from dfkd_viz.distill.defenses import DEFENSES, Defense, Selection, create_defense
from dfkd_viz.distill.engine import EVENTS, Budget, Engine, EngineSettings, EvalSuite, StepContext
from dfkd_viz.distill.methods import METHODS, Method, MethodParams, create_method

__all__ = [
    "DEFENSES",
    "EVENTS",
    "METHODS",
    "Budget",
    "Defense",
    "Engine",
    "EngineSettings",
    "EvalSuite",
    "Method",
    "MethodParams",
    "Selection",
    "StepContext",
    "create_defense",
    "create_method",
]
