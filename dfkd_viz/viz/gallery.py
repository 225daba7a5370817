"""HTML galleries of sample images (plotly hover cannot show images): data in, HTML out.

Images arrive as PNG bytes (as the run store keeps them) or uint8 arrays; they are inlined as
``data:`` URIs, scaled with nearest-neighbour (pixelated) so 28×28 digits stay crisp on a projector.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

import numpy as np

from dfkd_viz.util.io import png_bytes

_CSS = """
<style>
.dv-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(cell)dpx,1fr));gap:8px}
.dv-cell{border:1px solid #e5e7eb;border-radius:8px;padding:4px;text-align:center;background:#fff;
 font-family:ui-sans-serif,system-ui,sans-serif}
.dv-cell img{width:%(img)dpx;height:%(img)dpx;image-rendering:pixelated;border-radius:4px;background:#000}
.dv-cap{font-size:13px;line-height:1.25;color:#111827;margin-top:2px}
.dv-sub{font-size:12px;color:#4b5563}
.dv-badge{display:inline-block;border-radius:6px;padding:0 6px;font-size:12px;font-weight:600;color:#fff}
.dv-keep{background:#059669}.dv-rej{background:#dc2626}
.dv-cell.dv-rejected{border-color:#fca5a5;background:#fef2f2}
</style>
"""


def data_uri(img: bytes | np.ndarray) -> str:
    """A ``data:image/png`` URI from PNG bytes or a ``(C, H, W)`` / ``(H, W)`` uint8 array."""
    if isinstance(img, np.ndarray):
        arr = img if img.ndim == 3 else img[None]
        img = png_bytes(arr.astype(np.uint8))
    return "data:image/png;base64," + base64.b64encode(img).decode("ascii")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Pixel-unit floats ``(N, C, H, W)`` → uint8, clamped to [0, 1] first."""
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)


def sample_grid_html(
    images: Sequence[bytes | np.ndarray],
    captions: Sequence[str] | None = None,
    subcaptions: Sequence[str] | None = None,
    keep: Sequence[bool | None] | None = None,
    img_px: int = 72,
    badges: tuple[str, str] = ("kept", "rejected"),
) -> str:
    """A responsive grid of images with a caption, a sub-caption and a badge each: ``badges[0]``
    where ``keep`` is true, ``badges[1]`` (and a dimmed cell) where it is false, none for None."""
    cells = []
    for i, img in enumerate(images):
        cap = html.escape(captions[i]) if captions else ""
        sub = html.escape(subcaptions[i]) if subcaptions else ""
        k = keep[i] if keep is not None else None
        badge = ""
        cls = "dv-cell"
        if k is not None and not (isinstance(k, float) and np.isnan(k)):
            badge = (
                f'<span class="dv-badge dv-keep">{html.escape(badges[0])}</span>'
                if bool(k)
                else f'<span class="dv-badge dv-rej">{html.escape(badges[1])}</span>'
            )
            cls += "" if bool(k) else " dv-rejected"
        cells.append(
            f'<div class="{cls}"><img src="{data_uri(img)}" alt="sample {i}"/>'
            f'<div class="dv-cap">{cap} {badge}</div><div class="dv-sub">{sub}</div></div>'
        )
    css = _CSS % {"cell": img_px + 14, "img": img_px}
    return css + '<div class="dv-grid">' + "".join(cells) + "</div>"


#: column titles of the ``augkd_progression`` artifact (the last is the current s)
PROGRESSION_COLUMNS = ("x (real)", "G(Enc(x))", "G(anchor)", "s = 0.25", "s = 0.5", "s = 0.75")


def progression_html(
    progression: np.ndarray,
    labels: Sequence[int] | None = None,
    s_now: float | None = None,
    img_px: int = 64,
) -> str:
    """AuG-KD's mixup progression as an HTML table: one row per student-domain sample, columns
    ``x``, ``G(Enc(x))``, ``G(anchor(Enc(x)))``, the mixed image at s = 0.25, 0.5, 0.75 and at the
    current ``s`` (the ``augkd_progression`` artifact).

    Args:
        progression: ``(n, 7, C, H, W)`` uint8.
        labels: the samples' labels (length n) or None.
        s_now: the current mixup weight for the last column's title.

    Raises:
        ValueError: ``progression`` is not 5-D.
    """
    p = np.asarray(progression)
    if p.ndim != 5:
        raise ValueError(f"progression must be (n, columns, C, H, W) (got {p.shape})")
    titles = list(PROGRESSION_COLUMNS[: p.shape[1]])
    if p.shape[1] > len(PROGRESSION_COLUMNS):
        titles.append("now" + (f" (s = {s_now:.2f})" if s_now is not None else ""))
    style = f"width:{img_px}px;height:{img_px}px;image-rendering:pixelated;border-radius:4px"
    head = "".join(
        f'<th style="font-size:13px;padding:2px 6px;color:#111827">{html.escape(t)}</th>'
        for t in titles
    )
    rows = []
    for i in range(p.shape[0]):
        lab = f"y = {int(labels[i])}" if labels is not None else ""
        cells = "".join(
            f'<td style="padding:2px 6px"><img style="{style}" src="{data_uri(p[i, j])}"/></td>'
            for j in range(p.shape[1])
        )
        rows.append(
            f'<tr><td style="font-size:13px;color:#4b5563">{html.escape(lab)}</td>{cells}</tr>'
        )
    return (
        '<table style="border-collapse:collapse;font-family:ui-sans-serif,system-ui,sans-serif">'
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )
