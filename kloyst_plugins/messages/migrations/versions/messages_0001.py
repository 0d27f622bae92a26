"""messages: initial tables

Revision ID: messages_0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'messages_0001'
down_revision = None
branch_labels = ('messages',)
depends_on = ('0001_core', 'contacts_0001', 'waba_0001', 'templates_0001')


def upgrade() -> None:
    op.create_table('message_log',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('phone_number_id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=True),
    sa.Column('campaign_id', sa.Uuid(), nullable=True),
    sa.Column('template_id', sa.Uuid(), nullable=True),
    sa.Column('template_name', sa.String(length=512), nullable=True),
    sa.Column('template_language', sa.String(length=16), nullable=True),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('recipient_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('content_enc', sa.LargeBinary(), nullable=False),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_rank', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('maybe_sent_before', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('duplicate_sends', sa.Integer(), server_default='0', nullable=False),
    sa.Column('wamid', sa.String(length=128), nullable=True),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('error_subcode', sa.Integer(), nullable=True),
    sa.Column('error_message', sa.String(length=500), nullable=True),
    sa.Column('pricing_category', sa.String(length=32), nullable=True),
    sa.Column('billable', sa.Boolean(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_message_log_contact_id_contact'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_number.id'], name=op.f('fk_message_log_phone_number_id_phone_number'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['message_template.id'], name=op.f('fk_message_log_template_id_message_template'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_message_log_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_log')),
    sa.UniqueConstraint('vendor_id', 'idempotency_key', name=op.f('uq_message_log_vendor_id_idempotency_key'))
    )
    op.create_index('ix_message_log_campaign', 'message_log', ['campaign_id', 'status'], unique=False, postgresql_where=sa.text('campaign_id IS NOT NULL'), sqlite_where=sa.text('campaign_id IS NOT NULL'))
    op.create_index('ix_message_log_due', 'message_log', ['phone_number_id', 'next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'QUEUED'"), sqlite_where=sa.text("status = 'QUEUED'"))
    op.create_index('ix_message_log_sending', 'message_log', ['lease_until'], unique=False, postgresql_where=sa.text("status = 'SENDING'"), sqlite_where=sa.text("status = 'SENDING'"))
    op.create_index('ix_message_log_vendor_created', 'message_log', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_message_log_wamid', 'message_log', ['wamid'], unique=True)
    op.create_table('dead_letter',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('message_id', sa.Uuid(), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('error_subcode', sa.Integer(), nullable=True),
    sa.Column('error_kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requeued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message_log.id'], name=op.f('fk_dead_letter_message_id_message_log'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_dead_letter_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letter'))
    )
    op.create_index(op.f('ix_dead_letter_message_id'), 'dead_letter', ['message_id'], unique=False)
    op.create_index('ix_dead_letter_vendor_created', 'dead_letter', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_dead_letter_vendor_id'), 'dead_letter', ['vendor_id'], unique=False)
    op.create_table('message_status_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.Uuid(), nullable=True),
    sa.Column('wamid', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('pricing_category', sa.String(length=32), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message_log.id'], name=op.f('fk_message_status_event_message_id_message_log'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_message_status_event_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_status_event')),
    sa.UniqueConstraint('wamid', 'status', name=op.f('uq_message_status_event_wamid_status'))
    )
    op.create_index(op.f('ix_message_status_event_message_id'), 'message_status_event', ['message_id'], unique=False)
    op.create_index(op.f('ix_message_status_event_vendor_id'), 'message_status_event', ['vendor_id'], unique=False)
    # ### end Alembic commands ###
    op.create_table('inbound_message',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('wamid', sa.String(length=128), nullable=False),
    sa.Column('phone_number_id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=True),
    sa.Column('sender_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('content_enc', sa.LargeBinary(), nullable=False),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('opt_out', sa.Boolean(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_inbound_message_contact_id_contact'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_number.id'], name=op.f('fk_inbound_message_phone_number_id_phone_number'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_inbound_message_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_message')),
    sa.UniqueConstraint('wamid', name=op.f('uq_inbound_message_wamid'))
    )
    op.create_index(op.f('ix_inbound_message_contact_id'), 'inbound_message', ['contact_id'], unique=False)
    op.create_index(op.f('ix_inbound_message_vendor_id'), 'inbound_message', ['vendor_id'], unique=False)
    op.create_index('ix_inbound_message_vendor_received', 'inbound_message', ['vendor_id', 'received_at', 'id'], unique=False)

    op.create_table('duplicate_send',
    sa.Column('wamid', sa.String(length=128), nullable=False),
    sa.Column('message_id', sa.Uuid(), nullable=False),
    sa.Column('detected_by', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message_log.id'], name=op.f('fk_duplicate_send_message_id_message_log'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_duplicate_send_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('wamid', name=op.f('pk_duplicate_send'))
    )
    op.create_index(op.f('ix_duplicate_send_message_id'), 'duplicate_send', ['message_id'], unique=False)
    op.create_index(op.f('ix_duplicate_send_vendor_id'), 'duplicate_send', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_table('duplicate_send')
    op.drop_table('inbound_message')
    op.drop_table('message_status_event')
    op.drop_table('dead_letter')
    op.drop_table('message_log')
