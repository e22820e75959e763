"""A minimal, fast HTTP/1.1 server answering `POST /v1/chat/completions` in the OpenAI format.

For client benchmarks and tests that need an upstream without a model: keep-alive connections, a
fixed (or computed) reply, no framework in the way. `GET /v1/models` and `GET /health` answer too.

    python tests/support/fake_openai.py --port 0        # prints the port, serves until killed

`start_fake_openai()` runs it in a child process (its own interpreter, so it does not compete with
the client for the GIL); `FakeOpenAI` runs it in a thread of the current process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Self

Responder = Callable[[dict[str, Any]], str]


def completion_body(
    text: str, prompt_tokens: int = 8, completion_tokens: int = 4, model: str = "fake"
) -> bytes:
    """An OpenAI chat completion document."""
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of an HTTP/1.1 response with a JSON body."""
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(
        status, "Status"
    )
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Protocol(asyncio.Protocol):
    def __init__(self, server: FakeOpenAI) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path, *_ = head.split(" ", 2)
            assert self.transport is not None
            self.transport.write(self.server.answer(method, path, body))


class FakeOpenAI:
    """The server; `responder(request_json) -> text` computes each reply (default: a fixed text).

    Attributes:
        requests: chat requests answered.
    """

    def __init__(self, responder: Responder | None = None, text: str = "This is a fake answer.") -> None:
        self.responder = responder
        self.requests = 0
        self._fixed = completion_body(text)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def answer(self, method: str, path: str, body: bytes) -> bytes:
        """The response bytes for one request."""
        if method == "POST" and path.endswith("/chat/completions"):
            self.requests += 1
            if self.responder is None:
                return http_response(200, self._fixed)
            request = json.loads(body)
            return http_response(
                200, completion_body(self.responder(request), model=request.get("model", ""))
            )
        if path.endswith("/models"):
            return http_response(200, b'{"object": "list", "data": [{"id": "fake", "object": "model"}]}')
        if path == "/health":
            return http_response(200, b'{"status": "ok"}')
        return http_response(404, b'{"error": "not found"}')

    async def serve(self, sock: socket.socket) -> None:
        """Serve on a bound socket until cancelled."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), sock=sock, backlog=4096)
        async with self._server:
            await self._server.serve_forever()

    def start(self) -> Self:
        """Serve from a daemon thread of this process on a free port of 127.0.0.1."""
        sock = bind()
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            task = self._loop.create_task(self.serve(sock))
            self._loop.call_soon(ready.set)
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(task)
            self._loop.close()

        self._thread = threading.Thread(target=main, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop the thread started by `start`."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bind(port: int = 0) -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    return sock


@contextlib.contextmanager
def start_fake_openai() -> Iterator[str]:
    """Run the server in a child process; yields its base URL (`http://127.0.0.1:PORT/v1`)."""
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = bind(args.port)
    print(sock.getsockname()[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(FakeOpenAI().serve(sock))


if __name__ == "__main__":
    main()
