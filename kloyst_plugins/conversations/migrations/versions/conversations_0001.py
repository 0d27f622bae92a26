"""conversations: the conversation table

Revision ID: conversations_0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = 'conversations_0001'
down_revision = None
branch_labels = ('conversations',)
depends_on = ('0001_core', 'contacts_0001', 'waba_0001', 'messages_0004')


def upgrade() -> None:
    op.create_table('conversation',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=False),
    sa.Column('phone_number_id', sa.Uuid(), nullable=False),
    sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_message_id', sa.Uuid(), nullable=True),
    sa.Column('last_message_direction', sa.String(length=8), nullable=True),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unread_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('assignee_user_id', sa.Uuid(), nullable=True),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['assignee_user_id'], ['app_user.id'],
                            name=op.f('fk_conversation_assignee_user_id_app_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_conversation_contact_id_contact'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_number.id'],
                            name=op.f('fk_conversation_phone_number_id_phone_number'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_conversation_vendor_id_vendor'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation')),
    sa.UniqueConstraint('contact_id', 'phone_number_id', name=op.f('uq_conversation_contact_id_phone_number_id'))
    )
    op.create_index('ix_conversation_recent', 'conversation', ['vendor_id', 'last_message_at', 'id'], unique=False)
    op.create_index('ix_conversation_unread', 'conversation', ['vendor_id', 'last_message_at', 'id'], unique=False,
                    postgresql_where=sa.text('unread_count > 0'), sqlite_where=sa.text('unread_count > 0'))
    op.create_index('ix_conversation_assignee', 'conversation', ['assignee_user_id', 'last_message_at', 'id'],
                    unique=False, postgresql_where=sa.text('assignee_user_id IS NOT NULL'),
                    sqlite_where=sa.text('assignee_user_id IS NOT NULL'))
    op.create_index('ix_conversation_labels', 'conversation', ['labels'], unique=False, postgresql_using='gin',
                    postgresql_ops={'labels': 'jsonb_path_ops'})


def downgrade() -> None:
    op.drop_table('conversation')
