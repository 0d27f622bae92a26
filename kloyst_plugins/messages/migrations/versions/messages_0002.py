"""messages: priced messages; fewer per-row checks on message_log for campaign fan-out

``price_micros`` and ``hold_id`` are set by whoever priced the message (a campaign) and
reported to ``kloyst_messages_settled`` when the message is sent, fails, or is undelivered.
Also new: the PAUSED and CANCELLED statuses (``status`` is a plain string column, so no
schema change is needed for them).

Campaigns insert a million ``message_log`` rows at a time, so what each row costs matters:

* the foreign keys on ``vendor_id``, ``contact_id`` and ``template_id`` are dropped (each was a
  lookup and a row lock per inserted row; ``contact_id``'s ``ON DELETE SET NULL`` also made
  every contact deletion scan the table, which has no index on it). ``phone_number_id`` keeps
  its cascading key: deleting a WABA or a vendor still removes its messages through it;
* ``ix_message_log_wamid`` becomes partial (``wamid IS NOT NULL``): a queued message has no
  wamid and no longer takes an index entry until it is sent.

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


_DROPPED_KEYS = (('fk_message_log_vendor_id_vendor', 'vendor', 'vendor_id', 'CASCADE'),
                 ('fk_message_log_contact_id_contact', 'contact', 'contact_id', 'SET NULL'),
                 ('fk_message_log_template_id_message_template', 'message_template', 'template_id', 'SET NULL'))


def upgrade() -> None:
    # batch_alter_table: SQLite (the embedded default) can only drop a constraint by rebuilding the table.
    with op.batch_alter_table('message_log') as batch:
        batch.add_column(sa.Column('price_micros', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('hold_id', sa.Uuid(), nullable=True))
        for name, _, _, _ in _DROPPED_KEYS:
            batch.drop_constraint(op.f(name), type_='foreignkey')
        batch.drop_index('ix_message_log_wamid')
        batch.create_index('ix_message_log_wamid', ['wamid'], unique=True,
                           postgresql_where=sa.text('wamid IS NOT NULL'), sqlite_where=sa.text('wamid IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('message_log') as batch:
        batch.drop_index('ix_message_log_wamid')
        batch.create_index('ix_message_log_wamid', ['wamid'], unique=True)
        for name, table, column, ondelete in _DROPPED_KEYS:
            batch.create_foreign_key(op.f(name), table, [column], ['id'], ondelete=ondelete)
        batch.drop_column('hold_id')
        batch.drop_column('price_micros')
