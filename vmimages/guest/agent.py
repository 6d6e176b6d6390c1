"""The guest agent: PID 1 of every sandbox, serving the host's runtime operations.

It runs from the read-only bundle at ``/.chaser`` (``vmimages.bundle``: its
own Python, libraries and loader, msgpack and this folder), never from the
image's files. A VM's initramfs mounts the session's root and the bundle's
disk and ``exec``s it there. It speaks ``protocol`` over the virtio-serial
port named ``chaser.0`` (in a container, an abstract socket) and starts
processes in their own session and process group, streams their output
with flow control, reports exit codes, signals process groups. As PID 1 it
also reaps every orphan.

Besides processes on pipes it runs processes on a terminal (a pty it holds
the master side of) and opens TCP connections to the guest's own ports:
each is a "child" whose output is streamed the same way and whose input the
host streams in (stdin, keystrokes, bytes to send), flow-controlled too.

One thread, one ``selectors`` loop: the port, the children's fds and a
wake-up pipe for signals (SIGCHLD for exits, SIGIO for the host connecting
or disconnecting: a virtio-serial port reads EOF and polls as hung up while
no host is connected, so the loop stops watching it and waits for SIGIO).
A process outlives the host's connection: when the host goes away (agent
restart, pause), the processes keep running and their output is discarded;
exit codes of processes nobody waits for any more are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import selectors
import signal
import socket
import struct
import sys
import termios
import time

from vmimages.guest import fileops
from vmimages.guest.protocol import WINDOW, FrameDecoder, Message, encode, encode_sync

TYPE_CHECKING = False  # importing typing costs milliseconds at every start; mypy reads this as typing's
if TYPE_CHECKING:
    from collections.abc import Callable
    from subprocess import Popen

PORT_NAME = "chaser.0"
SESSION_FILE = "/run/chaser/session-id"
# The initramfs's busybox, copied here: the image may have no ip(8).
BUSYBOX = "/run/chaser/busybox"
NIC = "eth0"
# <linux/random.h>: _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
# <linux/fs.h>: _IOWR('X', 119, int) and _IOWR('X', 120, int).
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
_READ_CHUNK = 512 << 10
_CONNECT_TIMEOUT = 5.0


def log(text: str) -> None:
    """One line on the VM's console, which the host keeps in console.log."""
    print(f"chaser-guest: {text}", file=sys.stderr, flush=True)


def find_port(name: str) -> str:
    """The /dev node of the virtio-serial port called ``name`` (no udev here)."""
    ports = "/sys/class/virtio-ports"
    for port in sorted(os.listdir(ports)):
        with open(f"{ports}/{port}/name") as f:
            if f.read().strip() == name:
                return f"/dev/{port}"
    raise SystemExit(f"chaser-guest: no virtio-serial port named {name!r}")


class Child:
    """What the host opened: a process (on pipes or a terminal) or a TCP connection.

    ``outputs`` are the fds read for the host, by stream (1, 2); ``input_fd``
    is written with what the host sends (a pipe to stdin, the terminal, the
    socket): the same fd as an output for a terminal or a socket.
    """

    __slots__ = (
        "code", "credit", "detached", "exit_sent", "handle", "id", "inbuf", "input_eof", "input_fd", "kind",
        "outputs", "pid", "stalled",
    )  # fmt: skip

    def __init__(self, request_id: int, kind: str, pid: int | None, outputs: dict[int, int], input_fd: int | None):
        self.id = request_id
        self.kind = kind  # process | pty | socket
        self.pid = pid
        self.outputs = outputs
        self.input_fd = input_fd
        self.credit = dict.fromkeys(outputs, WINDOW)
        self.code: int | None = None
        self.exit_sent = False
        # The host that started it is gone: output is read and dropped.
        self.detached = False
        # Streams with no credit left, not read until the host grants more.
        self.stalled: set[int] = set()
        self.inbuf = bytearray()  # sent by the host, not yet written
        self.input_eof = False  # the host ended its input: close it once written
        # subprocess's handle of a program started by it, kept until reaped: dropped
        # while running, subprocess would reap it itself, and its exit would be lost.
        self.handle: Popen[bytes] | None = None


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    merge_stderr: bool,
    stdin: bool,
    tool: Callable[[], None] | None = None,
) -> Child:
    """Start a program (or run ``tool``) in a new session on pipes; a failure to exec exits 127 with a message."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = (out_r, out_w) if merge_stderr else os.pipe2(os.O_CLOEXEC)
    for fd in {out_r, err_r}:
        widen_pipe(fd)
    in_r, in_w = os.pipe2(os.O_CLOEXEC) if stdin else (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1)
    handle = None if tool is not None else start_program(argv, env, cwd, in_r, out_w, err_w)
    if handle is not None:
        pid = handle.pid
    else:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setsid()
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                if tool is not None:
                    tool()
                exec_program(argv, env, cwd)
            finally:
                os._exit(127)
    outputs = {1: out_r} if merge_stderr else {1: out_r, 2: err_r}
    for fd in {out_w, err_w, in_r}:
        os.close(fd)
    for fd in [*outputs.values(), *([in_w] if stdin else [])]:
        os.set_blocking(fd, False)
    child = Child(0, "process", pid, outputs, in_w if stdin else None)
    child.handle = handle
    return child


def start_program(
    argv: list[str], env: dict[str, str], cwd: str | None, stdin: int, stdout: int, stderr: int
) -> Popen[bytes] | None:
    """Start a program the fast way: ``subprocess`` execs it from a vfork, in C, without
    copying this process (a fork of it costs three times as much). None if it cannot
    be started: the fork path then runs it, and says why on its stderr."""
    import subprocess  # here: a start of the agent that never runs a program does not pay for it

    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            restore_signals=True,
        )
    except (OSError, ValueError):
        return None


def spawn_tool(name: str, args: list[str], merge_stderr: bool, stdin: bool) -> Child:
    """Fork a child that runs one of ``tools.TOOLS`` (no exec) on pipes, as ``spawn`` does a program."""
    from vmimages.guest import tools

    if name not in tools.TOOLS:
        raise ValueError(f"unknown tool {name!r}")
    return spawn(["chaser-" + name], {}, None, merge_stderr, stdin, tool=lambda: tools.run(name, args))


def spawn_pty(argv: list[str], env: dict[str, str], cwd: str | None, cols: int, rows: int) -> Child:
    """Fork and exec as the leader of a new session on a new terminal; we keep its master side."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(master)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for target in (0, 1, 2):
                os.dup2(slave, target)
            exec_program(argv, env, cwd)
        finally:
            os._exit(127)
    os.close(slave)
    os.set_inheritable(master, False)
    os.set_blocking(master, False)
    return Child(0, "pty", pid, {1: master}, master)


def widen_pipe(fd: int) -> None:
    """Let a pipe hold a frame's worth: at the default 64 KiB a fast writer's output
    comes in small reads, and every frame costs the host far more than its bytes."""
    with contextlib.suppress(OSError):  # over the system's pipe-max-size: the default still works
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_CHUNK)


def gather(fd: int, data: bytes, size: int) -> bytes:
    """More of what is ready on ``fd`` after ``data``, up to ``size``: a terminal hands
    out 4 KiB a read, and a frame each would cost the host far more than the bytes."""
    parts = [data]
    got = len(data)
    while got < size:
        try:
            more = os.read(fd, size - got)
        except OSError:  # nothing more now (EAGAIN), or the end, which the next read sees again
            break
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def exec_program(argv: list[str], env: dict[str, str], cwd: str | None) -> None:
    """In a forked child: default signal dispositions, cwd, exec (or say why not)."""
    try:
        # Python ignores these; an exec'd program must get the defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGIO):
            signal.signal(sig, signal.SIG_DFL)
        if cwd:
            os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"chaser: cannot run {argv[0]!r}: {exc.strerror}\n".encode())


def connect(port: int) -> Child:
    """A TCP connection to ``port`` on the guest's loopback (refused: ConnectionRefusedError)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(_CONNECT_TIMEOUT)  # on loopback, an answer comes at once
        sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    fd = sock.detach()
    os.set_blocking(fd, False)
    return Child(0, "socket", None, {1: fd}, fd)


def configure_network(address: str, gateway: str) -> None:
    """Give the NIC the session's address and default route, replacing what it had."""
    import subprocess  # only here: a costly import at every boot

    for argv in (
        ["ip", "link", "set", NIC, "up"],
        ["ip", "addr", "flush", "dev", NIC],
        ["ip", "addr", "add", address, "dev", NIC],
        ["ip", "route", "add", "default", "via", gateway, "dev", NIC],
    ):
        done = subprocess.run([BUSYBOX, *argv], capture_output=True, check=False)
        if done.returncode != 0:
            log(f"network: {' '.join(argv)} failed: {done.stderr.decode(errors='replace').strip()}")


def freeze(path: str, frozen: bool) -> None:
    """Freeze (sync, block writes) or thaw the filesystem mounted at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE if frozen else FITHAW, 0)
    except OSError as exc:
        if frozen or exc.errno != errno.EINVAL:  # thawing what is not frozen: already done
            raise
    finally:
        os.close(fd)


def name_self(hosts: str = "/etc/hosts") -> None:
    """Make the sandbox's hostname resolve (``sudo``, ``hostname -f`` and many tools expect it)."""
    name = socket.gethostname()
    try:
        with open(hosts) as f:
            if any(name in line.split()[1:] for line in f if not line.lstrip().startswith("#")):
                return
        with open(hosts, "a") as f:
            f.write(f"127.0.1.1\t{name}\n")
    except OSError as exc:  # an image without /etc, a read-only one: nothing to fix
        log(f"cannot add {name} to {hosts}: {exc.strerror}")


def reseed(entropy: bytes) -> None:
    """Mix host randomness in and reseed now: forks of one snapshot must diverge."""
    if not entropy:
        return
    with open("/dev/urandom", "wb") as urandom:
        fcntl.ioctl(urandom, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        fcntl.ioctl(urandom, RNDRESEEDCRNG)


class GuestAgent:
    """Serves one host connection at a time: a VM's virtio-serial port, or
    (``listen``) connections accepted on an abstract unix socket of the
    container's network namespace, the newest replacing any older one."""

    def __init__(self, port_path: str | None = None, listen: str | None = None) -> None:
        self.listener: socket.socket | None = None
        if listen is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.listener.bind("\0" + listen)
            self.listener.listen(4)
            self.listener.setblocking(False)
            self.port = -1
        else:
            assert port_path is not None
            self.port = os.open(port_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.fcntl(self.port, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(self.port, fcntl.F_SETFL, fcntl.fcntl(self.port, fcntl.F_GETFL) | os.O_ASYNC)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGIO):
            signal.signal(sig, lambda _sig, _frame: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        if self.listener is not None:
            self.selector.register(self.listener.fileno(), selectors.EVENT_READ, None)
        self.connected = False
        self.port_events = 0
        self.decoder = FrameDecoder()
        self.outbuf = bytearray()
        self.children: dict[int, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.fd_owner: dict[int, Child] = {}  # every fd of a child
        self.watched: dict[int, int] = {}  # fd -> the selector events registered for it
        self.network: tuple[str, str] | None = None  # as configured last
        self.frozen: set[str] = set()  # filesystems frozen for the host
        self.warm = False  # whether what exec needs is loaded

    # -- the loop ------------------------------------------------------

    def run(self) -> None:
        if self.listener is None:
            self.check_connection()
        while True:
            try:
                self.step()
            except Exception:
                # A bug must not end PID 1, and with it the VM: say it, go on.
                import traceback

                traceback.print_exc()
                time.sleep(0.1)

    def step(self) -> None:
        self.watch_port()
        for key, events in self.selector.select(None if self.connected else 1.0):
            if key.fd == self.wake_r:
                self.drain_wakeups()
            elif self.listener is not None and key.fd == self.listener.fileno():
                self.accept_host()
            elif key.fd == self.port:
                if events & selectors.EVENT_READ:
                    self.read_port()
                if events & selectors.EVENT_WRITE:
                    self.flush()
            else:
                # An earlier event of this batch may have closed or stalled the fd: ask again.
                child = self.fd_owner.get(key.fd)
                if child is not None and events & selectors.EVENT_WRITE and key.fd == child.input_fd:
                    self.write_input(child)
                child = self.fd_owner.get(key.fd)
                if child is not None and events & selectors.EVENT_READ:
                    stream = self.readable_stream(child, key.fd)
                    if stream is not None:
                        self.read_output(child, stream)
        if not self.connected and self.listener is None:
            self.check_connection()
        self.reap()
        self.finish_exits()
        self.flush()
        if self.connected and not self.warm:
            # The host has its hello: load what the first exec needs while it gets ready to ask.
            import subprocess  # noqa: F401

            self.warm = True

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def watch_port(self) -> None:
        wanted = 0
        if self.connected:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        if wanted == self.port_events:
            return
        if self.port_events:
            self.selector.unregister(self.port)
        if wanted:
            self.selector.register(self.port, wanted, None)
        self.port_events = wanted

    # -- the host connection ------------------------------------------

    def check_connection(self) -> None:
        """A port polls as hung up while no host is connected to it."""
        poller = select.poll()
        poller.register(self.port, select.POLLIN)
        events = poller.poll(0)
        if not (events and events[0][1] & select.POLLHUP):
            self.connected = True

    def accept_host(self) -> None:
        """A host connected to the listener: it replaces the one before (an agent restarted)."""
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self.connected:
            self.disconnect()
        conn.setblocking(False)
        self.port = conn.detach()
        self.connected = True

    def disconnect(self) -> None:
        """The host went away: forget its half-sent bytes and its processes, thaw what it froze."""
        if self.listener is not None and self.port >= 0:
            # A socket's connection is over for good: close it; the next host connects anew.
            if self.port_events:
                self.selector.unregister(self.port)
                self.port_events = 0
            os.close(self.port)
            self.port = -1
        self.connected = False
        self.decoder.reset()
        self.outbuf.clear()
        self.detach_all()
        self.thaw_all()

    def thaw_all(self) -> None:
        for path in list(self.frozen):
            try:
                freeze(path, False)
            except OSError as exc:
                log(f"cannot thaw {path}: {exc}")
            self.frozen.discard(path)

    def read_port(self) -> None:
        try:
            data = os.read(self.port, _READ_CHUNK)
        except BlockingIOError:
            return
        except ConnectionError:
            data = b""
        if not data:
            self.disconnect()
            return
        for message in self.decoder.feed(data):
            try:
                self.handle(message)
            except (KeyError, TypeError, ValueError) as exc:
                log(f"ignored malformed {message.get('type')!r} message: {exc!r}")

    def send(self, message: Message) -> None:
        if self.connected:
            self.outbuf += encode(message)

    def flush(self) -> None:
        while self.outbuf and self.connected:
            try:
                written = os.write(self.port, self.outbuf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.EIO, errno.EPIPE, errno.ECONNRESET):
                    self.disconnect()
                    return
                raise
            del self.outbuf[:written]

    # -- messages ------------------------------------------------------

    def handle(self, message: Message) -> None:
        kind = message["type"]
        if kind == "hello":
            self.hello(message)
        elif kind == "bye":
            # Nothing half-read stays behind: the next session starts clean.
            self.detach_all()
            self.decoder.reset()
            self.outbuf += encode({"type": "bye"})
        elif kind == "exec":
            self.exec(message)
        elif kind == "freeze":
            self.freeze(message)
        elif kind == "sync":
            os.sync()
            self.send({"type": "reply", "id": message["id"], "error": None})
        elif kind == "kill":
            child = self.children.get(message["id"])
            if child is not None and child.code is None and child.pid is not None:
                target = child.pid
                if message.get("foreground") and child.kind == "pty":
                    with contextlib.suppress(OSError):
                        target = os.tcgetpgrp(child.input_fd) if child.input_fd is not None else target
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(target, int(message["signal"]))
        elif kind == "credit":
            child = self.children.get(message["id"])
            stream = int(message["fd"])
            if child is not None and stream in child.credit:
                child.credit[stream] += int(message["bytes"])
                if stream in child.stalled and child.credit[stream] > 0:
                    child.stalled.discard(stream)
                    self.watch(child.outputs[stream])
        elif kind == "input":
            child = self.children.get(message["id"])
            if child is not None and child.input_fd is not None and not child.input_eof:
                child.inbuf += message["data"]
                self.watch(child.input_fd)
            elif child is not None and not child.detached:
                # Nobody takes it any more: dropped, but credited, so the host's writer never stalls.
                self.send({"type": "input_credit", "id": child.id, "bytes": len(message["data"])})
        elif kind == "input_eof":
            child = self.children.get(message["id"])
            if child is not None and child.input_fd is not None:
                child.input_eof = True
                if not child.inbuf:
                    self.end_input(child)
        elif kind == "resize":
            child = self.children.get(message["id"])
            if child is not None and child.kind == "pty" and child.input_fd is not None:
                size = struct.pack("HHHH", int(message["rows"]), int(message["cols"]), 0, 0)
                with contextlib.suppress(OSError):
                    fcntl.ioctl(child.input_fd, termios.TIOCSWINSZ, size)
        elif kind == "connect":
            self.open_connection(message)
        elif kind == "file":
            self.file_operation(message)
        elif kind == "close":
            child = self.children.get(message["id"])
            if child is not None:
                self.close_all(child)
                child.detached = True
                self.forget_if_done(child)
        else:
            log(f"ignored unknown message type {kind!r}")

    def freeze(self, message: Message) -> None:
        path, frozen = str(message["path"]), bool(message["frozen"])
        error = None
        try:
            freeze(path, frozen)
        except OSError as exc:
            error = f"{path}: {exc.strerror}"
        else:
            if frozen:
                self.frozen.add(path)
            else:
                self.frozen.discard(path)
        self.send({"type": "reply", "id": message["id"], "error": error})

    def hello(self, message: Message) -> None:
        """A new host session: answer it, after making this VM its own."""
        self.detach_all()
        self.thaw_all()
        self.outbuf.clear()
        # A container shares the host's clock and kernel RNG and may not set
        # them (EPERM), and may have no /run/chaser: a VM's business only.
        host_time = message.get("time")
        if isinstance(host_time, float | int) and self.listener is None:
            time.clock_settime(time.CLOCK_REALTIME, float(host_time))
        if self.listener is None:
            reseed(bytes(message.get("entropy", b"")))
        session = message.get("session")
        if isinstance(session, str) and self.listener is None:
            with open(SESSION_FILE, "w") as f:
                f.write(session + "\n")
        network = message.get("network")
        if isinstance(network, dict):
            wanted = (str(network["address"]), str(network["gateway"]))
            if wanted != self.network:  # a fork, or the first hello: not a resume
                configure_network(*wanted)
                self.network = wanted
        self.outbuf += encode_sync({"type": "hello", "nonce": message["nonce"]})

    def exec(self, message: Message) -> None:
        request_id = int(message["id"])
        argv = [str(a) for a in message["argv"]]
        env = {str(k): str(v) for k, v in message["env"].items()}
        cwd = str(message["cwd"]) if message.get("cwd") else None
        terminal = message.get("pty")
        tool = message.get("tool")
        if isinstance(tool, str):
            args = [str(a) for a in message.get("args", [])]
            child = spawn_tool(tool, args, bool(message.get("merge_stderr", True)), bool(message.get("stdin", False)))
        elif isinstance(terminal, dict):
            child = spawn_pty(argv, env, cwd, int(terminal["cols"]), int(terminal["rows"]))
        else:
            child = spawn(argv, env, cwd, bool(message.get("merge_stderr", True)), bool(message.get("stdin", False)))
        child.id = request_id
        assert child.pid is not None
        self.by_pid[child.pid] = child
        self.adopt(child)
        self.send({"type": "started", "id": request_id, "pid": child.pid})

    def file_operation(self, message: Message) -> None:
        """Run one of ``fileops.OPERATIONS``; the reply says what came of it."""
        reply: Message = {"type": "reply", "id": message["id"], "error": None}
        try:
            reply["ok"] = fileops.OPERATIONS[str(message["op"])](*message["args"])
        except fileops.Refused as exc:
            reply.update(error=str(exc), refused=exc.kind)
        except OSError as exc:
            reply.update(error=exc.strerror or str(exc), errno=exc.errno or errno.EIO)
        self.send(reply)

    def open_connection(self, message: Message) -> None:
        request_id = int(message["id"])
        try:
            child = connect(int(message["port"]))
        except ConnectionRefusedError:
            self.send({"type": "reply", "id": request_id, "error": "refused", "refused": True})
            return
        except OSError as exc:
            self.send({"type": "reply", "id": request_id, "error": exc.strerror or str(exc), "refused": True})
            return
        child.id = request_id
        self.adopt(child)
        self.send({"type": "reply", "id": request_id, "error": None})

    def adopt(self, child: Child) -> None:
        self.children[child.id] = child
        for fd in {*child.outputs.values(), *([child.input_fd] if child.input_fd is not None else [])}:
            self.fd_owner[fd] = child
            self.watch(fd)

    # -- watching fds --------------------------------------------------

    def watch(self, fd: int) -> None:
        """(Re)register ``fd`` for what its child needs now: reading output with credit, writing input."""
        child = self.fd_owner.get(fd)
        wanted = 0
        if child is not None:
            if self.readable_stream(child, fd) is not None:
                wanted |= selectors.EVENT_READ
            if fd == child.input_fd and child.inbuf:
                wanted |= selectors.EVENT_WRITE
        current = self.watched.get(fd, 0)
        if wanted == current:
            return
        if not wanted:
            self.selector.unregister(fd)
            del self.watched[fd]
        elif current:
            self.selector.modify(fd, wanted, None)
            self.watched[fd] = wanted
        else:
            self.selector.register(fd, wanted, None)
            self.watched[fd] = wanted

    @staticmethod
    def readable_stream(child: Child, fd: int) -> int | None:
        """The output stream ``fd`` is, if it may be read now."""
        for stream, out_fd in child.outputs.items():
            if out_fd == fd and stream not in child.stalled:
                return stream
        return None

    # -- input ---------------------------------------------------------

    def write_input(self, child: Child) -> None:
        fd = child.input_fd
        if fd is None or not child.inbuf:
            return
        try:
            written = os.write(fd, child.inbuf)
        except BlockingIOError:
            return
        except OSError:
            # The reader is gone (EPIPE), or the terminal hung up (EIO): drop what is left.
            written = len(child.inbuf)
            child.input_eof = True
        del child.inbuf[:written]
        if not child.detached:
            self.send({"type": "input_credit", "id": child.id, "bytes": written})
        if not child.inbuf and child.input_eof:
            self.end_input(child)
        elif child.input_fd is not None:
            self.watch(child.input_fd)

    def end_input(self, child: Child) -> None:
        """No more input: close a pipe, half-close a socket; a terminal stays as it is."""
        fd = child.input_fd
        if fd is None:
            return
        child.inbuf.clear()
        if child.kind == "socket":
            with contextlib.suppress(OSError):
                socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_WR)
            child.input_fd = None
            self.watch(fd)
        elif child.kind == "process":
            child.input_fd = None
            self.release_fd(fd)

    # -- output and exits ----------------------------------------------

    def read_output(self, child: Child, stream: int) -> bool:
        """Read what is there, up to a frame's worth; True if the stream may hold more right now."""
        fd = child.outputs[stream]
        size = _READ_CHUNK if child.detached else min(_READ_CHUNK, child.credit[stream])
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            return False
        except OSError:
            data = b""  # a terminal whose last user left (EIO), a reset connection: its end
        if data and len(data) < size:
            data = gather(fd, data, size)
        if not data:
            self.close_output(child, stream)
            if not child.detached:
                self.send({"type": "eof", "id": child.id, "fd": stream})
            if child.kind == "socket":
                child.code = 0  # a connection has no exit but its end
            self.forget_if_done(child)
            return False
        if not child.detached:
            self.send({"type": "output", "id": child.id, "fd": stream, "data": data})
            child.credit[stream] -= len(data)
            if child.credit[stream] <= 0:
                child.stalled.add(stream)
                self.watch(fd)
                return False
        return True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.by_pid.pop(pid, None)
            if child is not None:  # else an orphan that PID 1 inherited
                code = os.waitstatus_to_exitcode(status)
                child.code = 128 - code if code < 0 else code
                if child.handle is not None:
                    child.handle.returncode = code  # reaped here: subprocess must not try
                    child.handle = None

    def finish_exits(self) -> None:
        """Report exits once the output written before them has been read."""
        for child in list(self.children.values()):
            if child.code is None or child.exit_sent:
                continue
            drained = True
            for stream in list(child.outputs):
                while stream in child.outputs and stream not in child.stalled and self.read_output(child, stream):
                    pass
                drained = drained and stream not in child.stalled
            if not drained:
                continue
            child.exit_sent = True
            if child.kind == "pty" and child.input_fd is not None:
                # Its output was read to the end: nothing more will use the terminal
                # (a process left holding it gets a hangup). The host reads to the
                # end of the output before it waits for the exit: say where it is.
                if 1 in child.outputs and not child.detached:
                    self.send({"type": "eof", "id": child.id, "fd": 1})
                child.outputs.pop(1, None)
                fd, child.input_fd = child.input_fd, None
                self.release_fd(fd)
            if not child.detached:
                self.send({"type": "exit", "id": child.id, "code": child.code})
            self.forget_if_done(child)

    # -- closing -------------------------------------------------------

    def close_output(self, child: Child, stream: int) -> None:
        fd = child.outputs.pop(stream)
        child.stalled.discard(stream)
        if fd == child.input_fd and child.kind != "socket":
            child.input_fd = None  # a terminal: its input goes with it
        if fd != child.input_fd:
            self.release_fd(fd)
        else:
            self.watch(fd)

    def close_all(self, child: Child) -> None:
        for stream in list(child.outputs):
            child.stalled.discard(stream)
            self.release_fd(child.outputs.pop(stream))
        if child.input_fd is not None:
            fd, child.input_fd = child.input_fd, None
            self.release_fd(fd)
        child.inbuf.clear()
        if child.kind == "socket":
            child.code = 0

    def release_fd(self, fd: int) -> None:
        """Stop watching ``fd`` and close it (once, whatever roles it had)."""
        if self.fd_owner.pop(fd, None) is None:
            return
        if self.watched.pop(fd, 0):
            self.selector.unregister(fd)
        os.close(fd)

    def forget_if_done(self, child: Child) -> None:
        finished = child.exit_sent or (child.detached and child.code is not None)
        if finished and not child.outputs and child.input_fd is None:
            self.children.pop(child.id, None)

    def detach_all(self) -> None:
        for child in list(self.children.values()):
            child.detached = True
            child.stalled.clear()
            if child.kind == "socket":
                self.close_all(child)  # nobody is left at the other end
            else:
                self.end_input(child)  # a process reading its stdin gets EOF
                for fd in [*child.outputs.values(), *([child.input_fd] if child.input_fd is not None else [])]:
                    self.watch(fd)
            self.forget_if_done(child)


def main(argv: list[str] | None = None) -> None:
    """``[PORT]``: a VM's port (found by name if not given); ``--listen NAME``: a container's socket."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--listen"]:
        agent = GuestAgent(listen=args[1])
        name_self()
    else:
        agent = GuestAgent(args[0] if args else find_port(PORT_NAME))
    # Started through the bundle's loader, it would show as "ld-linux-x86-64" in ps.
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("chaser-sandbox")
    log("ready")
    agent.run()


if __name__ == "__main__":
    main()
