"""group_members.callback_id: no foreign key, no index, nullable; to be dropped by a later release

A member row is written with its dismissal, and that dismissal's `callback_id` names the callback
that listed the member: `group_members.callback_id` repeats it. Its foreign key cost PostgreSQL an
index lookup and a row lock per member on the callback path, and its index an entry per member
(bench/README). The code now reads a member's callback through its dismissal; it still writes the
column, which the previous release reads, so that release keeps working until its restart and
after a rollback. A later release stops writing it and drops it (README, "Upgrading"). Dropping
a foreign key and an index, and dropping NOT NULL, are metadata only on PostgreSQL.

Revision ID: 5c1e0b7d93a2
Revises: ad580fa9ed49
Create Date: 2026-12-01 10:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '5c1e0b7d93a2'
down_revision = 'ad580fa9ed49'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.drop_index('ix_group_members_callback_id')
        batch_op.drop_constraint('fk_group_members_callback_id_callbacks', type_='foreignkey')
        batch_op.alter_column('callback_id', existing_type=sa.String(length=26), nullable=True)


def downgrade() -> None:
    # Rows a later release wrote without it get it back from their dismissal.
    op.execute("UPDATE group_members SET callback_id ="
               " (SELECT d.callback_id FROM dismissals d WHERE d.id = group_members.dismissal_id)"
               " WHERE callback_id IS NULL")
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.alter_column('callback_id', existing_type=sa.String(length=26), nullable=False)
        batch_op.create_foreign_key('fk_group_members_callback_id_callbacks', 'callbacks', ['callback_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_index('ix_group_members_callback_id', ['callback_id'], unique=False)
