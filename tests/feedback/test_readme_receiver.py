"""The README's webhook receiver, run as written: it accepts a real delivery and refuses forged or stale ones."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from werkzeug.serving import make_server

from fraud_service.feedback import webhooks
from fraud_service.feedback.dispatch import Dispatcher
from fraud_service.store.uow import UnitOfWork
from tests.feedback.test_delivery import db, emit, status  # noqa: F401 (db is a fixture)

README = Path(__file__).resolve().parents[2] / "README.md"


def receiver_code() -> str:
    text = README.read_text()
    found = re.search(r"<!-- receiver:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's receiver block is gone"
    return found.group(1)


def post(url: str, body: bytes, signature: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Fraud-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_readme_receiver_takes_a_real_delivery_and_refuses_forgeries(db: Callable[[], UnitOfWork]) -> None:  # noqa: F811
    code = receiver_code()
    assert len([line for line in code.splitlines() if line.strip()]) <= 14
    server = make_server("127.0.0.1", 0, lambda *a: None)  # a port, before the URL and its secret exist
    url = f"http://127.0.0.1:{server.server_port}/fraud-events"
    hook, secret = webhooks.add(db(), url=url, events=["case.closed"], actor="t", allow_private=True)
    namespace: dict[str, object] = {"__name__": "__main__"}  # as if run as a script
    exec(code.replace('b"whsec_..."', repr(secret.encode())), namespace)  # noqa: S102 (the README's own code)
    server.app = namespace["app"]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sender = Dispatcher(db, allow_private=True, timeout_s=2)
    try:
        event_id = emit(db)
        assert sender.run_once(wait=True) == 1
        assert status(db, event_id) == {hook.id: "delivered"}  # the receiver answered 2xx
        body = b'{"id":"evt_x","type":"case.closed","created_at":"2026-01-01T00:00:00+00:00","data":{}}'
        now = int(time.time())

        def signed(t: int, key: str = secret, payload: bytes = body) -> str:
            return f"t={t},v1={hmac.new(key.encode(), f'{t}.'.encode() + payload, hashlib.sha256).hexdigest()}"

        assert post(url, body, signed(now)) == 204
        assert post(url, body, signed(now, key="whsec_guess")) == 400
        assert post(url, body.replace(b"evt_x", b"evt_y"), signed(now)) == 400
        assert post(url, body, signed(now - 3600)) == 400  # a recorded delivery replayed an hour later
        assert post(url, body, "") == 400
        assert post(url, body, f"t={now},v1=\u00e9") == 400  # not ASCII: compare_digest on text raised (a 500)
    finally:
        sender.close()
        server.shutdown()
