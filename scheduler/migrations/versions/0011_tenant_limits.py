"""Limits on tenants: a session's token generation (revoking its tokens moves it on).

Revision ID: 0011_tenant_limits
Revises: 0010_registry_images
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_tenant_limits"
down_revision = "0010_registry_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("token_generation", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("token_generation")
