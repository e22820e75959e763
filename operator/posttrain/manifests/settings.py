"""Operator-wide settings of the manifests layer: images, mount points, ports and extra labels.

The handlers build one `ManifestSettings` from the operator's configuration (Helm values) and pass it to
every builder; nothing here is read from the environment, so the builders stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
VLLM_VERSION = "0.33.0"
"""The vLLM that uv.lock pins for the trainer image; teachers are served by the same release
(tests/unit/test_vllm_version.py fails when the two drift apart)."""
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
SERVING_ENGINES = ("vllm", "transformers", "auto")


@dataclass(frozen=True)
class ManifestSettings:
    """How children of posttrain resources are built."""

    trainer_image: str = "ghcr.io/posttrain/trainer:0.1.0"
    """Image of workload pods (it provides `posttrain-trainer` and `torchrun`), unless a spec names one."""
    vllm_image: str = VLLM_IMAGE
    """vLLM OpenAI-compatible server image of served participants, unless `served.image` names one."""
    pvc_root: str = "/mnt/pvc"
    """Where `pvc://CLAIM/...` claims are mounted in pods (`<pvcRoot>/<CLAIM>`); passed to the trainer
    as `POSTTRAIN_PVC_ROOT`."""
    teacher_port: int = 8000
    """Port of the vLLM server, of its container and of its Service."""
    image_pull_policy: str = "IfNotPresent"
    """`Always`, `IfNotPresent` or `Never`, for every container."""
    workload_labels: dict[str, str] = field(default_factory=dict)
    """Extra labels for every child and its pods (e.g. cost allocation). They never override the
    labels posttrain itself relies on, and GitOps tracking labels are dropped."""
    image_pull_secrets: tuple[str, ...] = ()
    """Names of Secrets to pull images from private registries with."""
    rendezvous_port: int = 29500
    """Port of the torchrun rendezvous of multi-node training (`MASTER_PORT`)."""
    serving_engine: str = "vllm"
    """Server of served participants: `vllm` (the vLLM image), `transformers` (`transformers serve` from
    the trainer image, on CPU or GPU) or `auto` (vLLM for participants with GPUs, `transformers` for
    CPU-only ones)."""
    teacher_startup_seconds: int = 1800
    """How long a vLLM server may take to load its model before the startup probe gives up (the
    container is then restarted); large models on slow volumes take many minutes."""

    def __post_init__(self) -> None:
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy must be one of {PULL_POLICIES}, not {self.image_pull_policy!r}"
            )
        if self.serving_engine not in SERVING_ENGINES:
            raise ValueError(f"serving_engine must be one of {SERVING_ENGINES}, not {self.serving_engine!r}")
        if not self.pvc_root.startswith("/"):
            raise ValueError(f"pvc_root must be an absolute path, not {self.pvc_root!r}")
        for port in (self.teacher_port, self.rendezvous_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range")
        if self.teacher_startup_seconds < 10:
            raise ValueError("teacher_startup_seconds must be at least 10")
