"""pricing: rate-card snapshots (rates, markets, tiers), platform fee rules, quotations and their items

Revision ID: pricing_0001
Revises: 
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'pricing_0001'
down_revision = None
branch_labels = ('pricing',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('pricing_fee_rule',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('markup_micropercent', sa.BigInteger(), nullable=False),
    sa.Column('per_message_fee_micros', sa.BigInteger(), nullable=False),
    sa.Column('minimum_charge_micros', sa.BigInteger(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_pricing_fee_rule_created_by_app_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_pricing_fee_rule_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pricing_fee_rule'))
    )
    op.create_index(op.f('ix_pricing_fee_rule_vendor_id'), 'pricing_fee_rule', ['vendor_id'], unique=False)
    op.create_table('pricing_snapshot',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_pricing_snapshot_created_by_app_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pricing_snapshot')),
    sa.UniqueConstraint('source_sha256', name=op.f('uq_pricing_snapshot_source_sha256'))
    )
    op.create_index('ix_pricing_snapshot_current', 'pricing_snapshot', ['currency', 'effective_from'], unique=False)
    op.create_table('pricing_market',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('snapshot_id', sa.Uuid(), nullable=False),
    sa.Column('country', sa.String(length=3), nullable=False),
    sa.Column('calling_code', sa.Integer(), nullable=False),
    sa.Column('market', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['pricing_snapshot.id'], name=op.f('fk_pricing_market_snapshot_id_pricing_snapshot'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pricing_market')),
    sa.UniqueConstraint('snapshot_id', 'country', name=op.f('uq_pricing_market_snapshot_id_country'))
    )
    op.create_table('pricing_rate',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('snapshot_id', sa.Uuid(), nullable=False),
    sa.Column('market', sa.String(length=100), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('rate_micros', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['pricing_snapshot.id'], name=op.f('fk_pricing_rate_snapshot_id_pricing_snapshot'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pricing_rate')),
    sa.UniqueConstraint('snapshot_id', 'market', 'category', name=op.f('uq_pricing_rate_snapshot_id_market_category'))
    )
    op.create_table('pricing_tier',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('snapshot_id', sa.Uuid(), nullable=False),
    sa.Column('market', sa.String(length=100), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('band_from', sa.BigInteger(), nullable=False),
    sa.Column('band_to', sa.BigInteger(), nullable=True),
    sa.Column('rate_type', sa.String(length=8), nullable=False),
    sa.Column('rate_micros', sa.BigInteger(), nullable=False),
    sa.Column('discount_micropercent', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['pricing_snapshot.id'], name=op.f('fk_pricing_tier_snapshot_id_pricing_snapshot'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pricing_tier')),
    sa.UniqueConstraint('snapshot_id', 'market', 'category', 'band_from', name=op.f('uq_pricing_tier_snapshot_id_market_category_band_from'))
    )
    op.create_table('quotation',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('snapshot_id', sa.Uuid(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('recipients', sa.BigInteger(), nullable=False),
    sa.Column('subtotal_micros', sa.BigInteger(), nullable=False),
    sa.Column('fees_micros', sa.BigInteger(), nullable=False),
    sa.Column('minimum_topup_micros', sa.BigInteger(), nullable=False),
    sa.Column('total_micros', sa.BigInteger(), nullable=False),
    sa.Column('adjustments', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('wallet_available_micros', sa.BigInteger(), nullable=True),
    sa.Column('wallet_sufficient', sa.Boolean(), nullable=False),
    sa.Column('pdf_status', sa.String(length=16), nullable=False),
    sa.Column('pdf_bytes', sa.LargeBinary(), nullable=True),
    sa.Column('pdf_error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_quotation_created_by_app_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['snapshot_id'], ['pricing_snapshot.id'], name=op.f('fk_quotation_snapshot_id_pricing_snapshot'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_quotation_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotation'))
    )
    op.create_index('ix_quotation_accepted', 'quotation', ['vendor_id', 'category', 'accepted_at'], unique=False)
    op.create_index('ix_quotation_vendor_created', 'quotation', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_table('quotation_item',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('quotation_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('country', sa.String(length=3), nullable=True),
    sa.Column('market', sa.String(length=100), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('list_rate_micros', sa.BigInteger(), nullable=False),
    sa.Column('tier_from', sa.BigInteger(), nullable=True),
    sa.Column('tier_to', sa.BigInteger(), nullable=True),
    sa.Column('discount_micropercent', sa.BigInteger(), nullable=False),
    sa.Column('rate_micros', sa.BigInteger(), nullable=False),
    sa.Column('unit_price_micros', sa.BigInteger(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['quotation_id'], ['quotation.id'], name=op.f('fk_quotation_item_quotation_id_quotation'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_quotation_item_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotation_item'))
    )
    op.create_index('ix_quotation_item_quotation', 'quotation_item', ['quotation_id', 'position'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_quotation_item_quotation', table_name='quotation_item')
    op.drop_table('quotation_item')
    op.drop_index('ix_quotation_vendor_created', table_name='quotation')
    op.drop_index('ix_quotation_accepted', table_name='quotation')
    op.drop_table('quotation')
    op.drop_table('pricing_tier')
    op.drop_table('pricing_rate')
    op.drop_table('pricing_market')
    op.drop_index('ix_pricing_snapshot_current', table_name='pricing_snapshot')
    op.drop_table('pricing_snapshot')
    op.drop_index(op.f('ix_pricing_fee_rule_vendor_id'), table_name='pricing_fee_rule')
    op.drop_table('pricing_fee_rule')
