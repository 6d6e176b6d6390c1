"""Jobs: queued, retriable, scheduled work of every kind, durable in the store.

``JobService`` is what the API calls and owns the worker that runs jobs;
``register_job_routes`` adds ``/v1/jobs``. Kinds live one per module in
``kinds/``, imported here so that each registers itself.
"""

from scheduler.jobs import kinds as _kinds  # noqa: F401  (imported for its registrations)
from scheduler.jobs.api import register_job_routes
from scheduler.jobs.service import JobService

__all__ = ["JobService", "register_job_routes"]
