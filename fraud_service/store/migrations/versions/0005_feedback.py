"""The returns system hears back: outcomes, inspections, appeals, webhooks and their outbox.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(_at("appealed_at", nullable=True))
    op.create_table(
        "outcomes",
        sa.Column("assessment_id", sa.String(40), sa.ForeignKey("assessments.id"), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("decision", sa.String(40), nullable=False),
        _at("decided_at"),
        sa.Column("decided_by", sa.String(120), nullable=False),
        sa.Column("label", sa.String(10), nullable=True),
        sa.Column("appealed", sa.Boolean, nullable=False),
        sa.Column("event_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("evidence_events.seq"), nullable=False),
    )
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("return_id", sa.String(200), nullable=False),
        _at("inspected_at"),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        _at("received_at"),
        sa.Column("event_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("evidence_events.seq"), nullable=False),
        sa.Column("synced_to", sa.String(20), nullable=True),
        sa.UniqueConstraint("return_id", "inspected_at"),
    )
    op.create_index("ix_inspections_return_id", "inspections", ["return_id"])
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(80), nullable=False),
        _at("created_at"),
        sa.Column("created_by", sa.String(120), nullable=False),
        _at("removed_at", nullable=True),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        _at("created_at"),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
        sa.Column("webhook_id", sa.String(40), sa.ForeignKey("webhooks.id"), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        _at("next_at"),
        _at("expires_at"),
        _at("lease_until", nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        _at("last_at", nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _at("delivered_at", nullable=True),
        sa.UniqueConstraint("event_id", "webhook_id"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["webhook_id", "status", "next_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhooks")
    op.drop_table("inspections")
    op.drop_table("outcomes")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("appealed_at")
