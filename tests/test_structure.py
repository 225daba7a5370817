"""Where code lives: pages only read stores and start jobs through the library (the jobs layer
owns every process); the library's layering is checked by import-linter (`make test`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCESS_MODULES = {"subprocess", "multiprocessing", "concurrent.futures"}
PROCESS_CALLS = {"fork", "spawnv", "spawnl", "system", "popen", "execv", "execvp", "posix_spawn"}


def _imports_and_calls(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text(), str(path))
    mods, calls = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "os"
        ):
            calls.add(node.func.attr)
    return mods, calls


def test_no_page_starts_a_process():
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    assert len(files) > 5
    for f in files:
        mods, calls = _imports_and_calls(f)
        assert not mods & PROCESS_MODULES, f"{f.name} imports {mods & PROCESS_MODULES}"
        assert not calls & PROCESS_CALLS, f"{f.name} calls os.{calls & PROCESS_CALLS}"


def test_only_the_jobs_layer_spawns_processes():
    """Every detached start in the library goes through dfkd_viz.jobs (one liveness, one log)."""
    for f in sorted((ROOT / "dfkd_viz").rglob("*.py")):
        if f.parent.name == "jobs":
            continue
        tree = ast.parse(f.read_text(), str(f))
        popen = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("Popen", "Process")
        ]
        assert not popen, f"{f.relative_to(ROOT)} starts a process itself (use dfkd_viz.jobs)"
