"""Shadow scoring: what a candidate model would have answered each assessment.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_scores",
        sa.Column("assessment_id", sa.String(40), sa.ForeignKey("assessments.id"), primary_key=True),
        sa.Column("model_version", sa.String(40), nullable=False),
        sa.Column("policy_version", sa.String(40), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("decision", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shadow_scores_model_version", "shadow_scores", ["model_version"])


def downgrade() -> None:
    op.drop_table("shadow_scores")
