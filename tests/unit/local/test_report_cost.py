"""The report's cost of each stage: tokens, time and GPU-hours per accepted sample and per Elo point."""

from __future__ import annotations

import json
from pathlib import Path

from posttrain.local.report import Section, collect
from posttrain.local.report.cost import add_costs
from posttrain.local.state import ResourceRecord, StateDir


def section(
    kind: str, name: str, seconds: float, elo: tuple[str, float] | None = None, /, **metrics: float
) -> Section:
    return Section(kind, name, "Succeeded", seconds=seconds, metrics=dict(metrics), elo=elo)


def cost_rows(found: Section) -> dict[str, str]:
    (table,) = [t for t in found.tables if t.title == "cost"]
    return dict((row[0], row[1]) for row in table.rows)


def test_cost_per_accepted_sample_counts_only_what_a_model_answered_in_this_run() -> None:
    evol = section(
        "EvolJob",
        "evol",
        40.0,
        **{
            "kept": 20.0,
            "tokens.prompt.teacher": 3000.0,
            "tokens.completion.teacher": 1000.0,
            "tokens.prompt.judge": 1000.0,
            "requests.sent": 50.0,
            "cache.hits": 150.0,
            "usage.gpuHours": 0.5,
        },
    )
    add_costs([evol])
    rows = cost_rows(evol)
    assert rows["tokens paid for"] == "5000" and rows["requests sent"] == "50"
    assert rows["replies replayed from the model-call cache"] == "150"
    assert rows["accepted samples"] == "20" and rows["tokens per accepted sample"] == "250"
    assert rows["seconds per accepted sample"] == "2" and rows["GPU-hours"] == "0.5"
    assert evol.cost == {"tokens/sample": 250.0}


def test_cost_per_elo_point_is_what_was_spent_since_the_last_round_over_the_elo_gained() -> None:
    first = section(
        "AlignRound", "round-1", 10.0, ("teacher", 1000.0), **{"tokens.prompt.judge": 500.0, "rows.sft": 5.0}
    )
    training = section("TrainStage", "sft", 90.0, loss=0.5)
    evol = section("EvolJob", "evol-2", 20.0, **{"tokens.completion.teacher": 1500.0, "kept": 3.0})
    second = section(
        "AlignRound", "round-2", 30.0, ("teacher", 1050.0), **{"tokens.prompt.judge": 1000.0, "rows.sft": 4.0}
    )
    other_reference = section("AlignRound", "other", 5.0, ("judge-b", 900.0))
    add_costs([first, training, evol, second, other_reference])
    assert "tokens/Elo" not in first.cost  # nothing to compare with yet
    rows = cost_rows(second)
    assert rows["Elo gained since the last round (reference teacher)"] == "50"
    # The evol stage, the training and the round itself: 2500 tokens and 140 s over 50 points.
    assert rows["tokens per Elo point"] == "50" and rows["seconds per Elo point"] == "2.8"
    assert second.cost["tokens/Elo"] == 50.0
    assert not [t for t in training.tables if t.title == "cost"]  # a stage that paid nothing has no table
    assert "tokens/Elo" not in other_reference.cost  # another reference: not comparable


def test_a_run_stopped_at_its_budget_says_so_in_the_report(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    message = "attempt 1 stopped at the budget (tokens of teacher: 1040 of 1000); outputs are partial"
    status = {
        "phase": "Succeeded",
        "runId": "r",
        "attempt": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "BudgetExhausted",
                "message": message,
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "metrics": {"kept": 2.0, "tokens.prompt.teacher": 1040.0, "budget.exhausted": 1.0},
    }
    state.save_record(ResourceRecord("EvolJob", "evol", 1, "d", status))
    [found] = collect(state)
    assert found.notes == [f"stopped at its budget: {message}"]
    assert cost_rows(found)["tokens per accepted sample"] == "520"


def test_an_align_round_reports_the_students_elo_against_its_reference(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    for index, elo in ((1, 1000.0), (2, 1040.0)):
        name, run = f"round-{index}", f"run-{index}"
        folder = state.artifacts / "alignrounds" / run
        folder.mkdir(parents=True)
        ratings = [{"name": "teacher", "rating": 1100.0}, {"name": "pupil", "rating": elo, "median": elo}]
        (folder / "elo.json").write_text(
            json.dumps({"reference": "teacher", "referenceElo": 1100.0, "ratings": ratings})
        )
        status = {
            "phase": "Succeeded",
            "runId": run,
            "attempt": 1,
            "outputs": {"elo": {"uri": f"file://{folder}/elo.json", "rows": 2}},
            "metrics": {"elo.pupil": elo, "tokens.prompt.judge": 400.0, "rows.preferences": 8.0},
        }
        state.save_record(ResourceRecord("AlignRound", name, 1, "d", status))
        workload = state.workload_dir("AlignRound", name, run, 1)
        workload.path.mkdir(parents=True)
        workload.config.write_text(json.dumps({"spec": {"student": {"name": "pupil"}}}))
    first, second = collect(state)
    assert first.elo == ("teacher", 1000.0) and second.elo == ("teacher", 1040.0)
    assert second.cost["tokens/Elo"] == 400.0 / 40.0
