"""File transfer and file operations through the session endpoints, with curl."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import trio

from tests.conftest import System
from tests.endpoints import curl, new_session, run

# 1 GiB, as the issue asks; CHASER_TEST_BIG_FILE_MB sets another size.
BIG_MB = int(os.environ.get("CHASER_TEST_BIG_FILE_MB", "1024"))


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_big_file_round_trip_streams_with_flat_memory(sqlite_system: System, tmp_path: Path) -> None:
    """Upload and download a big file with curl; the agent (this process, with the scheduler) never holds it."""
    system = sqlite_system
    session = await new_session(system)
    source = tmp_path / "big"
    # Made by a process, not in this one: the servers share its event loop,
    # and seconds of blocking writes here would make the agent miss heartbeats.
    with open(source, "wb") as f:
        await trio.run_process(["head", "-c", f"{BIG_MB}M", "/dev/urandom"], stdout=f)
    done = await trio.run_process(["sha256sum", str(source)], capture_stdout=True)
    digest = done.stdout.split()[0].decode()
    base = f"{system.api_url}/s/{session['id']}/files"
    peak = baseline = rss()

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss())
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        up = await curl(system, "-f", "-T", str(source), f"{base}/root/big.bin")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["size"] == BIG_MB << 20
        down = await curl(system, "-f", "-o", str(tmp_path / "back"), f"{base}/root/big.bin")
        assert down.returncode == 0, down.stderr
        nursery.cancel_scope.cancel()
    inside = await run(system, session["id"], "sha256sum /root/big.bin")
    assert inside["output"].split()[0] == digest
    back = await trio.run_process(["sha256sum", str(tmp_path / "back")], capture_stdout=True)
    assert back.stdout.split()[0].decode() == digest
    # Streaming means the servers' memory does not grow with the file.
    assert peak - baseline < 64 << 20, f"grew by {(peak - baseline) >> 20} MiB for a {BIG_MB} MiB file"
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_file_operations(sandbox_system: System) -> None:
    system = sandbox_system
    session = await new_session(system)
    s = f"/s/{session['id']}"
    client = system.client
    put = await client.put(f"{s}/files/root/dir/a.txt", content=b"alpha", params={"parents": "true"})
    assert put.status_code == 201, put.text
    assert put.json()["type"] == "file" and put.json()["size"] == 5
    assert (await client.get(f"{s}/files/root/dir/a.txt")).content == b"alpha"
    # Replacing keeps the file's mode.
    assert (await run(system, session["id"], "chmod 600 /root/dir/a.txt"))["exit_code"] == 0
    await client.put(f"{s}/files/root/dir/a.txt", content=b"beta!")
    stat = (await client.get(f"{s}/fs/stat/root/dir/a.txt")).json()
    assert stat["mode"] == "0600" and stat["size"] == 5
    assert (await client.post(f"{s}/fs/mkdir/root/dir/sub")).status_code == 201
    again = await client.post(f"{s}/fs/mkdir/root/dir/sub")
    assert again.status_code == 409 and again.json()["error"]["code"] == "exists"
    renamed = await client.post(f"{s}/fs/rename", json={"from": "/root/dir/a.txt", "to": "/root/dir/sub/b.txt"})
    assert renamed.status_code == 200, renamed.text
    listing = (await client.get(f"{s}/fs/list/root/dir")).json()
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [("sub", "directory")]
    assert (await client.get(f"{s}/fs/list/root/dir/sub")).json()["entries"][0]["name"] == "b.txt"
    missing = await client.get(f"{s}/files/root/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"
    directory = await client.get(f"{s}/files/root/dir")
    assert directory.status_code == 409 and directory.json()["error"]["code"] == "is_a_directory"
    not_empty = await client.delete(f"{s}/files/root/dir")
    assert not_empty.status_code == 409 and not_empty.json()["error"]["code"] == "not_empty"
    assert (await client.delete(f"{s}/files/root/dir", params={"recursive": "true"})).status_code == 200
    assert (await client.get(f"{s}/fs/stat/root/dir")).status_code == 404
    await client.delete(f"/v1/sessions/{session['id']}")


async def test_tar_both_ways(sandbox_system: System, tmp_path: Path) -> None:
    system = sandbox_system
    session = await new_session(system)
    s = f"/s/{session['id']}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("proj/readme.md", b"# hi\n"), ("proj/src/main.py", b"print(1)\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    up = await system.client.put(f"{s}/files/root/work", content=buffer.getvalue(), params={"archive": "tar"})
    assert up.status_code == 200, up.text
    assert (await run(system, session["id"], "cat /root/work/proj/src/main.py"))["output"] == "print(1)\n"
    down = await curl(system, "-f", f"{system.api_url}{s}/files/root/work?archive=tar")
    assert down.returncode == 0, down.stderr
    with tarfile.open(fileobj=io.BytesIO(down.stdout)) as tar:
        names = set(tar.getnames())
        main = tar.extractfile("./proj/src/main.py")
        assert main is not None and main.read() == b"print(1)\n"
    assert {"./proj/readme.md", "./proj/src/main.py"} <= names
    # Every member lands inside the target: an absolute name is taken as
    # relative to it; one that climbs out is refused, and says why.
    for member, status in (("/etc/evil", 200), ("../escape", 422)):
        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w") as tar:
            tar.addfile(tarfile.TarInfo(member), io.BytesIO(b""))
        answer = await system.client.put(f"{s}/files/root/work", content=evil.getvalue(), params={"archive": "tar"})
        assert answer.status_code == status, answer.text
    assert "outside the destination" in answer.json()["error"]["message"]
    assert answer.json()["error"]["code"] == "invalid_archive"
    placed = await run(system, session["id"], "ls /root/work/etc/evil /etc/evil /root/escape 2>&1")
    assert "/root/work/etc/evil\n" in placed["output"] and "cannot access '/etc/evil'" in placed["output"]
    assert "cannot access '/root/escape'" in placed["output"]
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as tar:
        info = tarfile.TarInfo("out")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(info)
    refused = await system.client.put(f"{s}/files/root/work", content=link.getvalue(), params={"archive": "tar"})
    assert refused.status_code == 422 and "outside" in refused.json()["error"]["message"]
    garbage = await system.client.put(f"{s}/files/root/work", content=b"not a tar" * 100, params={"archive": "tar"})
    assert garbage.status_code == 422
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_paths_are_confined_to_the_sandbox(sandbox_system: System) -> None:
    system = sandbox_system
    session = await new_session(system)
    base = f"{system.api_url}/s/{session['id']}"
    for path in ("files/../../etc/passwd", "files/root/%2e%2e/%2e%2e/etc/hostname", "fs/stat/root/%2E%2E"):
        done = await curl(system, "--path-as-is", f"{base}/{path}")
        body = json.loads(done.stdout)
        assert body["error"]["code"] == "invalid_path", (path, body)
    assert (await system.client.get(f"/s/{session['id']}/files/root/a%00b")).status_code == 422
    # A symlink to / inside the sandbox leads to the sandbox's root, never the host's.
    await run(system, session["id"], "ln -s / /root/up && echo inside > /etc/chaser-marker")
    through = await system.client.get(f"/s/{session['id']}/files/root/up/etc/chaser-marker")
    assert through.status_code == 200 and through.content == b"inside\n"
    hostname = await system.client.get(f"/s/{session['id']}/files/root/up/etc/hostname")
    assert hostname.content == b"sandbox\n"
    assert not Path("/etc/chaser-marker").exists()
    # Writes through the link land in the sandbox too.
    put = await system.client.put(f"/s/{session['id']}/files/root/up/tmp/written", content=b"x")
    assert put.status_code == 201
    assert (await run(system, session["id"], "cat /tmp/written"))["output"] == "x"
    await system.client.delete(f"/v1/sessions/{session['id']}")
