"""The one Kubernetes client wrapper: idempotent create and delete, status patches, a rate limit.

The Python client is synchronous; callers run these methods in worker threads. A token bucket limits
the request rate (the operator framework has none), so a burst of thousands of resources cannot flood
the API server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

# The client's package imports its API classes, and the hundreds of models they name, on first use
# (seconds of CPU). Imported here, that cost is paid when the operator's modules are imported, not in
# the startup handler of every operator start, where it blocks the event loop before the first watch.
from kubernetes.client import AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from posttrain.api import curriculum
from posttrain.api.resources import GROUP, KINDS, VERSION

log = logging.getLogger(__name__)

FIELD_MANAGER = "posttrain-operator"
"""The operator's name in server-side apply's field ownership (`metadata.managedFields`)."""


def plural_of(kind: str) -> str:
    """The resource (plural) name of a posttrain kind."""
    return curriculum.PLURAL if kind == curriculum.KIND else KINDS[kind].plural


def _release(response: Any) -> None:
    """Discard an unread response body and hand its connection back to the pool."""
    response.drain_conn()
    response.release_conn()


class TokenBucket:
    """At most `qps` requests per second on average, bursts of up to `burst`."""

    def __init__(self, qps: float, burst: int) -> None:
        """A full bucket; `qps <= 0` turns the limit off."""
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until a request may be sent."""
        if self.qps <= 0:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.qps
            time.sleep(wait)


@dataclass
class RequestCounter:
    """Requests sent, by verb (for benchmarks and tests)."""

    counts: dict[str, int]

    def add(self, verb: str) -> None:
        """Count one request."""
        self.counts[verb] = self.counts.get(verb, 0) + 1


class Kube:
    """Create, delete and patch what the operator manages."""

    def __init__(
        self, api_client: client.ApiClient | None = None, qps: float = 50.0, burst: int = 100
    ) -> None:
        """The API groups of one client, rate-limited to `qps` requests per second (bursts of `burst`)."""
        self.api = api_client or client.ApiClient()
        self.core = CoreV1Api(self.api)
        self.apps = AppsV1Api(self.api)
        self.batch = BatchV1Api(self.api)
        self.custom = CustomObjectsApi(self.api)
        self.bucket = TokenBucket(qps, burst)
        self.requests = RequestCounter({})

    def create(self, body: dict[str, Any]) -> bool:
        """Create an object; returns False if it already existed (creation is idempotent)."""
        kind = body["kind"]
        namespace = body["metadata"]["namespace"]
        creators: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
            "Deployment": self.apps.create_namespaced_deployment,
        }
        self.bucket.acquire()
        self.requests.add("create")
        try:
            # The operator never reads the created object: skip deserialising it into client models.
            _release(creators[kind](namespace, body, _preload_content=False))
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object and (in the background) its dependents; False if it was already gone."""
        deleters: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.delete_namespaced_config_map,
            "Service": self.core.delete_namespaced_service,
            "Job": self.batch.delete_namespaced_job,
            "Deployment": self.apps.delete_namespaced_deployment,
        }
        self.bucket.acquire()
        self.requests.add("delete")
        try:
            _release(deleters[kind](name, namespace, propagation_policy="Background", _preload_content=False))
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace the status fields given (a merge patch on the status subresource).

        `null` values remove fields, so optional fields that became unset are cleared.
        """
        self.bucket.acquire()
        self.requests.add("patch")
        try:
            response = self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural_of(kind),
                name,
                {"status": status},
                _preload_content=False,
            )
            _release(response)
        except ApiException as error:
            if error.status == 404:  # deleted meanwhile
                return
            raise

    def apply(self, body: dict[str, Any]) -> None:
        """Create or update a posttrain object by server-side apply (the operator owns the fields it sets).

        Idempotent: applying the same body again changes nothing, so a reconcile killed at any line
        can run again. Fields the operator set before and leaves out now are removed.
        """
        metadata = body["metadata"]
        self.bucket.acquire()
        self.requests.add("apply")
        response = self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            metadata["namespace"],
            plural_of(body["kind"]),
            metadata["name"],
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )
        _release(response)

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a posttrain object (its own children follow by garbage collection); False if gone."""
        self.bucket.acquire()
        self.requests.add("delete")
        try:
            response = self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural_of(kind),
                name,
                propagation_policy="Background",
                _preload_content=False,
            )
            _release(response)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise
