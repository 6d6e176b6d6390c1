"""Session endpoints: lifetime (timeout, idle timeout, deadline), activity, lease count.

Revision ID: 0003_endpoints
Revises: 0005_network
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_endpoints"
down_revision = "0005_network"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("timeout_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("idle_timeout_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("last_activity_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("active_connection_leases", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        for column in ("active_connection_leases", "last_activity_at", "expires_at", "idle_timeout_ms", "timeout_ms"):
            batch.drop_column(column)
