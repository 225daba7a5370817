"""Write a generated Markdown section into README.md between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` (the benchmark scripts' ``--readme`` output)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_section(name: str, md: str, readme: Path = README) -> bool:
    """Replace the text between the two markers of ``name`` by ``md``; returns False (and leaves
    the file alone) when the README lacks either marker."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = md if md.endswith("\n") else md + "\n"
    readme.write_text(f"{head}{begin}\n{body}{end}{tail}")
    return True
