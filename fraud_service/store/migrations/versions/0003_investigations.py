"""Investigations: case reasons and closing time, notes, analysts' labels, analyst users.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("reason", sa.String(80), nullable=False, server_default=""))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_cases_assignee", "cases", ["assignee"])
    op.create_table(
        "case_notes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(40), sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("author", sa.String(120), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("evidence_events.seq"), nullable=False),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("return_id", sa.String(200), nullable=False, index=True),
        sa.Column("label", sa.String(10), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("case_id", sa.String(40), sa.ForeignKey("cases.id"), nullable=True, index=True),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("event_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("evidence_events.seq"), nullable=False),
        sa.Column("synced_to", sa.String(20), nullable=True),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("labels")
    op.drop_table("case_notes")
    op.drop_index("ix_cases_assignee", "cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("reason")
