"""Read workload documents (progress.json, result.json) from the artifact store, where the operator can.

`file://` (a local runner or an operator with the store mounted) and `s3://` (fsspec) are readable;
`pvc://CLAIM/...` is readable when the operator has the claim mounted under `pvc_root`. Anything else
returns None: progress is best-effort, and results travel in the termination message anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from posttrain.api.uri import PVC, S3, ArtifactUri


class ArtifactReader:
    """Reads small JSON documents below an output URI."""

    def __init__(self, pvc_root: str | None = None) -> None:
        self.pvc_root = pvc_root

    def _path(self, uri: str) -> Path | None:
        parsed = ArtifactUri.parse(uri)
        if parsed.scheme == PVC and not self.pvc_root:
            return None
        return parsed.local_path(self.pvc_root or "")

    def readable(self, uri: str) -> bool:
        """Whether documents below `uri` can be read at all (the store is mounted or reachable)."""
        if self._path(uri) is not None:
            return True
        return ArtifactUri.parse(uri).scheme == S3 and os.environ.get("POSTTRAIN_READ_S3", "1") == "1"

    def read_json(self, output_uri: str, name: str) -> dict[str, Any] | None:
        """The document `name` below `output_uri`, or None when unreadable or absent."""
        try:
            path = self._path(output_uri)
            if path is not None:
                target = path / name
                return json.loads(target.read_text()) if target.exists() else None
            if self.readable(output_uri):
                import fsspec

                with fsspec.open(str(ArtifactUri.parse(output_uri).join(name)), "rt") as stream:
                    document = json.load(stream)
                return document if isinstance(document, dict) else None
        except (OSError, ValueError, ImportError):
            return None
        return None
