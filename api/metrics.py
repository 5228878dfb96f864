"""Prometheus metrics: request latency, decisions by outcome, the model in service.

Under gunicorn, `fraud-service serve` points PROMETHEUS_MULTIPROC_DIR at $FRAUD_HOME/metrics/PORT
(emptied at start; one per instance on a shared home) so every worker's figures are summed at
/metrics. Feast sets that variable to a private temp directory when it is imported without one;
then each process reports only its own registry (not Feast's files).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, Response, g, request

from api.auth import requires

log = logging.getLogger(__name__)
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The app's metrics, on a registry of its own (several apps may live in one test process)."""

    def __init__(self, shared_dir: str) -> None:
        self.shared_dir = shared_dir
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.monitored: dict[str, Any] = {}  # the monitor's gauges and when they were computed
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("fraud_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "endpoint", "status"], buckets=BUCKETS, registry=self.registry)
        self.decisions = Counter("fraud_decisions_total", "Assessments by decision (replays not counted)",
                                 ["decision", "model_version"], registry=self.registry)
        self.model = Gauge("fraud_model_info", "The model and policy in service (1 while loaded)",
                           ["model_version", "policy_version"], registry=self.registry, multiprocess_mode="max")

    def observed(self, method: str, endpoint: str, status: int, started: float) -> None:
        """A request's latency (STARTED a `time.perf_counter()`), by method (a made-up verb is `other`, no new
        series), route and status."""
        self.latency.labels(method if method in METHODS else "other", endpoint, str(status)).observe(
            time.perf_counter() - started)

    def decided(self, response: dict[str, Any]) -> None:
        self.decisions.labels(response["decision"], response["model_version"]).inc()

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == self.shared_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


MONITOR_DAYS = 7
MONITOR_TTL_S = 60.0


def monitor_gauges(report: dict[str, Any]) -> bytes:
    """The monitor's figures (fraud_service.scoring.monitor) as Prometheus gauges."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    def family(name: str, text: str, labels: list[str], values: list[tuple[list[str], float]]) -> Any:
        g = GaugeMetricFamily(f"fraud_monitor_{name}", f"{text} (assessments of the last {MONITOR_DAYS} days)",
                              labels=labels)
        for label_values, value in values:
            g.add_metric(label_values, float("nan") if value is None else float(value))
        return g

    lab, score = report["label_delay"], report["score"]
    families = [
        family("assessments", "Assessments in the window", [], [([], report["decisions"]["returns"])]),
        family("decision_rate", "Share of returns by decision", ["decision"],
               [([k], v) for k, v in report["decisions"]["rates"].items()]),
        family("friction_share", "Share of returns labelled legit that were not approved at once", [],
               [([], report["friction"]["share"])]),
        family("review_precision", "Share of analyst-labelled reviews that were fraud or abuse", [],
               [([], report["review_precision"]["precision"])]),
        family("label_delay_days", "Days from assessment to label", ["quantile"],
               [(["0.5"], lab["median_days"]), (["0.9"], lab["p90_days"])]),
        family("recall", "Share of bad returns not approved at once", ["kind"],
               [(["known"], lab["recall_known"]), (["estimated"], lab["recall_estimated"])]),
        family("money", "Refunds and losses, in the dataset's currency", ["kind"],
               [([k], v) for k, v in report["money"].items()]),
        family("score_psi", "PSI of the score against the training sample", [], [([], score["psi"])]),
        family("score_drifted", "1 when the score's PSI is above the drift threshold", [],
               [([], 1.0 if score["drifted"] else 0.0)]),
        family("feature_psi", "PSI of a feature against the training sample", ["feature"],
               [([k], v["psi"]) for k, v in report["features"].items()]),
        family("feature_drifted", "1 when a feature's PSI is above the drift threshold", ["feature"],
               [([k], 1.0 if v["drifted"] else 0.0) for k, v in report["features"].items()]),
    ]

    class _Collector:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]
    return generate_latest(registry)


def monitor_exposition(cache: dict[str, Any]) -> bytes:
    """The monitor's gauges, computed at most once a MONITOR_TTL_S per app (kept in CACHE); none when the database
    is down."""
    import datetime as dt

    from api.core import core
    from fraud_service.errors import FraudServiceError
    from fraud_service.scoring import monitor

    now = time.monotonic()
    if "at" not in cache or now - cache["at"] >= MONITOR_TTL_S:
        end = dt.datetime.now(dt.UTC)
        try:
            report = monitor.live(core().uow(), core().settings, start=end - dt.timedelta(days=MONITOR_DAYS), end=end)
            text = monitor_gauges(report)
        except FraudServiceError as exc:
            text = f"# fraud_monitor: no monitor gauges this minute ({exc})\n".encode()
        except Exception:  # a damaged training sample, a warehouse that cannot be read: the other metrics stand
            log.exception("the monitor's gauges could not be computed")
            text = b"# fraud_monitor: no monitor gauges this minute (see the log)\n"
        cache.update(at=now, text=text)  # a failure is cached too: one try a minute, not one a scrape
    return bytes(cache["text"])


METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
"""The HTTP methods labelled by name; any other a client sends is counted as `other`."""


def install(app: Flask, shared_dir: str) -> Metrics:
    """Metrics for APP; workers' figures are summed when PROMETHEUS_MULTIPROC_DIR is SHARED_DIR."""
    metrics = Metrics(shared_dir)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observed(request.method, endpoint, response.status_code, g.get("started", time.perf_counter()))
        return response

    @app.get("/metrics")
    @requires("metrics")
    def metrics_view() -> Response:
        """Prometheus text exposition (a `metrics` or admin key: the figures say how the service is used)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition() + monitor_exposition(metrics.monitored), mimetype=CONTENT_TYPE_LATEST)

    return metrics
