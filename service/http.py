"""/metrics, /healthz and /readyz on one small HTTP server thread."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from driftline.service import metrics


class Health:
    """What the run loop tells the probes. Written by the loop thread, read by the HTTP thread."""

    def __init__(self, stuck_after_s: float) -> None:
        self.stuck_after_s = stuck_after_s
        self._last_beat = time.monotonic()
        self._assigned = 0
        self._broker_ok = False
        self._started = False
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def set_state(
        self,
        *,
        started: bool | None = None,
        assigned: int | None = None,
        broker_ok: bool | None = None,
    ) -> None:
        with self._lock:
            if started is not None:
                self._started = started
            if assigned is not None:
                self._assigned = assigned
            if broker_ok is not None:
                self._broker_ok = broker_ok
            metrics.BROKER_REACHABLE.set(int(self._broker_ok))
            metrics.READY.set(int(self._started and self._assigned > 0 and self._broker_ok))

    def live(self) -> tuple[bool, dict[str, object]]:
        since = time.monotonic() - self._last_beat
        ok = since < self.stuck_after_s
        return ok, {"status": "ok" if ok else "stuck", "seconds_since_loop": round(since, 3)}

    def ready(self) -> tuple[bool, dict[str, object]]:
        with self._lock:
            ok = self._started and self._assigned > 0 and self._broker_ok
            return ok, {
                "status": "ready" if ok else "not_ready",
                "assigned_partitions": self._assigned,
                "broker_reachable": self._broker_ok,
            }


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the server on a daemon thread; ``port`` 0 picks a free one (see server_address)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, orjson.dumps(body), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes hit these endpoints every few seconds; access logs would drown the decisions.
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="driftline-http", daemon=True).start()
    return server
