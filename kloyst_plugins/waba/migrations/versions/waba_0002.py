"""waba: where each WABA's phone-number sync stands (sync_status)

Syncs run in the background, so a client that has just registered a WABA polls
``GET /v1/wabas/{id}`` for ``sync_status`` before listing its numbers. Existing rows get the
status their columns already tell: synced when they have been, failed when only an error was
recorded, queued otherwise.

Revision ID: waba_0002
Revises: waba_0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'waba_0002'
down_revision = 'waba_0001'
branch_labels = None
depends_on = None

TABLES = ('waba', 'shared_waba')


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('sync_status', sa.String(length=16), server_default='queued', nullable=False))
        op.execute(f"UPDATE {table} SET sync_status = CASE WHEN last_synced_at IS NOT NULL THEN 'synced' "
                   "WHEN last_sync_error IS NOT NULL THEN 'failed' ELSE 'queued' END")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('sync_status')
