"""media: the media table (uploads for replies, inbound media fetched from Meta)

Revision ID: media_0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = 'media_0001'
down_revision = None
branch_labels = ('media',)
depends_on = ('0001_core', 'waba_0001')


def upgrade() -> None:
    op.create_table(
        'media',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('direction', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('phone_number_id', sa.Uuid(), nullable=False),
        sa.Column('inbound_id', sa.Uuid(), nullable=True),
        sa.Column('meta_media_id', sa.String(length=128), nullable=True),
        sa.Column('mime_type', sa.String(length=128), nullable=True),
        sa.Column('size_bytes', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('filename', sa.String(length=255), nullable=True),
        sa.Column('stored_name', sa.String(length=64), nullable=True),
        sa.Column('file_key_enc', sa.LargeBinary(), nullable=True),
        sa.Column('enc_kid', sa.String(length=64), nullable=True),
        sa.Column('scan_result', sa.String(length=255), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_by', sa.Uuid(), nullable=True),
        sa.Column('stored_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('vendor_id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['phone_number_id'], ['phone_number.id'],
                                name=op.f('fk_media_phone_number_id_phone_number'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['vendor_id'], ['vendor.id'], name=op.f('fk_media_vendor_id_vendor'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_media')),
    )
    op.create_index('ix_media_vendor_created', 'media', ['vendor_id', 'created_at', 'id'], unique=False)
    op.create_index('ix_media_vendor_inbound', 'media', ['vendor_id', 'inbound_id'], unique=True)
    op.create_index('ix_media_enc_kid', 'media', ['enc_kid'], unique=False)
    op.create_index(op.f('ix_media_phone_number_id'), 'media', ['phone_number_id'], unique=False)
    op.create_index(op.f('ix_media_vendor_id'), 'media', ['vendor_id'], unique=False)


def downgrade() -> None:
    op.drop_table('media')
