"""Progressive AUC over live time, per arm, as one self-contained HTML page (inline SVG).

People would rather look at a curve than at a table. The page loads nothing (no script, no
CDN, no font), so it opens offline and can be attached to a report as one file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 760, 420
LEFT, RIGHT, TOP, BOTTOM = 60, 190, 30, 50
# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

Curve = Sequence[tuple[int, float]]


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def progressive_auc_svg(
    curves: Mapping[str, Curve],
    *,
    title: str,
    x_label: str = "live events seen",
    y_label: str = "AUC so far",
) -> str:
    """An SVG line chart: x = live events seen, y = AUC of the events so far, one line per arm
    (other axes, such as the simulator's click rate over steps, by their labels)."""
    points = [(n, a) for curve in curves.values() for n, a in curve if math.isfinite(a)]
    if not points:
        what = y_label.split()[0]  # "AUC" of "AUC so far"
        raise ValueError(f"no finite {what} to plot: every curve is empty or undefined")
    n_max = max(n for n, _ in points)
    a_lo = math.floor(min(a for _, a in points) * 50) / 50
    a_hi = math.ceil(max(a for _, a in points) * 50) / 50
    x = _scale(0, n_max, LEFT, WIDTH - RIGHT)
    y = _scale(a_lo, a_hi, HEIGHT - BOTTOM, TOP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<text x="{LEFT}" y="18" font-size="14">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
    ]
    ticks = 5
    for i in range(ticks + 1):
        a = a_lo + (a_hi - a_lo) * i / ticks
        n = n_max * i / ticks
        parts.append(
            f'<line x1="{LEFT}" y1="{y(a):.1f}" x2="{WIDTH - RIGHT}" y2="{y(a):.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 6}" y="{y(a) + 4:.1f}" text-anchor="end">'
            f"{a:.3f}</text>"
            f'<text x="{x(n):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{n:,.0f}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for i, (arm, curve) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        # Past the palette, colours come round again: dashes keep those arms apart.
        dash = ' stroke-dasharray="6 3"' if i >= len(COLOURS) else ""
        line = " ".join(f"{x(n):.1f},{y(a):.1f}" for n, a in curve if math.isfinite(a))
        ly = TOP + 10 + 18 * i
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{line}">'
            f"<title>{escape(arm)}</title></polyline>"
            f'<line x1="{WIDTH - RIGHT + 12}" y1="{ly}" x2="{WIDTH - RIGHT + 32}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="3"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 38}" y="{ly + 4}">{escape(arm)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def progressive_auc_html(
    curves: Mapping[str, Curve], *, title: str, caption: str = "", **labels: str
) -> str:
    """A complete HTML page around :func:`progressive_auc_svg` (``labels``: its axes')."""
    svg = progressive_auc_svg(curves, title=title, **labels)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n<body>\n{svg}\n"
        f"<p>{escape(caption)}</p>\n</body></html>\n"
    )
