"""templates: a template sync asked for is queued once per WABA

``template_sync.queued_at`` is set by the request that queues a sync and cleared when the sync
has run, so asking again meanwhile queues nothing more. The request now creates the WABA's
``template_sync`` row, before any attempt: ``last_attempt_at`` is null until the first one.

Revision ID: templates_0002
Revises: templates_0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'templates_0002'
down_revision = 'templates_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('template_sync') as batch:
        batch.add_column(sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))
        batch.alter_column('last_attempt_at', existing_type=sa.DateTime(timezone=True), nullable=True)


def downgrade() -> None:
    op.execute(sa.text('DELETE FROM template_sync WHERE last_attempt_at IS NULL'))
    with op.batch_alter_table('template_sync') as batch:
        batch.alter_column('last_attempt_at', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column('queued_at')
