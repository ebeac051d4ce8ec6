"""Small server-rendered SVG charts: pictures of numbers, with text alternatives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, AXIS = 640, 160, 20


def bars(days: Sequence[tuple[dt.date, int, int]]) -> Markup:
    """Grants (up) and revocations (down) per day as paired bars, one group per day."""
    if not days:
        return Markup("")
    top = max([1, *(max(g, r) for _, g, r in days)])
    slot = WIDTH / len(days)
    half = (HEIGHT - AXIS) / 2
    middle = half
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Grants (above the line) and revocations (below) per day, '
        f"{escape(days[0][0].isoformat())} to {escape(days[-1][0].isoformat())}</title>",
        f'<line x1="0" y1="{middle:.1f}" x2="{WIDTH}" y2="{middle:.1f}" class="axis"/>',
    ]
    for n, (day, granted, revoked) in enumerate(days):
        x = n * slot + slot * 0.15
        w = slot * 0.7
        up = half * granted / top
        down = half * revoked / top
        label = escape(f"{day.isoformat()}: {granted} granted, {revoked} revoked")
        parts.append(f"<g><title>{label}</title>")
        if granted:
            parts.append(
                f'<rect class="granted" x="{x:.1f}" y="{middle - up:.1f}" '
                f'width="{w:.1f}" height="{up:.1f}"/>'
            )
        if revoked:
            parts.append(
                f'<rect class="revoked" x="{x:.1f}" y="{middle:.1f}" '
                f'width="{w:.1f}" height="{down:.1f}"/>'
            )
        parts.append("</g>")
    for n in (0, len(days) - 1):
        anchor = "start" if n == 0 else "end"
        x = 0 if n == 0 else WIDTH
        parts.append(
            f'<text x="{x}" y="{HEIGHT - 4}" text-anchor="{anchor}">'
            f"{escape(days[n][0].strftime('%d %b'))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
