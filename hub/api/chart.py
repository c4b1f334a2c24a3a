"""Charts as inline SVG, drawn on the server: no JavaScript library, no CDN, printable, accessible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None  # None: suppressed or not measurable, drawn as text only
    text: str  # what is written at the end of the bar ("3.2 h", "82%", "<5")
    warn: bool = False


def bar_chart(title: str, bars: Sequence[Bar], *, maximum: float | None = None, width: int = 560) -> Markup:
    """A horizontal bar chart; labels left, values right; suppressed cells drawn as a dashed stub."""
    row_h, label_w, value_w, pad = 26, 230, 70, 8
    height = pad * 2 + row_h * max(len(bars), 1) + 22
    plot_w = width - label_w - value_w - pad * 2
    top = max([b.value for b in bars if b.value is not None] + [maximum or 0.0, 1e-9])
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{pad}" y="16">{escape(title)}</text>',
    ]
    for i, bar in enumerate(bars):
        y = pad + 22 + i * row_h
        label = _fit(bar.label, label_w - 10)
        parts.append(
            f'<text class="chart-label" x="{label_w - 6}" y="{y + 15}" text-anchor="end">'
            f"<title>{escape(bar.label)}</title>{escape(label)}</text>"
        )
        if bar.value is None:
            parts.append(
                f'<rect class="bar-suppressed" x="{label_w}" y="{y + 4}" width="18" height="{row_h - 10}"/>'
            )
            x_text = label_w + 24
        else:
            w = max(1.0, plot_w * bar.value / top)
            css = "bar bar-warn" if bar.warn else "bar"
            parts.append(
                f'<rect class="{css}" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 10}"/>'
            )
            x_text = int(label_w + w + 6)
        parts.append(f'<text class="chart-value" x="{x_text}" y="{y + 15}">{escape(bar.text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped


def _fit(text: str, width_px: int) -> str:
    """Cut a label to about ``width_px`` at 12 px: CJK characters count double (the full text stays in
    the SVG <title> tooltip)."""
    used, out = 0, []
    for ch in text:
        used += 12 if ord(ch) > 0x2E80 else 7
        if used > width_px - 12:
            return "".join(out) + "…"
        out.append(ch)
    return text


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f}%"
