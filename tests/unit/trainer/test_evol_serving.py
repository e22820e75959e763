"""The local OpenAI-compatible server launcher.

Engine choice and command lines (pure parts), and a server process that exits at once or never answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from posttrain_trainer import serving


def test_engine_choice() -> None:
    assert serving.choose_engine(vllm_importable=False, gpu=True) == "transformers"
    assert serving.choose_engine(vllm_importable=True, gpu=False) == "transformers"
    assert serving.choose_engine(vllm_importable=True, gpu=True) == "vllm"


def test_transformers_command() -> None:
    command = serving.server_command("transformers", "/models/t", 8123, device="cpu", python="py")
    assert command[:3] == ["py", "-c", serving.TRANSFORMERS_CLI]
    assert command[3:5] == ["serve", "/models/t"]  # the model is pinned (force_model)
    text = " ".join(command)
    assert "--host 127.0.0.1" in text and "--port 8123" in text and "--device cpu" in text


def test_vllm_command() -> None:
    command = serving.server_command(
        "vllm", "/models/t", 9000, extra_args=["--max-model-len=4096"], python="py"
    )
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(command)
    assert "--model /models/t" in text and "--served-model-name /models/t" in text
    assert "--port 9000" in text and command[-1] == "--max-model-len=4096"


def test_a_server_that_exits_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_command(*args: object, **kwargs: object) -> list[str]:
        return [sys.executable, "-c", "print('cannot load the model'); raise SystemExit(3)"]

    monkeypatch.setattr(serving, "server_command", fake_command)
    with (
        pytest.raises(serving.ServerError, match="exited with 3:\ncannot load the model"),
        serving.serve(tmp_path / "model", engine="transformers", device="cpu", log_path=tmp_path / "log"),
    ):
        pass


def test_a_server_that_never_answers_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_command(*args: object, **kwargs: object) -> list[str]:
        return [sys.executable, "-c", "import time; print('loading', flush=True); time.sleep(60)"]

    monkeypatch.setattr(serving, "server_command", fake_command)
    server = serving.start_server(tmp_path / "model", engine="transformers", device="cpu")
    with pytest.raises(serving.ServerError, match="not ready after 1s"):
        server.wait_ready(timeout=1.0, interval=0.1)
    server.stop(grace=5)
    assert not server.alive() and server.endpoint().base_url == f"http://127.0.0.1:{server.port}/v1"
