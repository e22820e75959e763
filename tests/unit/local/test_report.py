"""The run report: extraction from statuses and artifacts, checks, HTML with plots, terminal tables."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.metrics import Reward, Train
from posttrain.api.resources import KINDS
from posttrain.api.status import Status
from posttrain.api.workload import TENSORBOARD_FOLDER
from posttrain.local.report import (
    EXTRACTORS,
    BarChart,
    Check,
    Section,
    collect,
    direction,
    ends,
    headline,
    measured_pairs,
    status_table,
    summary_table,
    total_variation,
    training_curves,
    win_rates,
    write_report,
)
from posttrain.local.state import ResourceRecord, StateDir


def battle(x: str, y: str, winner: str | None, kept: bool = True) -> dict[str, Any]:
    return {"participants": [x, y], "resolution": {"winner": winner, "kept": kept}}


def succeeded(
    state: StateDir, kind: str, name: str, plural: str, outputs: dict[str, str], metrics: dict[str, float]
) -> Path:
    """A Succeeded record whose outputs live in its run folder; returns the folder."""
    run = f"run-{name}"
    folder = state.artifacts / plural / run
    folder.mkdir(parents=True, exist_ok=True)
    status = {
        "phase": "Succeeded",
        "runId": run,
        "attempt": 1,
        "startTime": "2025-01-01T00:00:00Z",
        "completionTime": "2025-01-01T00:01:05Z",
        "outputs": {k: {"uri": f"file://{folder}/{v}", "rows": 3} for k, v in outputs.items()},
        "metrics": metrics,
    }
    state.save_record(ResourceRecord(kind, name, 1, "d", status))
    return folder


def test_win_rates_count_ties_as_half_and_skip_dropped_battles() -> None:
    rates = win_rates(
        [
            battle("student", "teacher", "teacher"),
            battle("student", "teacher", "tie"),
            battle("student", "teacher", "student"),
            battle("student", "teacher", "student", kept=False),
            battle("student", "teacher", None),
        ]
    )
    assert rates[("student", "teacher")] == (3, 1, 1, 1, 0.5)
    assert rates[("teacher", "student")] == (3, 1, 1, 1, 0.5)


def test_total_variation_and_curve_ends() -> None:
    assert total_variation({"a": 50, "b": 50}, {"a": 0.5, "b": 0.5}) == 0.0
    assert total_variation({"a": 100}, {"b": 1.0}) == 1.0
    assert ends([(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]) == (4.0, 1.0)
    assert ends([(1, 1.0)]) is None
    assert Check("loss", 2.0, 1.0, "down").ok and not Check("reward", 2.0, 1.0, "up").ok


def test_align_section_has_elo_and_win_rates(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = succeeded(
        state,
        "AlignRound",
        "align",
        "alignrounds",
        {"elo": "elo.json", "battles": "battles.jsonl"},
        {"studentWinRate": 0.25},
    )
    elo = {
        "reference": "teacher",
        "referenceElo": 1100.0,
        "ratings": [
            {
                "name": "teacher",
                "rating": 1100.0,
                "ciLow": 1050.0,
                "ciHigh": 1150.0,
                "battles": 4,
                "wins": 3,
                "losses": 1,
                "ties": 0,
            },
            {
                "name": "student",
                "rating": 950.5,
                "median": 948.0,
                "ciLow": 900.0,
                "ciHigh": 1000.0,
                "battles": 4,
                "wins": 1,
                "losses": 3,
                "ties": 0,
            },
        ],
    }
    (folder / "elo.json").write_text(json.dumps(elo))
    (folder / "battles.jsonl").write_text(
        "\n".join(
            json.dumps(battle("student", "teacher", w)) for w in ["teacher", "teacher", "student", "teacher"]
        )
    )

    [section] = collect(state)

    assert section.seconds == 65.0
    titles = [chart.title for chart in section.charts]
    assert titles == [
        "arena Elo (Bradley–Terry, 95% bootstrap interval)",
        "student: win rate per opponent (ties count half)",
    ]
    elo_table, battle_table = section.tables
    # The bootstrap median is the reported rating; a document without one shows the single fit.
    assert elo_table.rows[1][:3] == ["student", "948", "900 – 1000"]
    assert elo_table.rows[0][:2] == ["teacher", "1100"]
    assert battle_table.rows[0] == ["student", "teacher", "4", "1", "0", "3", "0.25"]


def trainer_log(folder: Path, rows: list[dict[str, float]], step: int | None = None) -> None:
    """Write the log history as the trainer leaves it: in the Trainer state of a checkpoint."""
    checkpoint = folder / "checkpoints" / f"checkpoint-{step or len(rows)}"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"log_history": rows}))


def test_training_curves_from_the_trainer_state_of_the_newest_checkpoint(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = tmp_path / "run"
    (folder / "model").mkdir(parents=True)
    trainer_log(folder, [{"step": s, "loss": 5.0 - s, "epoch": 0.1} for s in range(1, 5)], step=10)
    rows = [
        {"step": 1, "loss": 2.0, "rewards/margins": 0.1},
        {"step": 2, "loss": 1.5, "rewards/margins": 0.4},
    ]
    trainer_log(folder, rows, step=9)

    assert training_curves(folder, Status(), state) == {
        "loss": [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)]
    }
    trainer_log(folder, rows, step=11)
    assert training_curves(folder, Status(), state) == {
        "loss": [(1.0, 2.0), (2.0, 1.5)],
        "rewards/margins": [(1.0, 0.1), (2.0, 0.4)],
    }


def event_log(folder: Path, scalars: dict[str, list[tuple[int, float]]]) -> None:
    """Write TensorBoard event files as the learning workloads do, in `<output>/tensorboard/`."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder / TENSORBOARD_FOLDER))
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary))
    writer.close()


def test_training_curves_from_the_tensorboard_event_files_first(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = tmp_path / "run"
    trainer_log(folder, [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}])
    event_log(
        folder,
        {
            "train/loss": [(2, 1.5), (1, 2.0), (3, 1.0)],
            "train/learning_rate": [(1, 0.1)],
            "train/rewards/margins": [(1, 0.1), (3, 0.4)],
            "heldout/eval.loss": [(0, 3.0), (3, 2.0)],
        },
    )

    assert training_curves(folder, Status(), state) == {
        "loss": [(1.0, 2.0), (2.0, 1.5), (3.0, 1.0)],
        "rewards/margins": [(1.0, pytest.approx(0.1)), (3.0, pytest.approx(0.4))],
    }


def test_train_section_checks_that_the_loss_went_down(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = succeeded(state, "TrainStage", "sft", "trainstages", {"model": "model"}, {"loss": 1.0})
    trainer_log(folder, [{"step": s, "loss": 4.0 / s} for s in range(1, 9)])

    [section] = collect(state)

    assert [c.metric for c in section.checks] == ["training loss"]
    assert section.checks[0].ok and section.checks[0].before == 3.0
    assert section.charts[0].title == "loss"


def test_data_section_compares_the_mix_with_the_targets(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    metrics = {"rows.out": 4, "target.category.math": 0.5, "target.category.coding": 0.5}
    folder = succeeded(state, "DataSlice", "data", "dataslices", {"report": "report"}, metrics)
    (folder / "report").mkdir()
    for name, counts in (("before", {"math": 9, "coding": 1}), ("after", {"math": 2, "coding": 2})):
        document = {
            "rows": 10,
            "attributes": {"category": {"counts": counts, "shares": {}}, "turns": {"counts": {"1": 4}}},
        }
        (folder / "report" / f"{name}.json").write_text(json.dumps(document))

    [section] = collect(state)

    [check] = section.checks
    assert check.metric == "category: distance to target" and check.ok
    assert round(check.before, 2) == 0.4 and check.after == 0.0
    category, turns = section.charts
    assert isinstance(category, BarChart) and isinstance(turns, BarChart)
    assert category.categories == ["coding", "math"] and set(category.series) == {"before", "after", "target"}
    assert turns.series == {"before": [1.0], "after": [1.0]}


def test_data_targets_fall_back_to_the_spec(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = succeeded(state, "DataSlice", "data", "dataslices", {"dataset": "dataset.jsonl"}, {})
    (folder / "report").mkdir()
    for name, counts in (("before", {"math": 9, "coding": 1}), ("after", {"math": 3, "coding": 1})):
        (folder / "report" / f"{name}.json").write_text(
            json.dumps({"attributes": {"category": {"counts": counts}}})
        )
    workload = state.workload_dir("DataSlice", "data", "run-data", 1)
    workload.path.mkdir(parents=True)
    spec = {
        "data": {"sampling": {"targets": [{"attribute": "category", "weights": {"math": 3, "coding": 1}}]}}
    }
    workload.config.write_text(json.dumps({"spec": spec}))

    [section] = collect(state)

    [check] = section.checks
    assert check.ok and check.after == 0.0


def test_the_report_page_has_every_resource_and_its_plots(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    folder = succeeded(state, "TrainStage", "sft", "trainstages", {"model": "model"}, {"loss": 1.0})
    trainer_log(folder, [{"step": s, "loss": 4.0 / s} for s in range(1, 9)])
    failed = {
        "phase": "Failed",
        "runId": "r",
        "lastFailure": {"reason": "Error", "exitCode": 1, "message": "boom"},
    }
    state.save_record(ResourceRecord("TrainStage", "dpo", 1, "d", failed))

    page = write_report(state)

    text = page.read_text()
    assert "TrainStage/sft" in text and "TrainStage/dpo" in text
    assert "last failure: Error: boom" in text
    assert "✓ training loss: 3 → 0.5357 (should fall)" in text
    assert (page.parent / "plots" / "trainstage-sft-0.png").read_bytes()[:4] == b"\x89PNG"


def test_terminal_tables(tmp_path: Path) -> None:
    from rich.console import Console

    state = StateDir(tmp_path)
    succeeded(
        state,
        "DataSlice",
        "data",
        "dataslices",
        {"dataset": "dataset.jsonl"},
        {"rows.in": 30, "rows.out": 24, "other": 2},
    )
    screen = io.StringIO()
    console = Console(file=screen, width=200)
    console.print(summary_table(state))
    console.print(status_table(state))
    text = screen.getvalue()
    assert "rows.in=30  rows.out=24  other=2" in text
    assert text.count("DataSlice/data") == 2 and "Succeeded" in text


def test_the_status_table_shows_whole_phases_in_an_80_column_terminal(tmp_path: Path) -> None:
    from rich.console import Console

    state = StateDir(tmp_path)
    status = {
        "phase": "Succeeded",
        "runId": "0123456789abcdef",
        "attempt": 1,
        "progress": {"done": 48, "total": 48, "unit": "instructions", "summary": "48/48 instructions"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "succeeded",
                "lastTransitionTime": "2025-01-01T00:01:05Z",
            }
        ],
    }
    state.save_record(ResourceRecord("AlignRound", "arena-final-round", 1, "d", status))
    console = Console(file=io.StringIO(), width=80)
    console.print(status_table(state))
    assert "Succeeded" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_workloads_own_before_and_after_measurements_are_checks() -> None:
    checks = measured_pairs(
        {
            Reward.ACCURACY_START: 0.2,
            Reward.ACCURACY: 0.9,
            "reward.mean.start": 0.5,
            "reward.mean.end": 0.4,
            "loss": 1.0,
        }
    )
    assert [(c.metric, c.before, c.after, c.better, c.ok) for c in checks] == [
        ("eval.accuracy", 0.2, 0.9, "up", True),
        ("reward.mean", 0.5, 0.4, "up", False),
    ]
    assert (
        direction("eval.loss") == "down"
        and direction("kl") == "down"
        and direction("eval.exactMatch") == "up"
    )


def test_rl_has_no_loss_check_and_dpo_checks_its_implicit_reward_margin(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    for name, method, metrics in (
        ("rleif", "rleif", {"reward.mean.start": 0.3, "reward.mean.end": 0.5}),
        ("dpo", "dpo", {str(Train.REWARD_MARGIN): 0.7}),
    ):
        folder = succeeded(state, "TrainStage", name, "trainstages", {"model": "model"}, metrics)
        trainer_log(folder, [{"step": s, "loss": float(s)} for s in range(1, 5)])
        workload = state.workload_dir("TrainStage", name, f"run-{name}", 1)
        workload.path.mkdir(parents=True)
        workload.config.write_text(json.dumps({"spec": {"method": method}}))

    checks = {s.name: [(c.metric, c.ok) for c in s.checks] for s in collect(state)}

    assert checks["rleif"] == [("reward.mean", True)]
    assert checks["dpo"] == [("training loss", False), ("held-out implicit reward margin", True)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_headline_shows_the_kinds_headline_metrics_from_the_catalogue(kind: str) -> None:
    info = KINDS[kind]
    assert info.headlines and set(info.headlines) <= set(info.metrics)
    written = {m.of(*("x" for _ in m.placeholders)): float(n) for n, m in enumerate(info.metrics)}
    section = Section(kind=kind, name="r", phase="Succeeded", metrics=written)

    shown = [pair.split("=")[0] for pair in headline(section, limit=len(info.headlines)).split("  ")]

    assert shown == list(info.headlines)


def test_every_kind_has_one_extractor_found_by_name() -> None:
    assert set(EXTRACTORS) == set(KINDS)
