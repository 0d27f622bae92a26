"""example: notes and the domain-event log (the first revision of the "example" branch)

Revision ID: ex_0001
Revises: 
Create Date: 2026-11-21 23:38:48.437815
"""

import sqlalchemy as sa
from alembic import op

revision = 'ex_0001'
down_revision = None
branch_labels = ('example',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('example_event_log',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_example_event_log_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_example_event_log')),
    sa.UniqueConstraint('vendor_id', 'event_id', name=op.f('uq_example_event_log_vendor_id_event_id'))
    )
    op.create_index(op.f('ix_example_event_log_vendor_id'), 'example_event_log', ['vendor_id'], unique=False)
    op.create_table('example_note',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('pinged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_example_note_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_example_note'))
    )
    op.create_index(op.f('ix_example_note_vendor_id'), 'example_note', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_example_note_vendor_id'), table_name='example_note')
    op.drop_table('example_note')
    op.drop_index(op.f('ix_example_event_log_vendor_id'), table_name='example_event_log')
    op.drop_table('example_event_log')
