"""contacts: initial tables

Revision ID: contacts_0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'contacts_0001'
down_revision = None
branch_labels = ('contacts',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('contact',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('mobile_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('mobile_enc', sa.LargeBinary(), nullable=False),
    sa.Column('name_enc', sa.LargeBinary(), nullable=True),
    sa.Column('enc_kid', sa.String(length=64), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('calling_code', sa.Integer(), nullable=True),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('opted_out', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('opted_out_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_contact_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact')),
    sa.UniqueConstraint('vendor_id', 'mobile_hash', name=op.f('uq_contact_vendor_id_mobile_hash'))
    )
    op.create_index('ix_contact_enc_kid', 'contact', ['enc_kid'], unique=False)
    op.create_index('ix_contact_labels', 'contact', ['labels'], unique=False, postgresql_using='gin', postgresql_ops={'labels': 'jsonb_path_ops'})
    op.create_index('ix_contact_vendor_created', 'contact', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_contact_vendor_id'), 'contact', ['vendor_id'], unique=False)
    op.create_table('contact_audit_log',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('actor_user_id', sa.Uuid(), nullable=True),
    sa.Column('import_job_id', sa.Uuid(), nullable=True),
    sa.Column('changes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_contact_audit_log_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_audit_log'))
    )
    op.create_index('ix_contact_audit_log_contact', 'contact_audit_log', ['vendor_id', 'contact_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_contact_audit_log_vendor_id'), 'contact_audit_log', ['vendor_id'], unique=False)
    _forbid_audit_updates()


# Audit rows are immutable in the database itself, not only in the ORM (models.py has a
# before_update guard too): a raw UPDATE, a bulk statement or a console session cannot
# rewrite history. DELETE stays possible (a vendor's removal cascades to its rows).
def _forbid_audit_updates() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            CREATE FUNCTION contact_audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'contact audit rows are immutable' USING ERRCODE = 'insufficient_privilege';
            END $$
        """)
        op.execute('CREATE TRIGGER contact_audit_log_no_update BEFORE UPDATE ON contact_audit_log '
                   'FOR EACH ROW EXECUTE FUNCTION contact_audit_log_immutable()')
    elif op.get_bind().dialect.name == 'sqlite':
        op.execute("CREATE TRIGGER contact_audit_log_no_update BEFORE UPDATE ON contact_audit_log "
                   "BEGIN SELECT RAISE(ABORT, 'contact audit rows are immutable'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS contact_audit_log_no_update ON contact_audit_log')
        op.execute('DROP FUNCTION IF EXISTS contact_audit_log_immutable()')
    elif op.get_bind().dialect.name == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS contact_audit_log_no_update')
    op.drop_index(op.f('ix_contact_audit_log_vendor_id'), table_name='contact_audit_log')
    op.drop_index('ix_contact_audit_log_contact', table_name='contact_audit_log')
    op.drop_table('contact_audit_log')
    op.drop_index(op.f('ix_contact_vendor_id'), table_name='contact')
    op.drop_index('ix_contact_vendor_created', table_name='contact')
    op.drop_index('ix_contact_labels', table_name='contact', postgresql_using='gin', postgresql_ops={'labels': 'jsonb_path_ops'})
    op.drop_index('ix_contact_enc_kid', table_name='contact')
    op.drop_table('contact')
