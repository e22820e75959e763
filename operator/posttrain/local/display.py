"""What `posttrain run` shows while it works: a live table on a terminal, plain log lines otherwise.

The live view (rich) has a row per resource: phase, a progress bar with done/total and unit, the rate
and ETA of the running workload, the elapsed time, and the latest message. Rates are measured here,
from the progress documents the workloads write, over the current attempt only.

When stdout is not a terminal (CI, `| tee`), the same information comes as log lines: every event
(phase changes, attempts, retries), server notes, and a progress line per running resource at most
every `progress_every` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from posttrain.local.driver import ResourceView
from posttrain.plan.types import Event
from posttrain.support import times

PHASE_STYLE = {
    "Pending": "dim",
    "Waiting": "yellow",
    "Running": "cyan",
    "Succeeded": "green",
    "Failed": "bold red",
}


@dataclass
class _Rate:
    """Samples of one attempt's progress."""

    attempt: tuple[str | None, int]
    first_time: float
    first_done: int
    last_time: float
    last_done: int

    def per_second(self) -> float | None:
        elapsed = self.last_time - self.first_time
        if elapsed <= 0 or self.last_done <= self.first_done:
            return None
        return (self.last_done - self.first_done) / elapsed


class RateMeter:
    """Rate and ETA per resource, from successive progress readings."""

    def __init__(self) -> None:
        self._rates: dict[str, _Rate] = {}

    def observe(self, view: ResourceView, now: float) -> None:
        """Record a reading; a new run or attempt starts the measurement again."""
        attempt = (view.run_id, view.attempt)
        rate = self._rates.get(view.label)
        if rate is None or rate.attempt != attempt or view.done < rate.last_done:
            self._rates[view.label] = _Rate(attempt, now, view.done, now, view.done)
        elif rate.last_done == 0 and view.done > 0:
            # Measure from the first unit done: the time before it is start-up (imports, loading).
            self._rates[view.label] = _Rate(attempt, now, view.done, now, view.done)
        elif view.done != rate.last_done:
            rate.last_time, rate.last_done = now, view.done

    def rate(self, view: ResourceView) -> float | None:
        """Units per second of the current attempt, once it moved."""
        rate = self._rates.get(view.label)
        return rate.per_second() if rate else None

    def eta(self, view: ResourceView) -> float | None:
        """Seconds left, when the total is known and the rate measured."""
        per_second = self.rate(view)
        if per_second is None or view.total <= 0 or view.phase != "Running":
            return None
        return max(view.total - view.done, 0) / per_second


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def elapsed(view: ResourceView, now: float) -> float | None:
    """Seconds the current run has taken so far (or took)."""
    start = times.seconds(view.start_time)
    if start is None or view.phase in ("Pending", "Waiting"):
        return None
    end = times.seconds(view.completion_time) or now
    return max(end - start, 0.0)


def progress_text(view: ResourceView, meter: RateMeter) -> str:
    """`12/24 rows  3.1/s  ETA 4s` (the parts that are known)."""
    if not view.unit or (view.done == 0 and view.total == 0):
        return ""
    parts = [f"{view.done}/{view.total} {view.unit}" if view.total else f"{view.done} {view.unit}"]
    rate = meter.rate(view)
    if rate is not None and view.phase == "Running":
        parts.append(f"{rate:.3g}/s")
    eta = meter.eta(view)
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return "  ".join(parts)


class PlainDisplay:
    """Log lines, for when stdout is not a terminal."""

    def __init__(self, stream: IO[str] | None = None, progress_every: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.progress_every = progress_every
        self.meter = RateMeter()
        self._last_progress: dict[str, tuple[float, int]] = {}

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.stream.write(f"{stamp} {text}\n")
        self.stream.flush()

    def update(self, views: Sequence[ResourceView]) -> None:
        """Log a progress line for each running resource whose count moved, at most every `progress_every` s."""
        now = time.time()
        for view in views:
            self.meter.observe(view, now)
            if view.phase != "Running" or not view.unit:
                continue
            last_time, last_done = self._last_progress.get(view.label, (0.0, -1))
            text = progress_text(view, self.meter)
            if text and view.done != last_done and now - last_time >= self.progress_every:
                self._last_progress[view.label] = (now, view.done)
                self._line(f"{view.label}: {text}")

    def event(self, kind: str, name: str, event: Event) -> None:
        """Log an event, marked `!` when it is a warning."""
        mark = "!" if event.type == "Warning" else "-"
        self._line(f"{mark} {kind}/{name} {event.reason}: {event.message}")

    def note(self, message: str) -> None:
        """Log a free-form line of the runner."""
        self._line(f"  {message}")

    def close(self) -> None:
        """Nothing to release: every line is already written."""
        pass


class LiveDisplay:
    """A live table (rich) of every resource, redrawn after every pass."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.meter = RateMeter()
        self._views: list[ResourceView] = []
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def table(self) -> Any:
        """The table of the current views."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table(expand=True, show_edge=False, pad_edge=False)
        table.add_column("resource", no_wrap=True)
        table.add_column("phase", no_wrap=True)
        table.add_column("", width=16, no_wrap=True)
        table.add_column("progress", no_wrap=True)
        table.add_column("time", no_wrap=True, justify="right")
        table.add_column("", ratio=1, overflow="ellipsis", no_wrap=True)
        for view in self._views:
            bar: Any = ""
            if view.phase == "Running" and view.total > 0:
                bar = ProgressBar(total=view.total, completed=min(view.done, view.total), width=16)
            elif view.phase == "Succeeded":
                bar = ProgressBar(total=1, completed=1, width=16)
            message = view.message if view.phase != "Succeeded" else _headline(view)
            table.add_row(
                view.label,
                Text(view.phase, style=PHASE_STYLE.get(view.phase, "")),
                bar,
                progress_text(view, self.meter),
                duration(elapsed(view, now)),
                Text(message, style="dim"),
            )
        return table

    def update(self, views: Sequence[ResourceView]) -> None:
        """Take the latest views and redraw the table."""
        now = time.time()
        for view in views:
            self.meter.observe(view, now)
        self._views = list(views)
        self._live.update(self.table(), refresh=True)

    def event(self, kind: str, name: str, event: Event) -> None:
        """Print a warning event above the table; normal events only show in the table."""
        if event.type == "Warning":
            self._live.console.print(f"[red]![/red] {kind}/{name} {event.reason}: {event.message}")

    def note(self, message: str) -> None:
        """Print a dimmed free-form line above the table."""
        self._live.console.print(f"[dim]{message}[/dim]")

    def close(self) -> None:
        """Draw the table a last time and leave it on the terminal."""
        self._live.update(self.table(), refresh=True)
        self._live.stop()


def _headline(view: ResourceView) -> str:
    """A few metrics of a finished resource."""
    parts = [f"{k}={_number(v)}" for k, v in list(view.metrics.items())[:4]]
    return "  ".join(parts)


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def make_display(stream: IO[str] | None = None) -> PlainDisplay | LiveDisplay:
    """The live view on a terminal, log lines otherwise."""
    target = stream or sys.stdout
    if target.isatty():
        return LiveDisplay()
    return PlainDisplay(target)
