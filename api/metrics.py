"""Prometheus metrics: request latency, decisions by outcome, the model in service.

Under gunicorn, `fraud-service serve` points PROMETHEUS_MULTIPROC_DIR at $FRAUD_HOME/metrics
(emptied at start) so every worker's figures are summed at /metrics. Feast sets that variable to a
private temp directory when it is imported without one; then each process reports only its own
registry (not Feast's files).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, g, request

from api.auth import requires

BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The app's metrics, on a registry of its own (several apps may live in one test process)."""

    def __init__(self, shared_dir: str) -> None:
        self.shared_dir = shared_dir
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("fraud_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "endpoint", "status"], buckets=BUCKETS, registry=self.registry)
        self.decisions = Counter("fraud_decisions_total", "Assessments by decision (replays not counted)",
                                 ["decision", "model_version"], registry=self.registry)
        self.model = Gauge("fraud_model_info", "The model and policy in service (1 while loaded)",
                           ["model_version", "policy_version"], registry=self.registry, multiprocess_mode="max")

    def decided(self, response: dict[str, Any]) -> None:
        self.decisions.labels(response["decision"], response["model_version"]).inc()

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == self.shared_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def install(app: Flask, shared_dir: str) -> Metrics:
    """Metrics for APP; workers' figures are summed when PROMETHEUS_MULTIPROC_DIR is SHARED_DIR."""
    metrics = Metrics(shared_dir)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.latency.labels(request.method, endpoint, str(response.status_code)).observe(
            time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.get("/metrics")
    @requires("metrics")
    def metrics_view() -> Response:
        """Prometheus text exposition (a `metrics` or admin key: the figures say how the service is used)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    return metrics
