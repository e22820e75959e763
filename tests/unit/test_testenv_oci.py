"""OCI archives written without a registry.

Names, deterministic digests, no needless rewrites, and the thin copy a real node imports when its store
already has the big layers.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from posttrain.testenv.oci import ImageConfig, archive_ref, layer_digest, write_archive
from posttrain.testenv.realnode import _without_blobs


def _layer(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def test_archive_names_the_image_and_is_only_rewritten_when_it_changes(tmp_path: Path) -> None:
    base = _layer(tmp_path / "base.tar", {"etc/os-release": b"debian"})
    app = _layer(tmp_path / "app.tar", {"app/main.py": b"print(1)"})
    config = ImageConfig(user="1000:1000", entrypoint=["posttrain"], env=["A=1"])
    out = tmp_path / "image.oci.tar"
    digest = write_archive("localhost/posttrain/x:dev", [base, app], out, config)
    assert archive_ref(out) == ("localhost/posttrain/x:dev", digest)
    assert {"oci-layout", "index.json", f"blobs/sha256/{layer_digest(base)[7:]}"} <= _members(out)
    written = out.stat().st_mtime_ns
    assert write_archive("localhost/posttrain/x:dev", [base, app], out, config) == digest
    assert out.stat().st_mtime_ns == written  # same manifest: left alone
    changed = _layer(tmp_path / "app.tar", {"app/main.py": b"print(2)"})
    assert write_archive("localhost/posttrain/x:dev", [base, changed], out, config) != digest


def test_thin_copy_leaves_out_the_blobs_the_store_has(tmp_path: Path) -> None:
    base = _layer(tmp_path / "base.tar", {"big": b"x" * 4096})
    app = _layer(tmp_path / "app.tar", {"small": b"y"})
    out = tmp_path / "image.oci.tar"
    write_archive("localhost/i:1", [base, app], out, ImageConfig())
    thin = tmp_path / "thin.tar"
    _without_blobs(out, {layer_digest(base)}, thin)
    members = _members(thin)
    assert f"blobs/sha256/{layer_digest(base)[7:]}" not in members
    assert f"blobs/sha256/{layer_digest(app)[7:]}" in members
    assert archive_ref(thin) == archive_ref(out)
