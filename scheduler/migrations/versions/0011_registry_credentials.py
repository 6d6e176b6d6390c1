"""Per-account registry logins, the password sealed with the scheduler's registry_credentials_key.

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


def downgrade() -> None:
    op.drop_table("registry_credentials")
