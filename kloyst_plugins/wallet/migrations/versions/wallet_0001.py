"""wallet: wallets, the append-only ledger, holds

The ledger refuses UPDATE and DELETE with a trigger on both dialects (docs/wallet.md: a
correction is a new entry, never an edit). The one DELETE it lets through is the cascade of a
deleted vendor: by then the vendor row is gone, so the trigger's check finds nothing to protect.
TRUNCATE (the test suite's cleanup) fires no row trigger.

Revision ID: wallet_0001
Revises: 
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa

revision = 'wallet_0001'
down_revision = None
branch_labels = ('wallet',)
depends_on = '0001_core'

_REFUSED = "ledger_entry is append-only: record a correcting entry instead"

_PG_FUNCTION = f"""
CREATE FUNCTION wallet_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM vendor WHERE id = OLD.vendor_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '{_REFUSED}' USING ERRCODE = 'restrict_violation';
END;
$$
"""


def upgrade() -> None:
    op.create_table('wallet',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance_micros', sa.BigInteger(), nullable=False),
    sa.Column('held_micros', sa.BigInteger(), nullable=False),
    sa.Column('low_balance_threshold_micros', sa.BigInteger(), nullable=False),
    sa.Column('low_balance_flag', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('balance_micros >= 0', name=op.f('ck_wallet_balance_not_negative')),
    sa.CheckConstraint('held_micros >= 0', name=op.f('ck_wallet_held_not_negative')),
    sa.CheckConstraint('held_micros <= balance_micros', name=op.f('ck_wallet_held_within_balance')),
    sa.CheckConstraint('low_balance_threshold_micros >= 0', name=op.f('ck_wallet_threshold_not_negative')),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_wallet_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet')),
    sa.UniqueConstraint('vendor_id', name=op.f('uq_wallet_vendor_id'))
    )
    op.create_table('ledger_entry',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('balance_delta_micros', sa.BigInteger(), nullable=False),
    sa.Column('held_delta_micros', sa.BigInteger(), nullable=False),
    sa.Column('hold_id', sa.Uuid(), nullable=True),
    sa.Column('message_id', sa.Uuid(), nullable=True),
    sa.Column('reference', sa.String(length=255), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('actor_user_id', sa.Uuid(), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_ledger_entry_amount_positive')),
    sa.CheckConstraint("kind IN ('TOPUP', 'HOLD', 'CAPTURE', 'RELEASE', 'REFUND', 'ADJUSTMENT')", name=op.f('ck_ledger_entry_kind')),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_ledger_entry_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_ledger_entry')),
    sa.UniqueConstraint('id', name=op.f('uq_ledger_entry_id')),
    sa.UniqueConstraint('vendor_id', 'idempotency_key', name=op.f('uq_ledger_entry_vendor_id_idempotency_key'))
    )
    op.create_index('ix_ledger_entry_hold', 'ledger_entry', ['hold_id'], unique=False)
    op.create_index('ix_ledger_entry_vendor_created', 'ledger_entry', ['vendor_id', 'created_at'], unique=False)
    op.create_index('ix_ledger_entry_vendor_seq', 'ledger_entry', ['vendor_id', 'seq'], unique=False)
    op.create_table('wallet_hold',
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('captured_micros', sa.BigInteger(), nullable=False),
    sa.Column('released_micros', sa.BigInteger(), nullable=False),
    sa.Column('refunded_micros', sa.BigInteger(), nullable=False),
    sa.Column('reference', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_wallet_hold_amount_positive')),
    sa.CheckConstraint('captured_micros >= 0 AND released_micros >= 0 AND refunded_micros >= 0', name=op.f('ck_wallet_hold_parts_not_negative')),
    sa.CheckConstraint('captured_micros + released_micros <= amount_micros', name=op.f('ck_wallet_hold_within_amount')),
    sa.CheckConstraint('refunded_micros <= captured_micros', name=op.f('ck_wallet_hold_refunds_within_captures')),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_wallet_hold_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallet_hold'))
    )
    op.create_index('ix_wallet_hold_vendor_reference', 'wallet_hold', ['vendor_id', 'reference'], unique=False)

    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry "
                   "FOR EACH ROW EXECUTE FUNCTION wallet_ledger_append_only()")
    else:
        op.execute("CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry "
                   f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END")
        op.execute("CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON ledger_entry "
                   "WHEN EXISTS (SELECT 1 FROM vendor WHERE id = OLD.vendor_id) "
                   f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER ledger_entry_append_only ON ledger_entry")
        op.execute("DROP FUNCTION wallet_ledger_append_only()")
    op.drop_index('ix_wallet_hold_vendor_reference', table_name='wallet_hold')
    op.drop_table('wallet_hold')
    op.drop_index('ix_ledger_entry_vendor_seq', table_name='ledger_entry')
    op.drop_index('ix_ledger_entry_vendor_created', table_name='ledger_entry')
    op.drop_index('ix_ledger_entry_hold', table_name='ledger_entry')
    op.drop_table('ledger_entry')
    op.drop_table('wallet')
