"""A QMP client: the JSON control protocol QEMU speaks on a unix socket.

Only what the qemu runtime needs: one command at a time (a lock serialises
callers), each reply matched by id, file descriptors passed with
``SCM_RIGHTS`` (``getfd``: how a snapshot file reaches QEMU without a shell).
Events that arrive between replies are skipped: nothing here waits for one
(the runtime watches QEMU's process, not its events).
"""

from __future__ import annotations

import array
import itertools
import json
import socket
from pathlib import Path
from typing import Any

import trio

from agent.runtimes.base import RuntimeFailure

_MAX_LINE = 1 << 20


class QmpError(RuntimeFailure):
    """QEMU refused a command (or the monitor went away)."""


class QmpClient:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, path: Path) -> QmpClient:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                await sock.connect(str(path))
            except OSError as exc:
                raise QmpError(f"cannot reach QEMU's monitor: {exc}") from None
            client = cls(sock)
            greeting = await client._read_message()
            if "QMP" not in greeting:
                raise QmpError(f"not a QMP greeting: {greeting}")
            await client.execute("qmp_capabilities")
        except BaseException:
            sock.close()
            raise
        return client

    def close(self) -> None:
        self._sock.close()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *, fd: int | None = None) -> Any:
        """Run a command and return its ``return`` value; ``fd`` travels with it."""
        async with self._lock:
            request_id = next(self._ids)
            request: dict[str, Any] = {"execute": command, "id": request_id}
            if arguments:
                request["arguments"] = arguments
            data = json.dumps(request).encode() + b"\n"
            try:
                if fd is None:
                    await self._sock.send(data)
                else:
                    rights = array.array("i", [fd]).tobytes()
                    await self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            except OSError as exc:
                raise QmpError(f"QMP {command}: the monitor is gone ({exc})") from None
            while True:
                message = await self._read_message()
                if message.get("id") == request_id:
                    break
        if "error" in message:
            raise QmpError(f"QMP {command}: {message['error'].get('desc', message['error'])}")
        return message.get("return")

    async def _read_message(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            try:
                chunk = await self._sock.recv(65536)
            except OSError as exc:
                raise QmpError(f"the QMP monitor is gone ({exc})") from None
            if not chunk:
                raise QmpError("the QMP monitor closed (QEMU exited?)")
            self._buf += chunk
            if len(self._buf) > _MAX_LINE:
                raise QmpError("QMP message over 1 MiB")
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message
