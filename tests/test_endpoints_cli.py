"""The CLI on a session's endpoints: shell under a real terminal, streaming exec, cp, port-forward."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import trio

from tests.conftest import System
from tests.endpoints import curl, new_session, run
from tests.test_endpoints_ports import start_servers

CHASER = str(Path(sys.executable).parent / "chaser")


def cli_env(system: System) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "CHASER_API_URL": system.api_url, "CHASER_API_KEY": system.api_key, "TERM": "xterm"}


async def chaser(system: System, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [CHASER, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=cli_env(system)
    )


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """The user's side of a real pseudo-terminal with ``chaser shell`` running on it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        set_size(slave, 24, 80)
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: bytes, timeout: float = 30) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen[-2000:]!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the other side closed: what we have is all there is
                    assert re.search(pattern, self.seen), f"no {pattern!r} in {self.seen[-2000:]!r}"
        self.seen = self.seen[match.end() :]
        return match

    def resize(self, rows: int, cols: int) -> None:
        set_size(self.master, rows, cols)
        # What the kernel tells the terminal's foreground process group on a resize.
        os.kill(self.process.pid, signal.SIGWINCH)

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


def drive_shell(argv: list[str], env: dict[str, str]) -> tuple[bytes, bytes, int]:
    terminal = Terminal(argv, env)
    try:
        terminal.type("stty size; echo MARK-$((6*7))\r")
        first = terminal.expect(rb"(\d+ \d+)\s+MARK-42").group(1)
        terminal.resize(40, 132)
        for attempt in range(50):  # the resize and the next keys race; ask until it has landed
            terminal.type(f"stty size; echo MARK-{attempt}-$((7*7))\r")
            second = terminal.expect(rb"(\d+ \d+)\s+MARK-\d+-49").group(1)
            if second == b"40 132":
                break
        terminal.type("exit 7\r")
    finally:
        code = terminal.close()
    return first, second, code


async def test_shell_in_a_real_terminal_with_resize(sqlite_system: System) -> None:
    session = await new_session(sqlite_system)
    argv = [CHASER, "shell", session["id"]]
    first, second, code = await trio.to_thread.run_sync(drive_shell, argv, cli_env(sqlite_system))
    assert (first, second, code) == (b"24 80", b"40 132", 7)
    await sqlite_system.client.delete(f"/v1/sessions/{session['id']}")


async def test_exec_streams_and_exits_with_the_command_code(sqlite_system: System) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    done = await chaser(system, "exec", session_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    piped = await chaser(system, "exec", "-i", session_id, "--", "tr", "a-z", "A-Z", stdin=b"through stdin\n")
    assert (piped.returncode, piped.stdout) == (0, b"THROUGH STDIN\n")
    big = await chaser(system, "exec", session_id, "--", "head -c 30000000 /dev/zero | tr '\\0' x")
    assert big.returncode == 0 and big.stdout == b"x" * 30_000_000
    # The seeds' one-call forms still work.
    one_call = await chaser(system, "exec", "--session", session_id, "echo one call; exit 4")
    assert (one_call.returncode, one_call.stdout) == (4, b"one call\n")
    unknown = await chaser(system, "exec", "8d3a3c5e-0000-4000-8000-000000000000", "--", "true")
    assert unknown.returncode == 1 and b"session_not_found" in unknown.stderr
    await system.client.delete(f"/v1/sessions/{session_id}")


async def test_cp_both_ways(sqlite_system: System, tmp_path: Path) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data.bin").write_bytes(os.urandom(3 << 20))
    (tree / "top.txt").write_text("top\n")
    single = tmp_path / "single.bin"
    single.write_bytes(os.urandom(5 << 20))
    assert (await chaser(system, "cp", str(single), f"{session_id}:/root/single.bin")).returncode == 0
    assert (await chaser(system, "cp", str(tree), f"{session_id}:/root/")).returncode == 0  # into a directory
    inside = await run(system, session_id, "sha256sum /root/single.bin /root/tree/sub/data.bin; cat /root/tree/top.txt")
    sums = inside["output"].split()
    assert sums[0] == hashlib.sha256(single.read_bytes()).hexdigest()
    assert sums[2] == hashlib.sha256((tree / "sub" / "data.bin").read_bytes()).hexdigest()
    assert sums[4] == "top"

    back = tmp_path / "back"
    back.mkdir()
    assert (await chaser(system, "cp", f"{session_id}:/root/tree", str(back))).returncode == 0
    assert (back / "tree" / "sub" / "data.bin").read_bytes() == (tree / "sub" / "data.bin").read_bytes()
    assert (await chaser(system, "cp", f"{session_id}:/root/single.bin", str(back / "s.bin"))).returncode == 0
    assert (back / "s.bin").read_bytes() == single.read_bytes()
    assert (await chaser(system, "cp", "-", f"{session_id}:/root/piped", stdin=b"piped\n")).returncode == 0
    assert (await chaser(system, "cp", f"{session_id}:/root/piped", "-")).stdout == b"piped\n"

    missing = await chaser(system, "cp", f"{session_id}:/root/nothing", str(back))
    assert missing.returncode == 1 and b"not_found" in missing.stderr
    escape = await chaser(system, "cp", str(single), f"{session_id}:/root/../../etc/x")
    assert escape.returncode == 1 and b"chaser:" in escape.stderr
    both_local = await chaser(system, "cp", str(single), str(back))
    assert both_local.returncode == 2
    await system.client.delete(f"/v1/sessions/{session_id}")


async def test_port_forward_and_terminate_with_a_lease(sqlite_system: System) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    await start_servers(system, session_id)
    forward = await trio.lowlevel.open_process(
        [CHASER, "port-forward", session_id, "8000", "0"], stderr=subprocess.PIPE, env=cli_env(system)
    )
    try:
        assert forward.stderr is not None
        banner = b""
        with trio.fail_after(30):
            while b"\n" not in banner:
                banner += await forward.stderr.receive_some(4096)
        port = int(re.search(rb"127\.0\.0\.1:(\d+) ->", banner).group(1))  # type: ignore[union-attr]
        done = await curl(system, f"http://127.0.0.1:{port}/index.html")
        assert done.stdout == b"hello from the session\n", done.stderr
        async with await trio.open_tcp_stream("127.0.0.1", port):  # an open tunnel holds a lease
            with trio.fail_after(30):
                while (await system.client.get(f"/v1/sessions/{session_id}")).json()["active_connection_leases"] < 1:
                    await trio.sleep(0.1)
            refused = await chaser(system, "sessions", "terminate", session_id)
            assert refused.returncode == 1 and b"active_connections" in refused.stderr
            forced = await chaser(system, "sessions", "--json", "terminate", "--force", session_id)
            assert forced.returncode == 0, forced.stderr
    finally:
        forward.terminate()
        await forward.wait()
    assert (await system.client.get(f"/v1/sessions/{session_id}")).json()["status"] == "terminated"
