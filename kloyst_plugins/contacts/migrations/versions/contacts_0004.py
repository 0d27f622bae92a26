"""contacts: the audit log in time order per vendor, for its retention (kloyst db prune)

The retention pass walks each vendor's entries oldest first (``ix_contact_audit_log_vendor_created``);
the existing index leads with the contact and cannot. Building it blocks writes to the audit
log (imports, edits) for one scan of the table.
"""

from alembic import op

revision = 'contacts_0004'
down_revision = 'contacts_0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_contact_audit_log_vendor_created', 'contact_audit_log', ['vendor_id', 'created_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_contact_audit_log_vendor_created', table_name='contact_audit_log')
