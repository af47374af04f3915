"""A real HTTP receiver for Event Grid CloudEvents batches, on 127.0.0.1, for tests of what the app publishes.

The app's publisher (azure-eventgrid's EventGridPublisherClient) posts to it over plain HTTP with an access key,
exactly as it would post to a topic. The receiver records every request (method, path, headers, body) and can:

- answer chosen statuses, one per request, before it goes back to 200 (`answer(503, 503)`);
- hang before answering (`hang()`), until released (`release()`), to stand for a topic that never answers;
- go down (`down()`: the port refuses connections) and come back on the same port (`up()`).

Use it as the `eventgrid_receiver` fixture, or as a context manager.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PATH = "/api/events"


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int

    @property
    def events(self) -> list[dict[str, Any]]:
        """The CloudEvents of the batch (an empty list when the body is not a JSON array)."""
        try:
            batch = json.loads(self.body)
        except ValueError:
            return []
        return batch if isinstance(batch, list) else []

    @property
    def delivered(self) -> bool:
        return 200 <= self.status <= 204  # what Event Grid itself counts as delivered


class EventGridReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._requests: list[Received] = []
        self._statuses: deque[int] = deque()
        self._lock = threading.Lock()
        self._open = threading.Event()  # set: answer at once; cleared: hang until set
        self._open.set()
        self.handled = 0  # requests whose handling has ended, answered or not
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    # -- control

    @property
    def url(self) -> str:
        """The topic endpoint to put in PROMOTION_EVENTS_ENDPOINT."""
        return f"http://{self.host}:{self.port}{PATH}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer((self.host, self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections to the port are refused until `up()`."""
        server, self._server = self._server, None
        if server is None:
            return
        self._open.set()  # let hanging requests end, or shutdown would wait for them
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order; 200 after them."""
        with self._lock:
            self._statuses.extend(statuses)

    def hang(self) -> None:
        """Requests from now on wait (their bodies are read and recorded first) until `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        self.down()

    def __enter__(self) -> EventGridReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what was received

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of every request, in the order they arrived, whatever was answered."""
        return [event for request in self.requests for event in request.events]

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """The events of the requests answered with a 2xx, in the order they arrived."""
        return [event for request in self.requests if request.delivered for event in request.events]

    # -- the server side

    def _next_status(self) -> int:
        with self._lock:
            return self._statuses.popleft() if self._statuses else 200

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self._handle()

            def do_GET(self) -> None:  # noqa: N802
                self._handle()

            def do_OPTIONS(self) -> None:  # noqa: N802 (CloudEvents webhook validation handshake)
                self._handle()

            def _handle(self) -> None:
                try:
                    self._answer()
                finally:
                    with receiver._lock:
                        receiver.handled += 1

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._next_status()
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._record(Received(self.command, self.path, headers, body, status))
                receiver._open.wait(timeout=60)
                if receiver._server is None:
                    return  # went down while this request hung: no answer, as from a dead host
                # Event Grid answers a JSON object; a namespace topic's client parses it.
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    # The publisher gave up first (its read timeout, while the receiver hung): as from Event Grid,
                    # an answer nobody waits for any more is simply lost.
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler


@pytest.fixture
def eventgrid_receiver() -> Iterator[EventGridReceiver]:
    """A fresh receiver on a free port of 127.0.0.1, stopped after the test."""
    with EventGridReceiver() as receiver:
        yield receiver
