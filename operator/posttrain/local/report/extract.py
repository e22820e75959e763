"""Extraction: what each kind's workload left -> a `Section` of tables, charts and checks.

Reads the status, documents and logs. Pure reading, tested without matplotlib.

Each kind has one extractor, found by name in `EXTRACTORS` (a kind without one gets only its status):
- DataSlice: the distribution of each analysed attribute before and after weighted sampling, next
  to the target weights; check: sampling brings the mix closer to the targets (total variation).
- EvolJob: evolution yield per operation (kept and eliminated) and eliminations per rule; check: the
  evolved instructions are longer / harder than their seeds (Evol-Instruct's premise).
- AlignRound: the student's win rate against each opponent and the arena's Bradley–Terry Elo with
  bootstrap intervals (Arena Learning); check, across rounds on the same reference: the student's Elo
  rises from one round to the next (`rounds`).
- TrainStage, RewardModel: losses, rewards and accuracies over the training steps, from the
  TensorBoard event files the workload writes (else the Trainer state in its newest checkpoint);
  checks: the loss goes down, the workload's own before/after measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from posttrain.api.metrics import Align, Data, Evol, Train
from posttrain.api.resources import KINDS
from posttrain.api.status import Status
from posttrain.api.uri import FILE, ArtifactUri, local_path
from posttrain.api.workload import BUDGET_EXHAUSTED_REASON, TENSORBOARD_FOLDER, TRAINING_TAG
from posttrain.local.report.cost import add_costs
from posttrain.local.report.model import BarChart, Check, LineChart, Section, TableData, ends, mean, number
from posttrain.local.report.rounds import elo_across_rounds
from posttrain.local.state import ResourceRecord, StateDir, read_json, read_jsonl
from posttrain.support import times


@dataclass(frozen=True)
class Run:
    """What an extractor reads about one resource's current (succeeded) run."""

    status: Status
    folder: Path | None
    """The run's content-addressed output folder, when it is on this machine."""
    state: StateDir
    spec: dict[str, Any]
    """The spec the run used (from its workload config)."""


Extractor = Callable[[Section, Run], None]
"""Adds a kind's tables, charts and checks to its section."""


ROW_LIMIT = 100_000
"""At most this many rows of an artifact are read for the report."""


def _local(uri: str | None, state: StateDir) -> Path | None:
    return local_path(uri, state.pvc_root) if uri else None


def _document(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        path = found[0] if found else path
    document = read_json(path)
    return document if isinstance(document, dict) else None


def total_variation(shares: dict[str, float], targets: dict[str, float]) -> float:
    """Half the L1 distance between two distributions (both normalised here)."""
    a_total = sum(shares.values()) or 1.0
    b_total = sum(targets.values()) or 1.0
    keys = set(shares) | set(targets)
    return 0.5 * sum(abs(shares.get(k, 0.0) / a_total - targets.get(k, 0.0) / b_total) for k in keys)


def data_slice(section: Section, run: Run) -> None:
    """DataSlice: attribute distributions before and after sampling, against the targets."""
    status = run.status
    analysis = _find_analysis(run.folder, status)
    if analysis is None:
        section.notes.append("no analysis document found in the output folder")
        return
    before, after = analysis
    targets = _targets(status, run.spec)
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
    """(before, after): attribute -> value -> count, from the DataSlice's `report` output.

    The output holds `before.json` and `after.json`: `{"attributes": {name: {"counts": {value: n}}}}`.
    """
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
    """Attribute -> value -> count of one distribution document."""
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
    """Attribute -> value -> target weight: the workload's `target.A.V` metrics, else the spec."""
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


def evol_job(section: Section, run: Run) -> None:
    """EvolJob: yield per operation (from the `evolved` attempts) and eliminations per rule."""
    status, state = run.status, run.state
    metrics = status.metrics
    attempts = (
        read_jsonl(_local(status.outputs["evolved"].uri, state), ROW_LIMIT)
        if "evolved" in status.outputs
        else []
    )
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
                        *(number(by_operation[n].get(v, 0.0)) for v in verdicts),
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
            Check("words: parent → kept evolution", mean(parent_words), mean(kept_words), "up")
        )


def _yield(counts: dict[str, float]) -> float:
    judged = counts.get("kept", 0.0) + counts.get("eliminated", 0.0)
    return counts.get("kept", 0.0) / judged if judged else 0.0


def align_round(section: Section, run: Run) -> None:
    """AlignRound: the student's win rate per opponent (battle log) and the arena Elo."""
    status, state = run.status, run.state
    elo = _document(_local(status.outputs["elo"].uri, state)) if "elo" in status.outputs else None
    if elo and isinstance(elo.get("ratings"), list):
        ratings = [r for r in elo["ratings"] if isinstance(r, dict)]
        names = [str(r["name"]) for r in ratings]
        # The bootstrap median is the reported rating (the round's `elo.<participant>` metric); older
        # documents have only the single fit.
        values = [float(r["median"] if "median" in r else r["rating"]) for r in ratings]
        errors = [
            (float(r.get("ciLow", v)), float(r.get("ciHigh", v)))
            for r, v in zip(ratings, values, strict=True)
        ]
        student = (run.spec.get("student") or {}).get("name")
        if student and Align.ELO.of(student) in status.metrics:
            section.elo = (str(elo.get("reference")), status.metrics[Align.ELO.of(student)])
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
                f"arena Elo (reference {elo.get('reference')} = {number(float(elo.get('referenceElo', 0)))})",
                [
                    "participant",
                    "Elo (bootstrap median)",
                    "95% interval",
                    "battles",
                    "wins",
                    "losses",
                    "ties",
                ],
                [
                    [
                        str(r["name"]),
                        number(float(r["median"] if "median" in r else r["rating"])),
                        f"{number(float(r.get('ciLow', 0)))} – {number(float(r.get('ciHigh', 0)))}",
                        number(float(r.get("battles", 0))),
                        number(float(r.get("wins", 0))),
                        number(float(r.get("losses", 0))),
                        number(float(r.get("ties", 0))),
                    ]
                    for r in ratings
                ],
            )
        )
    battles = (
        read_jsonl(_local(status.outputs["battles"].uri, state), ROW_LIMIT)
        if "battles" in status.outputs
        else []
    )
    rates = win_rates(battles)
    if rates:
        pairs = sorted(rates)
        section.tables.append(
            TableData(
                "battles (position-swapped, resolved)",
                ["participant", "opponent", "battles", "wins", "ties", "losses", "win rate"],
                [
                    [a, b, *(number(v) for v in rates[(a, b)][:4]), f"{rates[(a, b)][4]:.2f}"]
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
"""The Hugging Face Trainer's state in every checkpoint (`<output>/checkpoints/checkpoint-N/`), with
the logged loss, reward and accuracy per step: the training log when there are no event files."""


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
    """Metric -> [(step, value)] of the Trainer's logs.

    Read from the TensorBoard event files in the output folder (`tensorboard/`, tags under `train/`), else
    from the log history of the newest checkpoint.
    """
    if folder is None or not folder.exists():
        return {}
    return _event_curves(folder / TENSORBOARD_FOLDER) or _checkpoint_curves(folder)


def _curve(key: str, value: object) -> bool:
    """Whether a logged value is worth a curve (not bookkeeping: step, epoch, rates, timings)."""
    if key in ("step", "global_step", "epoch", "learning_rate", "grad_norm") or isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) and not key.endswith(("runtime", "per_second", "_flos", "samples"))


def _event_curves(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """The `train/` scalars of the TensorBoard event files below `folder`, prefix removed."""
    files = sorted(folder.rglob("events.out.tfevents.*")) if folder.is_dir() else []
    if not files:
        return {}
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    prefix = TRAINING_TAG + "/"
    curves: dict[str, list[tuple[float, float]]] = {}
    for file in files:
        for event in EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                key = value.tag.removeprefix(prefix)
                if value.tag.startswith(prefix) and value.HasField("tensor"):
                    number = float(tensor_util.make_ndarray(value.tensor))
                    if _curve(key, number):
                        curves.setdefault(key, []).append((float(event.step), number))
    return {key: sorted(points) for key, points in curves.items()}


def _checkpoint_curves(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """The log history in the Trainer state of the newest checkpoint below `folder`."""
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
            if _curve(key, value):
                curves.setdefault(key, []).append((float(step), float(value)))
    return curves


def _checkpoint_step(folder: Path) -> int:
    """N of a `checkpoint-N` folder (-1 for any other folder)."""
    _, _, number = folder.name.rpartition("-")
    return int(number) if number.isdigit() else -1


def _training(section: Section, run: Run, method: str | None) -> None:
    """TrainStage / RewardModel: loss, reward and accuracy curves, and whether they moved.

    The checks: the workload's own before/after measurements (held-out accuracy, mean reward), and
    for supervised and preference training (not RL) the training loss from the first to the last
    quarter of the steps.
    """
    status = run.status
    curves = training_curves(run.folder, status, run.state)
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


def train_stage(section: Section, run: Run) -> None:
    """TrainStage: the training curves and checks of its method (sft, dpo, rleif)."""
    method = run.spec.get("method")
    _training(section, run, str(method) if method else None)


def reward_model(section: Section, run: Run) -> None:
    """RewardModel: the training curves and checks of its type (irm, prm)."""
    kind = run.spec.get("type")
    _training(section, run, str(kind) if kind else None)


EXTRACTORS: dict[str, Extractor] = {
    "DataSlice": data_slice,
    "EvolJob": evol_job,
    "AlignRound": align_round,
    "TrainStage": train_stage,
    "RewardModel": reward_model,
}
"""Kind -> its extractor."""


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
    plural = KINDS[record.kind].plural if record.kind in KINDS else record.kind.lower()
    candidate = state.artifacts / plural / status.run_id
    return candidate if candidate.exists() else None


def collect(state: StateDir) -> list[Section]:
    """A section per resource of the run, with what each kind's workload left."""
    sections = []
    for record in state.records():
        status = record.typed_status() or Status()
        start, end = times.seconds(status.start_time), times.seconds(status.completion_time)
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
        extractor = EXTRACTORS.get(record.kind)
        if status.phase == "Succeeded" and extractor is not None:
            extractor(section, Run(status, output_folder(record, state), state, _spec_of(record, state)))
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        if ready is not None and ready.reason == BUDGET_EXHAUSTED_REASON:
            section.notes.append(f"stopped at its budget: {ready.message}")
        if status.phase != "Succeeded" and status.last_failure is not None:
            section.notes.append(
                f"last failure: {status.last_failure.reason}: {status.last_failure.message[:300]}"
            )
        sections.append(section)
    add_costs(sections)
    elo_across_rounds(sections)
    return sections


def workload_seconds(record: ResourceRecord, state: StateDir, run_id: str | None) -> float | None:
    """Seconds the workload processes of the run took, or None when none ran.

    Counts all attempts; not the time queued or waiting for servers.
    """
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
