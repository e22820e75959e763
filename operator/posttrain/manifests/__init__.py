"""The manifests layer: pure builders of the Kubernetes bodies posttrain creates, as plain dicts.

- `workload_objects`: a ConfigMap with the workload's config and a Job running `posttrain-trainer`
  (an Indexed Job and a headless Service for multi-node training).
- `teacher_objects` / `teacher_endpoint`: a vLLM Deployment and Service per served participant.
- `child_labels`, `job_name`, `teacher_name`: the names and labels the adapters find children by.

No I/O and no Kubernetes client: the same inputs give the same bodies, byte for byte.
"""

from posttrain.manifests.naming import (
    NAME_ANNOTATION,
    QUEUE_LABEL,
    child_labels,
    job_name,
    label_selector,
    label_value,
    owner_references,
    teacher_name,
)
from posttrain.manifests.settings import ManifestSettings
from posttrain.manifests.teachers import (
    SPEC_HASH_ANNOTATION,
    TEACHER_CONTAINER,
    served_model_uri,
    teacher_endpoint,
    teacher_objects,
)
from posttrain.manifests.workloads import (
    CONFIG_PATH,
    WORKLOAD_CONTAINER,
    WorkloadStart,
    config_text,
    workload_objects,
)

__all__ = [
    "CONFIG_PATH",
    "NAME_ANNOTATION",
    "QUEUE_LABEL",
    "SPEC_HASH_ANNOTATION",
    "TEACHER_CONTAINER",
    "WORKLOAD_CONTAINER",
    "ManifestSettings",
    "WorkloadStart",
    "child_labels",
    "config_text",
    "job_name",
    "label_selector",
    "label_value",
    "owner_references",
    "served_model_uri",
    "teacher_endpoint",
    "teacher_name",
    "teacher_objects",
    "workload_objects",
]
