"""A bar chart as inline SVG, for the web app's first tab.

Plotly is right for the heatmaps and loss curves, but its JavaScript takes one to two seconds to load
and start in a browser on a small machine. The corpus tab is the first thing a visitor sees, so its
sentence-length histogram is plain SVG: it renders at once, scales with the page, and each bar's
tooltip (an SVG ``<title>``) gives its exact count.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

WIDTH, HEIGHT = 420, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 30, 40
COLOR = "#2563eb"


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten that cuts ``span`` into about ``target_ticks``."""
    raw = max(span, 1e-9) / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def histogram_svg(counts: Mapping[int, int], title: str, x_label: str, y_label: str, unit: str = "") -> str:
    """Bars for integer keys (every key from the smallest to the largest, missing ones as 0), with
    axes, ticks and a tooltip per bar ("12 words: 34 sentences" with ``unit="words"``)."""
    esc = html.escape
    lo, hi = (min(counts), max(counts)) if counts else (0, 0)
    keys = list(range(lo, hi + 1))
    top = max(counts.values(), default=0) or 1
    y_step = max(1, int(nice_step(top)))
    y_max = math.ceil(top / y_step) * y_step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(keys), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{esc(title)}" style="width:100%;max-width:{WIDTH * 1.5:.0f}px;height:auto;font:11px sans-serif">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" style="font-size:13px">{esc(title)}</text>',
    ]
    for v in range(0, y_max + 1, y_step):  # horizontal grid lines with their labels
        y = TOP + plot_h * (1 - v / y_max)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#4b5563">{v:,}</text>')
    x_step = max(1, int(nice_step(len(keys), 8)))
    for i, k in enumerate(keys):
        n = counts.get(k, 0)
        x = LEFT + i * slot
        h = plot_h * n / y_max
        tip = f"{k} {unit}: {n:,} {esc(y_label)}" if unit else f"{k}: {n:,}"
        parts.append(
            f'<rect x="{x + slot * 0.1:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" '
            f'fill="{COLOR}"><title>{esc(tip)}</title></rect>'
        )
        if k % x_step == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" fill="#4b5563">{k}</text>'
            )
    parts += [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" fill="#374151">{esc(x_label)}</text>',
        f'<text transform="translate(12 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" fill="#374151">'
        f"{esc(y_label)}</text>",
        "</svg>",
    ]
    return "".join(parts)
