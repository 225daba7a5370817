"""Runs: validated configuration, presets, the run store, checkpoints, the detached worker and
the manager shared by the CLI and the app (:mod:`dfkd_viz.runs.manager`)."""
