"""The JSON the search and entity pages answer with (`api.entities`), as pydantic models: the OpenAPI document's
response schemas, checked against real answers by the schema fuzz test."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from api.rule_schemas import ListEntry
from api.schemas import CaseSummary, Instant, _Response

Kind = Literal["customer", "address", "payment", "device", "refund"]
TokenKind = Literal["address", "payment", "device", "refund"]


class SearchHit(_Response):
    kind: Literal["customer", "return", "order", "token", "case"]
    id: str
    summary: str
    token_kind: TokenKind | None = Field(description="a token's kind")
    customer_id: str | None = Field(description="an order's or return's customer (their page holds it)")
    case_id: str | None = Field(description="a flagged return's case")


class SearchResult(_Response):
    query: str
    hits: list[SearchHit] = Field(description="exact matches first, then by id; at most 10 of each kind")
    more: list[str] = Field(description="kinds with more hits than shown: type more of the id")


class EntityEvent(_Response):
    at: Instant
    kind: Literal["order", "return", "label", "inspection", "assessment"]
    id: str = Field(description="the order's or the return's id")
    customer_id: str | None
    data: dict[str, Any]


class TokenUse(_Response):
    kind: TokenKind
    value: str
    first_seen: Instant | None
    last_seen: Instant | None
    uses: int
    customers: int = Field(description="everyone who used it, this customer included")
    others: list[str] = Field(description="up to 20 of the other customers")
    hub: bool = Field(description="used by FRAUD_HUB_CUSTOMERS customers or more: it links no cases")


class TokenHolder(_Response):
    customer_id: str
    first_seen: Instant | None
    last_seen: Instant | None
    uses: int
    returns: int
    refund_total: float
    bad_labels: int


class EntityFeatures(_Response):
    values: dict[str, Any]
    computed_at: Instant | None = Field(description="when the online store's values became true")
    live_until: Instant | None = Field(description="the latest fact the service added since")


class EntityPage(_Response):
    kind: Kind
    id: str
    profile: dict[str, Any]
    features: EntityFeatures | None = Field(description="null when this worker cannot score")
    timeline: list[EntityEvent] = Field(description="newest first, at most 500")
    counts: dict[str, int] = Field(description="every event of each kind, also those beyond the timeline's 500")
    cases: list[CaseSummary]
    tokens: list[TokenUse] = Field(description="a customer's tokens")
    customers: list[TokenHolder] = Field(description="a token's customers (the first 200)")
    lists: list[ListEntry]


class GraphNode(_Response):
    key: str = Field(description="kind:id")
    kind: Kind
    id: str
    hop: int = Field(description="how far from where the graph starts")
    customers: int = Field(description="a token's: everyone who used it")
    bad_labels: int = Field(description="a customer's returns labelled fraud or abuse")
    hub: bool = Field(description="a token used by FRAUD_HUB_CUSTOMERS customers or more: not expanded")
    seed: bool
    expanded: bool


class GraphEdge(_Response):
    customer: str
    token: str


class Graph(_Response):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    capped: bool = Field(description="max_nodes reached: some neighbours are left out")
    max_nodes: int


ENTITY_RESPONSES = (SearchHit, SearchResult, EntityEvent, TokenUse, TokenHolder, EntityFeatures, EntityPage, GraphNode,
                    GraphEdge, Graph)
