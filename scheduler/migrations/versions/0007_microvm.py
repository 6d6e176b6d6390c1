"""MicroVM sessions: where a forked session came from ("paused" is a new status value).

Revision ID: 0007_microvm
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_microvm"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("forked_from", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("forked_from")
