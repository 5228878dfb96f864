"""Queues: named queues defined by a filter (with their SLA, per-person cap and round-robin position), their member
analysts, and when each person was last seen in the UI.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("sla_hours", sa.Float, nullable=False),
        sa.Column("cap", sa.Integer, nullable=False),
        sa.Column("last_assignee", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(120), nullable=False),
    )
    op.create_table(
        "queue_members",
        sa.Column("queue_name", sa.String(40), sa.ForeignKey("queues.name"), primary_key=True),
        sa.Column("user_name", sa.String(64), sa.ForeignKey("users.name"), primary_key=True),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_seen_at")
    op.drop_table("queue_members")
    op.drop_table("queues")
