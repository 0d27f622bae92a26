"""pricing: a quotation's estimate of the recipients whose customer-service window is open

``estimated_free_in_window`` counts the recipients of a UTILITY quotation whose window was
open when it was quoted, and ``estimated_free_in_window_micros`` what their messages would
cost; both are an estimate shown beside the total, which stays the full price (docs/pricing.md).

Revision ID: pricing_0002
Revises: pricing_0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'pricing_0002'
down_revision = 'pricing_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Server defaults fill the quotations that exist: none of them estimated anything.
    op.add_column('quotation', sa.Column('estimated_free_in_window', sa.BigInteger(), nullable=False,
                                         server_default='0'))
    op.add_column('quotation', sa.Column('estimated_free_in_window_micros', sa.BigInteger(), nullable=False,
                                         server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('quotation') as batch:
        batch.drop_column('estimated_free_in_window_micros')
        batch.drop_column('estimated_free_in_window')
