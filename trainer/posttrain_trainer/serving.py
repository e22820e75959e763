"""Serve a model folder with a local OpenAI-compatible server, for tests and the local runner.

Three engines:

- `vllm`: vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`), chosen when vllm is
  importable and a GPU is present: what teacher Deployments run in a cluster.
- `transformers`: `transformers serve` (the `serving` extra of transformers), on CPU or GPU. The
  server is pinned to the one model (`force_model`), loaded before it listens, and a request's `model`
  must then be that same string: `Server.model` is what to send.

- `program`: a program that speaks the OpenAI chat protocol itself, chosen when the model folder
  holds `posttrain-server.json` naming a module of this package (`{"module":
  "posttrain_trainer.demo.arithmetic_teacher"}`): the quickstart's stand-in teacher. It is run as
  `python -m MODULE --host H --port P --model FOLDER`.

The server listens on 127.0.0.1 on a free port, writes its log to a file, and counts as ready when
`GET /v1/models` answers (or `GET /health`, for servers whose model list needs a Hub cache).

    with serve("/models/tiny") as server:
        endpoints = {"teacher": server.endpoint()}

Inputs: a model folder (Hugging Face format). Outputs: a running server (`Server.base_url`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from posttrain.api.workload import Endpoint
from posttrain.support.processes import free_port, http_ok, stop_group, wait_ready

log = logging.getLogger(__name__)

Engine = Literal["transformers", "vllm", "program"]

PROGRAM_FILE = "posttrain-server.json"
"""A model folder holding this file is served by the program it names (the `program` engine)."""

TRANSFORMERS_CLI = "from posttrain_trainer.transformers_server import main; main()"


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log's tail."""


def gpu_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def program_module(model: str | Path) -> str | None:
    """The module a `posttrain-server.json` in the model folder names, or None without one.

    Raises:
        ValueError: the file names no module of this package (only programs shipped with posttrain
            are run).
    """
    path = Path(model) / PROGRAM_FILE
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    module = document.get("module") if isinstance(document, dict) else None
    if not isinstance(module, str) or not module.startswith("posttrain_trainer."):
        raise ValueError(f"{path}: `module` must name a module of posttrain_trainer, got {module!r}")
    return module


def choose_engine(vllm_importable: bool | None = None, gpu: bool | None = None) -> Engine:
    """The vLLM backend when it is importable and a GPU is present, transformers otherwise.

    Args:
        vllm_importable: override the check (tests).
        gpu: override the check (tests).
    """
    if vllm_importable is None:
        vllm_importable = importlib.util.find_spec("vllm") is not None
    if not vllm_importable:
        return "transformers"
    if gpu is None:
        gpu = gpu_available()
    return "vllm" if gpu else "transformers"


def server_command(
    engine: Engine,
    model: str,
    port: int,
    host: str = "127.0.0.1",
    device: str | None = None,
    extra_args: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """The command line that serves `model` (a pure function).

    Args:
        engine: `transformers`, `vllm` or `program`.
        model: the model folder; also the name requests carry.
        port: the port to listen on.
        host: the address to listen on.
        device: `cpu`, `cuda`, `auto` (transformers only; default `auto`).
        extra_args: more engine arguments (e.g. `--max-model-len=4096`, `--continuous-batching`).
        python: the interpreter (default: this one).
    """
    python = python or sys.executable
    if engine == "program":
        module = program_module(model)
        if module is None:
            raise ValueError(f"{model} has no {PROGRAM_FILE}")
        return [python, "-m", module, "--host", host, "--port", str(port), "--model", model, *extra_args]
    if engine == "vllm":
        return [
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--served-model-name",
            model,
            "--host",
            host,
            "--port",
            str(port),
            *extra_args,
        ]
    return [
        python,
        "-c",
        TRANSFORMERS_CLI,
        "serve",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        device or "auto",
        "--log-level",
        "warning",
        *extra_args,
    ]


@dataclass
class Server:
    """A running local server.

    Attributes:
        engine: which engine serves.
        model: the model name requests must carry.
        host: the address it listens on.
        port: the port it listens on.
        process: the server process (its own process group).
        log_path: where its output goes.
    """

    engine: Engine
    model: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    def endpoint(self, api_key_env: str | None = None) -> Endpoint:
        """The endpoint a workload config names for this server."""
        return Endpoint(base_url=self.base_url, model=self.model, api_key_env=api_key_env)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.25) -> None:
        """Block until the server answers, the process exits, or `timeout` passes.

        Raises:
            ServerError: it exited or did not become ready in time.
        """
        root = f"http://{self.host}:{self.port}"
        outcome = wait_ready(
            lambda: any(http_ok(root + path) for path in ("/v1/models", "/health")),
            timeout,
            self.alive,
            interval,
        )
        if outcome == "exited":
            raise ServerError(
                f"{self.engine} server exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        if outcome == "timeout":
            raise ServerError(f"{self.engine} server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after `grace` seconds."""
        if self.process.poll() is not None:
            return
        stop_group(self.process.pid, grace, self.process)


def start_server(
    model: str | Path,
    engine: Engine | Literal["auto"] = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str | None = None,
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """Start serving `model` without waiting for it (see `serve` for the arguments).

    Returns:
        The server; call `wait_ready()`, and `stop()` when done.
    """
    chosen: Engine = engine if engine != "auto" else "program" if program_module(model) else choose_engine()
    name = str(model)
    port = port or free_port(host)
    if chosen == "transformers" and device is None:
        device = "cuda" if gpu_available() else "cpu"
    if log_path is None:
        handle, raw = tempfile.mkstemp(prefix=f"posttrain-{chosen}-", suffix=".log")
        os.close(handle)
        log_path = raw
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(chosen, name, port, host, device, extra_args)
    child_env = {**os.environ, **(env or {})}
    log.info("serving %s with %s on %s:%d (log: %s)", name, chosen, host, port, log_path)
    with log_path.open("ab") as log_file:
        # Its own session, so stopping it stops any worker processes it starts as well.
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,
        )
    return Server(engine=chosen, model=name, host=host, port=port, process=process, log_path=log_path)


@contextlib.contextmanager
def serve(
    model: str | Path,
    engine: Engine | Literal["auto"] = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str | None = None,
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 300.0,
) -> Iterator[Server]:
    """Serve a model folder for the duration of a `with` block.

    Args:
        model: the model folder (or a name the engine can load offline).
        engine: `auto` (vLLM with a GPU when installed, else transformers), `transformers`, `vllm`.
        host: the address to listen on.
        port: the port (default: a free one).
        device: transformers only: `cpu`, `cuda` or `auto` (default: `cuda` if present, else `cpu`).
        extra_args: more engine arguments.
        log_path: the server's log file (default: a temporary file).
        env: extra environment variables of the server.
        startup_timeout: seconds to wait for it to answer.

    Yields:
        The ready server; it is stopped when the block ends.

    Raises:
        ServerError: it did not start.
    """
    server = start_server(model, engine, host, port, device, extra_args, log_path, env)
    try:
        server.wait_ready(startup_timeout)
        yield server
    finally:
        server.stop()
