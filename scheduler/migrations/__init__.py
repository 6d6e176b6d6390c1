"""Alembic migrations of the scheduler's store; run by ``Store.migrate``."""
