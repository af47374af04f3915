"""A local stand-in for an Event Grid subscriber: prints every CloudEvent the app publishes.

    python samples/event_receiver.py            # listens on http://127.0.0.1:7072/api/events

Point the app at it (local.settings.json, or the environment of a CLI command):
    PROMOTION_EVENTS_ENDPOINT=http://127.0.0.1:7072/api/events
    PROMOTION_EVENTS_KEY=local-key      # any value; the receiver shows that it arrived as aeg-sas-key

Standard library only, for a developer's machine; in Azure, subscribe a Logic App, a webhook or a Function to the
topic instead (README, "Notifications").
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            events = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        key = "with" if self.headers.get("aeg-sas-key") else "without"
        for event in events if isinstance(events, list) else [events]:
            print(f"{event.get('time')}  {event.get('type'):<36} {event.get('subject')}  id={event.get('id')}")
            print(f"    data: {json.dumps(event.get('data'))}")
        print(f"    ({len(events)} event(s) in one batch, {key} an access key)", flush=True)
        self.send_response(200)  # Event Grid's publish API answers 200; anything else is a failure to the SDK
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per event above is enough


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7072
    print(f"listening on http://127.0.0.1:{port}/api/events", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
