"""Shared types of the five kinds: references, participants, resources, scheduling, retries, storage."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from posttrain.api.base import ApiModel, Rule, exactly_one

KindName = Literal["DataSlice", "EvolJob", "AlignRound", "TrainStage", "RewardModel"]
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
FileFormat = Literal["auto", "jsonl", "json", "parquet", "arrow", "text"]


class FromRef(ApiModel):
    """An output of another posttrain resource in the same namespace."""

    kind: KindName
    """Kind of the referenced resource."""
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Name of the referenced resource."""
    output: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Which of its outputs (see its status.outputs); defaults to the kind's main output
    (`dataset` for DataSlice and EvolJob, `preferences` for AlignRound, `model` for TrainStage and
    RewardModel)."""


class DataRef(ApiModel):
    """A dataset: either a URI or the output of another resource (`from`).

    The URI is `file://`, `pvc://CLAIM/path` or `s3://bucket/path`. Exactly one of the two.
    """

    rules = (exactly_one("uri", "from"),)

    uri: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^(file|pvc|s3)://.+")
    """Location of the data: a file, a folder of files or shards, a folder written by
    `datasets.save_to_disk`, or a glob pattern (`s3://bucket/data/train-*.parquet`)."""
    from_: FromRef | None = Field(default=None, alias="from")
    """Output of another posttrain resource; the resource waits until that one has succeeded."""
    format: Literal["auto", "chat", "sharegpt", "alpaca", "openai", "preference", "ranking", "steps"] = "auto"
    """Row format: `chat` (posttrain's own), `sharegpt`, `alpaca`, `openai` (messages),
    `preference` (prompt/chosen/rejected), `ranking` (IRM), `steps` (PRM); `auto` detects it per row."""
    file_format: FileFormat = "auto"
    """File format: `jsonl` (one object per line), `json` (an array of objects), `parquet`, `arrow`
    (`save_to_disk`), `text` (one prompt per line); gzip or zstd compression is recognised in each.
    `auto` detects it per file from the extension and the first bytes."""


class ModelRef(ApiModel):
    """A model: a URI of a Hugging Face-format folder or another resource's output.

    The output is the `model` output of a TrainStage or RewardModel (`from`). Exactly one of the two.
    """

    rules = (exactly_one("uri", "from"),)

    uri: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^(file|pvc|s3)://.+")
    """Location of a model folder (config, weights, tokenizer)."""
    from_: FromRef | None = Field(default=None, alias="from")
    """The model produced by another resource."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace.

    Only the reference is stored; the value reaches the pod as an environment variable
    (`valueFrom.secretKeyRef`).
    """

    name: str = Field(min_length=1, max_length=253, pattern=DNS_NAME)
    """Name of the Secret."""
    key: str = Field(min_length=1, max_length=253)
    """Key within the Secret."""


class ServedModel(ApiModel):
    """A model that posttrain serves itself with vLLM's OpenAI-compatible server.

    A Deployment and a Service in a cluster; a local server in `posttrain run`.
    """

    model: ModelRef
    """The model to serve."""
    image: str | None = Field(default=None, max_length=512)
    """vLLM server image; defaults to the operator's configured vLLM image."""
    gpus: int = Field(default=1, ge=0, le=64)
    """GPUs per replica (tensor parallel size)."""
    replicas: int = Field(default=1, ge=1, le=64)
    """Number of server replicas behind the Service."""
    engine_args: list[str] = Field(default_factory=list, max_length=64)
    """Extra vLLM engine arguments, e.g. `--max-model-len=4096`."""
    cpu: str = Field(default="4", max_length=32)
    """CPU request of a replica."""
    memory: str = Field(default="32Gi", max_length=32)
    """Memory request of a replica."""


class ExternalEndpoint(ApiModel):
    """An OpenAI-compatible endpoint that runs elsewhere."""

    base_url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://.+")
    """Base URL including `/v1`."""
    model: str = Field(min_length=1, max_length=512)
    """Model name sent in requests."""
    api_key_secret_ref: SecretKeyRef | None = Field(default=None)
    """Secret key holding the API key; passed to the client pod as an environment variable."""


class Verifier(ApiModel):
    """A program that checks answers (a judge and step labeller) for data with checkable answers.

    It scores a right final answer 10 and a wrong one 1, and labels a step wrong when it states a false
    equation, a wrong final answer or a made-up number. A question it cannot check gets no verdict
    (the battle is left out, as for an unreadable one). It runs inside the workload.
    """

    type: Literal["arithmetic", "exactMatch"]
    """`arithmetic`: evaluates the sum, difference, product or quotient the question states and
    compares it with the answer's final number; `exactMatch`: compares the answer's final number (else
    its text) with the row's reference answer."""
    tolerance: float = Field(default=1e-6, ge=0.0, le=1.0)
    """Largest difference of two numbers that still counts as equal."""


class Sampling(ApiModel):
    """Sampling parameters for requests to a participant."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Sampling temperature; 0 for greedy."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling probability mass."""
    max_tokens: int = Field(default=1024, ge=1, le=131072)
    """Maximum tokens generated per request."""


class Participant(ApiModel):
    """A participant in evolution, co-teaching or judging: a served model, an external one, or a verifier.

    A verifier is a program that checks answers (an AlignRound's judges only).
    """

    rules = (exactly_one("served", "endpoint", "verifier"),)

    name: str = Field(min_length=1, max_length=40, pattern=DNS_NAME)
    """Short name used in lineage, battle logs and Elo tables; unique within the resource."""
    served: ServedModel | None = None
    """Serve this model with vLLM for the duration of the work."""
    endpoint: ExternalEndpoint | None = None
    """Use an existing OpenAI-compatible endpoint."""
    verifier: Verifier | None = None
    """A program that checks answers (AlignRound judges only)."""
    sampling: Sampling = Field(default_factory=Sampling)
    """Sampling parameters."""
    family: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Model family (`llama`, `qwen`, `gpt`, ...), for the judge self-preference measure of an
    AlignRound; defaults to the first word of the model's name (`Qwen2.5-7B-Instruct` -> `qwen`).
    Set it for a model served from another resource, whose folder name says nothing."""

    def model_family(self) -> str:
        """The model family: `family`, else the first word of the model's name (see `family`).

        A participant without a model (a program that checks answers) is a family of its own: its name.
        """
        if self.family is not None:
            return self.family
        if self.endpoint is not None:
            return model_family(self.endpoint.model)
        if self.served is None:
            return self.name
        model = self.served.model
        return model_family(model.uri or (model.from_.name if model.from_ is not None else self.name))


_FAMILY_PREFIXES = frozenset({"meta", "hf", "models", "model"})
"""First words of model names that name a publisher or a folder, not a family (`Meta-Llama-3`)."""


def model_family(name: str) -> str:
    """The family of a model name or URI: the first word of its last path part, lower-cased.

    `gpt-4o-mini` -> `gpt`, `meta-llama/Meta-Llama-3-8B` -> `llama`, `file://models/tiny-teacher` -> `tiny`.
    """
    last = name.rstrip("/").rsplit("/", 1)[-1].lower()
    words = re.findall(r"[a-z]+", last)
    while len(words) > 1 and words[0] in _FAMILY_PREFIXES:
        words = words[1:]
    return words[0] if words else last


class Toleration(ApiModel):
    """A Kubernetes toleration, passed to the workload's pods unchanged."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to tolerate; empty with `Exists` tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (default) or `Exists`."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value for `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all."""
    toleration_seconds: int | None = Field(default=None)
    """For `NoExecute`: how long the pod stays bound after the taint appears."""


class Resources(ApiModel):
    """Compute for the workload's pods."""

    cpu: str = Field(default="1", max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """CPU request and limit per pod."""
    memory: str = Field(default="4Gi", max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")
    """Memory request and limit per pod."""
    gpus: int = Field(default=0, ge=0, le=16)
    """GPUs per pod (per node for multi-node training)."""
    nodes: int = Field(default=1, ge=1, le=512)
    """Pods (nodes) of a training Job; more than one runs an Indexed Job with torchrun rendezvous."""
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253)
    """Extended resource name of the GPUs."""
    shared_memory: str | None = Field(default=None, max_length=32)
    """Size of an in-memory /dev/shm volume (NCCL and data loaders need more than the default)."""


class Scheduling(ApiModel):
    """Where the workload's pods may run; passed through to the pods unchanged."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels that must match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations of the pods."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass of the pods."""
    queue_name: str | None = Field(default=None, max_length=63)
    """Kueue LocalQueue; sets the `kueue.x-k8s.io/queue-name` label on Jobs (Kueue admits them)."""


class RetryPolicy(ApiModel):
    """How often a failed workload is started again before the resource is Failed."""

    limit: int = Field(default=2, ge=0, le=20)
    """Retries after the first attempt."""
    backoff_seconds: int = Field(default=30, ge=0, le=86400)
    """Delay before the first retry; doubled for every further retry."""
    max_backoff_seconds: int = Field(default=600, ge=0, le=86400)
    """Upper bound of the delay."""


class ArtifactStore(ApiModel):
    """Where outputs are written. Every output lands in a content-addressed folder below `uri`."""

    uri: str | None = Field(default=None, max_length=2048, pattern=r"^(file|pvc|s3)://.+")
    """Root of the outputs; defaults to the operator's configured store (`.posttrain/artifacts` for
    the local runner)."""
    endpoint_url: str | None = Field(default=None, max_length=2048)
    """S3 endpoint for S3-compatible stores."""
    access_key_id_secret_ref: SecretKeyRef | None = Field(default=None)
    """S3 access key id."""
    secret_access_key_secret_ref: SecretKeyRef | None = Field(default=None)
    """S3 secret access key."""


class Budget(ApiModel):
    """Limits of what one run may spend.

    A workload stops cleanly when one is reached: it keeps what it produced, and the resource succeeds with reason `BudgetExhausted` (so the stages after it go on
    with the partial output). Replies replayed from the model-call cache cost nothing.

    Part of the content hash: a run stopped at its budget and resumed with a larger one is a new run,
    which replays the calls the first one paid for from the cache instead of paying again.
    """

    tokens: dict[str, int] = Field(default_factory=dict, max_length=64)
    """Tokens (prompt + completion) per participant, by its name; `*` limits every participant not named."""
    requests: int | None = Field(default=None, ge=0)
    """Requests sent to teachers, judges and optimizers, all together."""
    gpu_hours: float | None = Field(default=None, ge=0)
    """GPU-hours: the GPUs of the workload and of its served participants times the run's wall time."""
    wall_seconds: int | None = Field(default=None, ge=1)
    """Wall time of the run from its start, over every attempt."""


class RunSettings(ApiModel):
    """Settings shared by every kind: compute, placement, retries, storage and image."""

    resources: Resources = Field(default_factory=Resources)
    """Compute of the workload's pods."""
    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Placement of the workload's pods."""
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    """Retries of a failed workload."""
    artifacts: ArtifactStore = Field(default_factory=ArtifactStore)
    """Where the outputs go."""
    image: str | None = Field(default=None, max_length=512)
    """Trainer image; defaults to the operator's configured image."""
    timeout_seconds: int | None = Field(default=None, ge=60)
    """Deadline of one attempt (the Job's activeDeadlineSeconds)."""
    budget: Budget | None = None
    """Limits of tokens, requests, GPU-hours and wall time of a run; none when unset."""


def no_verifier_rule(lists: tuple[str, ...], single: tuple[str, ...] = ()) -> Rule:
    """The participants of the list fields `lists` and the fields `single` must be models, not verifiers."""
    cel = " && ".join(
        [f"self.{f}.all(p, !has(p.verifier))" for f in lists] + [f"!has(self.{f}.verifier)" for f in single]
    )

    def check(model: object) -> bool:
        found = [p for f in lists for p in getattr(model, f)] + [getattr(model, f) for f in single]
        return all(p.verifier is None for p in found)

    names = " and ".join(f"`{f}`" for f in (*single, *lists))
    return Rule(cel=cel, message=f"{names} must be models: a verifier can only judge", check=check)


def unique_names_rule(field: str) -> Rule:
    """Names within a list of participants must be unique."""
    attr = field
    return Rule(
        cel=f"self.{field}.all(a, self.{field}.exists_one(b, b.name == a.name))",
        message=f"names in `{field}` must be unique",
        check=lambda m: len({p.name for p in getattr(m, attr)}) == len(getattr(m, attr)),
        field_path=f".{field}",
    )
