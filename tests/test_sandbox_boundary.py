"""The sandbox is a boundary: the attacks of the review, tried against real containers.

Each test plays a hostile tenant (or, for the FUSE stall, hands a sandbox a
filesystem that never answers) and shows the attack fail: the host runs no
code of its own inside a container, a container's root is an unprivileged
host range behind a seccomp filter, and one sandbox's stall is its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from tests.conftest import System
from tests.endpoints import curl, new_session, run

# A shared library whose constructor records where it ran: its process's
# user namespace map, effective capabilities and parent, into /tmp/nss-ran
# of whatever mount namespace that process is in.
NSS_MODULE = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    FILE *out = fopen("/tmp/nss-ran", "a");
    FILE *map = fopen("/proc/self/uid_map", "r");
    char line[256];
    if (!out) return;
    fprintf(out, "ppid %d\n", (int)getppid());
    if (map && fgets(line, sizeof line, map)) fprintf(out, "uid_map %s", line);
    fclose(out);
}
"""


async def test_nss_module_planted_before_a_tar_download_runs_nowhere_outside(
    sqlite_system: System, tmp_path: Path
) -> None:
    """CVE-2019-14271's class: the download must not load the tenant's libnss into host code."""
    system = sqlite_system
    source = tmp_path / "nss.c"
    source.write_text(NSS_MODULE)
    library = tmp_path / "libnss_x.so.2"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    session = await new_session(system)
    base = f"{system.api_url}/s/{session['id']}/files"
    up = await curl(system, "-f", "-T", str(library), f"{base}/lib/x86_64-linux-gnu/libnss_x.so.2")
    assert up.returncode == 0, up.stderr
    planted = await run(
        system,
        session["id"],
        "printf 'passwd: files x\\ngroup: files x\\n' > /etc/nsswitch.conf"
        " && mkdir -p /root/d && echo secret > /root/d/f && chown 4242:4242 /root/d/f"
        " && rm -f /tmp/nss-ran",  # chown looked the names up: its own run of the module
    )
    assert planted["exit_code"] == 0, planted

    down = await curl(system, "-f", "-o", str(tmp_path / "d.tar"), f"{base}/root/d?archive=tar")
    assert down.returncode == 0, down.stderr
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "d.tar")], capture_output=True, text=True, check=True)
    assert "4242/4242" in listing.stdout  # numeric ids: no name was looked up

    # The download looked up no name, so the module ran nowhere.
    ran = await run(system, session["id"], "cat /tmp/nss-ran 2>/dev/null || echo none")
    assert ran["output"].strip() == "none", ran["output"]
    # Where it runs when the tenant's own program looks a name up: in the
    # sandbox's user namespace, whose root is not the host's.
    lookup = await run(system, session["id"], "id -un 4242; cat /tmp/nss-ran")
    assert "uid_map" in lookup["output"], lookup
    for line in lookup["output"].splitlines():
        if line.startswith("uid_map"):
            assert line.split()[1:3] == ["0", "100000"], line


SYSCALLS = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    "keyctl": (250, 0, 0, 0, 0),          # KEYCTL_GET_KEYRING_ID
    "bpf": (321, 0, 0, 0),                # BPF_MAP_CREATE
    "io_uring_setup": (425, 1, 0),
    "userfaultfd": (323, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "unshare_user": (272, 0x10000000),    # unshare(CLONE_NEWUSER)
    "unshare_net": (272, 0x40000000),
    "mount_tmpfs": (165, b"none", b"/mnt", b"tmpfs", 0, 0),
}
for name, (number, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    print(name, result, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
"""


async def test_container_root_is_unprivileged_and_filtered(sqlite_system: System) -> None:
    """No identity map, no new privileges, and the calls the review named are refused."""
    system = sqlite_system
    session = await new_session(system)
    status = await run(
        system,
        session["id"],
        "cat /proc/self/uid_map /proc/self/gid_map; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
    )
    lines = status["output"].split()
    assert lines[:3] == ["0", "100000", "65536"] and lines[3:6] == ["0", "100000", "65536"], status
    assert "NoNewPrivs:" in lines and lines[lines.index("NoNewPrivs:") + 1] == "1"
    assert lines[lines.index("Seccomp:") + 1] == "2"

    probe = await run(system, session["id"], f"python3 -c {shquote(SYSCALLS)}")
    results = {line.split()[0]: line.split()[1:] for line in probe["output"].splitlines()}
    assert set(results) >= {"keyctl", "bpf", "io_uring_setup", "userfaultfd", "unshare_user", "mount_tmpfs"}, probe
    for name, (result, err) in results.items():
        assert result == "-1" and err == "EPERM", f"{name} was not refused: {result} {err}"

    tools = await run(
        system,
        session["id"],
        "unshare -U true; echo unshare=$?; mount -t fuse none /mnt 2>&1; echo mount=$?; "
        "ls /dev/fuse 2>&1; echo fuse=$?; keyctl show 2>/dev/null; echo done",
    )
    assert "unshare=0" not in tools["output"] and "mount=0" not in tools["output"], tools
    assert "fuse=0" not in tools["output"], tools


async def test_host_sees_the_container_as_an_unprivileged_uid(sqlite_system: System) -> None:
    """From the host, every process of a container (its agent included) runs as a mapped uid, not root."""
    system = sqlite_system
    session = await new_session(system)
    await run(system, session["id"], "sleep 30 >/dev/null 2>&1 &")
    uids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"lxc.payload.{session['id']}" in cgroup:
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            uids.append(int(uid))
    assert len(uids) >= 2, "found no process of the container"
    assert all(uid >= 100000 for uid in uids), uids


async def test_no_fork_of_the_agent_lives_beside_a_container(sqlite_system: System) -> None:
    """The container's monitor is LXC's own program, not a copy of the agent (and of the
    secrets in its memory) running as root beside it."""
    system = sqlite_system
    session = await new_session(system)
    agent_exe = os.readlink("/proc/self/exe")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if session["id"].encode() in cmdline:
            found.append(cmdline)
            assert exe != agent_exe, f"a fork of the agent serves the container: {cmdline!r}"
            environ = (entry / "environ").read_bytes().split(b"\0")
            assert not [v for v in environ if v.startswith(b"CHASER_")], "the monitor got the agent's environment"
    assert any(b"lxc monitor" in c for c in found), found


def shquote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# Opens /dev/fuse on the host, enters the sandbox's mount namespace and
# mounts a FUSE filesystem there that never answers (not even its INIT),
# then holds the connection open: every access below /mnt waits for good.
STALLING_FUSE = textwrap.dedent(
    """
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    ns = os.open(f"/proc/{sys.argv[1]}/ns/mnt", os.O_RDONLY)
    if libc.setns(ns, 0x00020000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"stall", b"/mnt", b"fuse", 0, options) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    print("mounted", flush=True)
    time.sleep(3600)
    """
)


async def test_a_stalled_filesystem_in_one_sandbox_does_not_stall_another(sqlite_system: System) -> None:
    """Many file operations parked on one sandbox's FUSE mount; another sandbox's still complete."""
    system = sqlite_system
    stalled = await new_session(system)
    other = await new_session(system)
    await run(system, other["id"], "echo fine > /root/ok")
    init_pid = await trio.to_thread.run_sync(_init_pid, system, stalled["id"])
    async with trio.open_nursery() as nursery:
        fuse = await trio.lowlevel.open_process(
            [sys.executable, "-c", STALLING_FUSE, str(init_pid)], stdout=subprocess.PIPE
        )
        try:
            assert fuse.stdout is not None
            with trio.fail_after(10):
                assert b"mounted" in await fuse.stdout.receive_some()
            for _ in range(16):  # twice the old shared pool of file threads
                nursery.start_soon(system.client.get, f"/s/{stalled['id']}/files/mnt/x")
            await trio.sleep(1)
            with trio.fail_after(20):
                for _ in range(5):
                    reply = await system.client.get(f"/s/{other['id']}/files/root/ok")
                    assert reply.status_code == 200 and reply.content == b"fine\n"
                    listing = await system.client.get(f"/s/{other['id']}/fs/list/root")
                    assert listing.status_code == 200
        finally:
            fuse.kill()
            await fuse.wait()
            nursery.cancel_scope.cancel()


def _init_pid(system: System, session_id: str) -> int:
    import lxc

    return int(lxc.Container(session_id, str(system.lxc_path)).init_pid)


BUSYBOX = Path("/bin/busybox")


async def test_busybox_only_root_serves_exec_pty_and_files(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    """A root filesystem of busybox-static alone (no Python, no libc): exec, a terminal, files both ways."""
    import vmimages.bundle
    from agent.runtimes.base import ProcessSpec, PtySpec, SandboxSpec
    from agent.runtimes.lxc.runtime import LxcRuntime

    root = tmp_path / "busybox-root"
    for directory in ("bin", "etc", "root", "tmp", "proc", "sys", "dev", "mnt"):
        (root / directory).mkdir(parents=True)
    subprocess.run(["cp", str(BUSYBOX), str(root / "bin" / "busybox")], check=True)
    for applet in ("sh", "ls", "cat", "echo", "id", "stty"):
        os.symlink("busybox", root / "bin" / applet)
    runtime = LxcRuntime(tmp_path / "lxc", vmimages.bundle.build(images_dir))
    await nursery.start(runtime.run)
    await runtime.create(SandboxSpec(id="busybox-only", image="busybox", rootfs=root))
    try:
        await runtime.start("busybox-only")
        process = await runtime.spawn(
            "busybox-only", ProcessSpec(argv=["sh", "-c", "id -u; ls /lib 2>&1; echo done"], env={"PATH": "/bin"})
        )
        output = await _read_all(process.stdout)
        assert await process.wait() == 0
        assert output.startswith(b"0\n") and b"done" in output, output

        pty = await runtime.spawn_pty(
            "busybox-only", PtySpec(argv=["sh"], env={"PATH": "/bin"}, cwd="/", cols=77, rows=21)
        )
        await pty.terminal.send_all(b"stty size; exit 3\n")
        seen = b""
        with trio.fail_after(10):
            while b"21 77" not in seen:
                seen += await pty.terminal.receive_some()
        assert await pty.wait() == 3
        await pty.aclose()

        writer = await runtime.create_file("busybox-only", "/root/hello.txt", parents=False)
        await writer.write(b"hello from the host\n")
        await writer.commit()
        reader = await runtime.open_file("busybox-only", "/root/hello.txt")
        assert reader.size == 20
        assert await reader.read(1 << 16) == b"hello from the host\n"
        await reader.aclose()
        tar = await runtime.archive("busybox-only", "/root")
        assert b"hello.txt" in await _read_all(tar.stdout)
        assert await tar.wait() == 0
    finally:
        await runtime.destroy("busybox-only")


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    with trio.fail_after(20):
        while chunk := await stream.receive_some():
            data += chunk
    return data
