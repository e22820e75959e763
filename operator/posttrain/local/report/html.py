"""The report page: `report/report.html` with the PNG plots of every section."""

from __future__ import annotations

import html
import time
from pathlib import Path

from posttrain.local.report.extract import collect
from posttrain.local.report.model import Section, TableData, number
from posttrain.local.report.plots import draw
from posttrain.local.report.terminal import duration, headline
from posttrain.local.state import StateDir

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.Succeeded { color: #17803d; } .Failed { color: #c0262d; } .Running, .Waiting, .Pending { color: #a66a00; }
.ok { color: #17803d; } .not { color: #c0262d; }
img { max-width: 640px; margin: 0.3em 1em 0.3em 0; } .note { color: #666; }
section { border-top: 2px solid #eee; margin-top: 1.5em; }
"""


def render_html(sections: list[Section], images: dict[int, list[str]], title: str) -> str:
    """The page; `images[i]` are the PNG paths (relative to the page) of section i's charts."""
    esc = html.escape
    out = [f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title><style>{STYLE}</style>"]
    out.append(f"<h1>{esc(title)}</h1><p class='note'>written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>")
    out.append(
        "<table><tr><th>resource</th><th>phase</th><th>time</th><th>attempts</th><th>metrics</th><th>checks</th></tr>"
    )
    for section in sections:
        checks = "<br>".join(
            f"<span class='{'ok' if c.ok else 'not'}'>{esc(c.text())}</span>" for c in section.checks
        )
        out.append(
            f"<tr><td><a href='#{esc(section.label)}'>{esc(section.label)}</a></td>"
            f"<td class='{esc(section.phase)}'>{esc(section.phase)}</td><td>{duration(section.seconds)}</td>"
            f"<td>{section.attempts}</td><td>{esc(headline(section))}</td><td>{checks}</td></tr>"
        )
    out.append("</table>")
    for index, section in enumerate(sections):
        out.append(
            f"<section id='{esc(section.label)}'><h2>{esc(section.label)} <small class='{esc(section.phase)}'>{esc(section.phase)}</small></h2>"
        )
        for note in section.notes:
            out.append(f"<p class='note'>{esc(note)}</p>")
        for src in images.get(index, []):
            out.append(f"<img src='{esc(src)}' alt='{esc(section.label)}'>")
        for table in section.tables:
            out.append(_table_html(table))
        if section.outputs:
            out.append(
                _table_html(
                    TableData(
                        "outputs", ["output", "rows / location"], [[k, v] for k, v in section.outputs.items()]
                    )
                )
            )
        if section.metrics:
            out.append(
                _table_html(
                    TableData(
                        "metrics",
                        ["metric", "value"],
                        [[k, number(v)] for k, v in sorted(section.metrics.items())],
                    )
                )
            )
        out.append("</section>")
    return "\n".join(out) + "\n"


def _table_html(table: TableData) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<h3>{esc(table.title)}</h3><table><tr>{head}</tr>{rows}</table>"


def write_report(state: StateDir, sections: list[Section] | None = None) -> Path:
    """Write `report/report.html` and its plots; returns the page's path."""
    sections = collect(state) if sections is None else sections
    folder = state.report_dir
    plots = folder / "plots"
    if plots.exists():
        for old in plots.glob("*.png"):
            old.unlink()
    images: dict[int, list[str]] = {}
    for index, section in enumerate(sections):
        for position, chart in enumerate(section.charts):
            name = f"{section.kind.lower()}-{section.name}-{position}.png"
            if draw(chart, plots / name):
                images.setdefault(index, []).append(f"plots/{name}")
    page = folder / "report.html"
    folder.mkdir(parents=True, exist_ok=True)
    page.write_text(render_html(sections, images, f"posttrain run report — {state.root}"))
    return page
