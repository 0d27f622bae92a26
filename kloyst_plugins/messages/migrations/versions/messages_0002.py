"""messages: a message may carry its price and the wallet hold that pays for it

``price_micros`` and ``hold_id`` are set by whoever priced the message (a campaign) and
reported to ``kloyst_messages_settled`` when the message is sent, fails, or is undelivered.
Also new: the PAUSED and CANCELLED statuses (``status`` is a plain string column, so no
schema change is needed for them).

Revision ID: messages_0002
Revises: messages_0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = 'messages_0002'
down_revision = 'messages_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('message_log', sa.Column('price_micros', sa.BigInteger(), nullable=True))
    op.add_column('message_log', sa.Column('hold_id', sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column('message_log', 'hold_id')
    op.drop_column('message_log', 'price_micros')
