"""imports: initial tables

Revision ID: imports_0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'imports_0001'
down_revision = None
branch_labels = ('imports',)
depends_on = '0001_core'


def upgrade() -> None:
    op.create_table('contact_import_job',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('original_filename', sa.String(length=255), nullable=False),
    sa.Column('stored_name', sa.String(length=255), nullable=False),
    sa.Column('file_type', sa.String(length=8), nullable=False),
    sa.Column('size_bytes', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('scan_result', sa.String(length=255), nullable=True),
    sa.Column('scan_attempts', sa.Integer(), nullable=False),
    sa.Column('encoding', sa.String(length=32), nullable=True),
    sa.Column('delimiter', sa.String(length=4), nullable=True),
    sa.Column('headers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('sample_rows', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('row_count', sa.Integer(), nullable=True),
    sa.Column('chunk_size', sa.Integer(), nullable=False),
    sa.Column('chunk_count', sa.Integer(), nullable=True),
    sa.Column('mapping', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('default_country', sa.String(length=2), nullable=True),
    sa.Column('add_labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('merge_strategy', sa.String(length=64), nullable=True),
    sa.Column('chunks_done', sa.Integer(), nullable=False),
    sa.Column('rows_processed', sa.Integer(), nullable=False),
    sa.Column('created_count', sa.Integer(), nullable=False),
    sa.Column('updated_count', sa.Integer(), nullable=False),
    sa.Column('duplicate_count', sa.Integer(), nullable=False),
    sa.Column('rejected_count', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_contact_import_job_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_import_job'))
    )
    op.create_index('ix_contact_import_job_sha256', 'contact_import_job', ['vendor_id', 'sha256'], unique=False)
    op.create_index('ix_contact_import_job_vendor_created', 'contact_import_job', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_contact_import_job_vendor_id'), 'contact_import_job', ['vendor_id'], unique=False)
    op.create_table('contact_import_chunk',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('first_row', sa.Integer(), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('byte_offset', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_count', sa.Integer(), nullable=False),
    sa.Column('updated_count', sa.Integer(), nullable=False),
    sa.Column('duplicate_count', sa.Integer(), nullable=False),
    sa.Column('rejected_count', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['contact_import_job.id'], name=op.f('fk_contact_import_chunk_job_id_contact_import_job'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_contact_import_chunk_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_import_chunk')),
    sa.UniqueConstraint('job_id', 'index', name=op.f('uq_contact_import_chunk_job_id_index'))
    )
    op.create_index(op.f('ix_contact_import_chunk_vendor_id'), 'contact_import_chunk', ['vendor_id'], unique=False)
    op.create_table('contact_import_rejection',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('column', sa.String(length=255), nullable=True),
    sa.Column('value_masked', sa.String(length=255), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('vendor_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['contact_import_job.id'], name=op.f('fk_contact_import_rejection_job_id_contact_import_job'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_contact_import_rejection_vendor_id_vendor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_import_rejection'))
    )
    op.create_index('ix_contact_import_rejection_job_row', 'contact_import_rejection', ['job_id', 'row_number'], unique=False)
    op.create_index(op.f('ix_contact_import_rejection_vendor_id'), 'contact_import_rejection', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_contact_import_rejection_vendor_id'), table_name='contact_import_rejection')
    op.drop_index('ix_contact_import_rejection_job_row', table_name='contact_import_rejection')
    op.drop_table('contact_import_rejection')
    op.drop_index(op.f('ix_contact_import_chunk_vendor_id'), table_name='contact_import_chunk')
    op.drop_table('contact_import_chunk')
    op.drop_index(op.f('ix_contact_import_job_vendor_id'), table_name='contact_import_job')
    op.drop_index('ix_contact_import_job_vendor_created', table_name='contact_import_job')
    op.drop_index('ix_contact_import_job_sha256', table_name='contact_import_job')
    op.drop_table('contact_import_job')
