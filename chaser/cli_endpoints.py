"""CLI commands on a running session's endpoints: shell, streaming exec, cp, port-forward.

    chaser shell SESSION [-- COMMAND...]       an interactive terminal (resizes follow yours)
    chaser exec SESSION [-i] -- COMMAND...     streamed output; exits with the command's code
    chaser cp ./src SESSION:/dst               upload a file or directory
    chaser cp SESSION:/src ./dst               download one ('-' for stdin/stdout)
    chaser port-forward SESSION PORT [LOCAL]   127.0.0.1:LOCAL -> PORT in the session

The WebSocket clients (``chaser.session_streams``) are imported only when
one of these runs, so the CLI keeps starting fast.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import trio

from chaser import cli_accounts
from chaser.wire import errors

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CHUNK = 1 << 20
# What ssh exits with when the connection, not the command, failed.
STREAM_FAILED = 255


def command_of(words: list[str]) -> str | list[str]:
    """One word runs through the sandbox's shell (``"ls | wc -l"``); several are argv."""
    return words[0] if len(words) == 1 else words


def _run_stream(args: argparse.Namespace, fn: Any, *fn_args: Any, **kwargs: Any) -> int:
    from chaser.session_streams import StreamError

    with cli_accounts.client_for(args) as client:
        api_url, headers = client.api_url, client.headers
    try:
        return int(trio.run(partial(fn, api_url, headers, *fn_args, **kwargs)))
    except StreamError as exc:
        print(f"chaser: {exc}", file=sys.stderr)
        return STREAM_FAILED


def stream_exec(args: argparse.Namespace, session_id: str, words: list[str]) -> int:
    """``chaser exec SESSION -- COMMAND...``: streamed, with the command's exit code."""
    from chaser.session_streams import run_exec

    env = dict(kv.split("=", 1) for kv in args.env)
    return _run_stream(
        args, run_exec, session_id, command_of(words), stdin=args.stdin, env=env, cwd=args.cwd,
        timeout_ms=args.timeout_ms,
    )  # fmt: skip


def cmd_shell(args: argparse.Namespace) -> int:
    from chaser.session_streams import run_shell

    return _run_stream(args, run_shell, args.session, command_of(args.command) if args.command else None)


def cmd_port_forward(args: argparse.Namespace) -> int:
    from chaser.session_streams import forward_port

    local = args.port if args.local_port is None else args.local_port

    async def serve(api_url: str, headers: dict[str, str]) -> int:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: forward_port(
                api_url, headers, args.session, args.port, local, host=args.address, task_status=task_status,
            ))  # fmt: skip
            print(f"Forwarding {args.address}:{bound} -> port {args.port} of {args.session}", file=sys.stderr)
        return 0

    try:
        return _run_stream(args, serve)
    except KeyboardInterrupt:
        return 0


# -- cp ---------------------------------------------------------------------


def _location(text: str) -> tuple[str | None, str]:
    """``SESSION:PATH`` -> (session, path); anything else is a local path."""
    head, sep, tail = text.partition(":")
    if sep and _UUID.fullmatch(head):
        return head.lower(), tail or "/"
    return None, text


def cmd_cp(args: argparse.Namespace) -> int:
    source_session, source = _location(args.source)
    dest_session, dest = _location(args.dest)
    if (source_session is None) == (dest_session is None):
        raise ValueError("give exactly one of SOURCE and DEST as SESSION:PATH (the other is a local path)")
    with cli_accounts.client_for(args) as client:
        if dest_session is not None:
            _upload(client, source, dest_session, dest)
        else:
            assert source_session is not None
            _download(client, source_session, source, dest)
    return 0


def _remote_directory(client: Any, session_id: str, path: str) -> bool:
    try:
        return bool(client.stat(session_id, path)["type"] == "directory")
    except errors.NotFound:
        return False


def _upload(client: Any, local: str, session_id: str, remote: str) -> None:
    """Like ``cp``: into ``remote`` if it is a directory, else as ``remote``."""
    if local == "-":
        client.upload(session_id, remote, _chunks(sys.stdin.buffer))
        return
    source = Path(local)
    if not source.exists():
        raise ValueError(f"{local}: no such file or directory")
    target = remote
    if _remote_directory(client, session_id, remote):
        target = str(PurePosixPath(remote) / source.resolve().name)
    if source.is_dir():
        client.upload_tar(session_id, target, _tar_of(source))
    else:
        with open(source, "rb") as f:
            client.upload(session_id, target, _chunks(f))


def _download(client: Any, session_id: str, remote: str, local: str) -> None:
    is_dir = client.stat(session_id, remote)["type"] == "directory"
    name = PurePosixPath(remote).name or "root"
    target = Path(local) / name if local != "-" and Path(local).is_dir() else Path(local)
    if is_dir:
        if local == "-":
            raise ValueError("a directory cannot be written to stdout; name a local directory")
        target.mkdir(parents=True, exist_ok=True)
        with client.download(session_id, remote, tar=True) as response:
            reader = io.BufferedReader(_ChunkReader(response.iter_bytes(_CHUNK)), _CHUNK)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                tar.extractall(target, filter="data")
        return
    with client.download(session_id, remote) as response:
        if local == "-":
            for chunk in response.iter_bytes(_CHUNK):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        partial = target.with_name(f".{target.name}.chaser-partial")
        try:
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)


def _chunks(source: io.BufferedIOBase | Any) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk


def _tar_of(directory: Path) -> Iterator[bytes]:
    """A tar stream of ``directory``'s contents, made by a thread while it is sent."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(directory, arcname=".")
        except BaseException as exc:  # handed to the sending side, which raises it
            failure.append(exc)

    thread = threading.Thread(target=produce, name="chaser-cp-tar", daemon=True)
    thread.start()
    with open(read_fd, "rb") as source:
        yield from _chunks(source)
    thread.join()
    if failure:
        raise failure[0]


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a streamed response body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def add_endpoint_commands(sub: Any) -> None:
    shell = sub.add_parser("shell", help="an interactive terminal in a session")
    shell.add_argument("session")
    shell.add_argument("command", nargs="*", help="what to run instead of the login shell (after --)")
    shell.set_defaults(func=cmd_shell)

    cp = sub.add_parser("cp", help="copy files or directories to or from a session (SESSION:PATH)")
    cp.add_argument("source", help="a local path, '-' (stdin), or SESSION:PATH")
    cp.add_argument("dest", help="a local path, '-' (stdout), or SESSION:PATH")
    cp.set_defaults(func=cmd_cp)

    forward = sub.add_parser("port-forward", help="forward a local TCP port to a port in a session")
    forward.add_argument("session")
    forward.add_argument("port", type=int)
    forward.add_argument("local_port", type=int, nargs="?", help="default: PORT; 0 picks a free one")
    forward.add_argument("--address", default="127.0.0.1", help="local address to listen on")
    forward.set_defaults(func=cmd_port_forward)
