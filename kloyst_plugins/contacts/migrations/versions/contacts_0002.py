"""contacts: drop the vendor_id-only indexes of contact and contact_audit_log

Both are prefixes of other indexes: ``uq_contact_vendor_id_mobile_hash`` and
``ix_contact_vendor_created`` start with ``vendor_id``, and so does
``ix_contact_audit_log_contact``; every lookup (and the vendor cascade) uses those. Each
extra index is paid on every inserted row — an import inserts a contact and an audit row
per new number.

Revision ID: contacts_0002
Revises: contacts_0001
Create Date: 2026-11-23
"""

from alembic import op

revision = 'contacts_0002'
down_revision = 'contacts_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f('ix_contact_vendor_id'), table_name='contact')
    op.drop_index(op.f('ix_contact_audit_log_vendor_id'), table_name='contact_audit_log')


def downgrade() -> None:
    op.create_index(op.f('ix_contact_audit_log_vendor_id'), 'contact_audit_log', ['vendor_id'], unique=False)
    op.create_index(op.f('ix_contact_vendor_id'), 'contact', ['vendor_id'], unique=False)
