"""Each browser session's Chromium: started with the sandbox, watched, closed before it goes.

A browser sandbox is ``running`` only once Chromium's DevTools endpoint
answers ``/json/version``: ``launch`` waits for that (or for Chromium's
exit, with its last output as the reason). A watcher task per Chromium
drains its output and notices an exit nobody asked for (a crash, an OOM
kill), which it reports through the callback the launch was given.
``stop`` closes Chromium with ``Browser.close``, so it writes its cookies
and local storage to the profile before the sandbox is destroyed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from agent.browser.cdp import UNREACHABLE, CdpError, open_cdp
from agent.browser.chromium import DEVTOOLS_PORT, launch_argv
from agent.browser.devtools_http import DevtoolsHttpError, get_json
from agent.runtimes.base import Process, ProcessSpec, Runtime, RuntimeFailure
from agent.runtimes.execution import OutputTail

log = logging.getLogger(__name__)

_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
_POLL = 0.05
# Chromium's last words kept for the reason of a failed start or a crash.
_LOG_TAIL = 16 << 10

OnExit = Callable[[str, str], Awaitable[None]]


@dataclass
class _Chromium:
    process: Process
    output: OutputTail = field(default_factory=lambda: OutputTail(_LOG_TAIL))
    exited: trio.Event = field(default_factory=trio.Event)
    exit_code: int | None = None
    stopping: bool = False  # an exit from now on was asked for
    watched: bool = False  # its watcher runs (and so it, not ``stop``, waits for the process)

    def last_words(self) -> str:
        lines = [line for line in self.output.text().splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "no output"


class Browsers:
    def __init__(self, runtime: Runtime, stop_grace: float = 5.0) -> None:
        self.runtime = runtime
        self.stop_grace = stop_grace
        self._chromiums: dict[str, _Chromium] = {}
        self._nursery: trio.Nursery | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the watchers while inside; Chromium processes outlive this (a restarted agent re-adopts them)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    async def launch(self, sandbox_id: str, *, on_workspace: bool, on_exit: OnExit) -> dict[str, Any]:
        """Start Chromium in the running sandbox; return its ``/json/version`` once it answers."""
        if self._nursery is None:
            raise RuntimeFailure("this agent does not run browsers")
        spec = ProcessSpec(argv=launch_argv(on_workspace), env=_ENV, cwd="/")
        chromium = _Chromium(await self.runtime.spawn(sandbox_id, spec))
        self._chromiums[sandbox_id] = chromium
        self._nursery.start_soon(self._watch, sandbox_id, chromium, on_exit)
        try:
            return await self._wait_ready(sandbox_id, chromium)
        except BaseException:
            chromium.stopping = True
            chromium.process.kill()
            raise

    async def _wait_ready(self, sandbox_id: str, chromium: _Chromium) -> dict[str, Any]:
        while True:
            if chromium.exited.is_set():
                raise RuntimeFailure(
                    f"Chromium exited with code {chromium.exit_code} while starting: {chromium.last_words()}"
                )
            try:
                stream = await self.runtime.open_port(sandbox_id, DEVTOOLS_PORT)
                version: dict[str, Any] = await get_json(stream, "/json/version")
                return version
            except (RuntimeFailure, DevtoolsHttpError, trio.BrokenResourceError):
                with trio.move_on_after(_POLL):
                    await chromium.exited.wait()

    async def _watch(self, sandbox_id: str, chromium: _Chromium, on_exit: OnExit) -> None:
        process = chromium.process
        chromium.watched = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stdout, chromium.output)
                chromium.exit_code = await process.wait()
                nursery.cancel_scope.cancel()  # a child may hold the pipe open
        finally:
            chromium.watched = False
            # Cut off (the agent stops) before Chromium ended: ``stop`` reaps it, if asked to.
            if chromium.exit_code is not None:
                await self._forget(sandbox_id, chromium)
        if not chromium.stopping:
            reason = f"the browser exited unexpectedly (code {chromium.exit_code}): {chromium.last_words()}"
            log.warning(reason, extra={"session_id": sandbox_id})
            await on_exit(sandbox_id, reason)

    async def _forget(self, sandbox_id: str, chromium: _Chromium) -> None:
        chromium.exited.set()
        with trio.CancelScope(shield=True):
            await chromium.process.aclose()
        if self._chromiums.get(sandbox_id) is chromium:
            del self._chromiums[sandbox_id]

    async def _ended(self, sandbox_id: str, chromium: _Chromium) -> None:
        """Wait for Chromium's end: through its watcher, or, without one, for the process itself."""
        if chromium.watched:
            await chromium.exited.wait()
        elif not chromium.exited.is_set():
            chromium.exit_code = await chromium.process.wait()
            await self._forget(sandbox_id, chromium)

    async def stop(self, sandbox_id: str) -> None:
        """Close Chromium cleanly (its profile is saved) within ``stop_grace``, else kill it; never raises.

        Chromium is this agent's child: it must be reaped before the sandbox
        is destroyed, or the dying container waits for it for ever.
        """
        chromium = self._chromiums.get(sandbox_id)
        if chromium is not None:
            chromium.stopping = True
        with trio.move_on_after(self.stop_grace):
            answered = True
            try:
                async with open_cdp(self.runtime, sandbox_id) as cdp:
                    # The answer may not make it out before the socket closes.
                    with contextlib.suppress(CdpError):
                        await cdp.call("Browser.close")
            except UNREACHABLE:
                answered = False  # not running (any more): nothing to save
            if chromium is not None:
                await self._ended(sandbox_id, chromium)
            elif answered:  # re-adopted after an agent restart: no handle, watch the port close
                while await self._answers(sandbox_id):
                    await trio.sleep(_POLL)
        if chromium is not None and not chromium.exited.is_set():
            chromium.process.kill()
            with trio.move_on_after(self.stop_grace):
                await self._ended(sandbox_id, chromium)

    async def _answers(self, sandbox_id: str) -> bool:
        try:
            stream = await self.runtime.open_port(sandbox_id, DEVTOOLS_PORT)
        except RuntimeFailure:
            return False
        await stream.aclose()
        return True


async def _drain(stream: trio.abc.ReceiveStream, sink: OutputTail) -> None:
    while chunk := await stream.receive_some(65536):
        sink.write(chunk)
