"""autoreplies: rules, settings, the replies made (the dedupe key) and the away message's conversations

The first revision of the "autoreplies" branch.

Revision ID: autoreplies_0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = 'autoreplies_0001'
down_revision = None
branch_labels = ('autoreplies',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('autoreply_conversation',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=False),
    sa.Column('phone_number_id', sa.Uuid(), nullable=False),
    sa.Column('away_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_autoreply_conversation_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autoreply_conversation')),
    sa.UniqueConstraint('vendor_id', 'contact_id', 'phone_number_id', name=op.f('uq_autoreply_conversation_vendor_id_contact_id_phone_number_id'))
    )
    op.create_table('autoreply_reply',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('trigger', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=True),
    sa.Column('contact_id', sa.Uuid(), nullable=True),
    sa.Column('phone_number_id', sa.Uuid(), nullable=True),
    sa.Column('inbound_id', sa.Uuid(), nullable=True),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('message_id', sa.Uuid(), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_autoreply_reply_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autoreply_reply')),
    sa.UniqueConstraint('vendor_id', 'trigger', name=op.f('uq_autoreply_reply_vendor_id_trigger'))
    )
    op.create_index('ix_autoreply_reply_vendor_created', 'autoreply_reply', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_table('autoreply_rule',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('keyword', sa.String(length=64), nullable=False),
    sa.Column('match', sa.String(length=8), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('reply_text', sa.Text(), nullable=True),
    sa.Column('template_name', sa.String(length=512), nullable=True),
    sa.Column('template_language', sa.String(length=16), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_hit_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_autoreply_rule_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autoreply_rule')),
    sa.UniqueConstraint('vendor_id', 'keyword', 'match', 'language', name=op.f('uq_autoreply_rule_vendor_id_keyword_match_language'))
    )
    op.create_index('ix_autoreply_rule_vendor_created', 'autoreply_rule', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_table('autoreply_settings',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('business_hours', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('away_enabled', sa.Boolean(), nullable=False),
    sa.Column('away_text', sa.Text(), nullable=False),
    sa.Column('away_interval_hours', sa.Integer(), nullable=False),
    sa.Column('opt_out_confirmation', sa.Boolean(), nullable=False),
    sa.Column('opt_out_text', sa.Text(), nullable=False),
    sa.Column('opt_in_confirmation', sa.Boolean(), nullable=False),
    sa.Column('opt_in_text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_autoreply_settings_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autoreply_settings')),
    sa.UniqueConstraint('vendor_id', name=op.f('uq_autoreply_settings_vendor_id'))
    )


def downgrade() -> None:
    op.drop_table('autoreply_settings')
    op.drop_index('ix_autoreply_rule_vendor_created', table_name='autoreply_rule')
    op.drop_table('autoreply_rule')
    op.drop_index('ix_autoreply_reply_vendor_created', table_name='autoreply_reply')
    op.drop_table('autoreply_reply')
    op.drop_table('autoreply_conversation')
