"""A real Kubernetes control plane for tests and local development, run as plain local processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes whose pods
run and finish according to ``stages.yaml``), built from Go modules by ``hack/build-testenv.sh``.
This is development tooling: the operator itself never imports it. See ``docs/testenv.md``.
"""

from posttrain.testenv.cluster import (
    ANNOTATION_DURATION,
    ANNOTATION_DURATION_MAX,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_REASON,
    ANNOTATION_TERMINATION_MESSAGE,
    ControlPlane,
    ControlPlaneError,
    FakeNode,
    ToolError,
    find_binaries,
    stop_recorded,
    wait_until,
)

__all__ = [
    "ANNOTATION_DURATION",
    "ANNOTATION_DURATION_MAX",
    "ANNOTATION_EXIT_CODE",
    "ANNOTATION_REASON",
    "ANNOTATION_TERMINATION_MESSAGE",
    "ControlPlane",
    "ControlPlaneError",
    "FakeNode",
    "ToolError",
    "find_binaries",
    "stop_recorded",
    "wait_until",
]
