"""MkDocs hook (``hooks:`` in ``mkdocs.yml``): the site shows the repository's screenshots without
a copy of them under ``docs/``.

Pages link a screenshot by its place in the repository, e.g. ``../../assets/screenshots/live.png``
from ``docs/results/``, which is what GitHub renders. MkDocs only knows files under ``docs/``, so
this hook

- adds every file under :data:`SHARED` to the site at the same path (``assets/screenshots/…``),
- rewrites, in each page's Markdown, a relative link that leaves ``docs/`` for one of those files
  into the path of that file in the site, relative to the page.

Any other link that leaves ``docs/`` is left alone (``mkdocs build --strict`` then reports it).

It also tidies the API reference: the docstrings use Sphinx roles (``:class:`~pkg.Name```) and
reStructuredText's ``::`` before literal blocks, which mkdocstrings' Google-style parser leaves as
text; in the rendered HTML the role prefixes and the ``~`` go, and ``::`` becomes ``:``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
#: repository folders (relative to the root) served at the same path in the site
SHARED = ("assets/screenshots",)
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj|const):(<code>)~?")
_LITERAL_MARK = re.compile(r"::(</p>)")


def _shared(path: str) -> bool:
    return any(path.startswith(d + "/") for d in SHARED)


def on_files(files, config):
    for d in SHARED:
        for p in sorted((ROOT / d).iterdir()):
            if p.is_file():
                files.append(
                    File(
                        p.relative_to(ROOT).as_posix(),
                        src_dir=str(ROOT),
                        dest_dir=config["site_dir"],
                        use_directory_urls=config["use_directory_urls"],
                    )
                )
    return files


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve().relative_to(ROOT).as_posix()
    page_dir = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return m.group(0)
        path, _, anchor = target.partition("#")
        in_repo = posixpath.normpath(posixpath.join(docs, page_dir, path))
        if not _shared(in_repo):
            return m.group(0)
        new = posixpath.relpath(in_repo, page_dir or ".")
        return m.group(1) + new + ("#" + anchor if anchor else "") + m.group(3)

    return _LINK.sub(fix, markdown)


def on_page_content(html, page, config, files):
    if not page.file.src_uri.startswith("api/"):
        return html
    return _LITERAL_MARK.sub(r":\1", _ROLE.sub(r"\1", html))
