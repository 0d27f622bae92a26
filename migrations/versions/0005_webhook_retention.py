"""core: processed webhook deliveries expire by their sequence; the index that served the old purge goes

Retention (kloyst.retention) walks ``webhook_delivery`` by its primary key, which grows with
``received_at``; ``ix_webhook_delivery_processed`` only served the drainer's former purge, and
cost every processed delivery one more index entry.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_webhook_retention'
down_revision = '0004_vendor_plugin_settings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_webhook_delivery_processed', table_name='webhook_delivery')


def downgrade() -> None:
    op.create_index('ix_webhook_delivery_processed', 'webhook_delivery', ['processed_at'], unique=False,
                    postgresql_where=sa.text('processed_at IS NOT NULL'), sqlite_where=sa.text('processed_at IS NOT NULL'))
