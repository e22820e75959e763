"""The config document a workload pod (or local process) reads: `posttrain-trainer W --config FILE`.

It is the resource's spec with every reference resolved to a URI, plus where to write and how to
reach the teachers. The trainer validates it with these same models, so the operator and the trainer
can never disagree about a setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from posttrain.api.base import ApiModel
from posttrain.api.resources import KINDS, Workload

TENSORBOARD_FOLDER = "tensorboard"
"""Folder of the TensorBoard event files a learning workload writes inside its output folder."""
TRAINING_TAG = "train"
"""Tag prefix of the Trainer's own logs (loss, rewards, KL per step) in the event files."""
HELD_OUT_TAG = "heldout"
"""Tag prefix of the held-out measurements (before and after training) in the event files."""


class Endpoint(ApiModel):
    """How the workload reaches a participant (a served model or an external endpoint)."""

    base_url: str
    """OpenAI-compatible base URL, ending in `/v1`."""
    model: str
    """Model name to send."""
    api_key_env: str | None = None
    """Environment variable holding the API key (set from a secretKeyRef), if any."""
    identity: str | None = None
    """What the model-call cache knows the model by: `weights:<digest or URI>` for a served model,
    `endpoint:<model>` for an external one; `model` when unset."""


class ModelCacheConfig(ApiModel):
    """Where the workload keeps and finds replies of model calls (`client.CallCache`)."""

    uri: str
    """Prefix in the artifact store shared by every resource of the namespace, and by the local runner
    and the cluster when both point at the same store."""
    max_bytes: int | None = None
    """Size limit; the least recently used entries are evicted at the end of a run beyond it."""


class WorkloadConfig(ApiModel):
    """What one workload run does."""

    workload: Workload
    """`data`, `evol`, `align`, `reward` or `train`."""
    kind: str
    """Kind of the resource."""
    name: str
    """Name of the resource."""
    namespace: str = "default"
    """Namespace of the resource."""
    run_id: str
    """Content hash of (spec, input digests)."""
    output_uri: str
    """Folder to write every output, `result.json` and `progress.json` to."""
    spec: dict[str, Any]
    """The resource's spec with every `from` reference replaced by the resolved `uri`."""
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    """Participant name -> endpoint."""
    model_cache: ModelCacheConfig | None = None
    """The model-call cache; none: every call goes to the model (only the run's journal replays)."""
    started_at: str | None = None
    """Start of the run (RFC 3339), for the wall-time and GPU-hour budgets over every attempt."""
    gpus: int = 0
    """GPUs the run holds: its pods' and its served participants' (for the GPU-hour budget)."""

    def typed_spec(self) -> Any:
        """The spec validated with its kind's model."""
        return KINDS[self.kind].spec_model.model_validate(self.spec)


class ResultOutput(ApiModel):
    """One output in a result document."""

    uri: str
    rows: int | None = None
    digest: str | None = None
    format: str | None = None


class Result(ApiModel):
    """The result document a workload writes to `result.json` and its termination message."""

    outputs: dict[str, ResultOutput] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    budget_exhausted: str | None = None
    """Set when the workload stopped at `spec.budget`: which limit, e.g. `tokens of teacher: 1040 of
    1000`. The outputs are the partial ones made until then; the resource succeeds with reason
    `BudgetExhausted`."""


BUDGET_EXHAUSTED_REASON = "BudgetExhausted"
"""Reason of the Ready and Progressing conditions of a run that stopped at its budget."""


INVALID_INPUT_EXIT_CODE = 65
"""Exit code of a workload whose input data or config is unusable (sysexits' EX_DATAERR): a
permanent failure, never retried."""
INVALID_INPUT_REASON = "InvalidInput"
"""Failure reason (termination document, `status.lastFailure`, the Ready condition) of such a failure."""


class FailureDocument(ApiModel):
    """The termination message of a workload that failed: why, in one line."""

    error: str
    """`<exception type>: <message>` (for invalid input, the message alone: the file, the line or row,
    and what was expected), at most 3000 characters."""
    reason: str | None = None
    """`InvalidInput` when running again cannot help; absent for crashes (retried)."""


class ResultTooLarge(ApiModel):
    """The termination message when the result document does not fit in it (4 KiB).

    The operator then reads `result.json` from the output folder.
    """

    result_too_large: bool = True


class ProgressDocument(ApiModel):
    """What a workload writes to `progress.json` while it runs."""

    done: int = 0
    total: int = 0
    unit: str = "items"
    message: str = ""
    updated_at: float = 0.0
    """Unix time of the update."""
