"""MicroVM sessions: where a forked session came from; "paused" sessions hold their workspace.

"paused" is a new status value: a paused VM keeps its workspace disk
attached, so the one-active-session-per-workspace index counts it too.

Revision ID: 0007_microvm
Revises: 0003_endpoints
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_microvm"
down_revision = "0003_endpoints"
branch_labels = None
depends_on = None

_INDEX = "ux_sessions_active_workspace"


def _workspace_index(statuses: str) -> None:
    op.drop_index(_INDEX, "sessions")
    where = sa.text(f"status IN ({statuses})")
    op.create_index(_INDEX, "sessions", ["workspace_id"], unique=True, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("forked_from", sa.String(36), nullable=True))
    _workspace_index("'creating', 'running', 'paused'")


def downgrade() -> None:
    _workspace_index("'creating', 'running'")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("forked_from")
