"""The JSON the search and entity pages answer with (`api.entities`), as pydantic models: the OpenAPI document's
response schemas, checked against real answers by the schema fuzz test."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from api.schemas import CaseSummary, Instant, ListEntry, _Response

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


ENTITY_RESPONSES = (SearchHit, SearchResult, EntityEvent, TokenUse, TokenHolder, EntityFeatures, EntityPage)
