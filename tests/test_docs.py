"""The documentation stays true: README.md is a short front page, every relative link and image in
README.md and docs/ points at a file that exists (and at a heading that exists, for anchors), no
file of the repository points at notes outside it, and the worked example of docs/extending.md
runs as written.

Anchors are GitHub's (lower case, punctuation dropped, spaces → hyphens); the MkDocs site uses the
same ones (``toc.slugify`` in mkdocs.yml), and ``mkdocs build --strict`` in ``make test`` checks
them there too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 200

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_LINK = re.compile(r"""<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
_EXPLICIT_ID = re.compile(r"\{\s*#([\w-]+)[^}]*\}\s*$")


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: formatting removed, lower case, every character but
    letters, digits, ``_``, ``-`` and spaces dropped, spaces → ``-``."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs (with GitHub's -1, -2 … for repeats)
    and explicit ``{#id}`` attributes."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in _HEADING.finditer(_FENCE.sub("", path.read_text())):
        text = m.group(2)
        explicit = _EXPLICIT_ID.search(text)
        if explicit:
            out.add(explicit.group(1))
            text = text[: explicit.start()]
        slug = github_slug(text)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file (outside code)."""
    text = _prose(path.read_text())
    found = [m.group(1) for m in _MD_LINK.finditer(text)]
    found += [m.group(1) for m in _REF_LINK.finditer(text)]
    found += [m.group(1) for m in _HTML_LINK.finditer(text)]
    return found


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file (or anchor) does not exist, as messages."""
    problems = []
    for target in links(path):
        if _is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        rel = path.relative_to(ROOT)
        if file_part and not dest.exists():
            problems.append(f"{rel}: {target} → no such file")
            continue
        if not dest.is_relative_to(ROOT):
            problems.append(f"{rel}: {target} → outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{rel}: {target} → an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{rel}: {target} → no heading with that anchor")
    return problems


# ------------------------------------------------------------------------------------ the checks
def test_readme_is_a_short_front_page():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


def test_docs_exist_for_every_page_the_readme_promises():
    for page in (
        "index.md",
        "architecture.md",
        "methods.md",
        "extending.md",
        "own-teachers-and-data.md",
        "security.md",
        "cli.md",
        "development.md",
        *(
            f"results/{p}.md"
            for p in (
                "zoo",
                "audit",
                "performance",
                "ntl-trap",
                "backdoor",
                "stability",
                "out-of-domain",
            )
        ),
    ):
        assert (DOCS / page).is_file(), f"docs/{page} is missing"


def test_every_relative_link_and_image_resolves():
    files = _markdown_files()
    assert len(files) > 10
    problems = [p for f in files for p in broken_links(f)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_sees_links_and_anchors(tmp_path):
    """The checker itself: it finds links, images and anchors, and ignores code."""
    (tmp_path / "b.md").write_text("# Out-of-domain KD: AuG-KD `x`\n\n## Same\n\n## Same\n")
    (tmp_path / "a.md").write_text(
        "[ok](b.md#out-of-domain-kd-aug-kd-x) [ok](b.md#same-1) ![img](b.md)\n"
        "[bad](missing.md) [bad](b.md#nope) `[not a link](nowhere.md)`\n"
        "```\n[not a link](nowhere.md)\n```\n"
        '<img src="gone.png"> [ext](https://example.org/x.md)\n'
    )
    assert links(tmp_path / "a.md") == [
        "b.md#out-of-domain-kd-aug-kd-x",
        "b.md#same-1",
        "b.md",
        "missing.md",
        "b.md#nope",
        "https://example.org/x.md",
        "gone.png",
    ]
    assert anchors(tmp_path / "b.md") == {"out-of-domain-kd-aug-kd-x", "same", "same-1"}
    assert github_slug("The NTL trap and ATEsc") == "the-ntl-trap-and-atesc"
    assert github_slug("`abd`: Anti-Backdoor DFKD") == "abd-anti-backdoor-dfkd"


def _repository_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the repository's files cannot be listed")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / p for p in out.split("\0") if p and not p.startswith("docs/")]


def test_no_file_points_at_notes_outside_the_repository():
    """The steering notes live outside the repository; nothing in it may name or link them (the
    names are assembled here so that this file does not name them either)."""
    names = [
        stem + ".md" for stem in ("DESIGN", "METHODS", "MEASUREMENTS", "PAPER_SCALE", "SCALE_OUT")
    ]
    needles = [n.encode() for n in [*names, ".." + "/shared"]]
    offenders = []
    for f in _repository_files():
        if not f.is_file():
            continue  # deleted in the work tree
        data = f.read_bytes()
        hits = [n.decode() for n in needles if n in data]
        if hits:
            offenders.append(f"{f.relative_to(ROOT)}: {', '.join(hits)}")
    assert not offenders, "files pointing outside the repository:\n" + "\n".join(offenders)


def worked_example() -> str:
    """The complete script of docs/extending.md's worked example (the Python block that starts
    with ``# worked_example.py``)."""
    text = (DOCS / "extending.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    scripts = [b for b in blocks if b.startswith("# worked_example.py")]
    assert len(scripts) == 1, "docs/extending.md must hold exactly one worked_example.py block"
    return scripts[0]


@pytest.mark.slow
def test_the_worked_example_runs(tmp_path, trained_home):
    script = tmp_path / "worked_example.py"
    script.write_text(worked_example())
    env = {**os.environ, "DFKD_VIZ_HOME": str(trained_home), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "g_tv" in proc.stdout and "finished" in proc.stdout
