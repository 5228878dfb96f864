"""The link graph an analyst reads a ring from: customers and the tokens they used (address, payment, device, refund
destination), some hops out from a case, a customer or a token.

A customer links to every token they used; a token to every customer who used it. Hubs (a token used by
FRAUD_HUB_CUSTOMERS customers or more: a freight forwarder, a parcel locker, an office) are not expanded: each shows
as one node with its count of customers, since two strangers sharing a parcel locker are not a ring. The graph is
capped at MAX_NODES. Known-bad customers (a fraud or abuse label, the warehouse's or an analyst's) are marked, and so
are the case's own customers and tokens.

Read from the warehouse's current snapshot, plus what the service saw that the warehouse has not yet: the tokens of
the returns assessed in a case (`extra` edges, from the case's stored requests).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fraud_service.cases import service as cases
from fraud_service.cases.entities import (
    TOKEN_KINDS,
    Labelled,
    _connect,
    _token_uses,
    bad_labels,
    shown,
    warehouse_labelled,
)
from fraud_service.cases.investigation import _cached
from fraud_service.data.warehouse import Snapshot
from fraud_service.errors import EntityNotFound, Problem, RequestInvalid
from fraud_service.scoring.rules import stored_tokens
from fraud_service.store.schema import Assessment, CaseLink, EvidenceEvent, ListEntry
from fraud_service.store.uow import UnitOfWork

MAX_NODES = 150
MAX_HOPS = 3
NODE_KINDS = ("customer", *TOKEN_KINDS)
Key = tuple[str, str]  # (kind, id): ("customer", "C1"), ("address", "addr_...")


@dataclass
class Node:
    kind: str  # customer, address, payment, device, refund
    id: str
    hop: int  # how far from the nearest seed
    customers: int = 0  # a token's: everyone who used it
    bad_labels: int = 0  # a customer's returns labelled fraud or abuse
    hub: bool = False  # a token too widely used to expand
    seed: bool = False  # where the graph starts (the case's customers and tokens, or the page's entity)
    expanded: bool = False  # its neighbours are all in the graph


@dataclass
class Graph:
    nodes: dict[Key, Node] = field(default_factory=dict)
    edges: set[tuple[Key, Key]] = field(default_factory=set)  # (customer, token)
    capped: bool = False  # MAX_NODES reached: some neighbours left out
    labelled: Labelled = field(default_factory=dict)  # the warehouse's labels of its customers' returns

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [{"key": f"{n.kind}:{n.id}", **asdict(n)} for n in self.nodes.values()],
                "edges": [{"customer": f"{c[0]}:{c[1]}", "token": f"{t[0]}:{t[1]}"} for c, t in sorted(self.edges)],
                "capped": self.capped, "max_nodes": MAX_NODES}


def check_seed(kind: str, value: str, hops: object) -> int:
    """The hop count asked for, or RequestInvalid naming each bad part."""
    problems = []
    if kind not in NODE_KINDS:
        problems.append(Problem("kind", f"got {kind!r}", "one of " + ", ".join(NODE_KINDS)))
    if not value:
        problems.append(Problem("id", "is empty", "a customer id or a token"))
    try:
        count = check_hops(hops)
    except RequestInvalid as exc:
        problems += exc.problems
    if problems:
        raise RequestInvalid(problems)
    return count


def check_hops(hops: object) -> int:
    """HOPS as a hop count, or RequestInvalid naming it."""
    text = str(hops)
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and 1 <= int(text) <= MAX_HOPS):
        raise RequestInvalid([Problem("hops", f"got {text[:20]!r}", f"an integer from 1 to {MAX_HOPS}")])
    return int(text)


def build(snapshot: Snapshot | None, session: Session, seeds: Sequence[Key], *, hops: int = 2,
          hub_customers: int = 20, extra: Iterable[tuple[str, str, str]] = ()) -> Graph:
    """The graph HOPS out from SEEDS. EXTRA adds (customer, token kind, token) uses the warehouse does not hold."""
    known = tuple(sorted(set(extra)))
    key = ("graph", snapshot.identity if snapshot else None, tuple(seeds), hops, hub_customers, known)
    graph = copy.deepcopy(_cached(key, lambda: _walk(snapshot, seeds, hops, hub_customers, known)))
    for customer, n in bad_labels(session, graph.labelled).items():  # the latest label, the log's included
        graph.nodes[("customer", customer)].bad_labels = n
    return graph


def _walk(snapshot: Snapshot | None, seeds: Sequence[Key], hops: int, hub_customers: int,
          extra: Sequence[tuple[str, str, str]]) -> Graph:
    graph = Graph()
    for kind, value in seeds:
        graph.nodes[(kind, value)] = Node(kind, value, 0, seed=True)
    con = _connect(snapshot)
    try:
        con.execute("CREATE TEMP TABLE extra (kind VARCHAR, value VARCHAR, customer_id VARCHAR)")
        if extra:
            con.executemany("INSERT INTO extra VALUES (?, ?, ?)", [[k, v, c] for c, k, v in extra])
        con.execute("CREATE TEMP TABLE wanted (k VARCHAR, v VARCHAR)")
        con.execute("CREATE TEMP VIEW uses AS " + " UNION ALL ".join(
            f"SELECT '{kind}' AS kind, value, customer_id FROM ({_token_uses(kind)})" for kind in TOKEN_KINDS)
                    + " UNION ALL SELECT kind, value, customer_id FROM extra")
        frontier = list(graph.nodes)
        for hop in range(1, hops + 1):
            _count_customers(con, graph, [k for k in frontier if k[0] != "customer"])
            frontier = _expand(con, graph, frontier, hop, hub_customers)
            if graph.capped or not frontier:
                break
        _count_customers(con, graph, [k for k, n in graph.nodes.items() if k[0] != "customer" and not n.customers])
        for k, node in graph.nodes.items():
            node.hub = k[0] != "customer" and node.customers >= hub_customers
        _close_edges(con, graph)
        graph.labelled = warehouse_labelled(con, [k[1] for k in graph.nodes if k[0] == "customer"])
    finally:
        con.close()
    return graph


def _count_customers(con: Any, graph: Graph, tokens: list[Key]) -> None:
    if not tokens:
        return
    _want(con, tokens)
    rows = con.execute("SELECT kind, value, count(DISTINCT customer_id) FROM uses JOIN wanted ON kind = k AND "
                       "value = v GROUP BY kind, value").fetchall()
    for kind, value, n in rows:
        graph.nodes[(kind, value)].customers = int(n)


def _want(con: Any, tokens: list[Key]) -> None:
    """The tokens the next query joins with (`wanted`)."""
    con.execute("DELETE FROM wanted")
    con.executemany("INSERT INTO wanted VALUES (?, ?)", [list(t) for t in tokens])


def _expand(con: Any, graph: Graph, frontier: list[Key], hop: int, hub_customers: int) -> list[Key]:
    """Add the neighbours of FRONTIER (a hub's are left out) at HOP; the keys added."""
    customers = [k[1] for k in frontier if k[0] == "customer"]
    tokens = []
    for k in frontier:
        node = graph.nodes[k]
        if k[0] == "customer":
            node.expanded = True
        elif node.customers >= hub_customers:
            node.hub = True
        else:
            node.expanded = True
            tokens.append(k)
    rows = []
    if customers:
        rows += con.execute("SELECT DISTINCT customer_id, kind, value FROM uses WHERE customer_id IN "
                            "(SELECT unnest($c)) ORDER BY 1, 2, 3", {"c": customers}).fetchall()
    if tokens:
        _want(con, tokens)
        rows += con.execute("SELECT DISTINCT customer_id, kind, value FROM uses JOIN wanted ON kind = k AND "
                            "value = v ORDER BY 2, 3, 1").fetchall()
    added: list[Key] = []
    for customer, kind, value in rows:
        pair = (("customer", customer), (kind, value))
        for k in pair:
            if k not in graph.nodes:
                if len(graph.nodes) >= MAX_NODES:
                    graph.capped = True
                    return added
                graph.nodes[k] = Node(k[0], k[1], hop)
                added.append(k)
        graph.edges.add(pair)
    return added


def _close_edges(con: Any, graph: Graph) -> None:
    """Every use between two nodes already in the graph is an edge (the last hop's customers share tokens too)."""
    customers = [k[1] for k in graph.nodes if k[0] == "customer"]
    if not customers:
        return
    for customer, kind, value in con.execute("SELECT DISTINCT customer_id, kind, value FROM uses WHERE customer_id "
                                             "IN (SELECT unnest($c))", {"c": customers}).fetchall():
        if (kind, value) in graph.nodes:
            graph.edges.add((("customer", customer), (kind, value)))


def _uses_of(request: dict[str, Any], customer: str) -> list[tuple[str, str, str]]:
    """The (customer, token kind, token) uses a stored assessment request shows."""
    return [(customer, kind, value) for kind, value in stored_tokens(request).items() if kind != "customer"]


def case_graph(uow: UnitOfWork, snapshot: Snapshot | None, case_id: str, *, now: dt.datetime, hops: int = 2,
               hub_customers: int = 20) -> Graph:
    """The graph around a case: its customers and the tokens tying it are the seeds; its assessments' requests add
    the uses the warehouse does not hold yet (returns assessed since the last ingest)."""
    with uow.read():
        detail = cases.detail(uow.session, case_id, now, limit=cases.PAGE)
        seeds = [("customer", c) for c in detail.customers()]
        seeds += [(e, v) for e, v in detail.links if e != "customer"]
        extra = [u for a in detail.assessments for u in _uses_of(a.request, a.customer_id)]
        return build(snapshot, uow.session, seeds, hops=hops, hub_customers=hub_customers, extra=extra)


def entity_graph(uow: UnitOfWork, snapshot: Snapshot | None, kind: str, value: str, *, hops: int = 2,
                 hub_customers: int = 20) -> Graph:
    """The graph around one customer or token, with the uses its assessed returns show."""
    with uow.read():
        extra: list[tuple[str, str, str]] = []
        if kind == "customer":  # the tokens of its newest assessed returns (one query)
            payloads = uow.session.execute(
                select(EvidenceEvent.payload).join(Assessment, Assessment.event_seq == EvidenceEvent.seq)
                .where(Assessment.customer_id == value).order_by(Assessment.created_at.desc()).limit(200)).scalars()
            extra = [u for p in payloads for u in _uses_of(_request(p), value)]
        graph = build(snapshot, uow.session, [(kind, value)], hops=hops, hub_customers=hub_customers, extra=extra)
        used = graph.edges or graph.nodes[(kind, value)].customers  # a hub is drawn alone, with its count
        if not used and not _known(uow.session, snapshot, kind, value):
            raise EntityNotFound(f"no {kind} {shown(value)} in the warehouse or the evidence database")
        return graph


def _known(session: Session, snapshot: Snapshot | None, kind: str, value: str) -> bool:
    """Whether anything names an entity no one is linked to: the warehouse's customers, or the evidence log (an
    assessment's customer, a case's token, a list entry)."""
    if kind == "customer" and snapshot is not None and snapshot.holding("customers", "customer_id", [value]):
        return True
    found = [select(CaseLink.case_id).where(CaseLink.entity == kind, CaseLink.value == value),
             select(ListEntry.id).where(ListEntry.entity == kind, ListEntry.value == value)]
    if kind == "customer":
        found.append(select(Assessment.id).where(Assessment.customer_id == value))
    return any(session.execute(q.limit(1)).first() is not None for q in found)


def _request(payload: str) -> dict[str, Any]:
    record = json.loads(payload)
    request = record.get("request") if isinstance(record, dict) else None
    return request if isinstance(request, dict) else {}
