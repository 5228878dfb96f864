"""The webhook dispatcher: sends the outbox's pending deliveries, signed, at least once, without one slow receiver
holding up the others.

A round first records the attempts finished since the last one (one transaction for all of them), then
claims the due deliveries (pending, `next_at` passed, no live lease) with a short lease, webhook by
webhook up to each one's free share, so several processes (every `serve` worker runs a dispatcher,
and `fraud-service webhooks run` is one more) never send one delivery at the same time, and a
receiver with a backlog never crowds out the others; then POSTs each on a bounded thread pool, at
most `per_hook` at a time to one receiver, each connect and read bounded by `timeout_s`. A 2xx answer
delivers it; anything else (an error status, a refused or hung connection, a redirect, an address
that is no longer allowed) is retried after an exponential back-off (`backoff_s` at first, doubling,
at most an hour) until the delivery's retry window (24 h) has passed, and it is then marked dead;
`webhooks replay` sends it again. A process killed mid-delivery leaves a lease that expires: the next
round sends it again, with the same event id. Rounds run when a commit in this process wrote
deliveries (`webhooks.PENDING`) and every `poll_s` otherwise.

Every request carries `Fraud-Event-Id` and `Fraud-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<raw body>")>`; the body is the same bytes on every attempt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from fraud_service.errors import RequestInvalid
from fraud_service.feedback.webhooks import PENDING, Target, event_body, resolve
from fraud_service.store.schema import Webhook, WebhookDelivery, WebhookEvent
from fraud_service.store.uow import UnitOfWork

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 3600.0
USER_AGENT = "fraud-service-webhooks/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Fraud-Signature` header of BODY sent at TIMESTAMP."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempts: int, base_s: float) -> float:
    """Seconds before the next attempt after ATTEMPTS failed ones: BASE_S doubling, at most an hour, with jitter
    (80 to 100 %) so retries of many events do not arrive together."""
    return min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S) * random.uniform(0.8, 1.0)


@dataclass(frozen=True)
class Attempt:
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Pinned(http.client.HTTPConnection):
    """A connection to the address that was checked, not to whatever the name resolves to by then."""

    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float, allow_private: bool) -> Attempt:
    """POST BODY to URL once, on an address the webhook rules allow; never follows a redirect."""
    try:
        target = resolve(url, allow_private)
    except RequestInvalid as exc:
        return Attempt(None, exc.problems[0].problem)
    error = "no address"
    for address in target.addresses:
        kind = _PinnedTLS if target.scheme == "https" else _Pinned
        connection = kind(target, address, timeout_s)
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read(300)
            if 200 <= answer.status < 300:
                return Attempt(answer.status, None)
            return Attempt(answer.status, f"HTTP {answer.status}: {text.decode('utf-8', 'replace')[:200]}")
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            connection.close()
    return Attempt(None, error)


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    webhook_id: str
    url: str
    secret: str
    event: dict[str, object]


class Dispatcher:
    """Sends pending deliveries in the background (`start`), or one round at a time (`run_once`, tests and the CLI)."""

    def __init__(self, uow: Callable[[], UnitOfWork], *, allow_private: bool = False, timeout_s: float = 5.0,
                 backoff_s: float = 15.0, workers: int = 16, per_hook: int = 2, poll_s: float = 0.5,
                 lease_s: float | None = None, on_result: Callable[[Claim, Attempt], None] | None = None) -> None:
        self.uow, self.allow_private, self.timeout_s, self.backoff_s = uow, allow_private, timeout_s, backoff_s
        self.per_hook, self.poll_s = per_hook, poll_s
        self.lease = dt.timedelta(seconds=lease_s if lease_s is not None else 3 * timeout_s + 5)
        self.on_result = on_result
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._results: queue.SimpleQueue[tuple[Claim, Attempt, dt.datetime]] = queue.SimpleQueue()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        PENDING.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:  # what finished is recorded; what is still in flight is sent again once its lease runs out
            self._settle_done()
        except Exception:
            log.warning("recording the last webhook attempts failed; they will be sent again", exc_info=True)

    def _loop(self) -> None:
        quiet_until = 0.0
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database is down, busy or not migrated: the next round tries again
                if time.monotonic() >= quiet_until:  # once a minute, not twice a second
                    log.warning("webhook dispatch round failed (retrying every %g s): %s", self.poll_s, exc)
                    quiet_until = time.monotonic() + 60
            PENDING.wait(self.poll_s)
            PENDING.clear()

    def run_once(self, wait: bool = False) -> int:
        """Record the attempts made since the last round, then claim what is due and send it on the pool (WAIT:
        until sent and recorded); how many deliveries were claimed."""
        self._settle_done()
        claims = self._claim()
        futures = [self._pool.submit(self._deliver, claim) for claim in claims]
        if wait:
            for future in futures:
                future.result()
            self._settle_done()
        return len(claims)

    def _claim(self) -> list[Claim]:
        """Lease what is due, webhook by webhook, up to each one's free share: a receiver with a backlog (or one
        that hangs) never fills a round and keeps the others waiting."""
        now = dt.datetime.now(dt.UTC)
        free = (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now)
        with self._lock:
            busy = dict(self._busy)
        claims = []
        with self.uow() as uow:
            hooks = uow.session.execute(select(Webhook.id, Webhook.url, Webhook.secret)
                                        .where(Webhook.removed_at.is_(None))).all()
            for hook_id, url, secret in hooks:
                room = self.per_hook - busy.get(hook_id, 0)
                if room <= 0:
                    continue
                due = uow.session.execute(
                    select(WebhookDelivery.id, WebhookEvent).join(WebhookEvent,
                                                                  WebhookEvent.id == WebhookDelivery.event_id)
                    .where(WebhookDelivery.webhook_id == hook_id, WebhookDelivery.status == "pending",
                           WebhookDelivery.next_at <= now, free)
                    .order_by(WebhookDelivery.next_at, WebhookDelivery.id).limit(room)).all()
                for delivery_id, event in due:
                    taken = cast(CursorResult[Any], uow.session.execute(update(WebhookDelivery).where(
                        WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending", free)
                        .values(lease_until=now + self.lease))).rowcount
                    if taken:
                        claims.append(Claim(delivery_id, hook_id, url, secret, event_body(event)))
            uow.commit()
        with self._lock:
            for claim in claims:
                self._busy[claim.webhook_id] += 1
        return claims

    def _deliver(self, claim: Claim) -> None:
        try:
            body = json.dumps(claim.event, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Fraud-Event-Id": str(claim.event["id"]), "Fraud-Signature": sign(claim.secret, int(time.time()),
                                                                                         body)}
            attempt = post(claim.url, body, headers, timeout_s=self.timeout_s, allow_private=self.allow_private)
        except Exception as exc:  # never lose track of a claim: it is an attempt that failed
            attempt = Attempt(None, f"{type(exc).__name__}: {exc}")
        self._results.put((claim, attempt, dt.datetime.now(dt.UTC)))
        with self._lock:
            self._busy[claim.webhook_id] -= 1
        PENDING.set()  # record it, and the receiver may have more waiting

    def _settle_done(self) -> None:
        """Record every finished attempt in one transaction (a write per round, not per delivery: on SQLite each
        write waits for the evidence writer's lock). If that fails, their leases run out and they are sent again."""
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                break
        if not done:
            return
        with self.uow() as uow:
            for claim, attempt, at in done:
                self._settle(uow, claim, attempt, at)
            uow.commit()
        if self.on_result is not None:
            for claim, attempt, _ in done:
                self.on_result(claim, attempt)

    def _settle(self, uow: UnitOfWork, claim: Claim, attempt: Attempt, now: dt.datetime) -> None:
        delivery = uow.session.get(WebhookDelivery, claim.delivery_id)
        if delivery is None:
            return
        delivery.attempts += 1
        delivery.last_at, delivery.last_status, delivery.last_error = now, attempt.status, attempt.error
        delivery.lease_until = None
        expires = delivery.expires_at if delivery.expires_at.tzinfo else delivery.expires_at.replace(tzinfo=dt.UTC)
        if attempt.ok:
            delivery.status, delivery.delivered_at = "delivered", now
        elif now >= expires:
            delivery.status = "dead"
            log.warning("webhook %s: event %s is dead after %d attempts (%s)", claim.webhook_id,
                        claim.event["id"], delivery.attempts, attempt.error)
        else:
            delivery.next_at = now + dt.timedelta(seconds=backoff(delivery.attempts, self.backoff_s))
