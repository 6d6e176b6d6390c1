"""Processes in sandboxes: they hold nothing of the agent's, and ending their sandbox ends them.

The servers' listening sockets are inheritable; were they passed on, code in
a sandbox could accept the scheduler's calls to the agent, token included.
A sandbox destroyed under a running command must not wait on the agent (its
init waits for the agent to reap the command).
"""

from __future__ import annotations

import os

import trio

from tests.conftest import System
from tests.jobs_support import submit, wait_for_job, wait_for_output


async def test_commands_get_only_stdio(sqlite_system: System) -> None:
    # `ls` lists its own descriptors: stdio, and 3 for the directory it reads.
    body = {"ephemeral": True, "command": ["ls", "-l", "/proc/self/fd"]}
    result = (await sqlite_system.client.post("/v1/exec", json=body)).json()
    listed = [line.split()[8] for line in result["output"].splitlines()[1:]]
    assert listed == ["0", "1", "2", "3"], result["output"]
    assert "socket:" not in result["output"]


async def test_loopback_is_up_and_the_agent_keeps_its_namespace(sqlite_system: System) -> None:
    script = (
        "import socket; s = socket.create_server(('127.0.0.1', 0)); "
        "socket.create_connection(s.getsockname()); print('lo up')"
    )
    for _ in range(3):  # every create brings up its own sandbox's loopback, and only that
        body = {"ephemeral": True, "command": ["python3", "-c", script]}
        result = (await sqlite_system.client.post("/v1/exec", json=body)).json()
        assert result["output"] == "lo up\n", result
    # Every thread of this process (the agent's workers included) is back in our own namespace.
    ours = os.readlink("/proc/self/ns/net")
    assert {os.readlink(f"/proc/self/task/{tid}/ns/net") for tid in os.listdir("/proc/self/task")} == {ours}


async def test_terminating_a_session_under_running_commands(sqlite_system: System) -> None:
    system = sqlite_system
    session = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    job = await submit(system.client, "sandbox.exec", {"session_id": session["id"], "command": "echo up; sleep 300"})
    await wait_for_output(system.client, job["id"], "up\n")
    outcome: dict[str, object] = {}

    async def one_shot() -> None:
        body = {"session_id": session["id"], "command": "sleep 300"}
        outcome.update((await system.client.post("/v1/exec", json=body)).json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_shot)
        with trio.fail_after(30):
            while (
                "sleep 300\nsleep 300"
                not in (
                    await system.client.post("/v1/exec", json={"session_id": session["id"], "command": "ps -eo args="})
                ).json()["output"]
            ):
                await trio.sleep(0.05)
            deleted = await system.client.delete(f"/v1/sessions/{session['id']}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "terminated"
    assert outcome["exit_code"] == 137
    done = await wait_for_job(system.client, job["id"])
    assert done["status"] == "failed" and done["result"]["exit_code"] == 137 and done["output"] == "up\n"
    assert system.containers() == set()
