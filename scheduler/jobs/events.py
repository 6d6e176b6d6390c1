"""Where the end of a job is announced.

Every job that reaches succeeded, failed or canceled passes through
``job_finished``, whether a worker ended it or a cancel caught it still
waiting. The accounts issue's webhooks publish ``job.succeeded``,
``job.failed`` and ``job.canceled`` from here; until then it only logs.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


async def job_finished(job_id: str, account_id: str, kind: str, status: str) -> None:
    log.info("job %s %s", kind, status, extra={"job_id": job_id, "account_id": account_id})
    # Webhooks (issue 3): publish f"job.{status}" to the account's endpoints here.
