"""Helpers shared by the command groups: one-sentence argparse errors, value formatting, JSON
output, ``KEY=VALUE`` parameters."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2
"""Exit code of every error a user can cause (bad arguments, unknown names, bad files)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-sentence errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and pct:
        return f"{v:.1%}"
    return str(v)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """Repeated ``--param KEY=VALUE`` options as a dict (values JSON where they parse); a
    malformed item raises ConfigError (see :func:`dfkd_viz.runs.config.parse_param_pairs`)."""
    from dfkd_viz.runs.config import parse_param_pairs

    return parse_param_pairs(list(pairs or []), "--param")
