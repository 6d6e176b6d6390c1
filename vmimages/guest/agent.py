"""The guest agent: PID 1 of every microVM, serving the host's runtime operations.

The initramfs mounts the session's root and ``exec``s this program in it
(``python3 -m vmimages.guest.agent``), with this folder and Debian's
python3-msgpack on ``PYTHONPATH``. It speaks ``protocol`` over the
virtio-serial port named ``chaser.0`` and does, inside the VM, what the lxc
runtime does from outside a container: start processes in their own session
and process group, stream their output with flow control, report exit codes,
signal process groups. As PID 1 it also reaps every orphan.

One thread, one ``selectors`` loop: the port, the processes' pipes and a
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
import struct
import sys
import time

from vmimages.guest.protocol import WINDOW, FrameDecoder, Message, encode, encode_sync

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
_READ_CHUNK = 65536


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
    """A process started for the host, and its output pipes by stream (1, 2)."""

    __slots__ = ("code", "credit", "detached", "exit_sent", "id", "pid", "pipes", "stalled")

    def __init__(self, request_id: int, pid: int, pipes: dict[int, int]) -> None:
        self.id = request_id
        self.pid = pid
        self.pipes = pipes
        self.credit = dict.fromkeys(pipes, WINDOW)
        self.code: int | None = None
        self.exit_sent = False
        # The host that started it is gone: output is read and dropped.
        self.detached = False
        # Streams with no credit left, not watched until the host grants more.
        self.stalled: set[int] = set()


def spawn(argv: list[str], env: dict[str, str], cwd: str | None, merge_stderr: bool) -> tuple[int, dict[int, int]]:
    """Fork and exec in a new session; a failure to exec exits 127 with a message."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = (out_r, out_w) if merge_stderr else os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            # Python ignores these; an exec'd program must get the defaults.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGIO):
                signal.signal(sig, signal.SIG_DFL)
            if cwd:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(2, f"chaser: cannot run {argv[0]!r}: {exc.strerror}\n".encode())
        finally:
            os._exit(127)
    pipes = {1: out_r} if merge_stderr else {1: out_r, 2: err_r}
    for fd in {out_w, err_w}:
        os.close(fd)
    for fd in pipes.values():
        os.set_blocking(fd, False)
    return pid, pipes


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


def reseed(entropy: bytes) -> None:
    """Mix host randomness in and reseed now: forks of one snapshot must diverge."""
    if not entropy:
        return
    with open("/dev/urandom", "wb") as urandom:
        fcntl.ioctl(urandom, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        fcntl.ioctl(urandom, RNDRESEEDCRNG)


class GuestAgent:
    def __init__(self, port_path: str) -> None:
        self.port = os.open(port_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(self.port, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(self.port, fcntl.F_SETFL, fcntl.fcntl(self.port, fcntl.F_GETFL) | os.O_ASYNC)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGIO):
            signal.signal(sig, lambda _sig, _frame: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.connected = False
        self.port_events = 0
        self.decoder = FrameDecoder()
        self.outbuf = bytearray()
        self.children: dict[int, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.pipe_owner: dict[int, tuple[Child, int]] = {}
        self.network: tuple[str, str] | None = None  # as configured last
        self.frozen: set[str] = set()  # filesystems frozen for the host

    # -- the loop ------------------------------------------------------

    def run(self) -> None:
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
            elif key.fd == self.port:
                if events & selectors.EVENT_READ:
                    self.read_port()
                if events & selectors.EVENT_WRITE:
                    self.flush()
            else:
                # An earlier event of this batch may have closed or stalled the pipe.
                owner = self.pipe_owner.get(key.fd)
                if owner is not None and owner[1] in owner[0].pipes and owner[1] not in owner[0].stalled:
                    self.read_pipe(*owner)
        if not self.connected:
            self.check_connection()
        self.reap()
        self.finish_exits()
        self.flush()

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

    def disconnect(self) -> None:
        """The host went away: forget its half-sent bytes and its processes, thaw what it froze."""
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
                if exc.errno in (errno.ENODEV, errno.EIO):
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
            if child is not None and child.code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, int(message["signal"]))
        elif kind == "credit":
            child = self.children.get(message["id"])
            stream = int(message["fd"])
            if child is not None and stream in child.credit:
                child.credit[stream] += int(message["bytes"])
                if stream in child.stalled and child.credit[stream] > 0:
                    child.stalled.discard(stream)
                    self.selector.register(child.pipes[stream], selectors.EVENT_READ, None)
        elif kind == "close":
            child = self.children.get(message["id"])
            if child is not None:
                self.close_pipes(child)
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
        host_time = message.get("time")
        if isinstance(host_time, float | int):
            time.clock_settime(time.CLOCK_REALTIME, float(host_time))
        reseed(bytes(message.get("entropy", b"")))
        session = message.get("session")
        if isinstance(session, str):
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
        cwd = message.get("cwd")
        pid, pipes = spawn(argv, env, str(cwd) if cwd else None, bool(message.get("merge_stderr", True)))
        child = Child(request_id, pid, pipes)
        self.children[request_id] = child
        self.by_pid[pid] = child
        for stream, fd in pipes.items():
            self.pipe_owner[fd] = (child, stream)
            self.selector.register(fd, selectors.EVENT_READ, None)
        self.send({"type": "started", "id": request_id, "pid": pid})

    # -- processes -----------------------------------------------------

    def read_pipe(self, child: Child, stream: int) -> bool:
        """Read once; True if the pipe may hold more right now."""
        fd = child.pipes[stream]
        size = _READ_CHUNK if child.detached else min(_READ_CHUNK, child.credit[stream])
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            return False
        if not data:
            self.close_pipe(child, stream)
            if not child.detached:
                self.send({"type": "eof", "id": child.id, "fd": stream})
            self.forget_if_done(child)
            return False
        if not child.detached:
            self.send({"type": "output", "id": child.id, "fd": stream, "data": data})
            child.credit[stream] -= len(data)
            if child.credit[stream] <= 0:
                child.stalled.add(stream)
                self.selector.unregister(fd)
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

    def finish_exits(self) -> None:
        """Report exits once the output written before them has been read."""
        for child in list(self.children.values()):
            if child.code is None or child.exit_sent:
                continue
            drained = True
            for stream in list(child.pipes):
                while stream in child.pipes and stream not in child.stalled and self.read_pipe(child, stream):
                    pass
                drained = drained and stream not in child.stalled
            if not drained:
                continue
            child.exit_sent = True
            if not child.detached:
                self.send({"type": "exit", "id": child.id, "code": child.code})
            self.forget_if_done(child)

    def close_pipe(self, child: Child, stream: int) -> None:
        fd = child.pipes.pop(stream)
        if stream not in child.stalled:
            self.selector.unregister(fd)
        child.stalled.discard(stream)
        del self.pipe_owner[fd]
        os.close(fd)

    def close_pipes(self, child: Child) -> None:
        for stream in list(child.pipes):
            self.close_pipe(child, stream)

    def forget_if_done(self, child: Child) -> None:
        if (child.exit_sent or (child.detached and child.code is not None)) and not child.pipes:
            self.children.pop(child.id, None)

    def detach_all(self) -> None:
        for child in list(self.children.values()):
            child.detached = True
            for stream in list(child.stalled):
                child.stalled.discard(stream)
                self.selector.register(child.pipes[stream], selectors.EVENT_READ, None)
            self.forget_if_done(child)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    agent = GuestAgent(args[0] if args else find_port(PORT_NAME))
    log("ready")
    agent.run()


if __name__ == "__main__":
    main()
