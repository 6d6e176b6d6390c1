"""Per-account registry logins (the password sealed with registry_credentials_key), and image pulls ahead of time.

Revision ID: 0011_registry_credentials
Revises: 0010_registry_images
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_registry_credentials"
down_revision = "0010_registry_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_credentials",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("registry", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("sealed_password", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("account_id", "registry", name="uq_registry_credentials_account_registry"),
    )

    op.create_table(
        "image_pulls",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reference", sa.String(300), nullable=False),
        sa.Column("host_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(80), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("layers_total", sa.Integer, nullable=False),
        sa.Column("layers_done", sa.Integer, nullable=False),
        sa.Column("bytes_total", sa.BigInteger, nullable=False),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("fetched_bytes", sa.BigInteger, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Index("ix_image_pulls_account", "account_id", "created_at"),
    )


def downgrade() -> None:
    op.drop_table("image_pulls")
    op.drop_table("registry_credentials")
