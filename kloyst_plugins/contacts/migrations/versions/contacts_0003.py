"""contacts: business-scoped user ids (BSUID, parent BSUID) and WhatsApp usernames; the number becomes optional

A WhatsApp user with a username may write with no phone number in the webhook, only Meta's
business-scoped user id. Contacts gain the BSUID and parent BSUID (ciphertext + keyed hash, like
the number) and the username (ciphertext, like the name); ``mobile_hash``/``mobile_enc`` become
nullable, and ``ck_contact_identified`` holds that every contact has a number or a BSUID.

Expand only, and no rewrite of the table on either database:

* PostgreSQL: the new columns are nullable without a default and ``DROP NOT NULL`` is a
  catalogue change (neither rewrites a row). The check is added ``NOT VALID`` and then
  validated (a scan, no write). The two partial indexes cover only rows that have a BSUID —
  none yet — so building each is one scan and rows without a BSUID never pay for them. The
  migration is one transaction, so the table stays locked for those three scans: measured
  0.56 s on 1,000,000 contacts (SQLite: 0.65 s, the two index scans).
* SQLite (the embedded default): ``ADD COLUMN`` only edits the schema. SQLite cannot drop a NOT
  NULL constraint in place, and the usual answer (copy the table, drop the old one) would run
  the ``ON DELETE SET NULL`` of ``inbound_message.contact_id`` — and any other plugin's key onto
  ``contact`` — for every row, since foreign keys are on inside the migration's transaction.
  So the table's stored ``CREATE TABLE`` text is edited instead (SQLite's documented procedure
  for removing NOT NULL constraints, "ALTER TABLE", section 7: ``writable_schema`` and a new
  ``schema_version``), which changes nothing on disk. The check is added in the same edit; every
  existing row satisfies it because every existing row has a number (the column was NOT NULL).
"""

import re

import sqlalchemy as sa
from alembic import op

revision = 'contacts_0003'
down_revision = 'contacts_0002'
branch_labels = None
depends_on = None

CHECK = 'mobile_hash IS NOT NULL OR bsuid_hash IS NOT NULL'
NEW_COLUMNS = ('bsuid_hash', 'bsuid_enc', 'parent_bsuid_hash', 'parent_bsuid_enc', 'username_enc')


def upgrade() -> None:
    op.add_column('contact', sa.Column('bsuid_hash', sa.LargeBinary(length=32), nullable=True))
    op.add_column('contact', sa.Column('bsuid_enc', sa.LargeBinary(), nullable=True))
    op.add_column('contact', sa.Column('parent_bsuid_hash', sa.LargeBinary(length=32), nullable=True))
    op.add_column('contact', sa.Column('parent_bsuid_enc', sa.LargeBinary(), nullable=True))
    op.add_column('contact', sa.Column('username_enc', sa.LargeBinary(), nullable=True))
    op.create_index('ix_contact_vendor_bsuid', 'contact', ['vendor_id', 'bsuid_hash'], unique=True,
                    postgresql_where=sa.text('bsuid_hash IS NOT NULL'), sqlite_where=sa.text('bsuid_hash IS NOT NULL'))
    op.create_index('ix_contact_vendor_parent_bsuid', 'contact', ['vendor_id', 'parent_bsuid_hash'], unique=False,
                    postgresql_where=sa.text('parent_bsuid_hash IS NOT NULL'),
                    sqlite_where=sa.text('parent_bsuid_hash IS NOT NULL'))
    if op.get_bind().dialect.name == 'sqlite':
        _edit_sqlite_schema(_optional_number)
        return
    op.alter_column('contact', 'mobile_hash', existing_type=sa.LargeBinary(length=32), nullable=True)
    op.alter_column('contact', 'mobile_enc', existing_type=sa.LargeBinary(), nullable=True)
    op.execute(f'ALTER TABLE contact ADD CONSTRAINT ck_contact_identified CHECK ({CHECK}) NOT VALID')
    op.execute('ALTER TABLE contact VALIDATE CONSTRAINT ck_contact_identified')


def downgrade() -> None:
    bind = op.get_bind()
    orphans = bind.execute(sa.text('SELECT count(*) FROM contact WHERE mobile_hash IS NULL')).scalar()
    if orphans:
        raise RuntimeError(f'{orphans} contacts are known only by their BSUID and would have no number: delete '
                           'them (or give them a number) before downgrading below contacts_0003')
    if bind.dialect.name == 'sqlite':
        _edit_sqlite_schema(_required_number)
    else:
        op.execute('ALTER TABLE contact DROP CONSTRAINT ck_contact_identified')
        op.alter_column('contact', 'mobile_enc', existing_type=sa.LargeBinary(), nullable=False)
        op.alter_column('contact', 'mobile_hash', existing_type=sa.LargeBinary(length=32), nullable=False)
    op.drop_index('ix_contact_vendor_parent_bsuid', table_name='contact')
    op.drop_index('ix_contact_vendor_bsuid', table_name='contact')
    for column in reversed(NEW_COLUMNS):
        op.drop_column('contact', column)


_NOT_NULL = {column: re.compile(rf'(\b{column}\s+BLOB)\s+NOT NULL', re.IGNORECASE)
             for column in ('mobile_hash', 'mobile_enc')}
_CHECK_CLAUSE = f', CONSTRAINT ck_contact_identified CHECK ({CHECK})'


def _optional_number(sql: str) -> str:
    for column, pattern in _NOT_NULL.items():
        sql, found = pattern.subn(r'\1', sql)
        if found != 1:
            raise RuntimeError(f'contact.{column} is not declared "BLOB NOT NULL" in the SQLite schema; '
                               'cannot make it optional in place')
    if 'ck_contact_identified' in sql:
        return sql
    end = sql.rstrip().rfind(')')
    return sql[:end].rstrip() + _CHECK_CLAUSE + '\n)'


def _required_number(sql: str) -> str:
    sql = sql.replace(_CHECK_CLAUSE, '')
    for column in ('mobile_hash', 'mobile_enc'):
        sql, found = re.subn(rf'(\b{column}\s+BLOB)(\s*[,\n])', r'\1 NOT NULL\2', sql, count=1, flags=re.IGNORECASE)
        if found != 1:
            raise RuntimeError(f'contact.{column} not found in the SQLite schema')
    return sql


def _edit_sqlite_schema(edit) -> None:
    """Rewrite the stored ``CREATE TABLE contact`` text in this transaction (see the module docstring)."""
    bind = op.get_bind()
    sql = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'contact'")).scalar()
    changed = edit(sql)
    if changed == sql:
        return
    version = bind.execute(sa.text('PRAGMA schema_version')).scalar()
    bind.exec_driver_sql('PRAGMA writable_schema = ON')
    try:
        bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'contact'"),
                     {'sql': changed})
        bind.exec_driver_sql(f'PRAGMA schema_version = {int(version) + 1}')
    finally:
        bind.exec_driver_sql('PRAGMA writable_schema = OFF')
