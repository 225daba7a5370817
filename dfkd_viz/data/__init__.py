"""Real data, offline: datasets, OOD domains and backdoor triggers (all in pixel units [0, 1]).

See :mod:`dfkd_viz.data.datasets`, :mod:`dfkd_viz.data.domains`, :mod:`dfkd_viz.data.triggers`.
"""

from dfkd_viz.data.datasets import (
    DATASETS,
    ImageDataset,
    dataset_available,
    load_dataset,
    read_idx,
)
from dfkd_viz.data.domains import SHIFTS, domain_names, load_domain, match_shape
from dfkd_viz.data.triggers import (
    TRIGGERS,
    Poisoned,
    Trigger,
    make_trigger,
    poison,
    trigger_examples,
    triggered_test_set,
)

__all__ = [
    "DATASETS",
    "SHIFTS",
    "TRIGGERS",
    "ImageDataset",
    "Poisoned",
    "Trigger",
    "dataset_available",
    "domain_names",
    "load_dataset",
    "load_domain",
    "make_trigger",
    "match_shape",
    "poison",
    "read_idx",
    "trigger_examples",
    "triggered_test_set",
]
