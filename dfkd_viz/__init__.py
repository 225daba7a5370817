"""dfkd-viz: an interactive visual laboratory for data-free knowledge distillation (DFKD)
from untrusted teachers.

The package is a pure library (no Streamlit import anywhere in it): ``data`` (real datasets,
domain shifts, backdoor triggers), ``models`` (classifier and generator registry), ``teachers``
(training recipes and the cached zoo), ``distill`` (engine, methods, defenses), ``runs``
(config, store, worker, manager), ``analysis`` (metrics), ``viz`` (plotly figure builders) and
``cli``. The Streamlit app in ``app.py`` / ``pages/`` only reads run stores and draws.
"""

__version__ = "0.1.0"
