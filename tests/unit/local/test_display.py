"""The progress view: rates and ETA from progress readings, durations, plain log lines, the live table."""

from __future__ import annotations

import io

from posttrain.local.display import LiveDisplay, PlainDisplay, RateMeter, duration, elapsed, progress_text
from posttrain.local.driver import ResourceView, view_of
from posttrain.plan.types import Event


def view(done: int, total: int = 100, attempt: int = 1, phase: str = "Running") -> ResourceView:
    return ResourceView(
        "EvolJob", "evol", phase, "WorkloadRunning", "", done, total, "requests", "run1", attempt
    )


def test_rate_and_eta_come_from_the_current_attempt() -> None:
    meter = RateMeter()
    meter.observe(view(10), now=100.0)
    assert meter.rate(view(10)) is None  # one reading says nothing about speed
    meter.observe(view(30), now=110.0)
    assert meter.rate(view(30)) == 2.0
    assert meter.eta(view(30)) == 35.0
    meter.observe(view(0, attempt=2), now=120.0)  # a new attempt starts measuring again
    assert meter.rate(view(0, attempt=2)) is None
    meter.observe(view(5, attempt=2), now=125.0)
    meter.observe(view(9, attempt=2), now=127.0)
    assert meter.rate(view(9, attempt=2)) == 2.0


def test_start_up_before_the_first_unit_is_not_counted() -> None:
    meter = RateMeter()
    meter.observe(view(0), now=0.0)
    meter.observe(view(1), now=60.0)  # a minute of loading, then the first step
    assert meter.rate(view(1)) is None
    meter.observe(view(3), now=62.0)
    assert meter.rate(view(3)) == 1.0


def test_no_eta_without_a_total_or_when_not_running() -> None:
    meter = RateMeter()
    meter.observe(view(1, total=0), now=0.0)
    meter.observe(view(3, total=0), now=1.0)
    assert meter.eta(view(3, total=0)) is None
    assert meter.eta(view(3, phase="Succeeded")) is None


def test_progress_text_and_durations() -> None:
    meter = RateMeter()
    meter.observe(view(10), now=0.0)
    meter.observe(view(20), now=5.0)
    assert progress_text(view(20), meter) == "20/100 requests  2/s  ETA 40s"
    assert progress_text(view(0, total=0), meter) == ""
    assert [duration(s) for s in (None, 4.4, 65, 3725)] == ["", "4s", "1m05s", "1h02m"]


def test_elapsed_runs_from_start_to_completion() -> None:
    finished = ResourceView(
        "DataSlice",
        "d",
        "Succeeded",
        "",
        "",
        start_time="2025-01-01T00:00:00Z",
        completion_time="2025-01-01T00:01:30Z",
    )
    assert elapsed(finished, now=0.0) == 90.0
    waiting = ResourceView("DataSlice", "d", "Waiting", "", "", start_time="2025-01-01T00:00:00Z")
    assert elapsed(waiting, now=0.0) is None


def test_view_of_a_status_takes_progress_and_the_condition_that_explains_the_phase() -> None:
    status = {
        "phase": "Running",
        "runId": "abc",
        "attempt": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "Unknown",
                "reason": "WorkloadRunning",
                "message": "r",
                "lastTransitionTime": "t",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "WorkloadRunning",
                "message": "attempt 1 running",
                "lastTransitionTime": "t",
            },
        ],
        "progress": {"done": 3, "total": 9, "unit": "rows"},
    }
    shown = view_of("DataSlice", "d", status)
    assert (shown.phase, shown.message, shown.done, shown.total, shown.unit) == (
        "Running",
        "attempt 1 running",
        3,
        9,
        "rows",
    )
    assert view_of("DataSlice", "d", None).phase == "Pending"


def test_plain_display_logs_events_and_throttled_progress() -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream, progress_every=3600.0)
    display.event("EvolJob", "evol", Event("Warning", "AttemptFailed", "attempt 1 failed"))
    display.update([view(1)])
    display.update([view(2)])  # within the interval: not logged again
    display.note("server ready")
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == [
        "! EvolJob/evol AttemptFailed: attempt 1 failed",
        "EvolJob/evol: 1/100 requests",
        "  server ready",
    ]


def test_live_display_draws_a_row_per_resource() -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, width=140, force_terminal=False)
    display = LiveDisplay(console)
    done = ResourceView(
        "DataSlice", "data", "Succeeded", "Succeeded", "", metrics={"rows": 24.0, "kept": 0.5}
    )
    display.update([done, view(40)])
    display.close()
    text = screen.getvalue()
    assert "DataSlice/data" in text and "rows=24  kept=0.5" in text
    assert "EvolJob/evol" in text and "40/100 requests" in text
