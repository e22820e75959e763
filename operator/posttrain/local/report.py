"""The report of a local run: an HTML page with PNG plots, and a summary table for the terminal.

Inputs: the state folder of a run (`StateDir`): each resource's status (phase, times, attempts,
outputs, metrics) and the artifacts of its current run (documents and logs the workloads write).
Outputs: `report/report.html` with `report/plots/*.png`, and rich tables (`summary_table`,
`status_table`).

What it shows, per kind:
- DataSlice: the distribution of each analysed attribute before and after weighted sampling, next
  to the target weights; check: sampling brings the mix closer to the targets (total variation).
- EvolJob: evolution yield per operation (kept and eliminated) and eliminations per rule; check: the
  evolved instructions are longer / harder than their seeds (Evol-Instruct's premise).
- AlignRound: the student's win rate against each opponent and the arena's Bradley–Terry Elo with
  bootstrap intervals (Arena Learning).
- TrainStage, RewardModel: losses, rewards and accuracies over the training steps, from the trainer's
  log; checks: the loss goes down, rewards and accuracies go up.

Extraction (files -> `Section`s of tables, charts and checks) is pure and separate from drawing, so it
is tested without matplotlib; drawing uses matplotlib's Agg backend and is skipped if it is missing.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from posttrain.api.metrics import Data, Evol, Train
from posttrain.api.resources import KINDS
from posttrain.api.status import Status
from posttrain.api.uri import FILE, ArtifactUri, local_path
from posttrain.local.state import ResourceRecord, StateDir, read_json

# Data ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A metric that should move one way over the stage (the toy task's sanity check)."""

    metric: str
    before: float
    after: float
    better: Literal["up", "down"]

    @property
    def ok(self) -> bool:
        return self.after > self.before if self.better == "up" else self.after < self.before

    def text(self) -> str:
        wanted = "should rise" if self.better == "up" else "should fall"
        return f"{'✓' if self.ok else '✗'} {self.metric}: {_number(self.before)} → {_number(self.after)} ({wanted})"


@dataclass(frozen=True)
class BarChart:
    """Bars per category, one series per group (e.g. before / after / target)."""

    title: str
    categories: list[str]
    series: dict[str, list[float]]
    ylabel: str = ""
    errors: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Series -> (low, high) per category, drawn as error bars."""


@dataclass(frozen=True)
class LineChart:
    """Curves over steps."""

    title: str
    series: dict[str, list[tuple[float, float]]]
    xlabel: str = "step"
    ylabel: str = ""


Chart = BarChart | LineChart


@dataclass(frozen=True)
class TableData:
    """A small table."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """What the report shows about one resource."""

    kind: str
    name: str
    phase: str
    seconds: float | None = None
    attempts: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """Output name -> `rows` or the URI."""
    tables: list[TableData] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


# Helpers ---------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _local(uri: str | None, state: StateDir) -> Path | None:
    return local_path(uri, state.pvc_root) if uri else None


def _jsonl(path: Path | None, limit: int = 100_000) -> list[dict[str, Any]]:
    """Rows of a JSONL file or of the JSONL files of a folder; [] when absent."""
    if path is None:
        return []
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for file in files:
        try:
            lines = file.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if len(rows) >= limit:
                return rows
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _document(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        path = found[0] if found else path
    document = read_json(path)
    return document if isinstance(document, dict) else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def ends(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(mean of the first quarter, mean of the last quarter) of a curve, or None if it is too short.

    Means over a quarter, not single points: per-step losses on a toy batch are noisy.
    """
    if len(points) < 2:
        return None
    width = max(1, len(points) // 4)
    ys = [y for _, y in points]
    return _mean(ys[:width]), _mean(ys[-width:])


# Per-kind extraction ---------------------------------------------------------------------------------


def total_variation(shares: dict[str, float], targets: dict[str, float]) -> float:
    """Half the L1 distance between two distributions (both normalised here)."""
    a_total = sum(shares.values()) or 1.0
    b_total = sum(targets.values()) or 1.0
    keys = set(shares) | set(targets)
    return 0.5 * sum(abs(shares.get(k, 0.0) / a_total - targets.get(k, 0.0) / b_total) for k in keys)


def data_sections(section: Section, folder: Path | None, status: Status, spec: dict[str, Any]) -> None:
    """DataSlice: attribute distributions before and after sampling, against the targets."""
    analysis = _find_analysis(folder, status)
    if analysis is None:
        section.notes.append("no analysis document found in the output folder")
        return
    before, after = analysis
    targets = _targets(status, spec)
    for attribute in sorted(set(before) | set(after)):
        values = sorted(
            set(before.get(attribute, {})) | set(after.get(attribute, {})) | set(targets.get(attribute, {}))
        )
        if not values:
            continue
        series = {
            "before": _shares(before.get(attribute, {}), values),
            "after": _shares(after.get(attribute, {}), values),
        }
        if attribute in targets:
            series["target"] = _shares(targets[attribute], values)
            tv_before = total_variation(before.get(attribute, {}), targets[attribute])
            tv_after = total_variation(after.get(attribute, {}), targets[attribute])
            section.checks.append(Check(f"{attribute}: distance to target", tv_before, tv_after, "down"))
        section.charts.append(BarChart(f"{attribute}: share of rows", values, series, "share"))


def _shares(counts: dict[str, float], values: list[str]) -> list[float]:
    total = sum(counts.values()) or 1.0
    return [counts.get(v, 0.0) / total for v in values]


def _find_analysis(
    folder: Path | None, status: Status
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]] | None:
    """(before, after): attribute -> value -> count, from the DataSlice's `report` output
    (`before.json` and `after.json`: `{"attributes": {name: {"counts": {value: n}}}}`)."""
    folders = []
    report = ArtifactUri.parse(status.outputs["report"].uri) if "report" in status.outputs else None
    if report is not None and report.scheme == FILE:
        folders.append(Path(report.path))
    if folder is not None:
        folders.append(folder / "report")
    for candidate in folders:
        before = _counts(read_json(candidate / "before.json"))
        after = _counts(read_json(candidate / "after.json"))
        if before or after:
            return before, after
    return None


def _counts(document: Any) -> dict[str, dict[str, float]]:
    """attribute -> value -> count of one distribution document."""
    out: dict[str, dict[str, float]] = {}
    attributes = document.get("attributes") if isinstance(document, dict) else None
    if not isinstance(attributes, dict):
        return out
    for name, entry in attributes.items():
        counts = entry.get("counts") if isinstance(entry, dict) else None
        if isinstance(counts, dict):
            out[str(name)] = {str(k): float(v) for k, v in counts.items() if isinstance(v, (int, float))}
    return out


def _targets(status: Status, spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """attribute -> value -> target weight: the workload's `target.A.V` metrics, else the spec."""
    out: dict[str, dict[str, float]] = {}
    for key, value in status.metrics.items():
        items = Data.TARGET.items(key)
        if items:
            out.setdefault(items[0], {})[items[1]] = value
    if out:
        return out
    for target in ((spec.get("data") or {}).get("sampling") or {}).get("targets", []):
        weights = target.get("weights") or {}
        out[str(target.get("attribute"))] = {str(k): float(v) for k, v in weights.items()}
    return out


def evol_sections(section: Section, folder: Path | None, status: Status, state: StateDir) -> None:
    """EvolJob: yield per operation (from the `evolved` attempts) and eliminations per rule."""
    metrics = status.metrics
    attempts = _jsonl(_local(status.outputs["evolved"].uri, state)) if "evolved" in status.outputs else []
    by_operation: dict[str, dict[str, float]] = {}
    kept_words: list[float] = []
    parent_words: list[float] = []
    for attempt in attempts:
        operation = str((attempt.get("lineage") or {}).get("operation") or "?")
        verdict = str(attempt.get("verdict") or "failed")
        counts = by_operation.setdefault(operation, {"kept": 0.0, "eliminated": 0.0, "failed": 0.0})
        counts[verdict] = counts.get(verdict, 0.0) + 1
        if verdict == "kept" and attempt.get("instruction") and attempt.get("parentInstruction"):
            kept_words.append(float(len(str(attempt["instruction"]).split())))
            parent_words.append(float(len(str(attempt["parentInstruction"]).split())))
    if by_operation:
        names = sorted(by_operation)
        verdicts = ["kept", "eliminated", "failed"]
        section.charts.append(
            BarChart(
                "evolution attempts per operation",
                names,
                {v: [by_operation[n].get(v, 0.0) for n in names] for v in verdicts},
                "attempts",
            )
        )
        section.tables.append(
            TableData(
                "yield per operation (kept / judged)",
                ["operation", *verdicts, "yield"],
                [
                    [
                        n,
                        *(_number(by_operation[n].get(v, 0.0)) for v in verdicts),
                        f"{_yield(by_operation[n]):.2f}",
                    ]
                    for n in names
                ],
            )
        )
    rules = {items[0]: v for k, v in metrics.items() if (items := Evol.ELIMINATED_BY_RULE.items(k))}
    if rules:
        names = sorted(rules)
        section.charts.append(
            BarChart("eliminated per rule", names, {"eliminated": [rules[n] for n in names]}, "attempts")
        )
    seeds, final = metrics.get(Evol.DIFFICULTY_SEEDS), metrics.get(Evol.DIFFICULTY_FINAL)
    if seeds is not None and final is not None:
        section.checks.append(Check("judged difficulty: seeds → last round", seeds, final, "up"))
    if kept_words:
        section.checks.append(
            Check("words: parent → kept evolution", _mean(parent_words), _mean(kept_words), "up")
        )


def _yield(counts: dict[str, float]) -> float:
    judged = counts.get("kept", 0.0) + counts.get("eliminated", 0.0)
    return counts.get("kept", 0.0) / judged if judged else 0.0


def align_sections(section: Section, folder: Path | None, status: Status, state: StateDir) -> None:
    """AlignRound: the student's win rate per opponent (battle log) and the arena Elo."""
    elo = _document(_local(status.outputs["elo"].uri, state)) if "elo" in status.outputs else None
    if elo and isinstance(elo.get("ratings"), list):
        ratings = [r for r in elo["ratings"] if isinstance(r, dict)]
        names = [str(r["name"]) for r in ratings]
        values = [float(r["rating"]) for r in ratings]
        errors = [
            (float(r.get("ciLow", v)), float(r.get("ciHigh", v)))
            for r, v in zip(ratings, values, strict=True)
        ]
        section.charts.append(
            BarChart(
                "arena Elo (Bradley–Terry, 95% bootstrap interval)",
                names,
                {"Elo": values},
                "Elo",
                {"Elo": errors},
            )
        )
        section.tables.append(
            TableData(
                f"arena Elo (reference {elo.get('reference')} = {_number(float(elo.get('referenceElo', 0)))})",
                ["participant", "Elo", "95% interval", "battles", "wins", "losses", "ties"],
                [
                    [
                        str(r["name"]),
                        _number(float(r["rating"])),
                        f"{_number(float(r.get('ciLow', 0)))} – {_number(float(r.get('ciHigh', 0)))}",
                        _number(float(r.get("battles", 0))),
                        _number(float(r.get("wins", 0))),
                        _number(float(r.get("losses", 0))),
                        _number(float(r.get("ties", 0))),
                    ]
                    for r in ratings
                ],
            )
        )
    battles = _jsonl(_local(status.outputs["battles"].uri, state)) if "battles" in status.outputs else []
    rates = win_rates(battles)
    if rates:
        pairs = sorted(rates)
        section.tables.append(
            TableData(
                "battles (position-swapped, resolved)",
                ["participant", "opponent", "battles", "wins", "ties", "losses", "win rate"],
                [
                    [a, b, *(_number(v) for v in rates[(a, b)][:4]), f"{rates[(a, b)][4]:.2f}"]
                    for a, b in pairs
                ],
            )
        )
        first = pairs[0][0]
        mine = [p for p in pairs if p[0] == first]
        section.charts.append(
            BarChart(
                f"{first}: win rate per opponent (ties count half)",
                [b for _, b in mine],
                {"win rate": [rates[p][4] for p in mine]},
                "win rate",
            )
        )


def win_rates(
    battles: Iterable[dict[str, Any]],
) -> dict[tuple[str, str], tuple[float, float, float, float, float]]:
    """(participant, opponent) -> (battles, wins, ties, losses, win rate with ties as half) of kept battles.

    Only the first participant of each pair's direction is kept as written in the log (the student
    is listed first in its battles), plus the mirrored view for every opponent.
    """
    tally: dict[tuple[str, str], list[float]] = {}
    for battle in battles:
        resolution = battle.get("resolution") or {}
        players = battle.get("participants") or []
        if len(players) != 2 or not resolution.get("kept", True) or resolution.get("winner") is None:
            continue
        x, y = str(players[0]), str(players[1])
        winner = resolution["winner"]
        for me, other in ((x, y), (y, x)):
            row = tally.setdefault((me, other), [0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            if winner == "tie":
                row[2] += 1
            elif winner == me:
                row[1] += 1
            else:
                row[3] += 1
    return {k: (n, w, t, lost, (w + 0.5 * t) / n) for k, (n, w, t, lost) in tally.items() if n}


TRAINER_STATE = "trainer_state.json"
"""The training log the workloads leave: the Hugging Face Trainer's state in every checkpoint
(`<output>/checkpoints/checkpoint-N/`), with the logged loss, reward and accuracy per step."""
CURVE_LOSS = ("loss", "train_loss")
"""Training-log keys whose curve should fall (not for RL, whose policy loss is no progress measure)."""


def direction(metric: str) -> Literal["up", "down"]:
    """Which way a metric should move: losses and KL fall, everything else (accuracy, reward) rises."""
    name = metric.lower()
    return "down" if "loss" in name or name.endswith("kl") else "up"


def measured_pairs(metrics: dict[str, float]) -> list[Check]:
    """The workload's own before/after measurements: `X.start` -> `X`, and `X.start` -> `X.end`."""
    checks = []
    for key, before in sorted(metrics.items()):
        if not key.endswith(".start"):
            continue
        base = key[: -len(".start")]
        after = metrics.get(base + ".end", metrics.get(base))
        if after is not None:
            checks.append(Check(base, before, after, direction(base)))
    return checks


def training_curves(
    folder: Path | None, status: Status, state: StateDir
) -> dict[str, list[tuple[float, float]]]:
    """Metric -> [(step, value)] from the log history of the newest checkpoint in the output folder."""
    if folder is None or not folder.exists():
        return {}
    states = sorted(folder.rglob(TRAINER_STATE), key=lambda p: _checkpoint_step(p.parent))
    document = read_json(states[-1]) if states else None
    rows: list[dict[str, Any]] = []
    if isinstance(document, dict) and isinstance(document.get("log_history"), list):
        rows = [r for r in document["log_history"] if isinstance(r, dict)]
    curves: dict[str, list[tuple[float, float]]] = {}
    for index, row in enumerate(rows):
        step = row.get("step", row.get("global_step", index + 1))
        if not isinstance(step, (int, float)):
            continue
        for key, value in row.items():
            if key in ("step", "global_step", "epoch", "learning_rate", "grad_norm") or isinstance(
                value, bool
            ):
                continue
            if isinstance(value, (int, float)) and not key.endswith(
                ("runtime", "per_second", "_flos", "samples")
            ):
                curves.setdefault(key, []).append((float(step), float(value)))
    return {k: v for k, v in curves.items() if len(v) >= 1}


def _checkpoint_step(folder: Path) -> int:
    """N of a `checkpoint-N` folder (-1 for any other folder)."""
    _, _, number = folder.name.rpartition("-")
    return int(number) if number.isdigit() else -1


def train_sections(
    section: Section, folder: Path | None, status: Status, state: StateDir, method: str | None = None
) -> None:
    """TrainStage / RewardModel: loss, reward and accuracy curves, and whether they moved.

    The checks: the workload's own before/after measurements (held-out accuracy, mean reward), and
    for supervised and preference training (not RL) the training loss from the first to the last
    quarter of the steps.
    """
    curves = training_curves(folder, status, state)
    losses = {k: v for k, v in curves.items() if "loss" in k and not k.startswith("eval")}
    others = {
        k: v
        for k, v in curves.items()
        if k not in losses and (k.startswith(("reward", "rewards", "accuracy", "eval")) or "score" in k)
    }
    if losses:
        section.charts.append(LineChart("loss", losses, ylabel="loss"))
    if others:
        section.charts.append(LineChart("rewards and accuracy", others, ylabel="value"))
    if method != "rleif":
        for metric in CURVE_LOSS:
            moved = ends(curves.get(metric, []))
            if moved is not None:
                section.checks.append(Check(f"training {metric}", moved[0], moved[1], "down"))
    section.checks.extend(measured_pairs(status.metrics))
    if method == "dpo" and Train.REWARD_MARGIN in status.metrics:
        # DPO's implicit reward margin against the starting model is 0 at the start by definition.
        section.checks.append(
            Check("held-out implicit reward margin", 0.0, status.metrics[Train.REWARD_MARGIN], "up")
        )
    if not curves:
        section.notes.append("no training log found in the output folder")


# Collecting ------------------------------------------------------------------------------------------


def output_folder(record: ResourceRecord, state: StateDir) -> Path | None:
    """The content-addressed output folder of the record's current run."""
    status = record.typed_status()
    if status is None or not status.run_id:
        return None
    for output in status.outputs.values():
        path = _local(output.uri, state)
        while path is not None and path != path.parent:
            if path.name == status.run_id:
                return path
            path = path.parent
    from posttrain.api.resources import KINDS

    plural = KINDS[record.kind].plural if record.kind in KINDS else record.kind.lower()
    candidate = state.artifacts / plural / status.run_id
    return candidate if candidate.exists() else None


def collect(state: StateDir) -> list[Section]:
    """A section per resource of the run, with what each kind's workload left."""
    sections = []
    for record in state.records():
        status = record.typed_status() or Status()
        start, end = _parse_time(status.start_time), _parse_time(status.completion_time)
        section = Section(
            kind=record.kind,
            name=record.name,
            phase=status.phase,
            seconds=workload_seconds(record, state, status.run_id)
            or ((end - start) if start is not None and end is not None else None),
            attempts=status.attempt,
            metrics=dict(status.metrics),
            outputs={k: (str(o.rows) if o.rows is not None else o.uri) for k, o in status.outputs.items()},
        )
        folder = output_folder(record, state)
        spec = _spec_of(record, state)
        if status.phase == "Succeeded":
            if record.kind == "DataSlice":
                data_sections(section, folder, status, spec)
            elif record.kind == "EvolJob":
                evol_sections(section, folder, status, state)
            elif record.kind == "AlignRound":
                align_sections(section, folder, status, state)
            elif record.kind in ("TrainStage", "RewardModel"):
                method = spec.get("method") if record.kind == "TrainStage" else spec.get("type")
                train_sections(section, folder, status, state, str(method) if method else None)
        elif status.last_failure is not None:
            section.notes.append(
                f"last failure: {status.last_failure.reason}: {status.last_failure.message[:300]}"
            )
        sections.append(section)
    return sections


def workload_seconds(record: ResourceRecord, state: StateDir, run_id: str | None) -> float | None:
    """Seconds the workload processes of the run took (all attempts; not the time queued or waiting
    for servers), or None when none ran."""
    total = 0.0
    found = False
    for workload in state.workload_dirs(record.kind, record.name):
        process = workload.process()
        if not run_id or not workload.path.name.startswith(run_id) or process is None:
            continue
        try:
            end = workload.exit_code_file.stat().st_mtime
        except OSError:
            continue
        total += max(end - float(process.get("startedAt", end)), 0.0)
        found = True
    return total if found else None


def _spec_of(record: ResourceRecord, state: StateDir) -> dict[str, Any]:
    """The spec the current run used (from its workload config)."""
    status = record.typed_status()
    if status is None or not status.run_id:
        return {}
    for workload in reversed(state.workload_dirs(record.kind, record.name)):
        if workload.path.name.startswith(status.run_id):
            config = read_json(workload.config)
            if isinstance(config, dict) and isinstance(config.get("spec"), dict):
                return dict(config["spec"])
    return {}


# Terminal --------------------------------------------------------------------------------------------


def headline(section: Section, limit: int = 4) -> str:
    """The few metrics that tell how a stage went."""
    info = KINDS.get(section.kind)
    headlines = info.headlines if info is not None else ()
    wanted: list[str] = [k for k in headlines if k in section.metrics]
    rest = [k for k in section.metrics if k not in wanted and "." not in k]
    keys = (wanted + rest)[:limit]
    return "  ".join(f"{k}={_number(section.metrics[k])}" for k in keys)


def summary_table(state: StateDir, sections: list[Section] | None = None) -> Any:
    """The end-of-run summary: phase, time, headline metrics and checks per resource."""
    from rich.table import Table

    sections = collect(state) if sections is None else sections
    table = Table(title="posttrain run", title_justify="left", expand=False)
    for column in ("resource", "phase", "time", "metrics", "checks"):
        table.add_column(column, overflow="fold")
    for section in sections:
        style = {"Succeeded": "green", "Failed": "red"}.get(section.phase, "yellow")
        checks = "\n".join(c.text() for c in section.checks)
        table.add_row(
            section.label,
            f"[{style}]{section.phase}[/{style}]",
            _duration(section.seconds),
            headline(section),
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
        table.add_column(column, no_wrap=True)
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# Drawing ---------------------------------------------------------------------------------------------


def draw(chart: Chart, path: Path) -> bool:
    """Draw a chart to a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    if isinstance(chart, BarChart):
        groups = list(chart.series)
        width = 0.8 / max(len(groups), 1)
        for index, group in enumerate(groups):
            xs = [i + (index - (len(groups) - 1) / 2) * width for i in range(len(chart.categories))]
            values = chart.series[group]
            errors = chart.errors.get(group)
            yerr = None
            if errors:
                yerr = [
                    [max(v - low, 0.0) for v, (low, _) in zip(values, errors, strict=True)],
                    [max(high - v, 0.0) for v, (_, high) in zip(values, errors, strict=True)],
                ]
            axes.bar(xs, values, width=width, label=group, yerr=yerr, capsize=3 if yerr else 0)
        axes.set_xticks(
            range(len(chart.categories)), chart.categories, rotation=20 if len(chart.categories) > 5 else 0
        )
        if len(groups) > 1:
            axes.legend()
    else:
        for name, points in chart.series.items():
            axes.plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o" if len(points) < 30 else None,
                markersize=3,
                label=name,
            )
        axes.set_xlabel(chart.xlabel)
        axes.legend()
    axes.set_ylabel(chart.ylabel)
    axes.set_title(chart.title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


# HTML ------------------------------------------------------------------------------------------------

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
            f"<td class='{esc(section.phase)}'>{esc(section.phase)}</td><td>{_duration(section.seconds)}</td>"
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
                        [[k, _number(v)] for k, v in sorted(section.metrics.items())],
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
        for number, chart in enumerate(section.charts):
            name = f"{section.kind.lower()}-{section.name}-{number}.png"
            if draw(chart, plots / name):
                images.setdefault(index, []).append(f"plots/{name}")
    page = folder / "report.html"
    folder.mkdir(parents=True, exist_ok=True)
    page.write_text(render_html(sections, images, f"posttrain run report — {state.root}"))
    return page
