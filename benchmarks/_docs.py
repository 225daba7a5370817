"""Write a generated Markdown section into a page of the documentation (``docs/``), between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``: how the benchmark scripts refresh their results
pages (``make bench`` → ``results/performance.md``, ``audit_validation.py --docs`` →
``results/audit.md``)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def write_section(page: str, name: str, md: str, docs: Path = DOCS) -> bool:
    """Replace the text between the two markers of ``name`` in ``docs/<page>`` by ``md``.

    Args:
        page: the page's path inside ``docs/``, e.g. ``"results/performance.md"``.
        name: the markers' name, e.g. ``"bench"``.
        md: the new section (Markdown); a final newline is added when missing.
        docs: the documentation folder (tests point it elsewhere).

    Returns:
        True when the section was written; False (and the file is left alone, or not created)
        when the page is missing or lacks either marker.
    """
    path = docs / page
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not path.is_file():
        return False
    text = path.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = md if md.endswith("\n") else md + "\n"
    path.write_text(f"{head}{begin}\n{body}{end}{tail}")
    return True
