"""campaigns: campaigns, their frozen recipients and fan-out chunks

Revision ID: campaigns_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = 'campaigns_0001'
down_revision = None
branch_labels = ('campaigns',)
# messages_0002 (campaign messages carry price_micros and hold_id) brings the core, contacts, waba and
# templates with it. wallet and pricing: no foreign key reaches their tables (holds and quotations are
# referenced by id), but a campaign needs both.
depends_on = ('messages_0002', 'wallet_0001', 'pricing_0001')

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
ACTIVE = sa.text("status NOT IN ('DRAFT', 'COMPLETED', 'CANCELLED')")


def upgrade() -> None:
    op.create_table('campaign',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('template_id', sa.Uuid(), nullable=False),
    sa.Column('phone_number_id', sa.Uuid(), nullable=False),
    sa.Column('audience', JSON, nullable=False),
    sa.Column('variable_mapping', JSON, nullable=False),
    sa.Column('buttons', JSON, nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('quotation_id', sa.Uuid(), nullable=True),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('hold_id', sa.Uuid(), nullable=True),
    sa.Column('held_micros', sa.BigInteger(), nullable=True),
    sa.Column('minimum_topup_micros', sa.BigInteger(), nullable=False),
    sa.Column('recipients', sa.Integer(), nullable=False),
    sa.Column('launch_key', sa.String(length=255), nullable=True),
    sa.Column('launched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fanout_completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_number.id'], name=op.f('fk_campaign_phone_number_id_phone_number')),
    sa.ForeignKeyConstraint(['template_id'], ['message_template.id'], name=op.f('fk_campaign_template_id_message_template')),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_campaign_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign'))
    )
    op.create_index('ix_campaign_active', 'campaign', ['status'], unique=False, postgresql_where=ACTIVE,
                    sqlite_where=ACTIVE)
    op.create_index('ix_campaign_vendor_created', 'campaign', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_table('campaign_recipient',
    sa.Column('campaign_id', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('price_micros', sa.BigInteger(), nullable=False),
    sa.Column('skipped', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('campaign_id', 'seq', name=op.f('pk_campaign_recipient'))
    )
    op.create_table('campaign_chunk',
    sa.Column('campaign_id', sa.Uuid(), nullable=False),
    sa.Column('seq_from', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('seq_to', sa.Integer(), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('written', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_campaign_chunk_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'seq_from', name=op.f('pk_campaign_chunk'))
    )


def downgrade() -> None:
    op.drop_table('campaign_chunk')
    op.drop_table('campaign_recipient')
    op.drop_index('ix_campaign_vendor_created', table_name='campaign')
    op.drop_index('ix_campaign_active', table_name='campaign', postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.drop_table('campaign')
