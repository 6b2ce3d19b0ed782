"""A real webhook receiver on 127.0.0.1 for the workflow tests: an HTTP server in a thread that
records every POST (headers and body) and answers the statuses it is told to, in turn."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """Listens on ``port`` (0: a free one) until ``stop``; ``answers`` are the statuses given to
    the first POSTs, then 200."""

    def __init__(self, port: int = 0, answers: tuple[int, ...] = ()) -> None:
        self.received: list[Received] = []
        self._answers = list(answers)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._answers.pop(0) if receiver._answers else 200
                receiver.received.append(Received(dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
