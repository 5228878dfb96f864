"""The Flask application factory: everything is built here, nothing at import time."""

from __future__ import annotations

from typing import Any

from flask import Flask

from fraud_service.config import Settings


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web app for `settings` (read from FRAUD_* variables when not given)."""
    app = Flask(__name__)
    app.config["SETTINGS"] = settings if settings is not None else Settings.from_env()
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    if test_config:
        app.config.update(test_config)

    from api import status

    app.register_blueprint(status.bp)
    return app
