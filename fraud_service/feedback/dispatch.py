"""The webhook dispatcher: sends the outbox's pending deliveries, signed, at least once, without one slow receiver
holding up the others.

A round first records the attempts finished since the last one (one transaction for all of them), then
claims the due deliveries (pending, `next_at` passed, no live lease) with a lease and a token of its
own, webhook by webhook up to each one's free share and never more than the pool's free threads; then
POSTs each on that bounded pool, at most `per_hook` at a time to one receiver, and one at a time to a receiver
whose last attempt from this process failed (receivers that answer come first in a round): five hung
receivers held every thread and a sixth waited seconds for its events. The limits are per process: every
`serve` worker and every `webhooks run` sends on its own. An attempt (resolving
included) ends within 2 x `timeout_s`, well inside its lease, so several processes (every `serve`
worker runs a dispatcher, and `fraud-service webhooks run` is one more) never send one delivery at
the same time; only the holder of a delivery's current lease token records its attempt, so a late
result never overwrites a newer one. A receiver with a backlog never crowds out the others. A 2xx answer
delivers it; anything else (an error status, a refused or hung connection, a redirect, an address
that is no longer allowed) is retried after an exponential back-off (`backoff_s` at first, doubling,
at most an hour) until the delivery's retry window (24 h) has passed, and it is then marked dead;
`webhooks replay` sends it again. A process killed mid-delivery leaves a lease that expires: the next
round sends it again, with the same event id. Rounds run `gather_s` (50 ms) after a commit in this
process wrote deliveries or an attempt finished (`webhooks.PENDING`), so a burst is one round, and every
`poll_s` otherwise.

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
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Table, case, select, update

from fraud_service.errors import RequestInvalid
from fraud_service.feedback.webhooks import PENDING, Target, resolve
from fraud_service.store import chain
from fraud_service.store.schema import Webhook, WebhookDelivery, WebhookEvent
from fraud_service.store.uow import UnitOfWork

log = logging.getLogger(__name__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)
EVENTS = cast(Table, WebhookEvent.__table__)
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


def _cut(connection: http.client.HTTPConnection) -> None:
    """End an attempt that ran out of time: shutting the socket down wakes the thread blocked on it."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _clean(text: str) -> str:
    """A receiver's words as a database can keep them (PostgreSQL refuses NUL in text)."""
    return "".join(c if c.isprintable() else " " for c in text)[:300]


def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float, allow_private: bool) -> Attempt:
    """POST BODY to URL once, on an address the webhook rules allow; never follows a redirect. The whole attempt
    (resolving, connecting, sending, reading the answer, over every address) ends within 2 x TIMEOUT_S."""
    deadline = time.monotonic() + 2 * timeout_s
    try:
        target = resolve(url, allow_private, lookup_s=timeout_s)
    except RequestInvalid as exc:
        return Attempt(None, exc.problems[0].problem)
    error = "no address"
    for address in target.addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            return Attempt(None, f"no answer within {2 * timeout_s:g} s")
        kind = _PinnedTLS if target.scheme == "https" else _Pinned
        connection = kind(target, address, min(timeout_s, left))
        timer = threading.Timer(left, _cut, (connection,))
        timer.start()
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read(300)
            attempt = Attempt(answer.status, None)
            if attempt.ok:
                return attempt
            return Attempt(answer.status, _clean(f"HTTP {answer.status}: {text.decode('utf-8', 'replace')}"))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = _clean(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            timer.cancel()
            connection.close()
    return Attempt(None, error)


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    webhook_id: str
    url: str
    secret: str
    event: dict[str, object]
    token: str  # this claim's lease: only its holder may record the attempt
    attempts: int = 0  # made before this one


class Dispatcher:
    """Sends pending deliveries in the background (`start`), or one round at a time (`run_once`, tests and the CLI)."""

    def __init__(self, uow: Callable[[], UnitOfWork], *, allow_private: bool = False, timeout_s: float = 5.0,
                 backoff_s: float = 15.0, workers: int = 16, per_hook: int = 4, poll_s: float = 0.5,
                 lease_s: float | None = None, on_result: Callable[[Claim, Attempt], None] | None = None,
                 gather_s: float = 0.05, engine: Engine | None = None) -> None:
        self.uow, self.allow_private, self.timeout_s, self.backoff_s = uow, allow_private, timeout_s, backoff_s
        self.workers, self.per_hook, self.poll_s, self.gather_s = workers, per_hook, poll_s, gather_s
        # an attempt ends within 2 x timeout (`post`); the lease outlasts it, queueing included (claims never
        # exceed the free threads)
        self.lease = dt.timedelta(seconds=lease_s if lease_s is not None else 3 * timeout_s + 5)
        self.on_result = on_result
        self._engine = engine  # one of its own (disposed on close), else the caller's
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self._busy: Counter[str] = Counter()
        self._failing: set[str] = set()  # webhooks whose last attempt from this process failed
        self._inflight: set[int] = set()
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
        if self._engine is not None:
            self._engine.dispose()

    def _loop(self) -> None:
        quiet_until = 0.0
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database is down, busy or not migrated: the next round tries again
                if time.monotonic() >= quiet_until:  # once a minute, not twice a second
                    cause = exc.__cause__  # the driver's own words: "no such table" is not "cannot be reached"
                    why = f" ({str(cause).splitlines()[0][:300]})" if cause is not None and str(cause) else ""
                    log.warning("webhook dispatch round failed (retrying every %g s): %s%s", self.poll_s, exc, why)
                    quiet_until = time.monotonic() + 60
            if PENDING.wait(self.poll_s):
                # woken by a commit or a finished attempt: gather what else comes in the next moment, so a burst
                # is one round (one claim, one record of results) rather than a round per event
                self._stop.wait(self.gather_s)
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

    def _due(self, now: dt.datetime) -> Any:
        free = (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now)
        return (WebhookDelivery.status == "pending") & (WebhookDelivery.next_at <= now) & free

    def _claim(self) -> list[Claim]:
        """Lease what is due, webhook by webhook, up to each one's free share and the pool's free threads: a
        receiver with a backlog (or one that hangs) never fills a round and keeps the others waiting. A due
        delivery tried before and past its retry window is marked dead instead (one never tried gets its one
        attempt). Nothing due: a read, no write lock."""
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            busy, inflight, room_left = dict(self._busy), set(self._inflight), self.workers - len(self._inflight)
            failing = set(self._failing)
        if room_left <= 0:
            return []
        with self.uow().read() as reading:
            due_hooks = set(reading.session.execute(
                select(WebhookDelivery.webhook_id).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(self._due(now), Webhook.removed_at.is_(None)).distinct()).scalars())
        if not due_hooks:
            return []
        claims: list[Claim] = []
        d, e = DELIVERIES.c, EVENTS.c  # Core statements: a round costs little CPU
        with self.uow() as uow:
            hooks = uow.session.execute(select(Webhook.id, Webhook.url, Webhook.secret)
                                        .where(Webhook.id.in_(due_hooks), Webhook.removed_at.is_(None))).all()
            for hook_id, url, secret in sorted(hooks, key=lambda hook: hook[0] in failing):  # answering ones first
                share = 1 if hook_id in failing else self.per_hook
                room = min(share - busy.get(hook_id, 0), room_left - len(claims))
                if room <= 0:
                    continue
                due = uow.session.execute(
                    select(d.id, d.attempts, d.expires_at, e.id, e.type, e.created_at, e.data)
                    .join_from(DELIVERIES, EVENTS, e.id == d.event_id)
                    .where(d.webhook_id == hook_id, self._due(now), d.id.not_in(inflight or [-1]))
                    .order_by(d.next_at, d.id).limit(room)).all()
                for delivery_id, attempts, expires_at, event_id, kind, created_at, data in due:
                    if attempts and now >= chain.aware(expires_at):  # tried, and its window is over (a lost
                        uow.session.execute(update(DELIVERIES).where(d.id == delivery_id)
                                            .values(status="dead"))  # result left it pending)
                        continue
                    token = uuid.uuid4().hex
                    uow.session.execute(update(DELIVERIES).where(d.id == delivery_id)
                                        .values(lease_until=now + self.lease, lease_token=token))
                    body = {"id": event_id, "type": kind, "created_at": chain.utc_text(created_at),
                            "data": json.loads(data)}
                    claims.append(Claim(delivery_id, hook_id, url, secret, body, token, attempts))
            uow.commit()
        with self._lock:
            for claim in claims:
                self._busy[claim.webhook_id] += 1
                self._inflight.add(claim.delivery_id)
        return claims

    def _deliver(self, claim: Claim) -> None:
        try:
            body = json.dumps(claim.event, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Fraud-Event-Id": str(claim.event["id"]), "Fraud-Signature": sign(claim.secret, int(time.time()),
                                                                                         body)}
            attempt = post(claim.url, body, headers, timeout_s=self.timeout_s, allow_private=self.allow_private)
        except Exception as exc:  # never lose track of a claim: it is an attempt that failed
            attempt = Attempt(None, _clean(f"{type(exc).__name__}: {exc}"))
        self._results.put((claim, attempt, dt.datetime.now(dt.UTC)))
        PENDING.set()  # record it, and the receiver may have more waiting

    def _settle_done(self) -> None:
        """Record every finished attempt in one transaction (a write per round, not per delivery: on SQLite each
        write waits for the evidence writer's lock). An attempt whose lease was taken over (it expired, or a
        replay) is not recorded. If the database refuses the batch, each is tried in a transaction of its own, so
        one it cannot keep sinks no other; if that fails too, the leases run out and they are sent again."""
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                break
        if not done:
            return
        try:
            try:
                with self.uow() as uow:
                    for item in done:
                        self._settle(uow, *item)
                    uow.commit()
            except Exception:
                log.warning("recording %d webhook attempts together failed; recording them one by one", len(done))
                for item in done:
                    try:
                        with self.uow() as uow:
                            self._settle(uow, *item)
                            uow.commit()
                    except Exception:
                        log.exception("recording webhook delivery %s failed; it will be sent again",
                                      item[0].delivery_id)
        finally:
            with self._lock:
                for claim, attempt, _ in done:
                    self._busy[claim.webhook_id] -= 1
                    self._inflight.discard(claim.delivery_id)
                    if attempt.ok:
                        self._failing.discard(claim.webhook_id)
                    else:
                        self._failing.add(claim.webhook_id)
        if self.on_result is not None:
            for claim, attempt, _ in done:
                self.on_result(claim, attempt)

    def _settle(self, uow: UnitOfWork, claim: Claim, attempt: Attempt, now: dt.datetime) -> None:
        """One attempt's result, written only while CLAIM's lease token is the delivery's (a Core UPDATE)."""
        d = DELIVERIES.c
        values: dict[str, Any] = {"attempts": d.attempts + 1, "last_at": now, "last_status": attempt.status,
                                  "last_error": attempt.error, "lease_until": None, "lease_token": None}
        if attempt.ok:
            values.update(status="delivered", delivered_at=now)
        else:  # dead once its window is over, else retried after the back-off
            values.update(status=case((d.expires_at <= now, "dead"), else_="pending"),
                          next_at=now + dt.timedelta(seconds=backoff(claim.attempts + 1, self.backoff_s)))
        done = uow.session.execute(update(DELIVERIES).where(
            d.id == claim.delivery_id, d.lease_token == claim.token, d.status == "pending").values(**values))
        if not cast(CursorResult[Any], done).rowcount:
            log.info("webhook delivery %s: a later claim or a replay holds it; this attempt is not recorded",
                     claim.delivery_id)
