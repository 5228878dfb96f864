"""Cases: an assessment that needs a human opens one, or joins the open case of a linked account.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("assignee", sa.String(120), nullable=True),
        sa.Column("decision", sa.String(40), nullable=False),
        sa.Column("max_score", sa.Float, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("assessments", sa.Integer, nullable=False),
    )
    op.create_index("ix_cases_status", "cases", ["status"])
    op.create_table(
        "case_links",
        sa.Column("case_id", sa.String(40), sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("entity", sa.String(20), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
    )
    op.create_index("ix_case_links_entity_value", "case_links", ["entity", "value"])


def downgrade() -> None:
    op.drop_table("case_links")
    op.drop_table("cases")
