"""Where dfkd-viz keeps things.

- ``DFKD_VIZ_HOME`` (default ``~/.cache/dfkd-viz``): the teacher zoo (``teachers/``) and the run
  store (``runs/``). Tests point it at a temporary directory.
- ``DFKD_VIZ_DATA`` (default ``DFKD_VIZ_HOME/data``): where full IDX datasets are looked for, in
  addition to Debian's ``/usr/share/datasets/<name>``.
- ``assets/`` at the repository root (override: ``DFKD_VIZ_ASSETS``): the bundled MNIST file.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root, created on first use."""
    p = Path(os.environ.get("DFKD_VIZ_HOME") or Path.home() / ".cache" / "dfkd-viz").expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def teachers_dir() -> Path:
    """Directory of the teacher zoo: ``<id>.safetensors`` + ``<id>.json`` per trained teacher."""
    p = home() / "teachers"
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir() -> Path:
    """Directory of the run store: one sub-directory per run."""
    p = home() / "runs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def user_data_dir() -> Path:
    """Directory of imported datasets: ``<name>.npz`` (uint8 images, labels) + ``<name>.json``."""
    p = home() / "user-data"
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for IDX datasets, in order: ``explicit``, ``DFKD_VIZ_DATA``,
    ``DFKD_VIZ_HOME/data``, ``/usr/share/datasets`` (Debian's dataset packages)."""
    dirs: list[Path] = []
    if explicit:
        dirs.append(Path(explicit).expanduser())
    if os.environ.get("DFKD_VIZ_DATA"):
        dirs.append(Path(os.environ["DFKD_VIZ_DATA"]).expanduser())
    dirs.append(home() / "data")
    dirs.append(Path("/usr/share/datasets"))
    return dirs


def assets_dir() -> Path:
    """The repository's ``assets/`` directory (bundled data)."""
    env = os.environ.get("DFKD_VIZ_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"
