"""The webhook delivery worker: drains the durable outbox, in the scheduler's nursery.

It claims due deliveries from the store (a lease, so replicas and restarts
never double-send an attempt), POSTs each signed payload with a deadline,
and settles it: 2xx succeeds; anything else (status, timeout, refused
connection, blocked address) is retried with exponential backoff until
``webhook_max_attempts``, then marked failed. Every attempt is logged. New
events wake it at once; a periodic check catches retries coming due and
events queued by other replicas. A receiver's response body is never read.
"""

from __future__ import annotations

import logging
import random
import ssl
import time

import httpcore
import trio

from chaser.webhook_signature import SIGNATURE_HEADER, sign
from scheduler.config import SchedulerConfig
from scheduler.pinned_backend import PinnedBackend
from scheduler.store import Row, Store
from scheduler.webhook_destinations import BlockedDestination, DestinationPolicy

log = logging.getLogger(__name__)

USER_AGENT = "Chaser-Webhooks/1"
# A claim outlives the longest attempt by this much before another worker may take it over.
_LEASE_SLACK = 30.0
_MAX_ERROR_LEN = 500
_HTTP_FAILURES = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)


def backoff(attempt: int, base: float, cap: float, jitter: float = 0.1) -> float:
    """Seconds before retry number ``attempt`` (1 = the first retry): base * 2^(n-1), capped, +-jitter."""
    delay: float = min(cap, base * 2 ** (attempt - 1))
    return delay * random.uniform(1 - jitter, 1 + jitter)


class DeliveryWorker:
    def __init__(self, store: Store, config: SchedulerConfig) -> None:
        self.store = store
        self.config = config
        self._wake = trio.Event()
        self._slots = trio.Semaphore(config.webhook_concurrency)
        self._tls = ssl.create_default_context()
        self._destinations = DestinationPolicy(config.webhook_block_private_networks, config.webhook_allowed_networks)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()

        def on_outbox_write() -> None:  # from any thread, after a commit
            token.run_sync_soon(self.wake)

        self.store.outbox_listeners.append(on_outbox_write)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await self._drain_forever(nursery)
        finally:
            self.store.outbox_listeners.remove(on_outbox_write)

    async def _drain_forever(self, nursery: trio.Nursery) -> None:
        lease = self.config.webhook_timeout + _LEASE_SLACK
        while True:
            self._wake = trio.Event()
            next_due = None
            try:
                free = self._slots.value
                claimed = (
                    await self.store.run(self.store.claim_due_deliveries, time.time(), free, lease) if free else []
                )
                for delivery in claimed:
                    await self._slots.acquire()
                    nursery.start_soon(self._deliver, delivery)
                next_due = await self.store.run(self.store.next_delivery_due)
            except Exception:
                log.exception("webhook outbox check failed")
            wait = self.config.webhook_poll_interval
            if next_due is not None and self._slots.value > 0:
                # (With every slot busy, a finishing send wakes us instead.)
                wait = min(wait, max(next_due - time.time(), 0.0))
            with trio.move_on_after(wait):
                await self._wake.wait()

    async def _deliver(self, delivery: Row) -> None:
        settled = False
        try:
            status_code, error, started, duration_ms = await self._attempt(delivery)
            number = delivery["attempts"] + 1
            ok = status_code is not None and 200 <= status_code < 300
            retry_at = None
            if not ok and number < self.config.webhook_max_attempts:
                retry_at = time.time() + backoff(number, self.config.webhook_retry_base, self.config.webhook_retry_max)
            with trio.CancelScope(shield=True):
                await self.store.run(
                    self.store.record_attempt,
                    delivery,
                    started_at=started,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    error=error,
                    next_attempt_at=retry_at,
                )
            settled = True
            log.info(
                "webhook delivery attempt %d: %s",
                number,
                status_code if error is None else error,
                extra={"account_id": delivery["account_id"], "delivery_id": delivery["id"]},
            )
        except Exception:
            log.exception("webhook delivery failed unexpectedly", extra={"delivery_id": delivery["id"]})
        finally:
            if not settled:  # cancelled (shutdown) or broken: give the claim back at once
                with trio.CancelScope(shield=True):
                    try:
                        await self.store.run(self.store.release_delivery, delivery["id"])
                    except Exception:
                        log.exception("could not release a webhook delivery claim")
            self._slots.release()
            self.wake()

    async def _attempt(self, delivery: Row) -> tuple[int | None, str | None, float, float]:
        """POST once; return (status code, error, start time, duration in ms).

        The host is resolved once, its addresses vetted, and the connection
        made to one of them (never resolved again, never through a proxy
        named by the environment): httpcore, below httpx, has neither.
        """
        started = time.time()
        clock = time.monotonic()
        body = delivery["payload"].encode()
        headers: dict[bytes | str, bytes | str] = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Chaser-Event": delivery["event_type"],
            "Chaser-Event-Id": delivery["event_id"],
            "Chaser-Delivery": delivery["id"],
            SIGNATURE_HEADER: sign(delivery["secret"], int(started), body),
        }
        status_code: int | None = None
        error: str | None = None
        try:
            with trio.fail_after(self.config.webhook_timeout):
                addresses = await self._destinations.resolve(delivery["url"])
                async with (
                    httpcore.AsyncConnectionPool(
                        ssl_context=self._tls, network_backend=PinnedBackend(addresses), max_connections=1
                    ) as pool,
                    pool.stream("POST", delivery["url"], content=body, headers=headers) as response,
                ):
                    status_code = response.status
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except trio.TooSlowError:
            error = f"no response within {self.config.webhook_timeout:g}s"
        except BlockedDestination as exc:
            error = str(exc)
        except _HTTP_FAILURES as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LEN] if str(exc) else type(exc).__name__
        return status_code, error, started, (time.monotonic() - clock) * 1000
