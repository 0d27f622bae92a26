"""core: disabling a plugin keeps its vendor_plugin row (and settings): enabled, disabled_at

Revision ID: 0004_vendor_plugin_settings
Revises: 0003_process_heartbeat
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = '0004_vendor_plugin_settings'
down_revision = '0003_process_heartbeat'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing row is an enabled plugin (disabling used to delete the row).
    with op.batch_alter_table('vendor_plugin') as batch_op:
        batch_op.add_column(sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Before this revision a row meant "enabled": the rows of disabled plugins (and their settings) go.
    vendor_plugin = sa.table('vendor_plugin', sa.column('enabled', sa.Boolean()))
    op.execute(vendor_plugin.delete().where(vendor_plugin.c.enabled == sa.false()))
    with op.batch_alter_table('vendor_plugin') as batch_op:
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('enabled')
