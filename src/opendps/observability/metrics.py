"""Prometheus metrics of one OpenDPS process, served at `/metrics`.

`Metrics` owns its own `CollectorRegistry` (never prometheus-client's global default), so two
servers in one test process do not share counters, and it is handed to whoever counts
(app.wiring builds it; the engine, transports and APIs receive it). Label values must come
from small fixed vocabularies (an outcome, a reason, a route template), never from device
input such as registration IDs, or the series count grows without bound.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Latency buckets in seconds: a registration is a TLS round trip plus a few row writes (ms),
# while hub calls and group commits under load can take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric OpenDPS exports, registered in a per-process registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._registrations = Counter(
            "opendps_registrations",
            "Device registrations by outcome (assigned, failed, disabled, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self._attestation_failures = Counter(
            "opendps_attestation_failures",
            "Failed device attestations by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._request_seconds = Histogram(
            "opendps_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._open_connections = Gauge(
            "opendps_open_connections",
            "Client connections currently open, by listener.",
            ["listener"],
            registry=self.registry,
        )
        self._service_operations = Counter(
            "opendps_service_api_operations",
            "Service API operations by operation and outcome.",
            ["operation", "outcome"],
            registry=self.registry,
        )

    def count_registration(self, outcome: str) -> None:
        self._registrations.labels(outcome=outcome).inc()

    def count_attestation_failure(self, reason: str) -> None:
        self._attestation_failures.labels(reason=reason).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """`route` is the route template (`/enrollments/{id}`), never the concrete path."""
        status_class = f"{status // 100}xx"
        self._request_seconds.labels(route=route, method=method, status=status_class).observe(
            seconds
        )

    def connection_opened(self, listener: str) -> None:
        self._open_connections.labels(listener=listener).inc()

    def connection_closed(self, listener: str) -> None:
        self._open_connections.labels(listener=listener).dec()

    def count_service_operation(self, operation: str, outcome: str) -> None:
        self._service_operations.labels(operation=operation, outcome=outcome).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
