"""Detached execs: commands that outlive the request that started them.

A job's command must keep running while the scheduler restarts, be readable
while it runs, and be killable when the job is canceled. So the agent runs
it in its own nursery under an id the scheduler chose before asking
(starting twice with one id returns the first, never a second process),
keeps its output tail, and answers polls, kills and forgets.

Finished execs are kept for ``keep_finished`` seconds for a scheduler that
comes back late to collect the result; running ones live until they exit.
Nothing survives an agent restart: the processes are this process's
children, and the agent's shutdown kills their process groups.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from agent.runtimes.base import Process
from agent.runtimes.execution import ExecResult, OutputTail, collect
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors

log = logging.getLogger(__name__)

# How long a killed process may take to be reaped before a kill call returns.
_KILL_DEADLINE = 10.0
_GC_INTERVAL = 30.0


@dataclass
class DetachedExec:
    id: str
    sandbox_id: str
    process: Process
    sink: OutputTail
    started_at: float  # trio clock
    done: trio.Event = field(default_factory=trio.Event)
    result: ExecResult | None = None
    killed: bool = False
    finished_at: float | None = None  # trio clock

    def to_json(self, seen: int | None = None) -> dict[str, object]:
        """The exec's state; ``output`` is null while running if ``seen`` is all there is."""
        running = not self.done.is_set()
        unchanged = running and seen == self.sink.written
        end = self.finished_at if self.finished_at is not None else trio.current_time()
        return {
            "id": self.id,
            "sandbox_id": self.sandbox_id,
            "status": "running" if running else "exited",
            "exit_code": self.result.exit_code if self.result is not None else None,
            "timed_out": self.result.timed_out if self.result is not None else False,
            "killed": self.killed,
            "duration_ms": self.result.duration_ms if self.result else int((end - self.started_at) * 1000),
            "output": None if unchanged else self.sink.text(),
            "output_bytes": self.sink.written,
            "output_truncated": self.sink.truncated,
        }


class DetachedExecs:
    def __init__(self, manager: SandboxManager, *, keep_finished: float = 600.0, max_execs: int = 1024) -> None:
        self.manager = manager
        self.keep_finished = keep_finished
        self.max_execs = max_execs
        self._execs: dict[str, DetachedExec] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the running execs; on cancellation their process groups are killed and reaped."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._forget_old_forever)
            task_status.started()

    async def start(
        self,
        exec_id: str,
        sandbox_id: str,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float | None,
    ) -> tuple[DetachedExec, bool]:
        """Start the command, or find the one already started under ``exec_id``; True if new."""
        existing = self._execs.get(exec_id)
        if existing is not None:
            if existing.sandbox_id != sandbox_id:
                raise errors.Conflict(f"exec {exec_id} belongs to another sandbox", code="exec_id_taken")
            return existing, False
        if len(self._execs) >= self.max_execs:
            raise errors.Unavailable("this host holds too many execs", code="too_many_execs")
        assert self._nursery is not None, "DetachedExecs.run has not started"
        process = await self.manager.spawn(sandbox_id, argv, env, cwd)
        detached = DetachedExec(
            id=exec_id,
            sandbox_id=sandbox_id,
            process=process,
            sink=OutputTail(self.manager.output_limit),
            started_at=trio.current_time(),
        )
        self._execs[exec_id] = detached
        self._nursery.start_soon(self._collect, detached, timeout)
        return detached, True

    async def _collect(self, detached: DetachedExec, timeout: float | None) -> None:
        try:
            detached.result = await collect(detached.process, timeout, self.manager.output_limit, detached.sink)
        finally:
            detached.finished_at = trio.current_time()
            detached.done.set()

    def get(self, sandbox_id: str, exec_id: str) -> DetachedExec:
        detached = self._execs.get(exec_id)
        if detached is None or detached.sandbox_id != sandbox_id:
            raise errors.NotFound(f"exec {exec_id} not found in sandbox {sandbox_id}", code="exec_not_found")
        return detached

    async def wait(self, detached: DetachedExec, timeout: float) -> None:
        """Return when the exec has exited, or after ``timeout``."""
        with trio.move_on_after(timeout):
            await detached.done.wait()

    async def kill(self, detached: DetachedExec) -> None:
        """Kill the command's whole process group and wait until it is reaped."""
        if not detached.done.is_set():
            detached.killed = True
            detached.process.kill()
            log.info("killed exec %s", detached.id, extra={"session_id": detached.sandbox_id})
        with trio.move_on_after(_KILL_DEADLINE):
            await detached.done.wait()

    def forget(self, detached: DetachedExec) -> None:
        """Drop a finished exec (its result has been collected)."""
        if not detached.done.is_set():
            raise errors.Conflict(f"exec {detached.id} is still running; kill it first", code="exec_running")
        self._execs.pop(detached.id, None)

    async def _forget_old_forever(self) -> None:
        while True:
            await trio.sleep(_GC_INTERVAL)
            cutoff = trio.current_time() - self.keep_finished
            for exec_id, detached in list(self._execs.items()):
                if detached.finished_at is not None and detached.finished_at < cutoff:
                    del self._execs[exec_id]
