"""Result and progress documents: how a workload tells the operator (or local runner) what happened.

`result.json` in the output folder, and the same document in the container's termination message when
it fits in 4 KiB (the operator reads that first). `progress.json` at most every few seconds.
Workload pods have no Kubernetes API access; these files are the whole protocol.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from posttrain.api.metrics import Metric, unknown
from posttrain.api.workload import FailureDocument, ProgressDocument, Result, ResultOutput, ResultTooLarge

from posttrain_trainer.common.storage import Workspace, digest_path

TERMINATION_LOG_ENV = "POSTTRAIN_TERMINATION_LOG"
TERMINATION_LIMIT = 4096


def output(
    workspace: Workspace, name: str, rows: int | None = None, format: str | None = None
) -> ResultOutput:
    """Describe an artifact written to `workspace.path(name)`, computing its digest."""
    return ResultOutput(
        uri=workspace.uri_of(name), rows=rows, digest=digest_path(workspace.path(name)), format=format
    )


class Reporter:
    """Writes progress.json (throttled) and, at the end, result.json and the termination message."""

    def __init__(
        self, workspace: Workspace, interval: float = 2.0, catalogue: Sequence[Metric] | None = None
    ) -> None:
        """Report into `workspace`.

        Args:
            workspace: the output folder.
            interval: least seconds between two progress writes.
            catalogue: the metrics the workload may report (`posttrain.api.metrics`); `finish` refuses
                any other name, so a misspelt metric fails the workload's tests instead of vanishing.
        """
        self.workspace = workspace
        self.interval = interval
        self.catalogue = catalogue
        self._last = 0.0

    def progress(
        self, done: int, total: int = 0, unit: str = "items", message: str = "", force: bool = False
    ) -> None:
        """Record progress; written at most every `interval` seconds unless forced."""
        now = time.time()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        doc = ProgressDocument(done=done, total=total, unit=unit, message=message[:1000], updated_at=now)
        _atomic_write(self.workspace.path("progress.json"), json.dumps(doc.wire()))

    def finish(
        self, outputs: dict[str, ResultOutput], metrics: dict[str, float], budget_exhausted: str | None = None
    ) -> Result:
        """Write the result document; the last thing a successful workload does.

        `budget_exhausted` names the limit of `spec.budget` the run stopped at (its outputs are partial).

        Raises:
            ValueError: a metric name is not in the workload's catalogue.
        """
        if self.catalogue is not None and (names := unknown(self.catalogue, metrics)):
            raise ValueError(f"metrics not in the catalogue (posttrain.api.metrics): {', '.join(names)}")
        result = Result(
            outputs=outputs,
            metrics={k: float(v) for k, v in metrics.items()},
            budget_exhausted=budget_exhausted,
        )
        text = json.dumps(result.wire(), sort_keys=True)
        _atomic_write(self.workspace.path("result.json"), text)
        self.workspace.publish()
        write_termination_message(text)
        return result


def write_failure(error: BaseException, reason: str | None = None) -> None:
    """Leave the reason of a failed workload in the termination message (`FailureDocument`).

    `reason` classifies it (`InvalidInput`: not retried).
    """
    document = FailureDocument(error=f"{type(error).__name__}: {error}"[:3000], reason=reason)
    write_termination_message(json.dumps(document.wire(), sort_keys=True))


def write_termination_message(text: str) -> None:
    """Write to the termination message file if there is one and the text fits."""
    target = Path(os.environ.get(TERMINATION_LOG_ENV, "/dev/termination-log"))
    if len(text.encode()) > TERMINATION_LIMIT:
        text = json.dumps(ResultTooLarge().wire())
    try:
        if target.parent.exists():
            target.write_text(text)
    except OSError:
        pass


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
