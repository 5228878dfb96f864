"""Webhooks: who hears about changes, the outbox the changes write to, and the receivers' addresses.

A change that the returns system must hear about (an outcome after the first answer, a case closed)
calls `Outbox.emit` in its own transaction: the event and one pending delivery per webhook that takes
its type are stored with the change, or not at all, so an event is never lost nor announced for a
change that was rolled back. `fraud_service.feedback.dispatch` sends what is pending.

A receiver's URL must be http(s) and resolve to public addresses only: link-local and cloud metadata
addresses are always refused, loopback and private ranges unless FRAUD_WEBHOOK_ALLOW_PRIVATE=true.
The check runs when a webhook is added and again, on the address actually connected to, at every
delivery (a name that later resolves elsewhere is refused then).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import socket
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fraud_service.errors import Problem, RequestInvalid, WebhookNotFound
from fraud_service.store import chain
from fraud_service.store.schema import Webhook, WebhookDelivery, WebhookEvent
from fraud_service.store.uow import UnitOfWork

EVENT_TYPES = ("assessment.outcome", "case.closed")
RETRY_HOURS = 24.0
MAX_URL = 2000
MAX_HOOKS = 50
METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")}
PENDING = threading.Event()
"""Set after a commit that wrote deliveries: this process's dispatcher wakes at once instead of at its next poll."""


def wake() -> None:
    PENDING.set()


# -- addresses ------------------------------------------------------------------------------------------------


CARRIERS = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")]
"""IPv6 ranges whose last 32 bits are an IPv4 address a router may deliver to: NAT64 (well-known and local-use),
IPv4-compatible, IPv4-translated. Python calls some of them global."""
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
"""Local-use NAT64 (RFC 8215): a network's own translator, private to it. Its prefix may be the /48 itself or a
longer one inside it, a /56, /64 or /96, and RFC 6052 places the IPv4 address differently for each (bit 64-71 is
always zero): which one a network uses cannot be told from the address, so every layout's is checked."""
LOCAL_NAT64_LAYOUTS = (((48, 16), (72, 16)), ((56, 8), (72, 24)), ((72, 32),))
"""Where a local-use NAT64 address may carry its IPv4 address: (first bit, bits) parts, high part first (RFC 6052's
/48, /56 and /64 prefixes; the /96's last 32 bits are a CARRIER's)."""
NOT_GLOBAL = [ipaddress.ip_network(n) for n in ("192.0.0.0/24", "3fff::/20", "5f00::/16")]
"""Reserved ranges Python 3.11's tables call global: IETF protocol assignments, IPv6 documentation (RFC 9637),
SRv6 segment ids (RFC 9602)."""


def _embedded(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo's client, NAT64 and the other CARRIERS): each is
    checked too."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
    last = int(ip) & 0xFFFFFFFF
    if any(ip in net for net in CARRIERS) and int(ip) > 1 and (last or ip not in LOCAL_NAT64):  # :: and ::1 are
        found.append(ipaddress.IPv4Address(last))  # themselves; a local-use one's zero is another layout's
    if ip in LOCAL_NAT64:
        for layout in LOCAL_NAT64_LAYOUTS:
            carried = 0
            for first, bits in layout:
                carried = carried << bits | (int(ip) >> (128 - first - bits)) & ((1 << bits) - 1)
            found.append(ipaddress.IPv4Address(carried) if carried else None)  # zero: another layout's
    return [x for x in found if x is not None]


def address_problem(address: str, allow_private: bool) -> str | None:
    """Why a webhook may not be sent to ADDRESS (an IP), or None: only public unicast addresses, and loopback or
    private ones when ALLOW_PRIVATE; never link-local or cloud metadata addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d
    for candidate in [*_embedded(ip), ip]:
        if candidate in METADATA or candidate.is_link_local:
            return f"{candidate} is a link-local or cloud metadata address"
        if candidate.is_multicast or candidate.is_unspecified:
            return f"{candidate} is not a unicast address"
        if candidate.is_loopback or candidate.is_private or candidate in LOCAL_NAT64:
            if not allow_private:
                return (f"{candidate} is a loopback or private address (set FRAUD_WEBHOOK_ALLOW_PRIVATE=true to "
                        "allow it)")
        elif not candidate.is_global or getattr(candidate, "is_site_local", False) \
                or any(candidate in net for net in NOT_GLOBAL if net.version == candidate.version):
            return f"{candidate} is not a public address (shared, reserved or site-local range)"
    return None


MAX_LOOKUPS = 32
"""Host lookups in flight at once in a process (each on its own thread until the system's resolver answers)."""
_LOOKUPS: dict[tuple[str, int], Future[list[Any]]] = {}
_LOOKUPS_LOCK = threading.Lock()


def _lookup(host: str, port: int, seconds: float) -> list[Any]:
    """getaddrinfo within SECONDS (it has no timeout of its own): a slow resolver costs an attempt, not a thread.

    An address written as one is read without a lookup. A name is looked up on a thread of its own, one lookup per
    host at a time (a second attempt waits for the first's answer), at most MAX_LOOKUPS hosts at once: a receiver
    whose DNS hangs held the four threads of a shared pool, and every other host, even 127.0.0.1, went unresolved
    (a helper's probe). Its thread stays until the resolver gives up; no other host waits for it."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST))
    key = (host.lower(), port)
    with _LOOKUPS_LOCK:
        future = _LOOKUPS.get(key)
        if future is None:
            if len(_LOOKUPS) >= MAX_LOOKUPS:
                raise OSError(f"{MAX_LOOKUPS} other host lookups are still waiting for the resolver")
            future = _LOOKUPS[key] = Future()
            threading.Thread(target=_resolve_into, args=(key, future), name="webhook-dns", daemon=True).start()
    return list(future.result(timeout=seconds))


def _resolve_into(key: tuple[str, int], future: Future[list[Any]]) -> None:
    try:
        future.set_result(list(socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)))
    except BaseException as exc:  # handed to every attempt waiting on it
        future.set_exception(exc)
    finally:
        with _LOOKUPS_LOCK:
            _LOOKUPS.pop(key, None)


@dataclass(frozen=True)
class Target:
    """Where a delivery connects: scheme, the URL's host (for Host and TLS), port, path, and the checked IPs."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def resolve(url: str, allow_private: bool, lookup_s: float = 5.0) -> Target:
    """The checked target of URL (its host resolved within LOOKUP_S), or RequestInvalid (field `url`) saying what is
    wrong with it."""
    def refuse(problem: str) -> RequestInvalid:
        return RequestInvalid([Problem("url", problem, "an http(s) URL of a receiver on a public address")])

    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise refuse(f"expected 1 to {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse("needs the scheme http or https and a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("carries a user name or password; put credentials in the secret's signature check instead")
    if parts.fragment:
        raise refuse("has a fragment (#...), which is never sent")
    if port == 0:
        raise refuse("has port 0; expected a port from 1 to 65535")
    port = port or (443 if parts.scheme == "https" else 80)
    if any(not "!" <= c <= "~" for c in url):
        raise refuse("has a space, a control or a non-ASCII character; percent-encode it (IDNA for a host)")
    try:
        infos = _lookup(parts.hostname, port, lookup_s)
    except FutureTimeout:
        raise refuse(f"host {parts.hostname!r} could not be resolved within {lookup_s:g} s") from None
    except (OSError, UnicodeError) as exc:
        raise refuse(f"host {parts.hostname!r} cannot be resolved ({exc})") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if (problem := address_problem(address, allow_private)) is not None:
            raise refuse(f"host {parts.hostname!r} resolves to a refused address: {problem}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses)


# -- the outbox -----------------------------------------------------------------------------------------------


class Outbox:
    """Events of one transaction: each is stored with a pending delivery for every webhook that takes its type."""

    def __init__(self, session: Session, at: dt.datetime, retry_hours: float = RETRY_HOURS) -> None:
        self.session, self.at, self.retry = session, at, dt.timedelta(hours=retry_hours)
        self._hooks: list[tuple[str, list[Any]]] | None = None

    def emit(self, kind: str, data: dict[str, Any]) -> str:
        """Store an event of KIND with DATA (and its deliveries); its id."""
        assert kind in EVENT_TYPES, kind
        if self._hooks is None:
            self._hooks = [(h.id, list(h.events)) for h in self.session.execute(
                select(Webhook.id, Webhook.events).where(Webhook.removed_at.is_(None))).all()]
        event_id = f"evt_{uuid.uuid4().hex}"
        self.session.add(WebhookEvent(id=event_id, type=kind, created_at=self.at, data=chain.canonical(data)))
        self.session.flush()  # the event row exists before the deliveries that refer to it
        for hook_id, events in self._hooks:
            if kind in events:
                self.session.add(WebhookDelivery(event_id=event_id, webhook_id=hook_id, status="pending", attempts=0,
                                                 next_at=self.at, expires_at=self.at + self.retry))
        return event_id


# -- managing webhooks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    url: str
    events: list[str]
    created_at: str
    created_by: str
    pending: int = 0
    dead: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": self.events, "created_at": self.created_at,
                "created_by": self.created_by, "pending": self.pending, "dead": self.dead}


@dataclass(frozen=True)
class DeliveryRecord:
    event_id: str
    type: str
    event_created_at: str
    status: str
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    delivered_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_events(events: object) -> list[str]:
    if (not isinstance(events, list) or not events or len(events) > len(EVENT_TYPES)
            or any(e not in EVENT_TYPES for e in events) or len(set(events)) != len(events)):
        raise RequestInvalid([Problem("events", f"got {events!r}",
                                      "a list of distinct event types from " + ", ".join(EVENT_TYPES))])
    return list(events)


def add(uow: UnitOfWork, *, url: str, events: object, actor: str, allow_private: bool,
        now: dt.datetime | None = None) -> tuple[WebhookRecord, str]:
    """A new webhook for URL taking EVENTS; with its secret (`whsec_...`), the only time it is shown."""
    problems = []
    try:
        resolve(url, allow_private)
    except RequestInvalid as exc:
        problems += exc.problems
    try:
        chosen = check_events(events)
    except RequestInvalid as exc:
        problems += exc.problems
    if problems:
        raise RequestInvalid(problems)
    now = now or dt.datetime.now(dt.UTC)
    hook = Webhook(id=f"whk_{secrets.token_hex(8)}", url=url, events=chosen, secret=f"whsec_{secrets.token_hex(24)}",
                   created_at=now, created_by=actor)
    with uow:
        uow.lock_chain()
        count = uow.session.execute(select(func.count()).select_from(Webhook)
                                    .where(Webhook.removed_at.is_(None))).scalar_one()
        if count >= MAX_HOOKS:
            raise RequestInvalid([Problem("url", f"there are {count} webhooks already",
                                          f"at most {MAX_HOOKS}; remove one first")])
        uow.session.add(hook)
        uow.record(kind="webhook_added", subject=hook.id, actor=actor, at=now,
                   payload={"webhook_id": hook.id, "url": url, "events": chosen})
        uow.commit()
    return _record(hook), hook.secret


def listing(uow: UnitOfWork) -> list[WebhookRecord]:
    """The webhooks in use, with how many deliveries each has pending and dead."""
    with uow.read():
        hooks = uow.session.execute(select(Webhook).where(Webhook.removed_at.is_(None))
                                    .order_by(Webhook.created_at, Webhook.id)).scalars().all()
        counts = dict(((w, s), n) for w, s, n in uow.session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.status.in_(("pending", "dead"))).group_by(WebhookDelivery.webhook_id,
                                                                              WebhookDelivery.status)).all())
        return [_record(h, counts.get((h.id, "pending"), 0), counts.get((h.id, "dead"), 0)) for h in hooks]


def remove(uow: UnitOfWork, *, webhook_id: str, actor: str, now: dt.datetime | None = None) -> None:
    """Stop sending to a webhook (its deliveries are kept, as history)."""
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()
        hook = _active(uow.session, webhook_id)
        hook.removed_at = now
        uow.record(kind="webhook_removed", subject=hook.id, actor=actor, at=now, payload={"webhook_id": hook.id})
        uow.commit()


def deliveries(uow: UnitOfWork, *, webhook_id: str, status: str | None = None,
               limit: int = 100) -> list[DeliveryRecord]:
    """A webhook's deliveries, newest event first (STATUS: only pending, delivered or dead ones)."""
    if status not in (None, "pending", "delivered", "dead"):
        raise RequestInvalid([Problem("status", f"got {status!r}", "pending, delivered or dead")])
    if not 1 <= limit <= 1000:
        raise RequestInvalid([Problem("limit", f"got {limit}", "an integer from 1 to 1000")])
    with uow.read():
        if uow.session.get(Webhook, webhook_id) is None:
            raise WebhookNotFound(f"no webhook {webhook_id!r}")
        query = (select(WebhookDelivery, WebhookEvent.type, WebhookEvent.created_at)
                 .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                 .where(WebhookDelivery.webhook_id == webhook_id))
        if status:
            query = query.where(WebhookDelivery.status == status)
        rows = uow.session.execute(query.order_by(WebhookEvent.created_at.desc(), WebhookDelivery.id.desc())
                                   .limit(limit)).all()
        return [_delivery(d, kind, created) for d, kind, created in rows]


def replay(uow: UnitOfWork, *, event_id: str, actor: str, webhook_id: str | None = None,
           retry_hours: float = RETRY_HOURS, now: dt.datetime | None = None) -> int:
    """Send event EVENT_ID again (to WEBHOOK_ID, else to every webhook in use that it went to, or that takes its
    type): each delivery is pending again with a new retry window. How many deliveries were queued."""
    now = now or dt.datetime.now(dt.UTC)
    with uow:
        uow.lock_chain()
        event = uow.session.get(WebhookEvent, event_id)
        if event is None:
            raise WebhookNotFound(f"no event {event_id!r}")
        hooks: Sequence[Webhook]
        if webhook_id is not None:
            hooks = [_active(uow.session, webhook_id)]
            if event.type not in hooks[0].events:
                raise RequestInvalid([Problem("webhook_id", f"{webhook_id} takes {', '.join(hooks[0].events)}",
                                              f"a webhook that takes {event.type} events")])
        else:
            hooks = uow.session.execute(select(Webhook).where(Webhook.removed_at.is_(None))).scalars().all()
        existing = {d.webhook_id: d for d in uow.session.execute(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)).scalars()}
        queued = []
        for hook in hooks:
            delivery = existing.get(hook.id)
            if delivery is None:
                if webhook_id is None and event.type not in hook.events:
                    continue
                delivery = WebhookDelivery(event_id=event_id, webhook_id=hook.id, attempts=0)
                uow.session.add(delivery)
            delivery.status, delivery.attempts = "pending", 0
            delivery.next_at, delivery.expires_at = now, now + dt.timedelta(hours=retry_hours)
            # a delivery in flight keeps its lease (its attempt is recorded, not sent a second time at once)
            queued.append(hook.id)
        uow.record(kind="webhook_replayed", subject=event_id, actor=actor, at=now,
                   payload={"event_id": event_id, "webhooks": queued})
        uow.commit()
    wake()
    return len(queued)


def _active(session: Session, webhook_id: str) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.removed_at is not None:
        raise WebhookNotFound(f"no webhook {webhook_id!r} in use")
    return hook


def _record(hook: Webhook, pending: int = 0, dead: int = 0) -> WebhookRecord:
    return WebhookRecord(hook.id, hook.url, list(hook.events), chain.utc_text(hook.created_at), hook.created_by,
                         pending, dead)


def _delivery(d: WebhookDelivery, kind: str, created: dt.datetime) -> DeliveryRecord:
    def text(at: dt.datetime | None) -> str | None:
        return chain.utc_text(at) if at is not None else None

    return DeliveryRecord(d.event_id, kind, chain.utc_text(created), d.status, d.attempts,
                          text(d.next_at) if d.status == "pending" else None, text(d.last_at), d.last_status,
                          d.last_error, text(d.delivered_at))
