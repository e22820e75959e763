"""The report of a local run: an HTML page with PNG plots, and a summary table for the terminal.

Inputs: the state folder of a run (`StateDir`): each resource's status (phase, times, attempts,
outputs, metrics) and the artifacts of its current run (documents and logs the workloads write).
Outputs: `report/report.html` with `report/plots/*.png`, and rich tables (`summary_table`,
`status_table`).

Split by job: `model` (the data shown), `extract` (files -> sections, one extractor per kind in a
registry), `cost` (tokens, time and GPU-hours per accepted sample and per Elo point), `terminal` (rich tables), `plots` (matplotlib) and `html` (the page). Extraction is pure
and separate from drawing, so it is tested without matplotlib.
"""

from posttrain.local.report.extract import (
    EXTRACTORS,
    TRAINER_STATE,
    Run,
    collect,
    direction,
    measured_pairs,
    output_folder,
    total_variation,
    training_curves,
    win_rates,
)
from posttrain.local.report.html import render_html, write_report
from posttrain.local.report.model import BarChart, Chart, Check, LineChart, Section, TableData, ends
from posttrain.local.report.plots import draw
from posttrain.local.report.terminal import headline, status_table, summary_table

__all__ = [
    "EXTRACTORS",
    "TRAINER_STATE",
    "BarChart",
    "Chart",
    "Check",
    "LineChart",
    "Run",
    "Section",
    "TableData",
    "collect",
    "direction",
    "draw",
    "ends",
    "headline",
    "measured_pairs",
    "output_folder",
    "render_html",
    "status_table",
    "summary_table",
    "total_variation",
    "training_curves",
    "win_rates",
    "write_report",
]
