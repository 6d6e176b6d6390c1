"""Persistent state of the control plane."""

from scheduler.store.db import Row, Store

__all__ = ["Row", "Store"]
