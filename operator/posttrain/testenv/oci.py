"""Write OCI image archives from layer tarballs, with no registry and no image builder.

``hack/build-images.sh`` makes the layers (a Debian root filesystem from ``debootstrap``, the locked
Python environment, the project) as plain uncompressed tar files and calls this module to put them
together: the archive's index carries the image's full name in ``io.containerd.image.name``, so
``ctr -n k8s.io images import FILE`` registers it under exactly that name, which a pod then uses with
``imagePullPolicy: Never``. The digests are content hashes of deterministic inputs, so an unchanged
image has an unchanged manifest digest and is neither rewritten nor imported again.

Standard library only: it runs with any ``python3`` (``python3 oci.py --help``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ImageConfig", "archive_ref", "layer_digest", "write_archive"]

NAME_ANNOTATION = "io.containerd.image.name"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's configuration (what a Dockerfile's ENV, USER, ... set)."""

    user: str = ""
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ()
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The `config` object of the OCI image configuration, with a default PATH when `env` sets none."""
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = list(self.env)
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, path)
        config: dict[str, Any] = {"Env": env, "WorkingDir": self.workdir}
        if self.user:
            config["User"] = self.user
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.labels:
            config["Labels"] = dict(self.labels)
        return config


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_digest(path: Path) -> str:
    """The sha256 digest of a layer file, remembered next to it (``<file>.sha256``) by size and mtime."""
    stat = path.stat()
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    memo = path.with_name(path.name + ".sha256")
    try:
        saved_stamp, digest = memo.read_text().split("\n")[:2]
        if saved_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    memo.write_text(f"{stamp}\n{digest}\n")
    return digest


def _blobs(name: str, layers: Sequence[Path], config: ImageConfig) -> tuple[bytes, bytes, bytes, list[str]]:
    """(image config, manifest, index) as bytes, and the layer digests."""
    digests = [layer_digest(p) for p in layers]
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config.as_dict(),
            "rootfs": {"type": "layers", "diff_ids": digests},
            "history": [{"created_by": f"hack/build-images.sh layer {i}"} for i in range(len(layers))],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(image_config),
                "size": len(image_config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": p.stat().st_size}
                for d, p in zip(digests, layers, strict=True)
            ],
        },
        sort_keys=True,
    ).encode()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {NAME_ANNOTATION: name, "org.opencontainers.image.ref.name": tag},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    return image_config, manifest, index, digests


def archive_ref(archive: Path) -> tuple[str, str]:
    """(image name, manifest digest) recorded in an archive's ``index.json``."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json")
        index = json.load(member)
    entry = index["manifests"][0]
    return str(entry.get("annotations", {}).get(NAME_ANNOTATION, "")), str(entry["digest"])


def write_archive(name: str, layers: Sequence[Path], out: Path, config: ImageConfig) -> str:
    """Write the OCI archive of image ``name`` to ``out``; return its manifest digest.

    Nothing is written when ``out`` already holds an image with the same name and manifest digest.
    """
    image_config, manifest, index, digests = _blobs(name, layers, config)
    digest = _sha(manifest)
    if out.is_file():
        try:
            if archive_ref(out) == (name, digest):
                return digest
        except (OSError, ValueError, KeyError, tarfile.TarError):
            pass
    tmp = out.with_name(out.name + ".tmp")

    def add_bytes(tar: tarfile.TarFile, member: str, data: bytes) -> None:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp, "w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", index)
        add_bytes(tar, "blobs/sha256/" + _sha(image_config)[7:], image_config)
        add_bytes(tar, "blobs/sha256/" + digest[7:], manifest)
        seen: set[str] = set()
        for layer, layer_sha in zip(layers, digests, strict=True):
            if layer_sha in seen:
                continue
            seen.add(layer_sha)
            info = tarfile.TarInfo("blobs/sha256/" + layer_sha[7:])
            info.size = layer.stat().st_size
            with layer.open("rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, out)
    return digest


def main(argv: Sequence[str] | None = None) -> int:
    """``oci.py NAME OUT --layer TAR ... [--user U] [--entrypoint JSON] [--cmd JSON] [--env K=V]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("name", help="full image name, e.g. localhost/posttrain/operator:dev")
    parser.add_argument("out", type=Path, help="the archive to write")
    parser.add_argument("--layer", type=Path, action="append", required=True, help="layer tar, bottom first")
    parser.add_argument("--user", default="")
    parser.add_argument("--entrypoint", default="[]", help="JSON list")
    parser.add_argument("--cmd", default="[]", help="JSON list")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    args = parser.parse_args(argv)
    config = ImageConfig(
        user=args.user,
        entrypoint=json.loads(args.entrypoint),
        cmd=json.loads(args.cmd),
        env=args.env,
        workdir=args.workdir,
        labels=dict(label.split("=", 1) for label in args.label),
    )
    print(write_archive(args.name, args.layer, args.out, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
