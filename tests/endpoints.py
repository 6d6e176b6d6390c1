"""Helpers for the session endpoint tests: sessions, WebSockets, frames."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.conftest import System


async def new_session(system: System, **body: Any) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"ephemeral": True, **body})
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def run(system: System, session_id: str, command: str) -> dict[str, Any]:
    response = await system.client.post("/v1/exec", json={"session_id": session_id, "command": command})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def ws_url(system: System, session_id: str, endpoint: str) -> str:
    return system.api_url.replace("http://", "ws://") + f"/s/{session_id}/{endpoint}"


@asynccontextmanager
async def websocket(
    system: System, session_id: str, endpoint: str, key: str | None = None
) -> AsyncIterator[WebSocketConnection]:
    headers = [("Authorization", f"Bearer {key or system.api_key}")]
    async with open_websocket_url(ws_url(system, session_id, endpoint), extra_headers=headers) as ws:
        yield ws


async def send(ws: WebSocketConnection, **frame: Any) -> None:
    await ws.send_message(msgpack.packb(frame, use_bin_type=True))


async def receive(ws: WebSocketConnection, timeout: float = 30) -> dict[str, Any]:
    with trio.fail_after(timeout):
        data = await ws.get_message()
    assert isinstance(data, bytes), data
    frame: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return frame


async def receive_until(ws: WebSocketConnection, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Frames up to and including the first of type ``kind``."""
    frames = []
    with trio.fail_after(timeout):
        while True:
            frame = await receive(ws)
            frames.append(frame)
            if frame["t"] == kind:
                return frames


async def curl(system: System, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return await trio.run_process(
        ["curl", "-sS", "-H", f"Authorization: Bearer {system.api_key}", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=input,
        env=env,
    )
