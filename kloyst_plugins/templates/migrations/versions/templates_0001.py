"""templates: initial tables

Revision ID: templates_0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'templates_0001'
down_revision = None
branch_labels = ('templates',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('message_template',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meta_waba_id', sa.String(length=32), nullable=False),
    sa.Column('meta_template_id', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=512), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('quality_score', sa.String(length=16), nullable=True),
    sa.Column('parameter_format', sa.String(length=16), nullable=False),
    sa.Column('components', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('header_variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('body_variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('variable_mapping', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('rejected_reason', sa.String(length=500), nullable=True),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_message_template_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_template')),
    sa.UniqueConstraint('vendor_id', 'meta_waba_id', 'name', 'language', name=op.f('uq_message_template_vendor_id_meta_waba_id_name_language'))
    )
    op.create_index('ix_message_template_meta_id', 'message_template', ['meta_template_id'], unique=False)
    op.create_index(op.f('ix_message_template_vendor_id'), 'message_template', ['vendor_id'], unique=False)
    op.create_table('template_sync',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meta_waba_id', sa.String(length=32), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('template_count', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_template_sync_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_template_sync')),
    sa.UniqueConstraint('vendor_id', 'meta_waba_id', name=op.f('uq_template_sync_vendor_id_meta_waba_id'))
    )
    op.create_index(op.f('ix_template_sync_vendor_id'), 'template_sync', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_table('template_sync')
    op.drop_table('message_template')
