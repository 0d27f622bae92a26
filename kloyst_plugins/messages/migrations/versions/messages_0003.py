"""messages: the owner of a message in flight; an index of statuses kept without a message

``claimed_by`` names the process (``process_heartbeat``) whose sender holds a SENDING message,
so that the others take it back within seconds of that process's death instead of after the
lease. ``ix_message_status_event_unlinked`` serves the repair pass that links statuses which
arrived before any message carried their wamid.

Revision ID: messages_0003
Revises: messages_0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'messages_0003'
down_revision = 'messages_0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: PostgreSQL adds it without rewriting message_log.
    op.add_column('message_log', sa.Column('claimed_by', sa.Uuid(), nullable=True))
    op.create_index('ix_message_status_event_unlinked', 'message_status_event', ['received_at'], unique=False,
                    postgresql_where=sa.text('message_id IS NULL'), sqlite_where=sa.text('message_id IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_message_status_event_unlinked', table_name='message_status_event',
                  postgresql_where=sa.text('message_id IS NULL'), sqlite_where=sa.text('message_id IS NULL'))
    with op.batch_alter_table('message_log') as batch:
        batch.drop_column('claimed_by')
