"""Limits on tenants: a session's token generation (revoking its tokens moves it on), quotas.

Sessions record the vCPUs and memory they reserve; ``account_quotas`` holds
an account's own limits over the operator's defaults; ``token_signing_keys``
the schedulers' own key for session tokens (when the configuration names none).

Revision ID: 0012_tenant_limits
Revises: 0011_registry_credentials
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_tenant_limits"
down_revision = "0011_registry_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("token_generation", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved_cpus", sa.Float, nullable=True))
        batch.add_column(sa.Column("reserved_memory_mb", sa.Integer, nullable=True))
    op.create_table(
        "account_quotas",
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "token_signing_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_signing_keys")
    op.drop_table("account_quotas")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("reserved_memory_mb")
        batch.drop_column("reserved_cpus")
        batch.drop_column("token_generation")
