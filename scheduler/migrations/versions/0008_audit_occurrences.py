"""Audit events may stand for several anonymous failures from one address (``occurrences``).

Revision ID: 0008_audit_occurrences
Revises: 0007_microvm
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_audit_occurrences"
down_revision = "0007_microvm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy): SQLite keeps the append-only triggers.
    op.add_column("audit_events", sa.Column("occurrences", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("audit_events", "occurrences")
