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

from scheduler.core.session_states import ACTIVE

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

# Organization names are unique, case-insensitively (they select accounts).
sa.Index(
    "ux_accounts_org_name",
    sa.func.lower(accounts.c.name),
    unique=True,
    sqlite_where=accounts.c.kind == "organization",
    postgresql_where=accounts.c.kind == "organization",
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | admin | member
    sa.Column("created_at", sa.Float, nullable=True),
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
    # Set for a service account's key (then user_id is null).
    sa.Column(
        "service_account_id",
        sa.String(36),
        sa.ForeignKey("service_accounts.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("created_by", sa.String(36), nullable=True),  # user or service account id
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
    # Whether its sessions can reach outside networks; its limits'
    # defaults and maxima ({"default": {...}, "max": {...}}). (0005)
    sa.Column("egress", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("limits", sa.JSON, nullable=True),
    # Whether it pulls registry images, and the references it holds. (0008)
    sa.Column("pulls_images", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("registry_images", sa.JSON, nullable=True),
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
    # The digest a registry image's reference resolved to at create. (0008)
    sa.Column("image_digest", sa.String(80), nullable=True),
    sa.Column("host_id", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # creating | running | paused | terminated
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
    # "egress" | "none" (as granted by its host), the egress allow-list,
    # and the resource limits in force. (0005)
    sa.Column("network", sa.String(16), nullable=True),
    sa.Column("egress_allow", sa.JSON, nullable=True),
    sa.Column("limits", sa.JSON, nullable=True),
    # The paused session this one was forked from (migration 0007_microvm).
    sa.Column("forked_from", sa.String(36), nullable=True),
    # Bumped by DELETE /v1/sessions/{id}/tokens: tokens of an older one are dead. (0011)
    sa.Column("token_generation", sa.Integer, nullable=False, server_default="0"),
    # The vCPUs and memory it counts against its account's quota. (0011)
    sa.Column("reserved_cpus", sa.Float, nullable=True),
    sa.Column("reserved_memory_mb", sa.Integer, nullable=True),
    sa.Index("ix_sessions_account_created", "account_id", "created_at"),
    sa.Index("ix_sessions_status", "status"),
    sa.Index("ix_sessions_host", "host_id"),
)

# -- multi-tenancy: service accounts, identities, audit, webhooks ----------

service_accounts = sa.Table(
    "service_accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin | member
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(36), nullable=True),
)
sa.Index("ux_service_accounts_name", service_accounts.c.account_id, sa.func.lower(service_accounts.c.name), unique=True)

# A JWT issuer's subject, mapped to one of our users.
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("issuer", sa.String(512), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Append-only (triggers refuse UPDATE and DELETE); no foreign keys, so the
# trail outlives what it describes.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("account_id", sa.String(36), nullable=True),
    sa.Column("actor_type", sa.String(16), nullable=False),  # user | service_account | anonymous
    sa.Column("actor_id", sa.String(36), nullable=True),
    sa.Column("actor_name", sa.String(320), nullable=True),
    sa.Column("key_id", sa.String(36), nullable=True),
    sa.Column("auth_method", sa.String(16), nullable=True),  # api_key | jwt
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource_type", sa.String(32), nullable=True),
    sa.Column("resource_id", sa.String(128), nullable=True),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("result", sa.String(16), nullable=False),  # success | failure | denied
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error_code", sa.String(64), nullable=True),
    # Anonymous failures counted together (scheduler/failure_windows.py); null = one.
    sa.Column("occurrences", sa.Integer, nullable=True),
    sa.Index("ix_audit_account_id", "account_id", "id"),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    # The HMAC key must be usable to sign, so it cannot be stored hashed.
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("description", sa.String(256), nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_webhooks_account", "account_id"),
)

# A login an account gave for one registry (host[:port]), used only for
# that account's pulls; the password is sealed (scheduler/credential_seal.py).
registry_credentials = sa.Table(
    "registry_credentials",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("registry", sa.String(255), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("sealed_password", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("account_id", "registry", name="uq_registry_credentials_account_registry"),
)

# A pull ahead of time (POST /v1/images) on one host, and how far it is.
image_pulls = sa.Table(
    "image_pulls",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("reference", sa.String(300), nullable=False),
    sa.Column("host_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pulling | succeeded | failed
    sa.Column("phase", sa.String(16), nullable=False),  # resolving | fetching | unpacking | done
    sa.Column("digest", sa.String(80), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("layers_total", sa.Integer, nullable=False),
    sa.Column("layers_done", sa.Integer, nullable=False),
    sa.Column("bytes_total", sa.BigInteger, nullable=False),
    sa.Column("bytes_done", sa.BigInteger, nullable=False),
    sa.Column("fetched_bytes", sa.BigInteger, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index("ix_image_pulls_account", "account_id", "created_at"),
)

# The durable outbox: one row per (event, webhook), retried until delivered
# or out of attempts; ``locked_until`` is a scheduler replica's claim.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("webhook_id", sa.String(36), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | succeeded | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=True),
    sa.Column("locked_until", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_webhook", "webhook_id", "created_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_attempts_delivery", "delivery_id"),
)


# -- workspaces (migration 0004_workspaces) ----------------------------------

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    # lower(name) while the workspace exists; NULL once deleting, which
    # frees the name at once (NULLs never collide in a unique index).
    sa.Column("name_key", sa.String(64), nullable=True),
    sa.Column("session_type", sa.String(16), nullable=False),  # sandbox | browser
    sa.Column("image", sa.String(256), nullable=True),
    sa.Column("host_id", sa.String(128), nullable=False),  # the host holding the disk
    sa.Column("disk_size_bytes", sa.BigInteger, nullable=False),
    sa.Column("is_template", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # creating | ready | deleting
    sa.Column("source_repository", sa.String(256), nullable=True),  # owner/repo of an import
    sa.Column("source_ref", sa.String(255), nullable=True),
    sa.Column("cloned_from", sa.String(36), nullable=True),
    sa.Column("cloned_from_snapshot", sa.String(36), nullable=True),
    sa.Column("create_deadline", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Index("ux_workspaces_account_name", "account_id", "name_key", unique=True),
    sa.Index("ix_workspaces_status", "status"),
)

workspace_snapshots = sa.Table(
    "workspace_snapshots",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # creating | ready
    sa.Column("frozen", sa.Boolean, nullable=False),  # taken with a session attached
    sa.Column("create_deadline", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_workspace_snapshots_workspace", "workspace_id", "created_at"),
)

host_storage = sa.Table(
    "host_storage",
    metadata,
    sa.Column("host_id", sa.String(128), primary_key=True),
    sa.Column("reflink", sa.Boolean, nullable=False),
    sa.Column("capacity_bytes", sa.BigInteger, nullable=False),
    sa.Column("free_bytes", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# A workspace has at most one session creating, running or paused on it
# (a paused VM keeps its workspace disk attached; 0007 added "paused").
sa.Index(
    "ux_sessions_active_workspace",
    sessions.c.workspace_id,
    unique=True,
    sqlite_where=sessions.c.status.in_(ACTIVE),
    postgresql_where=sessions.c.status.in_(ACTIVE),
)

# The job queue (scheduler/jobs): one row per job, one per attempt of it.
# ``worker_id``/``lease_until`` say which scheduler process runs a job and
# until when that claim holds unless renewed.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | scheduled | running | succeeded | failed | canceled
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # of kind, input and run_at, for idempotency
    sa.Column("run_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("queued_at", sa.Float, nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("cancel_requested_at", sa.Float, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),  # attempts begun so far
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    # Who submitted it (the key, or the user of a JWT): checked before each attempt.
    sa.Column("creator_user_id", sa.String(36), nullable=True),
    sa.Column("creator_key_id", sa.String(36), nullable=True),
    sa.Index("ix_jobs_account_created", "account_id", "created_at"),
    sa.Index("ix_jobs_status_run_at", "status", "run_at"),
    sa.Index("ix_jobs_account_status", "account_id", "status"),
    sa.Index("ux_jobs_idempotency", "account_id", "idempotency_key", unique=True),
)

job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | succeeded | failed | canceled
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("reattached", sa.Integer, nullable=False),  # times another worker took it over
    # Where the attempt is (its session, its command on the host), so a
    # worker taking it over can re-attach or clean up; ``started`` once the
    # work may have had effects that must not happen twice.
    sa.Column("checkpoint", sa.JSON, nullable=False),
    sa.Column("started", sa.Boolean, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("output_truncated", sa.Boolean, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
)


# An account's own quota limits, over the operator's defaults (0011).
account_quotas = sa.Table(
    "account_quotas",
    metadata,
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# The key session tokens are signed with when the configuration names none (0011).
token_signing_keys = sa.Table(
    "token_signing_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
