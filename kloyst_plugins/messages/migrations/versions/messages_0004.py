"""messages: the indexes a conversation's thread reads (one contact's messages on one number, in order)

``ix_message_log_thread`` covers messages that name a contact (campaign, API and reply messages);
``ix_inbound_message_thread`` a contact's inbound messages by the time Meta says they were sent,
which is also what the customer-service window is measured from.

Revision ID: messages_0004
Revises: messages_0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'messages_0004'
down_revision = 'messages_0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_message_log_thread', 'message_log', ['contact_id', 'phone_number_id', 'created_at', 'id'],
                    unique=False, postgresql_where=sa.text('contact_id IS NOT NULL'),
                    sqlite_where=sa.text('contact_id IS NOT NULL'))
    op.create_index('ix_inbound_message_thread', 'inbound_message', ['contact_id', 'phone_number_id', 'sent_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbound_message_thread', table_name='inbound_message')
    op.drop_index('ix_message_log_thread', table_name='message_log', postgresql_where=sa.text('contact_id IS NOT NULL'),
                  sqlite_where=sa.text('contact_id IS NOT NULL'))
