"""The Flask application factory: everything is built here, nothing at import time."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

from fraud_service.config import Settings


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web app for `settings` (read from FRAUD_* variables when not given).

    The feature store, the production model and its policy are loaded here, once per worker,
    with a warm-up call. `test_config` may pass a ready `SERVICE` (tests) and Flask settings.
    """
    app = Flask(__name__)
    app.config["SETTINGS"] = settings if settings is not None else Settings.from_env()
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)

    from api import (
        assess_path,
        cases,
        core,
        entities,
        errors,
        feedback,
        lists,
        logs,
        metrics,
        models,
        openapi,
        paths,
        queues,
        returns,
        rules,
        status,
        ui,
    )
    from fraud_service import bootstrap

    logs.configure(app.config["SETTINGS"].log_level)
    service = app.config.get("SERVICE") or bootstrap.build(app.config["SETTINGS"])
    app.extensions["fraud"] = service
    shared = os.environ.get("FRAUD_METRICS_DIR") or str(app.config["SETTINGS"].home / "metrics")  # set by `serve`
    app.extensions["metrics"] = metrics.install(app, shared)
    gauge = app.extensions["metrics"].model
    if service.assessor is not None:
        gauge.labels(service.assessor.scorer.version, service.assessor.policy.version).set(1)
    if service.watch is not None:
        def swapped(before: Any, after: Any) -> None:
            gauge.labels(before.scorer.version, before.policy.version).set(0)
            gauge.labels(after.scorer.version, after.policy.version).set(1)

        service.watch.on_swap = swapped
    logs.install(app)
    errors.register(app)
    app.wsgi_app = core.ChunkedBodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]
    paths.install(app)  # `//healthz`, `/%68ealthz`: 404, as any path no route spells
    assess_path.install(app)  # an ordinary assessment is answered before Flask builds a request
    app.before_request(core.refuse_unstorable_text)
    app.url_map.converters["id"] = entities.IdConverter
    app.url_map.merge_slashes = False  # `//v1/...` is a JSON 404, not werkzeug's 308 redirect with an HTML body
    for blueprint in (status.bp, returns.bp, feedback.bp, lists.bp, rules.bp, cases.bp, queues.bp, entities.bp,
                      models.bp,
                      openapi.bp):
        app.register_blueprint(blueprint)
    ui.install(app)
    logging.getLogger("api").info("app ready", extra={"fields": {
        "pid": os.getpid(), "model_version": service.assessor.scorer.version if service.assessor else None,
        "problems": service.problems}})
    return app
