"""A hostile in-sandbox agent's answers to file operations: wrong shapes are refused cleanly.

The runtime turns the answers of ``stat``, ``list``, ``open`` and
``prepare_write`` into typed data; an answer of the wrong shape is a
``RuntimeFailure`` for that request (a clear error to the caller), never a
``TypeError`` or ``KeyError`` escaping into the agent.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from agent.runtimes.base import RuntimeFailure
from agent.runtimes.channel.guest_channel import GuestChannel
from agent.runtimes.channel.sandbox_io import ChannelEndpoints
from tests.fake_guest import Guest, connected

pytestmark = pytest.mark.fast


class OneChannel(ChannelEndpoints):
    """The shared endpoint code over one scripted channel (no runtime around it)."""

    name = "scripted"

    def __init__(self, channel: GuestChannel) -> None:
        super().__init__()
        self._channels["s"] = channel

    async def _reconnect(self, sandbox_id: str) -> GuestChannel:
        raise AssertionError("the scripted channel never closes here")

    # What the endpoint code does not use here.
    async def create(self, spec: Any) -> None: ...
    async def start(self, sandbox_id: str) -> None: ...
    async def open_port(self, sandbox_id: str, port: int) -> Any: ...
    async def destroy(self, sandbox_id: str) -> None: ...
    async def running(self) -> set[str]:
        return set()

    async def leftovers(self) -> set[str]:
        return set()


GOOD = {"name": "f", "path": "/f", "type": "file", "size": 3, "mode": 0o644, "mtime": 1.0, "link_target": None}
BAD_ANSWERS = [
    None,
    "a string",
    {},
    {**GOOD, "size": "3"},
    {**GOOD, "size": True},
    {**GOOD, "size": -1},
    {**GOOD, "type": "device"},
    {**GOOD, "mode": 1 << 20},
    {**GOOD, "name": 5},
    {**GOOD, "link_target": 7},
    {**GOOD, "extra": "field", "mtime": "yesterday"},
]


async def answer_next_request(guest: Guest, ok: object) -> None:
    """Reply ``ok`` to the first file request the host sends."""
    while True:
        for message in guest.received:
            if message["type"] == "file":
                await guest.send({"type": "reply", "id": message["id"], "error": None, "ok": ok})
                return
        await trio.sleep(0.001)


@pytest.mark.parametrize("answer", BAD_ANSWERS)
async def test_a_malformed_stat_answer_is_a_runtime_failure(answer: object) -> None:
    async with connected() as (channel, guest), trio.open_nursery() as nursery:
        nursery.start_soon(answer_next_request, guest, answer)
        with pytest.raises(RuntimeFailure):
            await OneChannel(channel).stat("s", "/f")


async def test_a_well_formed_answer_still_works() -> None:
    async with connected() as (channel, guest), trio.open_nursery() as nursery:
        nursery.start_soon(answer_next_request, guest, GOOD)
        info = await OneChannel(channel).stat("s", "/f")
    assert (info.name, info.size, info.type) == ("f", 3, "file")


@pytest.mark.parametrize(
    "answer", [{"entries": "x", "truncated": False}, {"entries": [GOOD] * 3, "truncated": False}, {"entries": []}]
)
async def test_a_malformed_listing_is_a_runtime_failure(answer: object) -> None:
    async with connected() as (channel, guest), trio.open_nursery() as nursery:
        nursery.start_soon(answer_next_request, guest, answer)
        with pytest.raises(RuntimeFailure):
            await OneChannel(channel).list_dir("s", "/", limit=2)
