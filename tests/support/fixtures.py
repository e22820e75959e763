"""Shared pytest fixtures: a tiny model served by a real OpenAI-compatible server.

`served_teacher` serves the `tiny_teacher` model (tests/conftest.py) with `transformers serve` on
127.0.0.1 (CPU), once per session; tests reach it at `served_teacher.base_url` with the model name
`served_teacher.model`. Register with `pytest_plugins = ["tests.support.fixtures"]` in a conftest,
or import the fixture into a test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from posttrain_trainer.serving import Server, serve


@pytest.fixture(scope="session")
def served_teacher(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`transformers serve` of the tiny teacher on a free port of 127.0.0.1, ready to answer."""
    log_path = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    with serve(
        tiny_teacher, engine="transformers", device="cpu", log_path=log_path, startup_timeout=600
    ) as server:
        yield server
