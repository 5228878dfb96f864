"""The bodies and answers of the lists and the rules (`/v1/lists`, `/v1/rules`, `/v1/rules/backtest`), as pydantic
models: requests are parsed with them, and the OpenAPI document describes both."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictInt

from api.schemas import _ANY, Instant, Text, _Request, _Response
from fraud_service.scoring.backtest import MAX_DAYS
from fraud_service.scoring.request import Time
from fraud_service.scoring.rules import LIST_ENTITIES, LISTS


class ListEntryIn(_Request):
    entity: _ANY(LIST_ENTITIES)  # type: ignore[valid-type]
    value: Text  # type: ignore[valid-type]
    list: _ANY(LISTS)  # type: ignore[valid-type]
    reason: Text  # type: ignore[valid-type]
    expires_at: Time | None = Field(default=None, description="when the entry stops matching (it stays listed, "
                                                              "marked expired); none: it never does")


class ListEntry(_Response):
    entity: _ANY(LIST_ENTITIES)  # type: ignore[valid-type]
    value: str
    list: _ANY(LISTS)  # type: ignore[valid-type]
    reason: str
    added_by: str
    added_at: Instant
    expires_at: Instant | None = None


class ListEntries(_Response):
    entries: list[ListEntry]


class RulesIn(_Request):
    rules: dict[str, Any] = Field(description="a rule set: {builtin: {name: {enabled, threshold, decision}}, "
                                              "custom: [{name, when, decision, enabled, description}]}")
    reason: Text  # type: ignore[valid-type]


class BacktestIn(_Request):
    rules: dict[str, Any] = Field(description="the proposed rule set (the shape PUT /v1/rules takes)")
    days: StrictInt = Field(default=30, ge=1, le=MAX_DAYS, description="the window: the last DAYS days of assessments")
    capacity: float | None = Field(default=None, ge=0, description="reviews the team can do a day (default: the "
                                                                    "production policy's)")


class RuleSetOut(_Response):
    version: int = Field(description="0: the defaults, never saved")
    builtin: dict[str, dict[str, Any]]
    custom: list[dict[str, Any]]


class RulesOut(_Response):
    rules: RuleSetOut
    versions: list[dict[str, Any]] = Field(description="every saved version, newest first")
    builtins: dict[str, str] = Field(description="what each built-in rule does")
    features: list[str] = Field(description="the names a custom rule may compare")
    decisions: list[str] = Field(description="what a rule may ask for")


class BacktestOut(_Response):
    start: Instant
    end: Instant
    assessments: int
    skipped: int = Field(description="stored records without a request or an answer to replay")
    missing_features: dict[str, int] = Field(description="a feature the proposed rules read: how many assessments "
                                                         "did not store it (its rules cannot fire on them)")
    changed: dict[str, int] = Field(description="`before -> after`: how many decisions changed that way")
    raised: int
    lowered: int
    per_day: list[dict[str, Any]]
    capacity_per_day: float | None
    before: dict[str, Any]
    after: dict[str, Any]
    held_amount: float = Field(description="refunds approved at once before, held after")
    released_amount: float = Field(description="refunds held before, approved at once after")
    rules_fired: dict[str, int]
    seconds: float


RULE_REQUESTS: tuple[type[BaseModel], ...] = (ListEntryIn, RulesIn, BacktestIn)
RULE_RESPONSES: tuple[type[BaseModel], ...] = (ListEntry, ListEntries, RuleSetOut, RulesOut, BacktestOut)
