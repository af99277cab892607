#!/usr/bin/env python3
"""Draws the curves of `confab-bench curve --json FILE` as SVG line charts.

    bench/plot.py bench/curves/curves.json bench/curves/

writes one SVG per curve in the file (connections.svg, history.svg,
sync.svg): stacked panels sharing a log-scale x axis (the points span
decades), linear y axes from zero (so a cliff looks like one), each point
marked and labelled, the machine, date, commit and load average in the
title. Python 3 standard library only.
"""

import json
import math
import os
import sys
from xml.sax.saxutils import escape

WIDTH = 820
PANEL_H = 230
LEFT, RIGHT = 84, 24
TOP = 110
GAP = 92  # between panels: the x tick labels and axis title, then the next title and legend
BOTTOM = 62
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def si(v):
    """1000 -> 1k, 2500000 -> 2.5M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            s = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return s + suffix
    return f"{v:g}"


def nice_step(span, target=5):
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def log_ticks(lo, hi):
    """1, 2, 5 × 10^k between lo and hi (one decade of slack)."""
    ticks = []
    for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10**k
            if lo / 1.15 <= v <= hi * 1.15:
                ticks.append(v)
    return ticks


class Chart:
    def __init__(self, title, subtitle, xlabel, panels):
        self.title, self.subtitle, self.xlabel, self.panels = title, subtitle, xlabel, panels
        self.height = TOP + len(panels) * PANEL_H + (len(panels) - 1) * GAP + BOTTOM
        self.out = []

    def text(self, x, y, s, size=12, anchor="start", weight="normal", color="#222", rotate=None):
        rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{color}"{rot}>{escape(s)}</text>'
        )

    def line(self, x1, y1, x2, y2, color="#ccc", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="{width}"{d}/>'
        )

    def render(self):
        xs = [x for p in self.panels for s in p["series"] for x, _ in s["points"] if x > 0]
        xlo, xhi = min(xs), max(xs)
        # Half a tick of padding either side, in log space.
        lxlo, lxhi = math.log10(xlo) - 0.08, math.log10(xhi) + 0.08
        x0, x1 = LEFT, WIDTH - RIGHT

        def px(x):
            return x0 + (math.log10(x) - lxlo) / (lxhi - lxlo) * (x1 - x0)

        self.out.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{self.height}" '
            f'viewBox="0 0 {WIDTH} {self.height}" font-family="Helvetica, Arial, sans-serif">'
        )
        self.out.append(f'<rect width="{WIDTH}" height="{self.height}" fill="white"/>')
        self.text(WIDTH / 2, 26, self.title, size=16, anchor="middle", weight="bold")
        for i, line in enumerate(self.subtitle):
            self.text(WIDTH / 2, 46 + 15 * i, line, size=11, anchor="middle", color="#555")
        for i, panel in enumerate(self.panels):
            top = TOP + i * (PANEL_H + GAP)
            bottom = top + PANEL_H
            ys = [y for s in panel["series"] for _, y in s["points"] if y is not None]
            # A point at x = 0 (no log position) is drawn as a reference
            # line across the panel.
            ymax = max(ys) if ys else 1
            step = nice_step(ymax * 1.2)
            ytop = step * math.ceil(ymax * 1.2 / step)

            def py(y, top=top, bottom=bottom, ytop=ytop):
                return bottom - y / ytop * (bottom - top)

            # Frame, grid, ticks.
            self.out.append(
                f'<rect x="{x0}" y="{top}" width="{x1 - x0}" height="{PANEL_H}" fill="none" stroke="#888"/>'
            )
            v = 0.0
            while v <= ytop * 1.0001:
                y = py(v)
                self.line(x0, y, x1, y, color="#e6e6e6")
                self.line(x0 - 5, y, x0, y, color="#888")
                self.text(x0 - 8, y + 4, si(v) if v >= 1000 else f"{v:g}", size=11, anchor="end")
                v += step
            for t in log_ticks(xlo, xhi):
                x = px(t)
                if x0 <= x <= x1:
                    self.line(x, top, x, bottom, color="#eee")
                    self.line(x, bottom, x, bottom + 5, color="#888")
                    self.text(x, bottom + 18, si(t), size=11, anchor="middle")
            self.text(x0 + (x1 - x0) / 2, bottom + 36, self.xlabel, size=12, anchor="middle")
            self.text(20, top + PANEL_H / 2, panel["ylabel"], size=12, anchor="middle", rotate=-90)
            self.text(x0, top - 26, panel["title"], size=12, weight="bold")
            # Series.
            legend_x = x0
            for k, s in enumerate(panel["series"]):
                color = s.get("color", COLORS[k % len(COLORS)])
                pts = [(px(x), py(y), y) for x, y in s["points"] if y is not None and x > 0]
                fmt = s.get("fmt", lambda v: si(v) if v >= 1000 else f"{v:.3g}")
                for x, y in s["points"]:
                    if x <= 0 and y is not None:
                        self.line(x0, py(y), x1, py(y), color=color, width=1, dash="2 3")
                        self.text(x1 - 4, py(y) - 4, f"with no idle sessions: {fmt(y)}", size=10, anchor="end", color=color)
                dash = ' stroke-dasharray="6 4"' if s.get("dashed") else ""
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
                self.out.append(
                    f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
                )
                for x, y, v in pts:
                    self.out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
                    label = fmt(v)
                    below = s.get("labels_below", False) and y + 16 < bottom - 2
                    self.text(x, y + (16 if below else -8), label, size=10, anchor="middle", color=color)
                # Legend: one row above the frame, under the panel title.
                lx, ly = legend_x, top - 9
                self.line(lx, ly - 4, lx + 22, ly - 4, color=color, width=2, dash="6 4" if s.get("dashed") else None)
                self.text(lx + 28, ly, s["name"], size=11)
                legend_x += 28 + 6.5 * len(s["name"]) + 24
        self.out.append("</svg>")
        return "\n".join(self.out) + "\n"


def subtitle(meta):
    """Two lines: machine, date, commit; pinning and load average."""
    pinned = "server on CPU 0, bench on CPU 1" if meta.get("pinned") else "not pinned"
    return [
        f"{meta.get('machine', '?')} — {meta.get('started', '?')} — commit {meta.get('commit') or '?'}",
        f"{pinned} — load average (1, 5, 15 min) {meta.get('loadavg_before', '?')} before, "
        f"{meta.get('loadavg_after', '?')} after",
    ]


def ms(us):
    return None if us is None else us / 1000.0


def fmt_ms(v):
    return f"{v:.3g} ms"


def connections(c):
    pts = c["points"]
    n = [p["idle_sessions"] for p in pts]
    return Chart(
        "dm throughput and latency against idle connections held",
        subtitle(c["meta"]),
        "idle authenticated TCP+TLS sessions held on the same server (log scale)",
        [
            {
                "title": "dm W=64, TCP+TLS, fsync, 32 pairs: messages delivered per second",
                "ylabel": "msg/s",
                "series": [{"name": "throughput", "points": list(zip(n, [p["msg_per_sec"] for p in pts]))}],
            },
            {
                "title": "send → receipt latency",
                "ylabel": "ms",
                "series": [
                    {"name": "p99", "points": list(zip(n, [ms(p["latency"]["p99_us"]) for p in pts])), "fmt": fmt_ms},
                    {
                        "name": "p50",
                        "points": list(zip(n, [ms(p["latency"]["p50_us"]) for p in pts])),
                        "dashed": True,
                        "fmt": fmt_ms,
                        "labels_below": True,
                    },
                ],
            },
            {
                "title": "server CPU time per delivered message (what the load costs, whatever share of its core the server got)",
                "ylabel": "µs",
                "series": [
                    {
                        "name": "server CPU per message",
                        "points": list(zip(n, [p["server_cpu_us_per_msg"] for p in pts])),
                        "fmt": lambda v: f"{v:.1f} µs",
                    }
                ],
            },
            {
                "title": "server RSS",
                "ylabel": "MiB",
                "series": [
                    {
                        "name": "idle sessions up, before the load",
                        "points": list(zip(n, [p["rss_idle_kib"] / 1024 for p in pts])),
                        "fmt": lambda v: f"{v:.0f}",
                        "labels_below": True,
                    },
                    {
                        "name": "after the dm load",
                        "points": list(zip(n, [p["rss_end_kib"] / 1024 for p in pts])),
                        "fmt": lambda v: f"{v:.0f}",
                    },
                ],
            },
        ],
    )


def history(c):
    pts = c["points"]
    m = [p["messages"] for p in pts]
    has_cold = all("cold" in p for p in pts)

    def lat(kind, q):
        return list(zip(m, [ms(p[kind]["latency"][q]) for p in pts]))

    lat_series = [{"name": "warm p99", "points": lat("warm", "p99_us"), "fmt": fmt_ms}]
    rate_series = [{"name": "warm", "points": list(zip(m, [p["warm"]["pages_per_sec"] for p in pts]))}]
    if has_cold:
        lat_series.append({"name": "cold p99 (restart, page cache dropped)", "points": lat("cold", "p99_us"), "fmt": fmt_ms})
        rate_series.append(
            {"name": "cold", "points": list(zip(m, [p["cold"]["pages_per_sec"] for p in pts])), "labels_below": True}
        )
    lat_series.append({"name": "warm p50", "points": lat("warm", "p50_us"), "dashed": True, "fmt": fmt_ms, "labels_below": True})
    return Chart(
        "history page latency against store size",
        subtitle(c["meta"]),
        "messages stored (100 bytes each, over 20 conversations; log scale)",
        [
            {"title": "random page of 50 before a random seq, 4 readers: latency", "ylabel": "ms", "series": lat_series},
            {"title": "pages read per second", "ylabel": "pages/s", "series": rate_series},
        ],
    )


def sync(c):
    pts = c["points"]
    k = [p["backlog"] for p in pts]
    return Chart(
        "catch-up sync rate against backlog",
        subtitle(c["meta"]),
        "messages missed while offline (log scale)",
        [
            {
                "title": "inbox events fetched per second until caught up (pages of 100)",
                "ylabel": "events/s",
                "series": [
                    {"name": "8 pages in flight", "points": list(zip(k, [p["window8"]["events_per_sec"] for p in pts]))},
                    {
                        "name": "1 page in flight",
                        "points": list(zip(k, [p["window1"]["events_per_sec"] for p in pts])),
                        "labels_below": True,
                    },
                ],
            },
            {
                "title": "time to catch up, 8 pages in flight",
                "ylabel": "seconds",
                "series": [
                    {
                        "name": "8 pages in flight",
                        "points": list(zip(k, [p["window8"]["seconds"] for p in pts])),
                        "fmt": lambda v: f"{v:.3g} s",
                    }
                ],
            },
        ],
    )


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    os.makedirs(sys.argv[2], exist_ok=True)
    for name, draw in (("connections", connections), ("history", history), ("sync", sync)):
        c = doc.get("curves", {}).get(name)
        if not c or not c.get("points"):
            continue
        path = os.path.join(sys.argv[2], f"{name}.svg")
        with open(path, "w") as f:
            f.write(draw(c).render())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
