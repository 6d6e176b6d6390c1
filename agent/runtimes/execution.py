"""Running a process to its end under a deadline, its output handed on as it comes.

``run_process`` is the one path every exec takes: the streaming exec
endpoint sends each chunk to its client (and so waits for a slow one: the
process then blocks on its pipe, nothing piles up here), and the one-shot
``collect`` keeps the output's tail. Output is capped there: the tail is
kept (the end of a failing build log is the part people read) and
truncation is flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from agent.runtimes.base import Process

# After the main process exits, how long to wait for more output that a
# background child may still hold open, per read, and in all.
_DRAIN_GRACE = 0.2
_DRAIN_LIMIT = 30.0
# How long a killed process may take to be reaped before we stop waiting.
_REAP_DEADLINE = 5.0
_CHUNK = 1 << 20

OnOutput = Callable[[str, bytes], Awaitable[None]]


class OutputTail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.truncated = False
        self.written = 0  # bytes ever written, so a reader can tell whether anything is new

    def write(self, data: bytes | bytearray) -> None:
        self._buf += data
        self.written += len(data)
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


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    timed_out: bool


class _Exit:
    """The main process's exit, as the output pumps see it.

    Before the exit, a pump waits for output as long as it takes; after it,
    only briefly per read and for ``_DRAIN_LIMIT`` in all: a background
    child may hold the pipe open for ever. Handing a chunk on is never
    under these limits, so a slow reader loses nothing.
    """

    def __init__(self) -> None:
        self.at: float | None = None
        self._waits: set[trio.CancelScope] = set()

    def happened(self) -> None:
        self.at = trio.current_time()
        for scope in self._waits:
            scope.deadline = min(scope.deadline, self.at + _DRAIN_GRACE)

    async def receive(self, stream: trio.abc.ReceiveStream) -> bytes | None:
        """The next chunk; None at the end of the stream or of the drain."""
        if self.at is not None and trio.current_time() > self.at + _DRAIN_LIMIT:
            return None
        with trio.CancelScope() as scope:
            if self.at is not None:
                scope.deadline = trio.current_time() + _DRAIN_GRACE
            self._waits.add(scope)
            try:
                return bytes(await stream.receive_some(_CHUNK)) or None
            finally:
                self._waits.discard(scope)
        return None


async def _pump(stream: trio.abc.ReceiveStream, name: str, on_output: OnOutput, exit: _Exit) -> None:
    while (chunk := await exit.receive(stream)) is not None:
        await on_output(name, chunk)


async def run_process(process: Process, timeout: float | None, on_output: OnOutput) -> Outcome:
    """Wait for ``process`` (killing it at ``timeout``), handing on its output in order per stream.

    Whatever happens, including cancellation of the caller, the process group
    is killed if still alive and the process reaped before this returns.
    """
    exit_code: int | None = None
    exited = _Exit()
    try:
        with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, process.stdout, "stdout", on_output, exited)
                if process.stderr is not None:
                    nursery.start_soon(_pump, process.stderr, "stderr", on_output, exited)
                exit_code = await process.wait()
                exited.happened()
        timed_out = deadline.cancelled_caught and exited.at is None
    finally:
        if exit_code is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(_REAP_DEADLINE):
                exit_code = await process.wait()
        with trio.CancelScope(shield=True):
            await process.aclose()
    return Outcome(exit_code=exit_code if exit_code is not None else 137, timed_out=timed_out)


async def collect(
    process: Process, timeout: float | None, output_limit: int, sink: OutputTail | None = None
) -> ExecResult:
    """Run ``process`` to its end and keep the tail of its output: the one-shot exec.

    Pass ``sink`` to read the output while the process runs.
    """
    started = time.monotonic()
    tail = sink if sink is not None else OutputTail(output_limit)

    async def keep(_stream: str, chunk: bytes) -> None:
        tail.write(chunk)

    outcome = await run_process(process, timeout, keep)
    return ExecResult(
        exit_code=outcome.exit_code,
        output=tail.text(),
        output_truncated=tail.truncated,
        timed_out=outcome.timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
