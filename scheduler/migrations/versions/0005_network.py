"""Sessions' network policy and resource limits; hosts' egress and limits.

Revision ID: 0005_network
Revises: 0006_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_network"
down_revision = "0006_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("network", sa.String(16), nullable=True))
        batch.add_column(sa.Column("egress_allow", sa.JSON, nullable=True))
        batch.add_column(sa.Column("limits", sa.JSON, nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("egress", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("limits", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("limits")
        batch.drop_column("egress")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("limits")
        batch.drop_column("egress_allow")
        batch.drop_column("network")
