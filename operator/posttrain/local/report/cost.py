"""What each stage cost: tokens and requests paid for, time, GPU-hours, per accepted sample and per Elo point.

Read from the metrics of each section (the run's `status.metrics`): tokens paid are the prompt and
completion tokens of requests a model answered in this run (`tokens.prompt|completion.<participant>`;
replies replayed from the journal or the model-call cache cost nothing and are counted apart), time is
the workload's own seconds, GPU-hours are the workload's `usage.gpuHours` when it reports them.

- Per accepted sample: the kind's accepted samples are named in `ACCEPTED` (an EvolJob's kept
  evolutions, an AlignRound's SFT rows and preference pairs).
- Per Elo point: an AlignRound that rates the student (`elo.<student>`) against the same reference
  participant as an earlier round in the run gives the Elo gained since then; everything spent from
  that round (exclusive) to this one (inclusive) — the stages that trained the better student — is
  divided by the gain.
"""

from __future__ import annotations

from dataclasses import dataclass

from posttrain.api import metrics as names
from posttrain.api.metrics import Align, Evol, Metric
from posttrain.local.report.model import Section, TableData, number

ACCEPTED: dict[str, tuple[Metric, ...]] = {
    "EvolJob": (Evol.KEPT,),
    "AlignRound": (Align.ROWS_SFT, Align.ROWS_PREFERENCES),
}
"""Kind -> the metrics that count its accepted samples."""


@dataclass
class Spend:
    """What was spent (tokens paid for, workload seconds, GPU-hours)."""

    tokens: float = 0.0
    seconds: float = 0.0
    gpu_hours: float = 0.0

    def add(self, other: Spend) -> None:
        """Add another stage's spending."""
        self.tokens += other.tokens
        self.seconds += other.seconds
        self.gpu_hours += other.gpu_hours


def spend(section: Section) -> Spend:
    """What one stage spent, from its metrics and time."""
    families = (names.TOKENS_PROMPT_BY, names.TOKENS_COMPLETION_BY)
    tokens = sum(v for k, v in section.metrics.items() if any(f.matches(k) for f in families))
    return Spend(tokens, section.seconds or 0.0, section.metrics.get(names.USAGE_GPU_HOURS, 0.0))


def add_costs(sections: list[Section]) -> None:
    """Add a `cost` table (and summary figures in `section.cost`) to each section that spent something.

    Args:
        sections: the run's sections in pipeline order (an AlignRound's `elo` filled in).
    """
    since = Spend()
    last_elo: dict[str, float] = {}
    for section in sections:
        spent = spend(section)
        since.add(spent)
        rows: list[list[str]] = []
        metrics = section.metrics
        if spent.tokens or names.REQUESTS_SENT in metrics:
            rows.append(["tokens paid for", number(spent.tokens)])
            rows.append(["requests sent", number(metrics.get(names.REQUESTS_SENT, 0.0))])
        if names.CACHE_HITS in metrics:
            rows.append(["replies replayed from the model-call cache", number(metrics[names.CACHE_HITS])])
        if spent.gpu_hours:
            rows.append(["GPU-hours", number(spent.gpu_hours)])
        accepted = sum(metrics.get(metric, 0.0) for metric in ACCEPTED.get(section.kind, ()))
        if section.kind in ACCEPTED and (rows or accepted):
            rows.append(["accepted samples", number(accepted)])
            if accepted:
                section.cost["tokens/sample"] = spent.tokens / accepted
                rows.append(["tokens per accepted sample", number(spent.tokens / accepted)])
                rows.append(["seconds per accepted sample", number(spent.seconds / accepted)])
        if section.elo is not None:
            reference, elo = section.elo
            previous = last_elo.get(reference)
            last_elo[reference] = elo
            if previous is not None:
                gain = elo - previous
                rows.append([f"Elo gained since the last round (reference {reference})", number(gain)])
                if gain > 0:
                    section.cost["tokens/Elo"] = since.tokens / gain
                    rows.append(["tokens per Elo point", number(since.tokens / gain)])
                    rows.append(["seconds per Elo point", number(since.seconds / gain)])
                    if since.gpu_hours:
                        rows.append(["GPU-hours per Elo point", number(since.gpu_hours / gain)])
            since = Spend()
        if rows:
            section.tables.append(TableData("cost", ["measure", "value"], rows))
