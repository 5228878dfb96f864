"""Rules as data: each saved rule set (its version, canonical JSON, who saved it and why), and list entries that
expire.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(120), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("event_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("evidence_events.seq"), nullable=False),
    )
    with op.batch_alter_table("list_entries") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("list_entries") as batch:
        batch.drop_column("expires_at")
    op.drop_table("rule_sets")
