"""Jobs remember who submitted them (user, key), to check before each attempt that they still may act.

Revision ID: 0009_job_creators
Revises: 0008_audit_occurrences
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_job_creators"
down_revision = "0008_audit_occurrences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("creator_user_id", sa.String(36), nullable=True))
    op.add_column("jobs", sa.Column("creator_key_id", sa.String(36), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "creator_key_id")
    op.drop_column("jobs", "creator_user_id")
