"""imports: contact_import_job.file_removed_at, set when retention deletes a job's file

A nullable column without a default: no row is rewritten on either database.

Revision ID: imports_0002
Revises: imports_0001
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'imports_0002'
down_revision = 'imports_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('contact_import_job', sa.Column('file_removed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('contact_import_job') as batch_op:
        batch_op.drop_column('file_removed_at')
