"""Analyses of models and runs: metrics (accuracy, OOD accuracy, ASR); embeddings and saliency
live beside them as the method issues add them."""

from dfkd_viz.analysis.metrics import (
    accuracy,
    attack_success_rate,
    class_rates,
    confusion_matrix,
    predict,
    predicted_labels,
)

__all__ = [
    "accuracy",
    "attack_success_rate",
    "class_rates",
    "confusion_matrix",
    "predict",
    "predicted_labels",
]
