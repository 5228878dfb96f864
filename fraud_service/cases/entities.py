"""Search and entity pages: find a customer, return, order, token or case by its id, and everything known about a
customer or a token (address, payment, device, refund destination) in one place.

Two sources answer: the warehouse's current snapshot (DuckDB over its parquet files: what was ingested) and the
evidence database (what the service did since: assessments of returns not ingested yet, analysts' labels,
inspections the returns system reported, cases, lists). A snapshot never changes, so what it says is cached per
snapshot like the case page's histories (`investigation._cached`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from fraud_service.cases import service as cases
from fraud_service.cases.investigation import TOKEN_COLUMNS, _cached
from fraud_service.cases.records import CaseSummary
from fraud_service.data.labels import BAD, in_force
from fraud_service.data.warehouse import Snapshot
from fraud_service.errors import EntityNotFound, Problem, RequestInvalid
from fraud_service.scoring.request import show
from fraud_service.store.chain import aware, utc_text
from fraud_service.store.schema import Assessment, Case, CaseLink, Inspection, Label, ListEntry
from fraud_service.store.uow import UnitOfWork

if TYPE_CHECKING:
    from fraud_service.featurestore.online import OnlineFeatures

TOKEN_KINDS = tuple(TOKEN_COLUMNS)
SEARCH_KINDS = ("customer", "return", "order", "token", "case")
PER_KIND = 10
"""Search hits shown per kind; `more` names the kinds that had more."""
MAX_QUERY = 200
TIMELINE_LIMIT = 500
"""Events on an entity page's timeline, newest first; `counts` gives the totals."""
PEOPLE_LIMIT = 200
"""Customers listed on a token's page, and other customers listed per token on a customer's page (20)."""
OTHERS_PER_TOKEN = 20

# the snapshot's tables as DuckDB views; an optional table that was never ingested is an empty one
_EMPTY = {
    "customers": "SELECT NULL::VARCHAR customer_id, NULL::TIMESTAMP created_at, NULL::VARCHAR email_domain, "
                 "NULL::VARCHAR loyalty_tier WHERE false",
    "orders": "SELECT NULL::VARCHAR order_id, NULL::VARCHAR customer_id, NULL::TIMESTAMP placed_at, "
              "NULL::TIMESTAMP delivered_at, NULL::VARCHAR channel, NULL::VARCHAR payment_token, "
              "NULL::VARCHAR address_token, NULL::VARCHAR device_token, NULL::DOUBLE order_total, "
              "NULL::VARCHAR currency WHERE false",
    "returns": "SELECT NULL::VARCHAR return_id, NULL::VARCHAR order_id, NULL::VARCHAR customer_id, "
               "NULL::TIMESTAMP requested_at, NULL::VARCHAR return_type, NULL::VARCHAR channel, NULL::VARCHAR reason, "
               "NULL::INTEGER items_count, NULL::DOUBLE refund_amount, NULL::VARCHAR refund_method, "
               "NULL::VARCHAR refund_token WHERE false",
    "labels": "SELECT NULL::VARCHAR return_id, NULL::VARCHAR label, NULL::TIMESTAMP labelled_at, "
              "NULL::VARCHAR source WHERE false",
    "inspections": "SELECT NULL::VARCHAR return_id, NULL::TIMESTAMP inspected_at, NULL::VARCHAR outcome WHERE false",
}


def _connect(snapshot: Snapshot | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": 1})  # a page's query should not take both cores from scoring
    for table, empty in _EMPTY.items():
        path = snapshot.table_path(table) if snapshot is not None else None
        source = f"SELECT * FROM read_parquet('{path}')" if path is not None else empty
        con.execute(f"CREATE VIEW {table} AS {source}")
    return con


def shown(value: str) -> str:
    """VALUE quoted for a message as a problem quotes it (`request.show`: cut to 60 characters), with its length
    when it was cut: an answer does not echo a 100 KB id back."""
    quoted = show(value)
    return quoted if quoted == repr(value) else f"{quoted} ({len(value):,} characters)"


def _text(value: Any) -> str | None:
    return _when(value) if isinstance(value, dt.datetime) else value


def _when(value: dt.datetime) -> str:
    """A time as a search summary shows it to a person: to the minute, in UTC."""
    return f"{utc_text(value)[:16].replace('T', ' ')} UTC"


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# -- search ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    """One thing found: its kind and id, whose it is, and a line saying what it is."""

    kind: str  # customer, return, order, token, case
    id: str
    summary: str
    token_kind: str | None = None  # tokens: address, payment, device, refund
    customer_id: str | None = None  # an order's or return's customer (its page holds it)
    case_id: str | None = None  # a return's case, if it was flagged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[SearchHit]
    more: list[str]  # kinds with more than PER_KIND hits

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits], "more": self.more}


def check_query(text: object) -> str:
    """The search text, stripped, or RequestInvalid saying what a query is."""
    query = text.strip() if isinstance(text, str) else ""
    if not query:
        raise RequestInvalid([Problem("q", f"got {text!r}", "an id, or the start of one, of a customer, return, "
                                                             "order, token or case")])
    if len(query) > MAX_QUERY or any(ord(ch) < 32 for ch in query):
        raise RequestInvalid([Problem("q", f"got {len(query)} characters" if len(query) > MAX_QUERY
                                      else "a control character", f"at most {MAX_QUERY} printable characters")])
    return query


def search(uow: UnitOfWork, snapshot: Snapshot | None, text: object) -> SearchResult:
    """Customers, returns, orders, tokens and cases whose id is QUERY or starts with it: exact matches first, then
    by id, at most PER_KIND of each kind."""
    query = check_query(text)
    found: dict[str, dict[tuple[str, str | None], SearchHit]] = {k: {} for k in SEARCH_KINDS}
    key = ("search", snapshot.identity if snapshot else None, query)
    for hit in _cached(key, lambda: _stored_search(snapshot, query)):
        found[hit.kind].setdefault((hit.id, hit.token_kind), hit)
    with uow.read():
        for hit in _evidence_search(uow.session, query):
            found[hit.kind].setdefault((hit.id, hit.token_kind), hit)
        _add_cases(uow.session, found["return"])
    hits, more = [], []
    for kind in SEARCH_KINDS:
        ranked = sorted(found[kind].values(), key=lambda h: (h.id != query, h.id, h.token_kind or ""))
        hits += ranked[:PER_KIND]
        if len(ranked) > PER_KIND:
            more.append(kind)
    return SearchResult(query, hits, more)


def _stored_search(snapshot: Snapshot | None, query: str) -> list[SearchHit]:
    if snapshot is None:
        return []
    limit = PER_KIND + 1

    def order(column: str) -> str:
        return f"ORDER BY {column} != $q, {column} LIMIT {limit}"

    con = _connect(snapshot)
    try:
        def rows(sql: str) -> list[Any]:
            return con.execute(sql, {"q": query}).fetchall()

        hits = [SearchHit("customer", c, f"customer since {_text(at)}" if at else "customer")
                for c, at in rows(f"SELECT customer_id, created_at FROM customers "
                                  f"WHERE starts_with(customer_id, $q) {order('customer_id')}")]
        hits += [SearchHit("order", o, f"order of {c}, {_text(at)}, {total:.2f}", customer_id=c)
                 for o, c, at, total in rows(f"SELECT order_id, customer_id, placed_at, order_total FROM orders "
                                             f"WHERE starts_with(order_id, $q) {order('order_id')}")]
        hits += [SearchHit("return", r, f"{kind} by {c}, {_text(at)}, refund {amount:.2f}", customer_id=c)
                 for r, c, at, kind, amount in rows(
                     f"SELECT return_id, customer_id, requested_at, return_type, refund_amount FROM returns "
                     f"WHERE starts_with(return_id, $q) {order('return_id')}")]
        for kind, (table, column) in TOKEN_COLUMNS.items():
            hits += [SearchHit("token", value, f"{kind} token used by {n} customer{'s' if n != 1 else ''}",
                               token_kind=kind)
                     for value, n in rows(f"SELECT {column}, count(DISTINCT customer_id) FROM {table} "
                                          f"WHERE starts_with({column}, $q) GROUP BY 1 {order(column)}")]
    finally:
        con.close()
    return hits


def _prefix(column: Any, query: str) -> Any:
    """COLUMN starts with QUERY, exactly: case-sensitive on every database, no wildcard (SQLite's LIKE ignores case)."""
    return func.substr(column, 1, len(query)) == query


def _evidence_search(session: Session, query: str) -> list[SearchHit]:
    """What the evidence database knows that the warehouse may not yet: cases, assessed returns and their
    customers, the tokens of flagged returns and listed tokens."""
    limit = PER_KIND + 1
    hits = [SearchHit("case", c.id, f"{c.status} case of {c.customer_id}, {c.decision}, {c.assessments} "
                                    f"assessment{'s' if c.assessments != 1 else ''}", customer_id=c.customer_id)
            for c in session.execute(select(Case).where(_prefix(Case.id, query)).order_by(Case.id != query, Case.id)
                                     .limit(limit)).scalars()]
    for a in session.execute(select(Assessment).where(_prefix(Assessment.return_id, query))
                             .order_by(Assessment.return_id != query, Assessment.return_id).limit(limit)).scalars():
        hits.append(SearchHit("return", a.return_id, f"assessed {_when(a.created_at)}: {a.decision}, score "
                                                     f"{a.score:.3f}", customer_id=a.customer_id, case_id=a.case_id))
    for (customer,) in session.execute(select(Assessment.customer_id).where(_prefix(Assessment.customer_id, query))
                                       .distinct().order_by(Assessment.customer_id).limit(limit)):
        hits.append(SearchHit("customer", customer, "customer with assessed returns"))
    tokens: list[Any] = []
    for table in (CaseLink, ListEntry):
        tokens += session.execute(select(table.entity, table.value).where(_prefix(table.value, query))
                                  .group_by(table.entity, table.value).order_by(table.value != query, table.value)
                                  .limit(limit)).all()
    for entity, value in tokens:
        if entity == "customer":
            hits.append(SearchHit("customer", value, "customer named by a case or a list"))
        else:
            hits.append(SearchHit("token", value, f"{entity} token named by a case or a list", token_kind=entity))
    return hits


def _add_cases(session: Session, returns: dict[tuple[str, str | None], SearchHit]) -> None:
    """A found return's case, when it was assessed and flagged."""
    ids = [i for i, _ in returns]
    if not ids:
        return
    cased = dict(session.execute(select(Assessment.return_id, Assessment.case_id)
                                 .where(Assessment.return_id.in_(ids), Assessment.case_id.is_not(None))).all())
    for k, hit in returns.items():
        if hit.case_id is None and hit.id in cased:
            returns[k] = SearchHit(**{**asdict(hit), "case_id": cased[hit.id]})


# -- entity pages ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line of an entity's timeline: an order, return, label, inspection or assessment."""

    at: str
    kind: str  # order, return, label, inspection, assessment
    id: str  # the order's or return's id (labels, inspections and assessments: the return's)
    customer_id: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenUse:
    """A token an entity used: when, how often, and the other customers who used it too."""

    kind: str
    value: str
    first_seen: str | None
    last_seen: str | None
    uses: int
    customers: int  # everyone who used it, this customer included
    others: list[str]  # up to OTHERS_PER_TOKEN of the others
    hub: bool  # used by FRAUD_HUB_CUSTOMERS customers or more: it links no cases

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenHolder:
    """A customer as a token's page shows them: their use of the token and their own record."""

    customer_id: str
    first_seen: str | None
    last_seen: str | None
    uses: int
    returns: int = 0
    refund_total: float = 0.0
    bad_labels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Features:
    """An entity's feature values as the online store holds them, with what the service saw since added."""

    values: dict[str, Any]
    computed_at: str | None  # when the stored values became true (the feature build)
    live_until: str | None  # the latest fact the service added since (an assessed return, an inspection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EntityPage:
    """Everything known about a customer or a token."""

    kind: str  # customer, or a token kind
    id: str
    profile: dict[str, Any]
    features: Features | None
    timeline: list[Event]
    counts: dict[str, int]  # per event kind, all of them (the timeline holds the newest TIMELINE_LIMIT)
    cases: list[CaseSummary]
    tokens: list[TokenUse] = field(default_factory=list)  # a customer's
    customers: list[TokenHolder] = field(default_factory=list)  # a token's
    lists: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "profile": self.profile,
                "features": self.features.to_dict() if self.features else None,
                "timeline": [e.to_dict() for e in self.timeline], "counts": self.counts,
                "cases": [c.to_dict() for c in self.cases], "tokens": [t.to_dict() for t in self.tokens],
                "customers": [p.to_dict() for p in self.customers], "lists": self.lists}


def features_of(reader: OnlineFeatures | None, kind: str, value: str, now: dt.datetime) -> Features | None:
    if reader is None:
        return None
    values, computed, live = reader.entity_values(kind, value, now)
    return Features(values, computed, live)


def customer_page(uow: UnitOfWork, snapshot: Snapshot | None, customer_id: str, *, now: dt.datetime,
                  reader: OnlineFeatures | None = None, hub_customers: int = 20) -> EntityPage:
    """Everything known about CUSTOMER_ID, or EntityNotFound when neither the warehouse nor the evidence database
    has heard of them."""
    stored = _cached(("customer", snapshot.identity if snapshot else None, customer_id),
                     lambda: _stored_customer(snapshot, customer_id))
    with uow.read():
        session = uow.session
        assessed = session.execute(select(Assessment).where(Assessment.customer_id == customer_id)
                                   .order_by(Assessment.created_at.desc()).limit(TIMELINE_LIMIT)).scalars().all()
        links = [("customer", customer_id)]
        case_ids = session.execute(select(CaseLink.case_id).where(CaseLink.entity == "customer",
                                                                  CaseLink.value == customer_id)).scalars().all()
        if stored is None and not assessed and not case_ids:
            raise EntityNotFound(f"no customer {shown(customer_id)} in the warehouse or the evidence database")
        stored = stored or _StoredEntity(_customer_profile(customer_id, None, {}, 0.0), [], {}, [],
                                         {customer_id: {}})
        bad = bad_labels(session, stored.labelled)[customer_id]
        return_ids = {e.id for e in stored.events if e.kind == "return"} | {a.return_id for a in assessed}
        events = [*stored.events, *(_assessment_event(a) for a in assessed),
                  *_evidence_events(session, return_ids, customer_of={a.return_id: a.customer_id for a in assessed})]
        tokens = [TokenUse(**{**t, "hub": t["customers"] >= hub_customers}) for t in stored.tokens]
        links += [(t.kind, t.value) for t in tokens]
        assessments = _assessed_profile(session, customer_id, assessed)
        return EntityPage("customer", customer_id, stored.profile | {"bad_labels": bad} | assessments,
                          features_of(reader, "customer", customer_id, now),
                          *_timeline(events, {**stored.counts, "assessment": assessments["assessments"]}),
                          cases=_cases(session, case_ids, now), tokens=tokens, lists=_lists(session, links))


def token_page(uow: UnitOfWork, snapshot: Snapshot | None, kind: str, value: str, *, now: dt.datetime,
               reader: OnlineFeatures | None = None, hub_customers: int = 20) -> EntityPage:
    """Everything known about the token: who used it, their orders and returns with it, cases and lists."""
    if kind not in TOKEN_COLUMNS:
        raise EntityNotFound(f"no token kind {shown(kind)}: one of {', '.join(TOKEN_KINDS)}")
    stored = _cached(("token", snapshot.identity if snapshot else None, kind, value),
                     lambda: _stored_token(snapshot, kind, value))
    with uow.read():
        session = uow.session
        case_ids = session.execute(select(CaseLink.case_id).where(CaseLink.entity == kind, CaseLink.value == value)
                                   ).scalars().all()
        listed = _lists(session, [(kind, value)])
        if stored is None and not case_ids and not listed:
            raise EntityNotFound(f"no {kind} token {shown(value)} in the warehouse or the evidence database")
        stored = stored or _StoredEntity({"kind": kind, "value": value, "customers": 0, "first_seen": None,
                                          "last_seen": None, "uses": 0}, [], {}, [])
        return_ids = {e.id for e in stored.events if e.kind == "return"}
        assessed = session.execute(select(Assessment).where(Assessment.return_id.in_(return_ids))).scalars().all() \
            if return_ids else []
        flagged = session.execute(select(Assessment).join(CaseLink, CaseLink.case_id == Assessment.case_id)
                                  .where(CaseLink.entity == kind, CaseLink.value == value)
                                  .limit(TIMELINE_LIMIT)).scalars().all()
        assessed = list({a.id: a for a in [*assessed, *flagged]}.values())
        events = [*stored.events, *(_assessment_event(a) for a in assessed),
                  *_evidence_events(session, return_ids | {a.return_id for a in assessed},
                                    customer_of={a.return_id: a.customer_id for a in assessed})]
        bad = bad_labels(session, stored.labelled)
        people = [TokenHolder(**p, bad_labels=bad.get(p["customer_id"], 0)) for p in stored.tokens]
        profile = {**stored.profile, "hub": stored.profile.get("customers", 0) >= hub_customers,
                   "hub_customers": hub_customers}
        return EntityPage(kind, value, profile, features_of(reader, kind, value, now),
                          *_timeline(events, stored.counts), cases=_cases(session, case_ids, now), customers=people,
                          lists=listed)


@dataclass(frozen=True)
class _StoredEntity:
    """What a snapshot says of an entity: its profile, events, event counts, and tokens (or people)."""

    profile: dict[str, Any]
    events: list[Event]
    counts: dict[str, int]
    tokens: list[dict[str, Any]]
    labelled: Labelled = field(default_factory=dict)  # the warehouse's latest label of each labelled return


def _stored_customer(snapshot: Snapshot | None, customer_id: str) -> _StoredEntity | None:
    con = _connect(snapshot)
    try:
        q = {"c": customer_id}
        row = con.execute("SELECT created_at, email_domain, loyalty_tier FROM customers WHERE customer_id = $c",
                          q).fetchone()
        orders = con.execute(f"SELECT order_id, customer_id, placed_at, delivered_at, channel, payment_token, "
                             f"address_token, device_token, order_total, currency FROM orders "
                             f"WHERE customer_id = $c ORDER BY placed_at DESC LIMIT {TIMELINE_LIMIT}", q).fetchall()
        returns_sql = "SELECT return_id FROM returns WHERE customer_id = $c"
        events = [_order_event(r) for r in orders] + _return_events(con, returns_sql, q)
        if row is None and not events:
            return None
        counts = _event_counts(con, "SELECT order_id FROM orders WHERE customer_id = $c", returns_sql, q)
        (refunds,) = con.execute("SELECT coalesce(sum(refund_amount), 0) FROM returns WHERE customer_id = $c",
                                 q).fetchone() or (0,)
        tokens = _customer_tokens(con, customer_id)
        labelled = warehouse_labelled(con, [customer_id])
    finally:
        con.close()
    return _StoredEntity(_customer_profile(customer_id, row, counts, refunds), events, counts, tokens, labelled)


def _customer_profile(customer_id: str, row: Sequence[Any] | None, counts: dict[str, int],
                      refunds: float) -> dict[str, Any]:
    return {"customer_id": customer_id, "created_at": _text(row[0]) if row else None,
            "email_domain": row[1] if row else None, "loyalty_tier": row[2] if row else None,
            "orders": counts.get("order", 0), "returns": counts.get("return", 0), "refund_total": float(refunds)}


Labelled = dict[str, dict[str, tuple[dt.datetime, str]]]
"""Per customer: return id -> (labelled_at, label), the latest label of each labelled return."""


def warehouse_labelled(con: duckdb.DuckDBPyConnection, customers: list[str]) -> Labelled:
    """The warehouse's latest label of each labelled return of CUSTOMERS."""
    rows = con.execute("SELECT r.customer_id, r.return_id, l.labelled_at, l.label FROM returns r JOIN (SELECT "
                       "return_id, arg_max(label, labelled_at) AS label, max(labelled_at) AS labelled_at FROM labels "
                       "GROUP BY return_id) l USING (return_id) WHERE r.customer_id IN (SELECT unnest($c))",
                       {"c": customers}).fetchall()
    out: Labelled = {c: {} for c in customers}
    for customer, return_id, at, label in rows:
        out[customer][return_id] = (aware(at), label)
    return out


def bad_labels(session: Session, labelled: Labelled) -> dict[str, int]:
    """Per customer, how many returns carry fraud or abuse as their label in force (`labels.in_force`: the
    warehouse's, LABELLED, or the evidence log's, whichever came later), over the customer's warehouse returns and
    the returns the service assessed for them."""
    owner = {r: c for c, v in labelled.items() for r in v}
    customers = list(labelled)
    for start in range(0, len(customers), 500):
        owner.update((r, c) for r, c in session.execute(select(Assessment.return_id, Assessment.customer_id).where(
            Assessment.customer_id.in_(customers[start:start + 500]))))
    warehouse = {r: label for v in labelled.values() for r, label in v.items()}
    counts = dict.fromkeys(labelled, 0)
    for return_id, (_, label) in in_force(session, owner, warehouse).items():
        counts[owner[return_id]] += label in BAD
    return counts


def _token_uses(kind: str) -> str:
    """SQL of every use of a KIND token: (value, customer_id, at)."""
    table, column = TOKEN_COLUMNS[kind]
    at = "placed_at" if table == "orders" else "requested_at"
    return f"SELECT {column} AS value, customer_id, {at} AS seen_at FROM {table} WHERE {column} IS NOT NULL"


def _customer_tokens(con: duckdb.DuckDBPyConnection, customer_id: str) -> list[dict[str, Any]]:
    out = []
    for kind in TOKEN_KINDS:
        uses = _token_uses(kind)
        mine = con.execute(f"SELECT value, min(seen_at), max(seen_at), count(*) FROM ({uses}) WHERE customer_id = $c "
                           f"GROUP BY value ORDER BY min(seen_at)", {"c": customer_id}).fetchall()
        if not mine:
            continue
        others = con.execute(
            f"SELECT value, count(DISTINCT customer_id), list(DISTINCT customer_id ORDER BY customer_id) "
            f"FILTER (WHERE customer_id != $c) FROM ({uses}) WHERE value IN (SELECT unnest($v)) GROUP BY value",
            {"c": customer_id, "v": [m[0] for m in mine]}).fetchall()
        shared = {v: (int(n), list(names or [])[:OTHERS_PER_TOKEN]) for v, n, names in others}
        out += [{"kind": kind, "value": v, "first_seen": _text(first), "last_seen": _text(last), "uses": int(n),
                 "customers": shared[v][0], "others": shared[v][1]} for v, first, last, n in mine]
    return out


def _stored_token(snapshot: Snapshot | None, kind: str, value: str) -> _StoredEntity | None:
    table, column = TOKEN_COLUMNS[kind]
    con = _connect(snapshot)
    try:
        q = {"v": value}
        uses = f"SELECT * FROM ({_token_uses(kind)}) WHERE value = $v"
        summary = con.execute(f"SELECT count(DISTINCT customer_id), min(seen_at), max(seen_at), count(*) FROM ({uses})",
                              q).fetchone()
        if summary is None or not summary[0]:
            return None
        people = con.execute(f"SELECT customer_id, min(seen_at), max(seen_at), count(*) FROM ({uses}) "
                             f"GROUP BY customer_id ORDER BY min(seen_at), customer_id LIMIT {PEOPLE_LIMIT}",
                             q).fetchall()
        stats = _people_stats(con, [p[0] for p in people])
        labelled = warehouse_labelled(con, [p[0] for p in people])
        if table == "orders":
            orders = con.execute(f"SELECT order_id, customer_id, placed_at, delivered_at, channel, payment_token, "
                                 f"address_token, device_token, order_total, currency FROM orders WHERE {column} = $v "
                                 f"ORDER BY placed_at DESC LIMIT {TIMELINE_LIMIT}", q).fetchall()
            orders_sql = f"SELECT order_id FROM orders WHERE {column} = $v"
            returns_sql = f"SELECT return_id FROM returns WHERE order_id IN ({orders_sql})"
        else:
            orders, orders_sql = [], "SELECT NULL WHERE false"
            returns_sql = "SELECT return_id FROM returns WHERE refund_token = $v"
        events = [_order_event(r) for r in orders] + _return_events(con, returns_sql, q)
        counts = _event_counts(con, orders_sql, returns_sql, q)
    finally:
        con.close()
    profile = {"kind": kind, "value": value, "customers": int(summary[0]), "first_seen": _text(summary[1]),
               "last_seen": _text(summary[2]), "uses": int(summary[3])}
    tokens = [{"customer_id": c, "first_seen": _text(first), "last_seen": _text(last), "uses": int(n),
               **stats.get(c, {"returns": 0, "refund_total": 0.0})} for c, first, last, n in people]
    return _StoredEntity(profile, events, counts, tokens, labelled)


def _event_counts(con: duckdb.DuckDBPyConnection, orders_sql: str, returns_sql: str,
                  params: dict[str, Any]) -> dict[str, int]:
    """How many orders ORDERS_SQL names, returns RETURNS_SQL names, and labels and inspections of those returns."""
    row = con.execute(f"SELECT (SELECT count(*) FROM ({orders_sql})), (SELECT count(*) FROM ({returns_sql})), "
                      f"(SELECT count(*) FROM labels WHERE return_id IN ({returns_sql})), "
                      f"(SELECT count(*) FROM inspections WHERE return_id IN ({returns_sql}))", params).fetchone()
    return dict(zip(("order", "return", "label", "inspection"), (int(n) for n in row or (0, 0, 0, 0)), strict=True))


def _people_stats(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = con.execute("SELECT customer_id, count(*), coalesce(sum(refund_amount), 0) FROM returns "
                       "WHERE customer_id IN (SELECT unnest($ids)) GROUP BY customer_id", {"ids": ids}).fetchall()
    return {c: {"returns": int(n), "refund_total": float(refunds)} for c, n, refunds in rows}


def _order_event(row: Sequence[Any]) -> Event:
    order_id, customer, placed, delivered, channel, payment, address, device, total, currency = row
    return Event(_text(placed) or "", "order", order_id, customer, {
        "delivered_at": _text(delivered), "channel": channel, "order_total": _number(total), "currency": currency,
        "tokens": {"payment": payment, "address": address, "device": device}})


def _return_events(con: duckdb.DuckDBPyConnection, returns_sql: str, params: dict[str, Any]) -> list[Event]:
    """The returns RETURNS_SQL names (newest TIMELINE_LIMIT), with their labels and inspections, as events."""
    returns = con.execute(
        f"SELECT return_id, order_id, customer_id, requested_at, return_type, channel, reason, items_count, "
        f"refund_amount, refund_method, refund_token FROM returns WHERE return_id IN ({returns_sql}) "
        f"ORDER BY requested_at DESC LIMIT {TIMELINE_LIMIT}", params).fetchall()
    out = [Event(_text(at) or "", "return", rid, customer, {
        "order_id": order, "return_type": kind, "channel": channel, "reason": reason, "items_count": items,
        "refund_amount": _number(amount), "refund_method": method, "refund_token": token})
        for rid, order, customer, at, kind, channel, reason, items, amount, method, token in returns]
    owner = {e.id: e.customer_id for e in out}
    ids = list(owner)
    for rid, label, at, source in con.execute("SELECT return_id, label, labelled_at, source FROM labels "
                                              "WHERE return_id IN (SELECT unnest($ids))", {"ids": ids}).fetchall():
        out.append(Event(_text(at) or "", "label", rid, owner[rid], {"label": label, "source": source}))
    for rid, at, outcome in con.execute("SELECT return_id, inspected_at, outcome FROM inspections "
                                        "WHERE return_id IN (SELECT unnest($ids))", {"ids": ids}).fetchall():
        out.append(Event(_text(at) or "", "inspection", rid, owner[rid], {"outcome": outcome, "source": "warehouse"}))
    return out


def _assessment_event(a: Assessment) -> Event:
    return Event(utc_text(a.created_at), "assessment", a.return_id, a.customer_id, {
        "assessment_id": a.id, "score": a.score, "decision": a.decision, "risk_level": a.risk_level,
        "model_version": a.model_version, "refund_amount": a.refund_amount, "case_id": a.case_id})


def _evidence_events(session: Session, return_ids: Iterable[str], customer_of: dict[str, str]) -> list[Event]:
    """Analysts' and the returns system's labels and inspections of RETURN_IDS, from the evidence database."""
    ids = sorted(set(return_ids))
    out = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for label in session.execute(select(Label).where(Label.return_id.in_(chunk))).scalars():
            out.append(Event(utc_text(label.labelled_at), "label", label.return_id, customer_of.get(label.return_id),
                             {"label": label.label, "source": label.source, "actor": label.actor,
                              "case_id": label.case_id, "reason": label.reason}))
        for seen in session.execute(select(Inspection).where(Inspection.return_id.in_(chunk))).scalars():
            out.append(Event(utc_text(seen.inspected_at), "inspection", seen.return_id,
                             customer_of.get(seen.return_id),
                             {"outcome": seen.outcome, "source": seen.actor, "notes": seen.notes}))
    return out


def _timeline(events: list[Event], stored_counts: dict[str, int]) -> tuple[list[Event], dict[str, int]]:
    """EVENTS newest first (at most TIMELINE_LIMIT) and the count of each kind: the warehouse's totals (which
    may exceed what was read) or what was found, whichever is more."""
    counts: dict[str, int] = {}
    for e in events:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    for kind, n in stored_counts.items():
        counts[kind] = max(int(n), counts.get(kind, 0))
    ordered = sorted(events, key=lambda e: (e.at, e.kind, e.id), reverse=True)
    return ordered[:TIMELINE_LIMIT], counts


def _assessed_profile(session: Session, customer_id: str, assessed: Sequence[Assessment]) -> dict[str, Any]:
    """What the service assessed for the customer: every assessment counted (ASSESSED holds the newest)."""
    if not assessed:
        return {"assessments": 0}
    total, top = session.execute(select(func.count(), func.max(Assessment.score))
                                 .where(Assessment.customer_id == customer_id)).one()
    return {"assessments": int(total), "last_assessed_at": utc_text(max(a.created_at for a in assessed)),
            "max_score": float(top)}


def _cases(session: Session, case_ids: Iterable[str], now: dt.datetime) -> list[CaseSummary]:
    ids = sorted(set(case_ids))
    if not ids:
        return []
    rows = session.execute(select(Case).where(Case.id.in_(ids)).order_by(Case.opened_at.desc())).scalars()
    return [cases.summary(c, now) for c in rows]


def _lists(session: Session, links: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The list entries naming any of LINKS (entity, value)."""
    if not links:
        return []
    rows = session.execute(select(ListEntry).where(tuple_(ListEntry.entity, ListEntry.value).in_(list(links)))
                           .order_by(ListEntry.added_at)).scalars()
    return [{"entity": e.entity, "value": e.value, "list": e.list, "reason": e.reason, "added_by": e.added_by,
             "added_at": utc_text(e.added_at), "expires_at": utc_text(e.expires_at) if e.expires_at else None}
            for e in rows]

