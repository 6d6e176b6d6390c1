"""One-shot exec: run a process to completion under a deadline, keep its output.

Built on ``Runtime.spawn`` so that streaming exec and one-shot exec share one
path. Output is capped: the tail is kept (the end of a failing build log is
the part people read) and truncation is flagged.
"""

from __future__ import annotations

import math
import time
from contextlib import suppress
from dataclasses import dataclass

import trio

from agent.runtimes.base import Process, RuntimeFailure

# After the main process exits, how long to keep reading output that a
# background child may still hold open before giving up on it.
_DRAIN_GRACE = 0.2
# How long a killed process may take to be reaped before we stop waiting.
_REAP_DEADLINE = 5.0


class OutputTail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.truncated = False
        self.written = 0  # bytes ever written, so a reader can tell whether anything is new

    def write(self, data: bytes | bytearray) -> None:
        self.written += len(data)
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]
            self.truncated = True

    def text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    output_truncated: bool
    timed_out: bool
    duration_ms: int

    def to_json(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "output": self.output,
            "output_truncated": self.output_truncated,
            "timed_out": self.timed_out,
            "duration_ms": self.duration_ms,
        }


async def _drain(stream: trio.abc.ReceiveStream, sink: OutputTail) -> None:
    while chunk := await stream.receive_some(65536):
        sink.write(chunk)


async def collect(
    process: Process, timeout: float | None, output_limit: int, sink: OutputTail | None = None
) -> ExecResult:
    """Wait for ``process`` (killing it at ``timeout``) and gather its output.

    Whatever happens, including cancellation of the caller, the process group
    is killed if still alive and the process reaped before this returns.
    Pass ``sink`` to read the output while the process runs.
    """
    started = time.monotonic()
    sink = sink if sink is not None else OutputTail(output_limit)
    exit_code: int | None = None
    timed_out = False
    try:
        with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stdout, sink)
                if process.stderr is not None:
                    nursery.start_soon(_drain, process.stderr, sink)
                exit_code = await process.wait()
                # Output written just before exit is still in the pipe; a
                # background child may hold it open forever, so bound the wait.
                nursery.cancel_scope.deadline = trio.current_time() + _DRAIN_GRACE
        timed_out = deadline.cancelled_caught and exit_code is None
    finally:
        if exit_code is None:
            process.kill()
            # A process whose sandbox is gone (a VM paused or dead) raises here
            # too; the error that ended the wait above is the one to report.
            with trio.CancelScope(shield=True), trio.move_on_after(_REAP_DEADLINE), suppress(RuntimeFailure):
                exit_code = await process.wait()
        with trio.CancelScope(shield=True):
            await process.aclose()
    return ExecResult(
        exit_code=exit_code if exit_code is not None else 137,
        output=sink.text(),
        output_truncated=sink.truncated,
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
