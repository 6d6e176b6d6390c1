"""Persistent state of the control plane."""

from scheduler.store.db import ACTIVE_STATUSES, Row, Store

__all__ = ["ACTIVE_STATUSES", "Row", "Store"]
