"""Where the end of a job is announced: the log, and the account's webhooks.

Every job that reaches succeeded, failed or canceled passes through
``job_finished``, whether a worker ended it or a cancel caught it still
waiting, so ``job.succeeded``, ``job.failed`` and ``job.canceled`` are
queued exactly once per ending.
"""

from __future__ import annotations

import logging

from scheduler.events import publish
from scheduler.store import Store

log = logging.getLogger(__name__)


async def job_finished(store: Store, job_id: str, account_id: str, kind: str, status: str) -> None:
    log.info("job %s %s", kind, status, extra={"job_id": job_id, "account_id": account_id})
    await publish(store, account_id, f"job.{status}", {"job": {"id": job_id, "kind": kind, "status": status}})
