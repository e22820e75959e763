"""The container images' Dockerfiles (images/*/Dockerfile), checked without a container engine.

No image is built here; these checks catch what a linter would: base images pinned to a version (no
`latest`), multi-stage builds, dependencies installed from the lock, and an unprivileged numeric USER
(Pod Security "restricted" checks runAsNonRoot against it).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, f"{path} ends inside a continuation"
    out = []
    for statement in joined:
        keyword, _, rest = statement.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM, with the defaults of the build arguments filled in.

    Those are the arguments declared before the first FROM (a base image is a build argument, the public image
    its default).
    """
    found: list[tuple[str, str | None]] = []
    defaults: dict[str, str] = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG" and not found and "=" in rest:
            arg, _, value = rest.partition("=")
            defaults[arg.strip()] = value.strip()
        if keyword == "FROM":
            resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1)) or m.group(0), rest)
            parts = [p for p in resolved.split() if not p.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append((parts[0], name))
    return found


@pytest.mark.parametrize("image", ["operator", "trainer"])
def test_dockerfile_is_pinned_multi_stage_and_unprivileged(image: str) -> None:
    path = IMAGES / image / "Dockerfile"
    steps = instructions(path)
    froms = stages(path)
    names = {name for _, name in froms if name}
    assert len(froms) >= 2, "a multi-stage build"
    for base, _ in froms:
        if base in names:
            continue
        assert ":" in base.rsplit("/", 1)[-1] or "@sha256:" in base, f"{base} is not pinned"
        tag = base.rsplit(":", 1)[-1]
        assert tag != "latest" and re.search(r"\d", tag), f"{base}: pin a version, not {tag!r}"
        assert "$" not in base, f"{base}: a build argument without a pinned default"
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}: numeric and non-root"
    # The final USER comes after the last FROM (it belongs to the image that ships).
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    assert any(k == "USER" for k, _ in steps[last_from:])
    syncs = [rest for keyword, rest in steps if keyword == "RUN" and "uv sync" in rest]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), "install exactly the lock"
    assert "ADD" not in {k for k, _ in steps}, "COPY, not ADD (no remote fetches, no implicit unpacking)"
    assert (IMAGES / image / "Dockerfile.dockerignore").is_file()


def test_operator_image_has_no_ml_stack() -> None:
    syncs = [r for k, r in instructions(IMAGES / "operator" / "Dockerfile") if k == "RUN" and "uv sync" in r]
    for sync in syncs:
        extras = re.findall(r"--extra[ =](\S+)", sync)
        assert extras == ["operator"], sync
    base = stages(IMAGES / "operator" / "Dockerfile")[-1][0]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert base.startswith("python:3.11") and "3.11" in version


def test_trainer_image_is_cuda_with_the_training_stack() -> None:
    path = IMAGES / "trainer" / "Dockerfile"
    syncs = [r for k, r in instructions(path) if k == "RUN" and "uv sync" in r]
    for sync in syncs:
        assert set(re.findall(r"--extra[ =](\S+)", sync)) == {"trainer", "gpu"}, sync
    final = stages(path)[-1][0]
    # devel: DeepSpeed JIT-compiles its CUDA ops with nvcc.
    assert final.startswith("nvidia/cuda:") and "devel" in final
    # The CUDA of the base image is the one the locked torch build links against.
    cuda = re.match(r"nvidia/cuda:(\d+\.\d+)", final)
    assert cuda is not None
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    runtimes = {p["version"] for p in lock["package"] if p["name"] == "nvidia-cuda-runtime"}
    assert any(v.startswith(cuda.group(1) + ".") for v in runtimes), (cuda.group(1), runtimes)
    locked = {p["name"] for p in lock["package"]}
    assert {"torch", "transformers", "trl", "peft", "deepspeed", "vllm"} <= locked
