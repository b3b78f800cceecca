"""ix_dismissals_due: the dispatcher's queue, in the order it claims

The dispatcher claimed its next rows with `status IN ('queued', 'retrying') AND next_attempt_at
<= now ORDER BY next_attempt_at, id LIMIT n` (and an OR for expired leases). No index gave that
order, so every claim read and sorted every due row: 10.7 ms a claim with 10,000 queued on the
bench machine, and a queue of a million would cost a million rows a claim. This partial index
holds only rows waiting to be sent, in claim order, so a claim reads the rows it takes. Callbacks'
dismissals (confirmed on arrival) never enter it.

Built with a plain CREATE INDEX (inside the migration's transaction), which holds off writes to
dismissals while it reads the table once: about a second per million rows. IF NOT EXISTS: an
operator may have built it beforehand with CREATE INDEX CONCURRENTLY (README, "Upgrading").

Revision ID: 9e4f2a61c0d8
Revises: 5c1e0b7d93a2
Create Date: 2026-12-01 10:50:00.000000
"""

from alembic import op
import sqlalchemy as sa

# As it stood at this revision (receiver.models.WAITING_TO_BE_SENT), spelled here so that a later
# change there cannot change what this revision built.
WAITING_TO_BE_SENT = "status IN ('queued', 'retrying')"


revision = '9e4f2a61c0d8'
down_revision = '5c1e0b7d93a2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dismissals', schema=None) as batch_op:
        batch_op.create_index('ix_dismissals_due', ['next_attempt_at', 'id'], unique=False, if_not_exists=True,
                              sqlite_where=sa.text(WAITING_TO_BE_SENT),
                              postgresql_where=sa.text(WAITING_TO_BE_SENT))


def downgrade() -> None:
    with op.batch_alter_table('dismissals', schema=None) as batch_op:
        batch_op.drop_index('ix_dismissals_due', sqlite_where=sa.text(WAITING_TO_BE_SENT),
                            postgresql_where=sa.text(WAITING_TO_BE_SENT))
