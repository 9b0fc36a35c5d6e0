"""Prometheus metrics and structured access logs for every HTTP request."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series: they double the output and say little

access_log = logging.getLogger("recsys.access")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StdoutHandler(logging.StreamHandler):
    """Writes to `sys.stdout` as it is when a record arrives, not as it was when the handler
    was made: an app started after stdout was replaced (a test runner's capture, a process
    manager) logs to the live stream instead of a closed one."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns one; stdout is read live
        pass


def configure_access_log(enabled: bool) -> None:
    """JSON lines on stdout, one per request, apart from the other logs."""
    if not any(isinstance(h, StdoutHandler) for h in access_log.handlers):
        access_log.addHandler(StdoutHandler())
    access_log.propagate = False
    access_log.setLevel(logging.INFO if enabled else logging.WARNING)


class Metrics:
    """The server's metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("recsys_request_duration_seconds", "request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("recsys_fallback_users", "users answered with the popularity "
                                 "fallback (unknown to the model)", registry=self.registry)
        self.reloads = Counter("recsys_model_reloads", "model reloads by outcome", ["outcome"],
                               registry=self.registry)
        self.model = Gauge("recsys_model_info", "the model being served (value 1)",
                           ["model", "version", "source"], registry=self.registry)

    def serving(self, model: str, version: str, source: str) -> None:
        self.model.clear()
        self.model.labels(model=model, version=version, source=source).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ObserveMiddleware:
    """Pure ASGI middleware: times each request, counts it by route template (not raw path, so
    /similar/{item_id} stays one series), logs one JSON line, and returns an x-request-id."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "ts": round(time.time(), 3), "request_id": request_id, "method": scope["method"],
                    "path": scope["path"], "endpoint": endpoint, "status": status,
                    "ms": round(elapsed * 1000, 3), "client": client[0] if client else None}))


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")[:128]
    return None
