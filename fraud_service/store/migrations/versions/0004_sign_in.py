"""Sign-in: sessions revoked on the server, failed sign-ins counted per user and per address.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("sessions_revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(120), primary_key=True),  # user:NAME or address:IP
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sessions_revoked_at")
