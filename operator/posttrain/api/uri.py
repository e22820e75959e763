"""Artifact URIs: the one place that knows how they map to paths.

The schemes are `file://`, `pvc://CLAIM/path` and `s3://bucket/key`.

Every output and every resolved reference is a URI string in the API. The local runner, the operator's
artifact reader, the pod manifests and the trainer all need the same answer to "where is this on my
filesystem", given where claims are mounted; they all ask `ArtifactUri`.

- `file:///abs/path` is absolute; `file://relative/path` is relative to the working directory (the
  local runner resolves it against the manifest's folder first). A string without a scheme is a
  plain path.
- `pvc://CLAIM/path` is `path` inside the PersistentVolumeClaim `CLAIM`, found at `<root>/CLAIM/path`
  where the claims are mounted (`/mnt/pvc` in pods, `<state>/pvc` for the local runner).
- `s3://bucket/key` (and any other scheme) has no local path; fsspec reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FILE = "file"
PVC = "pvc"
S3 = "s3"
LOCAL_SCHEMES = ("", FILE, PVC)
"""Schemes with a path on a filesystem (`""`: a plain path)."""


@dataclass(frozen=True)
class ArtifactUri:
    """A parsed artifact URI. `str()` gives the URI back."""

    scheme: str
    """`file`, `pvc`, `s3`, another scheme, or `""` for a plain path."""
    authority: str
    """The claim (`pvc`) or bucket (`s3`); empty for `file` and plain paths."""
    path: str
    """The path: for `file` as written after `file://` (absolute or relative), for the others without
    the leading slash."""

    @classmethod
    def parse(cls, uri: str) -> ArtifactUri:
        """Split a URI string; a string without `://` is a plain path."""
        scheme, separator, rest = uri.partition("://")
        if not separator:
            return cls("", "", uri)
        if scheme == FILE:
            return cls(FILE, "", rest)
        authority, _, path = rest.partition("/")
        return cls(scheme, authority, path.lstrip("/"))

    def __str__(self) -> str:
        if not self.scheme:
            return self.path
        if self.scheme == FILE:
            return f"{FILE}://{self.path}"
        return f"{self.scheme}://{self.authority}" + (f"/{self.path}" if self.path else "")

    @property
    def is_local(self) -> bool:
        """Whether it names a path on a filesystem (a plain path, `file://` or `pvc://`)."""
        return self.scheme in LOCAL_SCHEMES

    @property
    def claim(self) -> str | None:
        """The claim of a `pvc://` URI; None for other schemes."""
        return (self.authority or None) if self.scheme == PVC else None

    def local_path(self, pvc_root: Path | str) -> Path | None:
        """Where it lives on this filesystem, or None when it is not local (an object store).

        Claims are mounted under `pvc_root`.
        """
        if self.scheme == PVC:
            return (
                Path(pvc_root) / self.authority / self.path if self.path else Path(pvc_root) / self.authority
            )
        if self.is_local:
            return Path(self.path)
        return None

    def join(self, *parts: str) -> ArtifactUri:
        """The URI of `parts` below this one: `s3://b/run`.join("a", "b.json") is `s3://b/run/a/b.json`."""
        path = "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts)])
        return ArtifactUri(self.scheme, self.authority, path if self.path else path.lstrip("/"))


def local_path(uri: str, pvc_root: Path | str) -> Path | None:
    """`ArtifactUri.parse(uri).local_path(pvc_root)`: the filesystem path of a URI string, or None."""
    return ArtifactUri.parse(uri).local_path(pvc_root)
