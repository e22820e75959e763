"""The report in the terminal: the end-of-run summary and `posttrain status` as rich tables."""

from __future__ import annotations

from typing import Any

from posttrain.api.resources import KINDS
from posttrain.api.status import Status
from posttrain.local.report.extract import collect
from posttrain.local.report.model import Section, number
from posttrain.local.state import StateDir


def headline(section: Section, limit: int = 4) -> str:
    """The few metrics that tell how a stage went."""
    info = KINDS.get(section.kind)
    headlines = info.headlines if info is not None else ()
    wanted: list[str] = [k for k in headlines if k in section.metrics]
    rest = [k for k in section.metrics if k not in wanted and "." not in k]
    keys = (wanted + rest)[:limit]
    return "  ".join(f"{k}={number(section.metrics[k])}" for k in keys)


def summary_table(state: StateDir, sections: list[Section] | None = None) -> Any:
    """The end-of-run summary: phase, time, headline metrics and checks per resource."""
    from rich.table import Table

    sections = collect(state) if sections is None else sections
    table = Table(title="posttrain run", title_justify="left", expand=False)
    for column in ("resource", "phase", "time", "metrics", "cost", "checks"):
        table.add_column(column, overflow="fold")
    for section in sections:
        style = {"Succeeded": "green", "Failed": "red"}.get(section.phase, "yellow")
        checks = "\n".join(c.text() for c in section.checks)
        table.add_row(
            section.label,
            f"[{style}]{section.phase}[/{style}]",
            duration(section.seconds),
            headline(section),
            "\n".join(f"{number(value)} {unit}" for unit, value in section.cost.items()),
            checks,
        )
    return table


def status_table(state: StateDir) -> Any:
    """`posttrain status`: every resource's phase, progress, run, attempt and what it is doing."""
    from rich.table import Table

    info = state.run_info() or {}
    title = f"{state.root}  (last run: {info.get('state', 'unknown')})"
    table = Table(title=title, title_justify="left")
    for column in ("resource", "phase", "progress", "run", "attempt"):
        # The phase is what the table is for: never cut short in a narrow terminal.
        table.add_column(column, no_wrap=True, min_width=len("Succeeded") if column == "phase" else None)
    table.add_column("message", overflow="fold", min_width=24)
    for record in state.records():
        status = record.typed_status() or Status()
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        progressing = next((c for c in status.conditions if c.type == "Progressing"), None)
        condition = progressing if status.phase not in ("Succeeded", "Failed") and progressing else ready
        progress = status.progress.summary if status.progress else ""
        table.add_row(
            f"{record.kind}/{record.name}",
            status.phase,
            progress,
            (status.run_id or "")[:12],
            str(status.attempt),
            condition.message if condition else "",
        )
    return table


def duration(seconds: float | None) -> str:
    """`42s` or `3m05s` (empty for None)."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
