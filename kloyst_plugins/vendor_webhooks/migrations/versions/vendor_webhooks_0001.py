"""vendor_webhooks: endpoints, the per-vendor event feed and its counter, deliveries

``vendor_event.seq`` numbers a vendor's events 1, 2, 3… in commit order (assigned under the lock of the
vendor's ``vendor_event_counter`` row); the feed reads by ``(vendor_id, seq)``. The partial index
``ix_vendor_webhook_delivery_due`` holds PENDING deliveries only: what the deliverer claims.

Revision ID: vendor_webhooks_0001
Revises: 
Create Date: 2026-12-05 15:04:15.502222
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'vendor_webhooks_0001'
down_revision = None
branch_labels = ('vendor_webhooks',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('vendor_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_vendor_event_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_event'))
    )
    op.create_index('ix_vendor_event_feed', 'vendor_event', ['vendor_id', 'seq'], unique=False)
    op.create_index('ix_vendor_event_event_id', 'vendor_event', ['vendor_id', 'event_id'], unique=False)
    op.create_index(op.f('ix_vendor_event_vendor_id'), 'vendor_event', ['vendor_id'], unique=False)
    op.create_table('vendor_event_counter',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_vendor_event_counter_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_event_counter')),
    sa.UniqueConstraint('vendor_id', name=op.f('uq_vendor_event_counter_vendor_id'))
    )
    op.create_index(op.f('ix_vendor_event_counter_vendor_id'), 'vendor_event_counter', ['vendor_id'], unique=False)
    op.create_table('vendor_webhook_endpoint',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('event_types', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secret_enc', sa.LargeBinary(), nullable=False),
    sa.Column('previous_secret_enc', sa.LargeBinary(), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_vendor_webhook_endpoint_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_webhook_endpoint'))
    )
    op.create_index(op.f('ix_vendor_webhook_endpoint_vendor_id'), 'vendor_webhook_endpoint', ['vendor_id'], unique=False)
    op.create_table('vendor_webhook_delivery',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('endpoint_id', sa.Uuid(), nullable=False),
    sa.Column('event_row_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('window_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.Uuid(), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['vendor_webhook_endpoint.id'], name=op.f('fk_vendor_webhook_delivery_endpoint_id_vendor_webhook_endpoint'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_row_id'], ['vendor_event.id'], name=op.f('fk_vendor_webhook_delivery_event_row_id_vendor_event'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_vendor_webhook_delivery_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_webhook_delivery')),
    sa.UniqueConstraint('endpoint_id', 'event_row_id', name=op.f('uq_vendor_webhook_delivery_endpoint_id_event_row_id'))
    )
    op.create_index('ix_vendor_webhook_delivery_claimed', 'vendor_webhook_delivery', ['claimed_by'], unique=False, postgresql_where=sa.text("status = 'DELIVERING'"), sqlite_where=sa.text("status = 'DELIVERING'"))
    op.create_index('ix_vendor_webhook_delivery_due', 'vendor_webhook_delivery', ['endpoint_id', 'next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'PENDING'"), sqlite_where=sa.text("status = 'PENDING'"))
    op.create_index(op.f('ix_vendor_webhook_delivery_event_row_id'), 'vendor_webhook_delivery', ['event_row_id'], unique=False)
    op.create_index('ix_vendor_webhook_delivery_log', 'vendor_webhook_delivery', ['endpoint_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_vendor_webhook_delivery_vendor_id'), 'vendor_webhook_delivery', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_vendor_webhook_delivery_vendor_id'), table_name='vendor_webhook_delivery')
    op.drop_index('ix_vendor_webhook_delivery_log', table_name='vendor_webhook_delivery')
    op.drop_index(op.f('ix_vendor_webhook_delivery_event_row_id'), table_name='vendor_webhook_delivery')
    op.drop_index('ix_vendor_webhook_delivery_due', table_name='vendor_webhook_delivery', postgresql_where=sa.text("status = 'PENDING'"), sqlite_where=sa.text("status = 'PENDING'"))
    op.drop_index('ix_vendor_webhook_delivery_claimed', table_name='vendor_webhook_delivery', postgresql_where=sa.text("status = 'DELIVERING'"), sqlite_where=sa.text("status = 'DELIVERING'"))
    op.drop_table('vendor_webhook_delivery')
    op.drop_index(op.f('ix_vendor_webhook_endpoint_vendor_id'), table_name='vendor_webhook_endpoint')
    op.drop_table('vendor_webhook_endpoint')
    op.drop_index(op.f('ix_vendor_event_counter_vendor_id'), table_name='vendor_event_counter')
    op.drop_table('vendor_event_counter')
    op.drop_index(op.f('ix_vendor_event_vendor_id'), table_name='vendor_event')
    op.drop_index('ix_vendor_event_event_id', table_name='vendor_event')
    op.drop_index('ix_vendor_event_feed', table_name='vendor_event')
    op.drop_table('vendor_event')
