"""core: process heartbeats (which kloyst processes are alive, so a dead one's claims come back in seconds)

Revision ID: 0003_process_heartbeat
Revises: 0002_webhooks
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = '0003_process_heartbeat'
down_revision = '0002_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('process_heartbeat',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_heartbeat'))
    )


def downgrade() -> None:
    op.drop_table('process_heartbeat')
