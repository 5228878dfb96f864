"""A WSGI app for testing the gunicorn worker alone: `/hold` keeps its thread two seconds, `/echo` answers with how
many body bytes it read."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/hold":
        time.sleep(2.0)  # the server busy with another request, as a slow assessment keeps its thread
        body = b"held"
    else:
        body = str(len(environ["wsgi.input"].read())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
