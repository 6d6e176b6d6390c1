"""Tables of the scheduler's store (SQLAlchemy Core).

Designed for the multi-tenant model: every resource row carries the
``account_id`` that owns it, users reach accounts through memberships, and
API keys are bound to one account. Times are UNIX seconds (float), which
both SQLite and PostgreSQL store exactly.

This describes the *current* schema for queries; the migrations under
``scheduler/migrations`` are what create and evolve it.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # personal | organization
    sa.Column("created_at", sa.Float, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | admin | member
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=True),  # null = full access
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("session_types", sa.JSON, nullable=False),
    sa.Column("images", sa.JSON, nullable=False),
    sa.Column("max_sandboxes", sa.Integer, nullable=False),
    sa.Column("cpus", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("last_heartbeat", sa.Float, nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("session_type", sa.String(16), nullable=False),
    sa.Column("ephemeral", sa.Boolean, nullable=False),
    sa.Column("workspace_id", sa.String(36), nullable=True),
    sa.Column("image", sa.String(256), nullable=True),
    sa.Column("host_id", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # creating | running | terminated
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("create_deadline", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("terminated_at", sa.Float, nullable=True),
    # Session lifetime and activity (migration 0003_endpoints).
    sa.Column("timeout_ms", sa.BigInteger, nullable=True),
    sa.Column("idle_timeout_ms", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("last_activity_at", sa.Float, nullable=True),
    sa.Column("active_connection_leases", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_sessions_account_created", "account_id", "created_at"),
    sa.Index("ix_sessions_status", "status"),
    sa.Index("ix_sessions_host", "host_id"),
)
