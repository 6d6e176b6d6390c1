"""A local Git host for import tests: real ``git http-backend`` behind a small HTTP server.

It stands for GitHub, which this machine cannot reach: the smart HTTP
protocol is git's own (the CGI program that ships with git), and private
repositories demand a token the way GitHub does, as HTTP Basic auth with
the token as password. Repositories are bare, at ``<root>/<owner>/<repo>.git``.

Imports clone from inside a sandbox, which reaches only the outside world:
the tests' Git host listens on a socket made in a test-made world namespace
(``tests.world``). One on the host's own loopback is what an import must
never reach.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.world import World

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@test.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@test.invalid",
}


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


@dataclass
class GitHost:
    root: Path
    url: str = ""
    # The test-made outside world it listens in; None: on the host's loopback
    world: World | None = None
    # "owner/repo" -> the token it requires
    private: dict[str, str] = field(default_factory=dict)
    # Authorization headers seen, to check what clients sent
    seen_auth: list[str] = field(default_factory=list)
    # The path of every request served, to tell whether anyone came at all
    seen_paths: list[str] = field(default_factory=list)
    # Set to make every request hang until cleared (a stalled Git host)
    stalled: threading.Event = field(default_factory=threading.Event)

    def create(self, path: str, files: dict[str, str], *, token: str | None = None) -> str:
        """A repository with one commit of ``files`` on ``main``; its commit id."""
        bare = self.root / f"{path}.git"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        if token is not None:
            self.private[path] = token
        return self.commit(path, files, "initial")

    def commit(self, path: str, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Commit ``files`` (written over the branch's tree) and push; the new commit id."""
        bare = self.root / f"{path}.git"
        work = self.root / "work" / path
        if not work.exists():
            git("clone", "--quiet", str(bare), str(work))
        if git("-C", str(work), "branch", "--list", "-a", f"*{branch}"):
            git("-C", str(work), "checkout", "--quiet", branch)
        else:
            git("-C", str(work), "checkout", "--quiet", "-b", branch)
        for name, content in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(content)
        git("-C", str(work), "add", "-A")
        git("-C", str(work), "commit", "--quiet", "-m", message)
        git("-C", str(work), "push", "--quiet", "origin", branch)
        return git("-C", str(work), "rev-parse", "HEAD")

    def _allowed(self, path_info: str, authorization: str | None) -> bool:
        for repo, token in self.private.items():
            if path_info.startswith(f"/{repo}.git/"):
                expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
                return authorization == expected
        return True


def _handler(host: GitHost) -> type[BaseHTTPRequestHandler]:
    class CgiBridge(BaseHTTPRequestHandler):
        """Runs ``git http-backend`` per request, as a web server runs CGI."""

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            host.seen_paths.append(self.path)
            while host.stalled.is_set():
                time.sleep(0.05)
            path_info, _, query = self.path.partition("?")
            authorization = self.headers.get("Authorization")
            if authorization:
                host.seen_auth.append(authorization)
            if not host._allowed(path_info, authorization):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self._body()
            env = {
                **GIT_ENV,
                "GIT_PROJECT_ROOT": str(host.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path_info,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
            }
            for name in ("Git-Protocol", "Content-Encoding"):
                if value := self.headers.get(name):
                    env["HTTP_" + name.upper().replace("-", "_")] = value
            done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return CgiBridge


@contextmanager
def git_host(root: Path, listener: socket.socket | None = None) -> Iterator[GitHost]:
    """Serve ``root`` for the duration of the block: on ``listener`` (a listening
    socket, taken over), else on 127.0.0.1 (a free port)."""
    root.mkdir(parents=True, exist_ok=True)
    host = GitHost(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(host), bind_and_activate=listener is None)
    if listener is not None:
        server.socket.close()
        server.socket = listener
    address, port = server.socket.getsockname()
    host.url = f"http://{address}:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
