"""waba: initial tables

Revision ID: waba_0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa

revision = 'waba_0001'
down_revision = None
branch_labels = ('waba',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('shared_waba',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meta_waba_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('access_token_enc', sa.LargeBinary(), nullable=False),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sync_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shared_waba')),
    sa.UniqueConstraint('meta_waba_id', name=op.f('uq_shared_waba_meta_waba_id'))
    )
    op.create_table('shared_phone_number',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('shared_waba_id', sa.Uuid(), nullable=False),
    sa.Column('meta_phone_number_id', sa.String(length=32), nullable=False),
    sa.Column('display_phone_number', sa.String(length=32), nullable=False),
    sa.Column('verified_name', sa.String(length=200), nullable=False),
    sa.Column('quality_rating', sa.String(length=16), nullable=False),
    sa.Column('throughput_mps', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('messaging_limit_tier', sa.String(length=32), nullable=True),
    sa.Column('assigned_vendor_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['assigned_vendor_id'], ['vendor.id'], name=op.f('fk_shared_phone_number_assigned_vendor_id_vendor'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['shared_waba_id'], ['shared_waba.id'], name=op.f('fk_shared_phone_number_shared_waba_id_shared_waba'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shared_phone_number')),
    sa.UniqueConstraint('meta_phone_number_id', name=op.f('uq_shared_phone_number_meta_phone_number_id'))
    )
    op.create_index(op.f('ix_shared_phone_number_assigned_vendor_id'), 'shared_phone_number', ['assigned_vendor_id'], unique=False)
    op.create_index(op.f('ix_shared_phone_number_shared_waba_id'), 'shared_phone_number', ['shared_waba_id'], unique=False)
    op.create_table('waba',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meta_waba_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('business_id', sa.String(length=32), nullable=True),
    sa.Column('access_token_enc', sa.LargeBinary(), nullable=False),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sync_error', sa.String(length=500), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_waba_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_waba')),
    sa.UniqueConstraint('meta_waba_id', name=op.f('uq_waba_meta_waba_id'))
    )
    op.create_index(op.f('ix_waba_vendor_id'), 'waba', ['vendor_id'], unique=False)
    op.create_table('phone_number',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meta_phone_number_id', sa.String(length=32), nullable=False),
    sa.Column('waba_id', sa.Uuid(), nullable=True),
    sa.Column('shared_waba_id', sa.Uuid(), nullable=True),
    sa.Column('display_phone_number', sa.String(length=32), nullable=False),
    sa.Column('verified_name', sa.String(length=200), nullable=False),
    sa.Column('quality_rating', sa.String(length=16), nullable=False),
    sa.Column('throughput_mps', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('messaging_limit_tier', sa.String(length=32), nullable=True),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('(waba_id IS NULL) <> (shared_waba_id IS NULL)', name=op.f('ck_phone_number_one_waba')),
    sa.ForeignKeyConstraint(['shared_waba_id'], ['shared_waba.id'], name=op.f('fk_phone_number_shared_waba_id_shared_waba'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_phone_number_vendor_id_vendor'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['waba_id'], ['waba.id'], name=op.f('fk_phone_number_waba_id_waba'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phone_number')),
    sa.UniqueConstraint('meta_phone_number_id', name=op.f('uq_phone_number_meta_phone_number_id'))
    )
    op.create_index(op.f('ix_phone_number_shared_waba_id'), 'phone_number', ['shared_waba_id'], unique=False)
    op.create_index(op.f('ix_phone_number_vendor_id'), 'phone_number', ['vendor_id'], unique=False)
    op.create_index(op.f('ix_phone_number_waba_id'), 'phone_number', ['waba_id'], unique=False)


def downgrade() -> None:
    op.drop_table('phone_number')
    op.drop_table('waba')
    op.drop_table('shared_phone_number')
    op.drop_table('shared_waba')
