"""`promotion serve`: the app on this machine, on the local backend, for the console and the API.

It serves what the Functions host would index: the function objects of `function_app.app`, called with the
binding objects the host passes (func.HttpRequest for each HTTP request, func.QueueMessage for each job,
TimerRequest on each timer's NCRONTAB schedule). Queue messages stay in this process: the job an approval
queues is deployed at once (retried five times, then handed to the poison handler, as the host does).

It listens on 127.0.0.1 only. Nothing stands in front of it, so it plays the platform's part: it drops any
identity header a client sends and puts in the one given with `--as` (and `--role`). That exists only here,
and is refused when the app runs in Azure (WEBSITE_INSTANCE_ID is set).
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("promotion")

ROUTE_PREFIX = "/api/"
MAX_DEQUEUE = 5  # the host's default maxDequeueCount before a message goes to the poison queue
MAX_REQUEST = 1024 * 1024  # the API refuses bodies over 64 KiB itself; this only bounds what is read
IDENTITY_HEADERS = ("x-ms-client-principal", "x-ms-client-principal-name", "x-ms-client-principal-id")
SIGN_IN = "/.auth/login/aad"


@dataclass
class Identity:
    """Who the local server says is calling, as App Service Authentication would."""

    name: str
    roles: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        claims = [{"typ": "name", "val": self.name}] + [{"typ": "roles", "val": role} for role in self.roles]
        principal = json.dumps({"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims})
        return {
            "X-MS-CLIENT-PRINCIPAL-NAME": self.name,
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(principal.encode()).decode(),
        }


# --- NCRONTAB ----------------------------------------------------------------------------------------------

_FIELDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # second minute hour day month day-of-week


def cron_fields(schedule: str) -> list[frozenset[int]]:
    """The six fields of an NCRONTAB expression (`*`, `*/n`, `a`, `a-b`, `a-b/n`, lists), as sets of values."""
    parts = schedule.split()
    if len(parts) != 6:
        raise ValueError(f"{schedule!r} is not a six-field NCRONTAB expression")
    fields = []
    for text, (low, high) in zip(parts, _FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", item)
            if not match:
                raise ValueError(f"{schedule!r}: cannot read {item!r}")
            span, step = match.group(1), int(match.group(2) or 1)
            if span == "*":
                start, end = low, high
            else:
                start, _, end_text = span.partition("-")
                start, end = int(start), int(end_text or (high if match.group(2) else start))
            if not low <= start <= end <= high or step < 1:
                raise ValueError(f"{schedule!r}: {item!r} is out of range")
            values.update(range(start, end + 1, step))
        fields.append(frozenset(values))
    return fields


def cron_due(fields: list[frozenset[int]], moment: datetime) -> bool:
    weekday = (moment.weekday() + 1) % 7  # NCRONTAB: 0 is Sunday
    values = (moment.second, moment.minute, moment.hour, moment.day, moment.month, weekday)
    return all(value in allowed for value, allowed in zip(values, fields, strict=True))


# --- the server --------------------------------------------------------------------------------------------


@dataclass
class _Route:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    literal: bool
    outputs: dict[str, str]  # output binding name -> queue name


@dataclass
class _Captured:
    """An output binding (func.Out[str]): what the host would put on a queue."""

    values: list[str] = field(default_factory=list)

    def set(self, value: str) -> None:
        self.values.append(value)

    def get(self) -> str | None:
        return self.values[-1] if self.values else None


class LocalApp:
    """The indexed functions, with an HTTP server, an in-process queue and the timers around them."""

    def __init__(self, functions: Mapping[str, Any], *, port: int = 7071, identity: Identity | None = None):
        self.identity = identity
        self.functions = {name: function.get_user_function() for name, function in functions.items()}
        self.routes: list[_Route] = []
        self.queue_triggers: dict[str, str] = {}  # queue name -> function name
        self.timers: dict[str, list[frozenset[int]]] = {}
        for name, function in functions.items():
            self._index(name, json.loads(function.get_function_json())["bindings"])
        # Literal routes first, as the host matches them: "promotions" before "promotions/{id}".
        self.routes.sort(key=lambda route: not route.literal)
        self.messages: queue.Queue[tuple[str, str, int] | None] = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._busy = 0

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _index(self, name: str, bindings: list[dict[str, Any]]) -> None:
        trigger = next(b for b in bindings if b["direction"] == "IN" and b["type"].endswith("Trigger"))
        if trigger["type"] == "httpTrigger":
            template = trigger["route"]
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            outputs = {b["name"]: b["queueName"] for b in bindings if b["direction"] == "OUT" and b["type"] == "queue"}
            methods = frozenset(method.upper() for method in trigger["methods"])
            self.routes.append(_Route(name, methods, re.compile(regex), "{" not in template, outputs))
        elif trigger["type"] == "queueTrigger":
            self.queue_triggers[trigger["queueName"]] = name
        elif trigger["type"] == "timerTrigger":
            self.timers[name] = cron_fields(trigger["schedule"])

    # -- lifecycle

    def start(self) -> LocalApp:
        for target in (self.server.serve_forever, self._work, self._tick):
            thread = threading.Thread(target=target, daemon=True, name=f"serve-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.messages.put(None)
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no queued job is waiting or running (the tests' way to see a deployment finish)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0 and self.messages.empty(), timeout=timeout)

    # -- the queue

    def enqueue(self, queue_name: str, body: str, attempt: int = 1) -> None:
        with self._idle:
            self._busy += 1
        self.messages.put((queue_name, body, attempt))

    def _work(self) -> None:
        import azure.functions as func

        while True:
            item = self.messages.get()
            if item is None:
                return
            queue_name, body, count = item
            try:
                name = self.queue_triggers.get(queue_name)
                if name is None:
                    log.warning("no function listens to queue %s; message dropped", queue_name)
                    continue
                try:
                    self.functions[name](func.QueueMessage(body=body.encode()))
                except Exception as error:
                    log.warning("%s failed (attempt %d of %d): %s", name, count, MAX_DEQUEUE, error)
                    if count < MAX_DEQUEUE:
                        self.enqueue(queue_name, body, count + 1)
                    else:
                        self.enqueue(f"{queue_name}-poison", body)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    # -- the timers

    def run_timer(self, name: str) -> None:
        from azure.functions.timer import TimerRequest

        try:
            self.functions[name](TimerRequest(past_due=False))
        except Exception as error:  # the host records a failed run and keeps the schedule
            log.warning("timer %s failed: %s", name, error)

    def _tick(self) -> None:
        last = None
        while not self._stop.wait(0.2):
            moment = datetime.now(timezone.utc).replace(microsecond=0)  # real time: schedules are wall-clock
            if moment == last:
                continue
            last = moment
            for name, fields in self.timers.items():
                if cron_due(fields, moment):
                    self.run_timer(name)

    # -- HTTP

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict, bytes]:
        import azure.functions as func

        parts = urlsplit(target)
        path = unquote(parts.path)
        if path == SIGN_IN:
            text = "promotion serve has no sign-in: restart it with --as NAME [--role ROLE] to choose who you are\n"
            return 401, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
        if not path.startswith(ROUTE_PREFIX):
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"not found\n"
        route_path = path[len(ROUTE_PREFIX) :]
        allowed = False
        for route in self.routes:
            match = route.pattern.fullmatch(route_path)
            if not match:
                continue
            if (method if method != "HEAD" else "GET") not in route.methods:
                allowed = True
                continue
            kept = {key: value for key, value in headers.items() if key.lower() not in IDENTITY_HEADERS}
            request = func.HttpRequest(
                method,
                f"{self.url}{target}",
                headers={**kept, **(self.identity.headers() if self.identity else {})},
                params=dict(parse_qsl(parts.query, keep_blank_values=True)),
                route_params=match.groupdict(),
                body=body,
            )
            outputs = {binding: _Captured() for binding in route.outputs}
            response = self.functions[route.name](request, **outputs)
            for binding, captured in outputs.items():
                for value in captured.values:
                    self.enqueue(route.outputs[binding], value)
            answer_headers = dict(response.headers)
            answer_headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
            return response.status_code, answer_headers, response.get_body()
        if allowed:
            return 405, {"Content-Type": "text/plain; charset=utf-8"}, b"method not allowed\n"
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"not found\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_REQUEST:
                    self._answer(413, {"Content-Type": "text/plain"}, b"request body too large\n")
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    status, headers, payload = app.handle(self.command, self.path, dict(self.headers), body)
                except Exception:
                    log.exception("unexpected error serving %s %s", self.command, self.path)
                    status, headers, payload = 500, {"Content-Type": "text/plain"}, b"internal error\n"
                self._answer(status, headers, payload)

            def _answer(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), format % args)

        return Handler


def run(port: int, identity: Identity | None, announce: Callable[[str], None] = print) -> int:
    """The command: configure the local backend, index the app, serve until interrupted."""
    import os

    from promotion.cli.local import CommandError

    if os.environ.get("WEBSITE_INSTANCE_ID"):
        raise CommandError(
            "promotion serve is for a local machine: it may not run in Azure (WEBSITE_INSTANCE_ID is set)"
        )
    os.environ["PROMOTION_BACKEND"] = "local"
    os.environ["PROMOTION_STATE_STORE"] = "sqlite"
    # Nothing stands in front of this server: it sets the identity headers itself (and drops the client's).
    os.environ["PROMOTION_TRUST_IDENTITY_HEADERS"] = "true"
    from function_app import app
    from promotion import wiring

    wiring.reset()
    wiring.policy()  # a broken policy stops here, with its message
    functions = {function.get_function_name(): function for function in app.get_functions()}
    try:
        local = LocalApp(functions, port=port, identity=identity)
    except OSError as error:
        raise CommandError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    local.start()
    who = f"as {identity.name} ({', '.join(identity.roles) or 'no roles'})" if identity else "with nobody signed in"
    announce(f"Serving the app {who} on the local backend ({wiring.settings().local_root})")
    announce(f"Console: {local.url}/api/console")
    announce("Press Ctrl+C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        local.stop()
    return 0
