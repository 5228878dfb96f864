"""Chain segments: every event names its chain and its position there; PostgreSQL numbers events from a sequence.

The root chain (1) is the chain every event belonged to so far: its events keep their hashes, each at the
position equal to its number. Evidence writers open segments of their own (`fraud_service.store.chain`).

Columns are added and the (chain, position) index created in place: no table is rebuilt, so SQLite keeps the
rows that point at events (assessments, notes, labels) without its foreign keys refusing a rebuild. `position`
stays nullable in the schema (SQLite cannot make a column NOT NULL in place); every writer fills it, and
`evidence verify` places an event without one at its number, where a segment's event cannot verify.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "uq_evidence_events_chain_position"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("evidence_events", sa.Column("chain", sa.Integer, nullable=False, server_default="1"))
    op.add_column("evidence_events", sa.Column("position", sa.BigInteger, nullable=True))
    op.execute("UPDATE evidence_events SET position = seq")
    op.create_index(INDEX, "evidence_events", ["chain", "position"], unique=True)
    if postgres:
        op.execute("CREATE SEQUENCE evidence_event_ids")
        op.execute("SELECT setval('evidence_event_ids', COALESCE((SELECT MAX(seq) FROM evidence_events), 0) + 1, "
                   "false)")
        # the evidence writers leave an event's number to the database (SQLite: the rowid, max + 1)
        op.execute("ALTER TABLE evidence_events ALTER COLUMN seq SET DEFAULT nextval('evidence_event_ids')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT COUNT(*) FROM evidence_events WHERE chain <> 1 OR position <> seq")).scalar():
        raise RuntimeError("the evidence log holds events of chain segments, or numbered apart from their "
                           "position: revision 0009 cannot hold them")
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE evidence_events ALTER COLUMN seq DROP DEFAULT")
        op.execute("DROP SEQUENCE evidence_event_ids")
    op.drop_index(INDEX, "evidence_events")
    op.drop_column("evidence_events", "position")  # SQLite 3.35+ drops a column in place
    op.drop_column("evidence_events", "chain")
