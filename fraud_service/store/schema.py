"""Tables of the evidence database (SQLAlchemy 2.x typed declarative; the schema is managed by Alembic).

`evidence_events` is the append-only, hash-chained log, made of chains: the root chain (1), which every
change made by a person or a job is recorded on, and one segment per evidence writer (a serving process),
opened and closed by events on the root chain (`store.chain`). `chain_head` holds each chain's last link,
so the appends to one chain are serialised by its row lock and writers on different chains never wait
for each other. `seq` numbers every event across chains in the order it was allocated (the sequence
`evidence_event_ids` on PostgreSQL); `position` is its place in its own chain. `assessments` is the
decision record a client reads back by id and that cases (issue 6) search; its full content (request,
features, contributions, rules, response) is the payload of the evidence event it points to, stored once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


SUBJECT_LENGTH = 80
"""The longest subject an evidence event keeps (PostgreSQL refuses a longer one; SQLite would keep it)."""


class EvidenceEvent(Base):
    __tablename__ = "evidence_events"

    __table_args__ = (Index("uq_evidence_events_chain_position", "chain", "position", unique=True),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    chain: Mapped[int] = mapped_column(Integer, default=1)
    # nullable only because SQLite cannot add a NOT NULL column in place (migration 0010); every writer fills it
    position: Mapped[int] = mapped_column(BigInteger, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(SUBJECT_LENGTH), index=True)
    actor: Mapped[str] = mapped_column(String(120))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, exactly the bytes that were hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ChainHead(Base):
    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # the chain: 1 is the root
    seq: Mapped[int] = mapped_column(BigInteger)  # the position of the chain's last event (0: none yet)
    hash: Mapped[str] = mapped_column(String(64))


class Assessment(Base):
    __tablename__ = "assessments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(40), index=True)
    risk_level: Mapped[str] = mapped_column(String(20))
    model_version: Mapped[str] = mapped_column(String(40))
    policy_version: Mapped[str] = mapped_column(String(40))
    refund_amount: Mapped[float] = mapped_column(Float)
    case_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))


class ListEntry(Base):
    __tablename__ = "list_entries"
    __table_args__ = (UniqueConstraint("entity", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(20))  # customer, address, payment, device, refund
    value: Mapped[str] = mapped_column(String(200))
    list: Mapped[str] = mapped_column(String(10))  # allow or block
    reason: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(120))
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # stops matching


class RuleSetRow(Base):
    """A saved rule set: the hard rules' thresholds, decisions and on/off state and the custom rules (canonical
    JSON, `scoring.rules.RuleSet`). The highest version is in force; saving is an evidence event."""

    __tablename__ = "rule_sets"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(Text)
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the key's public prefix
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


Index("evidence_events_kind_subject", EvidenceEvent.kind, EvidenceEvent.subject)


class Case(Base):
    """A group of assessments a human must look at: one customer and the accounts linked to it."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # open, in_review, escalated, closed
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    customer_id: Mapped[str] = mapped_column(String(200))  # the customer whose assessment opened it
    assignee: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True)
    decision: Mapped[str] = mapped_column(String(40))  # the most severe decision among its assessments
    max_score: Mapped[float] = mapped_column(Float)
    amount: Mapped[float] = mapped_column(Float)  # refunds at stake
    assessments: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(80), default="")  # the top reason of its riskiest assessment
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    appealed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When a shopper's appeal last put it at the top of the queue (cleared when it is closed)."""


class CaseLink(Base):
    """A customer or token (entity, value) that ties later assessments to a case."""

    __tablename__ = "case_links"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)


Index("ix_case_links_entity_value", CaseLink.entity, CaseLink.value)


class CaseNote(Base):
    """A note an analyst wrote on a case (its text is also in the evidence event)."""

    __tablename__ = "case_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    author: Mapped[str] = mapped_column(String(120))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))


class Label(Base):
    """A label in the data contract's form (return_id, label, labelled_at, source) with who gave it and why.

    `synced_to` names the warehouse snapshot that first held it (None until `labels sync` copies it there).
    """

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    return_id: Mapped[str] = mapped_column(String(200), index=True)
    label: Mapped[str] = mapped_column(String(10))
    labelled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(120))
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))
    synced_to: Mapped[str | None] = mapped_column(String(20), nullable=True)


class User(Base):
    """A person who signs in to the analyst UI (analyst or admin); the password is kept as a scrypt hash, the TOTP
    secret encrypted with a key the database does not hold (`fraud_service.access.totp` says why)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sessions_revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)  # set by enrolment's first step
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # on while set
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the last 30 s step accepted
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # UI activity


class RecoveryCode(Base):
    """A single-use code that stands in for a TOTP code, kept as a hash; `used_at` is set when it is spent."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SignInFailure(Base):
    """Failed sign-ins in a row for one user (`user:NAME`) or one address (`address:IP`), and any lock."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Outcome(Base):
    """The outcome in force of an assessment once it changed after the first answer (closing its case, an
    inspection, an appeal); without a row, the outcome is the first answer's (`feedback.outcomes`)."""

    __tablename__ = "outcomes"

    assessment_id: Mapped[str] = mapped_column(ForeignKey("assessments.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # final, pending_review, pending_inspection
    decision: Mapped[str] = mapped_column(String(40))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(120))  # model, rule, inspection, user:NAME (or key:ID)
    label: Mapped[str | None] = mapped_column(String(10), nullable=True)
    appealed: Mapped[bool] = mapped_column(default=False)
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))


class ShadowScore(Base):
    """What the shadow model (the registry's `shadow` alias) would have answered an assessment: written after the
    answer, off the request's path, never part of it (`scoring/shadow.py`)."""

    __tablename__ = "shadow_scores"

    assessment_id: Mapped[str] = mapped_column(ForeignKey("assessments.id"), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(40), index=True)
    policy_version: Mapped[str] = mapped_column(String(40))
    score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Inspection(Base):
    """A warehouse inspection of returned goods, in the data contract's form (return_id, inspected_at, outcome),
    with its notes and who reported it. `synced_to` names the warehouse snapshot that first held it."""

    __tablename__ = "inspections"
    __table_args__ = (UniqueConstraint("return_id", "inspected_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    return_id: Mapped[str] = mapped_column(String(200), index=True)
    inspected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(20))
    notes: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(120))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    event_seq: Mapped[int] = mapped_column(ForeignKey("evidence_events.seq"))
    synced_to: Mapped[str | None] = mapped_column(String(20), nullable=True)


class Webhook(Base):
    """A receiver of events: its URL, the event types it takes, and the secret its deliveries are signed with
    (kept in clear: signing needs it; shown once when created)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column()
    secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(120))
    removed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookEvent(Base):
    """The outbox: an event written in the same transaction as the change it announces."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON


class WebhookDelivery(Base):
    """One event for one webhook: pending until the receiver answers 2xx, dead after the retry window."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "webhook_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    status: Mapped[str] = mapped_column(String(12))  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)  # whose attempt may be recorded
    last_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


Index("ix_webhook_deliveries_due", WebhookDelivery.webhook_id, WebhookDelivery.status, WebhookDelivery.next_at)


class QueueRow(Base):
    """A named queue: the cases its filter (canonical JSON, `cases.queues.QueueRule`) selects, its SLA, the most
    cases not closed a member may hold before the assigner skips them, and the member it assigned to last (the
    round robin's position, kept here so every worker and instance continues the same turn)."""

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    filter: Mapped[str] = mapped_column(Text)
    sla_hours: Mapped[float] = mapped_column(Float)
    cap: Mapped[int] = mapped_column(Integer)
    last_assignee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(120))


class QueueMember(Base):
    """An analyst (a UI user) the assigner may give a queue's cases to."""

    __tablename__ = "queue_members"

    queue_name: Mapped[str] = mapped_column(ForeignKey("queues.name"), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)
