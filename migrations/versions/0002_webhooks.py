"""core: webhook deliveries (Meta's raw webhook POSTs, stored until applied)

Revision ID: 0002_webhooks
Revises: 0001_core
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa

revision = '0002_webhooks'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_delivery',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dedupe_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_webhook_delivery_dedupe_key'))
    )
    op.create_index('ix_webhook_delivery_due', 'webhook_delivery', ['next_attempt_at'], unique=False, postgresql_where=sa.text('processed_at IS NULL'), sqlite_where=sa.text('processed_at IS NULL'))
    op.create_index('ix_webhook_delivery_processed', 'webhook_delivery', ['processed_at'], unique=False, postgresql_where=sa.text('processed_at IS NOT NULL'), sqlite_where=sa.text('processed_at IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_webhook_delivery_processed', table_name='webhook_delivery', postgresql_where=sa.text('processed_at IS NOT NULL'), sqlite_where=sa.text('processed_at IS NOT NULL'))
    op.drop_index('ix_webhook_delivery_due', table_name='webhook_delivery', postgresql_where=sa.text('processed_at IS NULL'), sqlite_where=sa.text('processed_at IS NULL'))
    op.drop_table('webhook_delivery')
