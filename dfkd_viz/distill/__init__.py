"""Distillation: the engine and its evaluation, replay memory and snapshot records, loss terms,
methods and defenses."""

from dfkd_viz.distill import augkd  # noqa: F401  (registers ce, kd, augkd)
from dfkd_viz.distill.defenses import DEFENSES, Defense, Selection, create_defense
from dfkd_viz.distill.engine import EVENTS, Budget, Engine, EngineSettings, StepContext
from dfkd_viz.distill.evaluation import ClassBreakdown, EvalSuite
from dfkd_viz.distill.methods import METHODS, Method, MethodParams, create_method
from dfkd_viz.distill.replay import ReplayMemory, SyntheticBatch
from dfkd_viz.distill.snapshot import Snapshot

__all__ = [
    "DEFENSES",
    "EVENTS",
    "METHODS",
    "Budget",
    "ClassBreakdown",
    "Defense",
    "Engine",
    "EngineSettings",
    "EvalSuite",
    "Method",
    "MethodParams",
    "ReplayMemory",
    "Selection",
    "Snapshot",
    "StepContext",
    "SyntheticBatch",
    "create_defense",
    "create_method",
]
