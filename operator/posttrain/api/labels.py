"""Label and annotation keys on every child posttrain creates.

They are the contract between the manifests that write them and the adapters that select and read children by
them.

Defined once, here, so the two sides cannot drift apart.
"""

from __future__ import annotations

from posttrain.api.resources import GROUP

PREFIX = f"{GROUP}/"
"""Prefix of posttrain's own label and annotation keys."""

KIND = f"{PREFIX}kind"
"""Label: kind of the parent resource."""
NAME = f"{PREFIX}name"
"""Label: name of the parent resource (shortened to a valid label value where needed)."""
RUN = f"{PREFIX}run"
"""Label (workloads): the run id."""
ATTEMPT = f"{PREFIX}attempt"
"""Label (workloads): the attempt number."""
PARTICIPANT = f"{PREFIX}participant"
"""Label (teachers): the served participant's name."""
CURRICULUM = f"{PREFIX}curriculum"
"""Label (a Curriculum's children): the curriculum's name."""
STAGE = f"{PREFIX}stage"
"""Label (a Curriculum's stage children): the stage number."""
COMPONENT = "app.kubernetes.io/component"
"""Label: `workload` or `teacher`."""
INSTANCE = "app.kubernetes.io/instance"
"""Label: the parent's name; also the key Argo CD tracks its own objects by."""

NAME_ANNOTATION = f"{PREFIX}name"
"""Annotation: the parent's full name (its label may be a shortened form)."""
SPEC_HASH_ANNOTATION = f"{PREFIX}spec-hash"
"""Annotation (teacher Deployments): a hash of the desired spec."""
