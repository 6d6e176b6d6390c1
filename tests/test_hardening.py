"""Inside a session: no host processes, no mounts, no modules, no host devices, few capabilities."""

from __future__ import annotations

import os
import shlex
from typing import Any

from tests.conftest import System

CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE = 21, 16, 12, 13, 19

FINIT_MODULE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/null", os.O_RDONLY)
print(libc.syscall(313, fd, b"", 0), ctypes.get_errno())
"""


async def run(system: System, command: str) -> dict[str, Any]:
    response = await system.client.post("/v1/exec", json={"ephemeral": True, "command": command})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_host_processes_are_invisible(sqlite_system: System) -> None:
    result = await run(sqlite_system, "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/cmdline")
    first, count, *_ = result["output"].splitlines()
    assert first == "chaser-sandbox", first  # the in-sandbox agent is the container's init
    assert int(count) < 10
    assert "pytest" not in result["output"] and "postgres" not in result["output"]


async def test_mount_and_module_loading_fail(sqlite_system: System) -> None:
    mounted = await run(sqlite_system, "mount -t tmpfs none /mnt")
    assert mounted["exit_code"] != 0 and "permission denied" in mounted["output"].lower(), mounted
    module = await run(sqlite_system, f"python3 -c {shlex.quote(FINIT_MODULE)}")
    assert module["output"].split() == ["-1", "1"], module  # EPERM
    remount = await run(sqlite_system, "mount -o remount,rw /proc/sys")
    assert remount["exit_code"] != 0


async def test_host_devices_are_out_of_reach(sqlite_system: System) -> None:
    root = os.stat("/").st_dev
    major, minor = os.major(root), os.minor(root)
    result = await run(sqlite_system, f"mknod /root/disk b {major} {minor} && head -c 1 /root/disk; echo rc=$?")
    assert "Operation not permitted" in result["output"] and result["output"].endswith("rc=1\n"), result


async def test_capabilities_are_dropped(sqlite_system: System) -> None:
    result = await run(sqlite_system, "grep CapBnd /proc/self/status")
    bounding = int(result["output"].split()[1], 16)
    for cap in (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE):
        assert not bounding & (1 << cap), cap
    # What package managers need is still there: root may chown and change owners' files.
    assert (await run(sqlite_system, "touch /root/f && chown 1000:1000 /root/f && echo ok"))["output"] == "ok\n"
