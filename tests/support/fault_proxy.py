"""An HTTP proxy on 127.0.0.1 that injects faults between a client and an OpenAI-compatible server.

Each request either passes through to the upstream server or meets a fault, drawn at a configured
rate (seeded) or taken from a script (one entry per request, `None` passes through). Faults:

| fault       | what the client sees                                                       |
| ----------- | -------------------------------------------------------------------------- |
| `500`/`503` | that status, without the upstream being asked                              |
| `429`       | 429 with `Retry-After: <retry_after>`                                      |
| `400`       | 400 (a request error: must not be retried)                                 |
| `timeout`   | nothing for `hang_seconds`, then the connection closes                    |
| `reset`     | the connection closes at once, no response                                 |
| `malformed` | the upstream answers, the client gets 200 with a truncated JSON body       |
| `lost`      | the upstream answers, the connection closes before the reply is sent       |

`malformed` and `lost` are the hard cases for resume: the teacher did the work and the client
must ask again without recording anything twice. Counters: `requests`, `forwarded`, `faults[kind]`,
`peak_in_flight`; `seen` keeps the last requests (method, path, headers, body).

    with FaultProxy(upstream="http://127.0.0.1:8000", rate=0.2) as proxy:
        client = Teachers({"t": Endpoint(base_url=proxy.base_url, model="m")})
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

FAULTS = ("500", "503", "429", "400", "timeout", "reset", "malformed", "lost")
DEFAULT_FAULTS = ("500", "429", "timeout", "malformed")


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultProxy:
    """The proxy; see the module docstring.

    Args:
        upstream: `http://host:port` of the real server (a `/v1` suffix is dropped).
        rate: probability that a request meets a fault.
        faults: the kinds drawn from (uniformly) when a fault happens.
        script: per-request faults taken in order before the rate applies (None passes through).
        seed: seed of the draws.
        retry_after: the `Retry-After` of injected 429s, in seconds.
        hang_seconds: how long a `timeout` fault keeps the client waiting.
        delay: seconds added to every passed-through request (to hold requests in flight).
        port: port to listen on (0: a free one).
    """

    def __init__(
        self,
        upstream: str,
        rate: float = 0.0,
        faults: Sequence[str] = DEFAULT_FAULTS,
        script: Sequence[str | None] = (),
        seed: int = 0,
        retry_after: float = 0.05,
        hang_seconds: float = 30.0,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        unknown = set(faults) - set(FAULTS) | {f for f in script if f is not None} - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        upstream = upstream.rstrip("/")
        self.upstream = upstream[: -len("/v1")] if upstream.endswith("/v1") else upstream
        self.rate = rate
        self.faults = tuple(faults)
        self.script: deque[str | None] = deque(script)
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.delay = delay
        self.port = port
        self.requests = 0
        self.forwarded = 0
        self.faults_injected: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.seen: deque[SeenRequest] = deque(maxlen=1000)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        """The proxy's OpenAI base URL (`http://127.0.0.1:PORT/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        with self._lock:
            return {
                "requests": self.requests,
                "forwarded": self.forwarded,
                "faults": dict(self.faults_injected),
                "peak_in_flight": self.peak_in_flight,
            }

    def _draw(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.script:
                return self.script.popleft()
            if self.rate > 0 and self._rng.random() < self.rate:
                return self._rng.choice(self.faults)
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if not await self._answer(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, request: SeenRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close."""
        self.seen.append(request)
        fault = self._draw()
        if fault is not None:
            with self._lock:
                self.faults_injected[fault] += 1
        if fault in ("500", "503", "400"):
            writer.write(_response(int(fault), b'{"error": {"message": "injected fault"}}'))
            await writer.drain()
            return True
        if fault == "429":
            headers = {"retry-after": f"{self.retry_after:g}"}
            writer.write(_response(429, b'{"error": {"message": "rate limited"}}', headers))
            await writer.drain()
            return True
        if fault == "timeout":
            await asyncio.sleep(self.hang_seconds)
            return False
        if fault == "reset":
            return False
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            status, body, content_type = await self._forward(request)
        finally:
            with self._lock:
                self.in_flight -= 1
        with self._lock:
            self.forwarded += 1
        if fault == "lost":
            return False
        if fault == "malformed":
            body = body[: max(1, len(body) // 2)]
        writer.write(_response(status, body, {"content-type": content_type}))
        await writer.drain()
        return True

    async def _forward(self, request: SeenRequest) -> tuple[int, bytes, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "authorization")}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path, data=request.body, headers=headers
            ) as response:
                return response.status, await response.read(), response.content_type
        except aiohttp.ClientError as error:
            return 502, f'{{"error": "upstream: {type(error).__name__}"}}'.encode(), "application/json"

    def start(self) -> FaultProxy:
        """Serve from a daemon thread until `stop`."""
        ready = threading.Event()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=4096)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()
            if self._session is not None:
                await self._session.close()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(serve())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        loop = self._loop
        if loop is None or self._server is None or loop.is_closed():
            return

        def shutdown() -> None:
            for writer in list(self._writers):
                writer.close()
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _read_request(reader: asyncio.StreamReader) -> SeenRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return SeenRequest(method, path, headers, body)


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    reasons = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}
    all_headers = {"content-type": "application/json", **(headers or {}), "content-length": str(len(body))}
    head = [f"HTTP/1.1 {status} {reasons.get(status, 'Status')}"] + [
        f"{k}: {v}" for k, v in all_headers.items()
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def main() -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting proxy for OpenAI-compatible servers.")
    parser.add_argument("upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--faults", nargs="+", default=list(DEFAULT_FAULTS), choices=FAULTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    proxy = FaultProxy(
        args.upstream, rate=args.rate, faults=args.faults, seed=args.seed, port=args.port
    ).start()
    print(proxy.base_url, flush=True)
    try:
        while True:
            time.sleep(5)
            print(proxy.counters(), flush=True)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
