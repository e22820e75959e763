"""The documents a workload leaves for the operator, written only through the api's models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from posttrain.api.metrics import Evol
from posttrain.api.workload import FailureDocument, ProgressDocument, Result, ResultTooLarge
from posttrain_trainer.common.report import (
    TERMINATION_LIMIT,
    TERMINATION_LOG_ENV,
    Reporter,
    write_failure,
)
from posttrain_trainer.common.storage import Workspace


def test_progress_result_and_termination_message_read_back_as_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    workspace = Workspace("file://" + str(tmp_path / "out"))
    reporter = Reporter(workspace)

    reporter.progress(3, 10, "rows", "reading", force=True)
    result = reporter.finish({}, {"rows.in": 10})

    progress = ProgressDocument.model_validate_json(workspace.path("progress.json").read_text())
    assert (progress.done, progress.total, progress.unit) == (3, 10, "rows")
    assert Result.model_validate_json(workspace.path("result.json").read_text()) == result
    assert Result.model_validate_json(log.read_text()) == result

    reporter.finish({}, {f"elo.participant-{n}": float(n) for n in range(TERMINATION_LIMIT // 10)})
    assert ResultTooLarge.model_validate_json(log.read_text()).result_too_large
    assert json.loads(log.read_text()) == {"resultTooLarge": True}

    write_failure(ValueError("no rows left"))
    assert FailureDocument.model_validate_json(log.read_text()).error == "ValueError: no rows left"


def test_a_metric_outside_the_workloads_catalogue_is_refused(tmp_path: Path) -> None:
    reporter = Reporter(Workspace("file://" + str(tmp_path)), catalogue=Evol.ALL)
    with pytest.raises(ValueError, match="rowsRejected"):
        reporter.finish({}, {"kept": 1.0, "eliminated.refusal": 2.0, "rowsRejected": 1.0})
    assert reporter.finish({}, {"kept": 1.0, "eliminated.refusal": 2.0}).metrics["kept"] == 1.0
