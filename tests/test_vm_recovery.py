"""VMs outlive an agent restart: running ones are re-adopted, paused ones stay resumable."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import start_system, stop_system, wait_until
from tests.test_vm_snapshots import COUNTER, create_vm, exec_in


async def test_agent_restart_keeps_running_and_paused_vms(
    nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path
) -> None:
    system = await start_system(
        nursery,
        tmp_path,
        vm_images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={"destroy_on_shutdown": False},
    )
    try:
        running, paused = await create_vm(system), await create_vm(system)
        counter = (await exec_in(system, running["id"], COUNTER))["output"].strip()
        await exec_in(system, paused["id"], "echo kept > /root/state")
        assert (await system.client.post(f"/v1/sessions/{paused['id']}/pause")).status_code == 200

        await system.agent.stop()
        assert len(system.vms()) == 1, "a host agent restart must not stop VMs"
        system.agent.config.destroy_on_shutdown = True
        await system.agent.start(nursery)

        async def reconnects() -> bool:  # once the new agent's heartbeat carried its URL
            answer = await system.client.post(
                "/v1/exec", json={"session_id": running["id"], "command": f"kill -0 {counter} && echo alive"}
            )
            return answer.status_code == 200 and answer.json()["output"] == "alive\n"

        await wait_until(reconnects, timeout=60)
        resumed = await system.client.post(f"/v1/sessions/{paused['id']}/resume")
        assert resumed.status_code == 200, resumed.text
        assert (await exec_in(system, paused["id"], "cat /root/state"))["output"] == "kept\n"
        for session in (running, paused):
            await system.client.delete(f"/v1/sessions/{session['id']}")
    finally:
        await stop_system(system)
