"""Workspaces, their snapshots, hosts' storage pools; one active session per workspace.

Revision ID: 0004_workspaces
Revises: 0002_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_workspaces"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status IN ('creating', 'running')")


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=True),
        sa.Column("session_type", sa.String(16), nullable=False),
        sa.Column("image", sa.String(256), nullable=True),
        sa.Column("host_id", sa.String(128), nullable=False),
        sa.Column("disk_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("is_template", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_repository", sa.String(256), nullable=True),
        sa.Column("source_ref", sa.String(255), nullable=True),
        sa.Column("cloned_from", sa.String(36), nullable=True),
        sa.Column("cloned_from_snapshot", sa.String(36), nullable=True),
        sa.Column("create_deadline", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=True),
    )
    op.create_index("ux_workspaces_account_name", "workspaces", ["account_id", "name_key"], unique=True)
    op.create_index("ix_workspaces_status", "workspaces", ["status"])
    op.create_table(
        "workspace_snapshots",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("frozen", sa.Boolean, nullable=False),
        sa.Column("create_deadline", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_workspace_snapshots_workspace", "workspace_snapshots", ["workspace_id", "created_at"])
    op.create_table(
        "host_storage",
        sa.Column("host_id", sa.String(128), primary_key=True),
        sa.Column("reflink", sa.Boolean, nullable=False),
        sa.Column("capacity_bytes", sa.BigInteger, nullable=False),
        sa.Column("free_bytes", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ux_sessions_active_workspace",
        "sessions",
        ["workspace_id"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ux_sessions_active_workspace", "sessions")
    for table in ("host_storage", "workspace_snapshots", "workspaces"):
        op.drop_table(table)
