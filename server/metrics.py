"""Prometheus metrics, in a registry of the application's own (never the global one).

Under ``HUIZHEN_WORKERS`` the supervisor (``server.workers``) runs the workers in
prometheus_client's multiprocess mode: each worker keeps its request figures in a file of its own,
and a scrape, whichever worker takes it, adds up every worker's. Collectors of one process's own
state (its realtime connections) go in :attr:`Metrics.local` and are reported as they are.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

#: The variable prometheus_client reads at import for its multiprocess mode.
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def shared_dir() -> str | None:
    """The directory of every worker's figures, when prometheus_client is in multiprocess mode."""
    if getattr(prometheus_values.ValueClass, "_multiprocess", False):
        return os.environ.get(SHARED_DIR_VARIABLE)
    return None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: Figures of this process only, never added up across workers.
        self.local = CollectorRegistry(auto_describe=True)
        self.shared_dir = shared_dir()
        self.requests = Counter(
            "huizhen_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "huizhen_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "huizhen_http_requests_in_flight",
            "HTTP requests being served",
            registry=self.registry,
            multiprocess_mode="livesum",  # the workers' sum, of those alive
        )

    def render(self) -> bytes:
        shared = self.registry
        if self.shared_dir is not None:  # every worker's figures, read from their files
            shared = CollectorRegistry()
            MultiProcessCollector(shared, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(shared) + generate_latest(self.local)
