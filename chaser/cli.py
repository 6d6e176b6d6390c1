"""``chaser``: run the embedded system, and use any Chaser API from a shell.

eval "$(chaser up --detach)"     # start scheduler + agent here, export creds
chaser exec --ephemeral "uname -a"
chaser sessions list
chaser shell SESSION; chaser exec SESSION -- make test; chaser cp ./src SESSION:/root/src
chaser --account "Acme Engineering" keys create --name ci --scope sessions.read
chaser jobs exec --ephemeral "npm test" --wait --json
chaser down
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from chaser import cli_accounts, cli_jobs, embedded
from chaser.cli_browser import add_browser_commands
from chaser.cli_endpoints import add_endpoint_commands, stream_exec
from chaser.cli_images import add_image_commands
from chaser.cli_workspaces import add_workspace_commands
from chaser.wire import errors

# The servers and the image builders (vmimages, serving, agent, scheduler) are
# imported only by `chaser up`: the SDK's commands run without them installed.

_DETACH_TIMEOUT = 120.0
_DOWN_TIMEOUT = 60.0


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_pid(paths: embedded.Paths) -> int | None:
    try:
        pid = int(paths.pid.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _ensure_default_image(images_dir: Path) -> None:
    import vmimages

    recipe = vmimages.resolve("default")
    assert recipe is not None
    if not vmimages.is_built(images_dir, recipe):
        print(f"building image {recipe.name} (once per machine, about two minutes)...", file=sys.stderr)
        vmimages.build(images_dir, recipe)


def cmd_up(args: argparse.Namespace) -> int:
    paths = embedded.Paths(args.state_dir)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    if (pid := _running_pid(paths)) is not None:
        if not args.detach:
            print(f"chaser is already running (pid {pid}); 'chaser down' stops it", file=sys.stderr)
            return 1
        return _announce_when_ready(paths, pid)
    _ensure_default_image(args.images_dir)
    if args.detach:
        return _detach(args, paths)
    from serving import embedded as embedded_servers
    from serving.signals import run_until_signalled

    paths.pid.write_text(str(os.getpid()))

    async def serve_and_announce(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: embedded_servers.serve(
                    args.state_dir,
                    port=args.port,
                    images_dir=args.images_dir,
                    uplink=args.uplink,
                    image_aliases=dict(args.image_alias),
                    task_status=task_status,
                )
            )
            sys.stdout.write(embedded.exports(url, embedded_servers.load_credentials(paths)))
            sys.stdout.flush()
            task_status.started()

    try:
        trio.run(run_until_signalled, serve_and_announce)
    finally:
        paths.pid.unlink(missing_ok=True)
    return 0


def _image_alias(value: str) -> tuple[str, str]:
    alias, sep, image = value.rpartition("=")
    if not sep or not alias or not image:
        raise argparse.ArgumentTypeError(f"expected NAME=IMAGE, got {value!r}")
    import vmimages

    if vmimages.resolve(image) is None or vmimages.resolve(alias) is not None:
        raise argparse.ArgumentTypeError(f"{value!r}: {image!r} is not an image, or {alias!r} already is one")
    return alias, image


def _detach(args: argparse.Namespace, paths: embedded.Paths) -> int:
    paths.ready.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "chaser.cli", "up",
        "--state-dir", str(args.state_dir),
        "--images-dir", str(args.images_dir),
        "--port", str(args.port),
        *(["--uplink", args.uplink] if args.uplink else []),
        *(f"--image-alias={alias}={image}" for alias, image in args.image_alias),
    ]  # fmt: skip
    with open(paths.log, "ab") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    return _announce_when_ready(paths, child.pid, child)


def _announce_when_ready(paths: embedded.Paths, pid: int, child: subprocess.Popen[bytes] | None = None) -> int:
    deadline = time.monotonic() + _DETACH_TIMEOUT
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            print(f"chaser failed to start; see {paths.log}", file=sys.stderr)
            return 1
        try:
            ready = json.loads(paths.ready.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        sys.stdout.write(embedded.exports(ready["api_url"], embedded.read_credentials(paths)))
        return 0
    print(f"chaser did not become ready within {_DETACH_TIMEOUT:g}s; see {paths.log}", file=sys.stderr)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    paths = embedded.Paths(args.state_dir)
    pid = _running_pid(paths)
    if pid is None:
        print("chaser is not running", file=sys.stderr)
        paths.pid.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _DOWN_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"chaser (pid {pid}) did not stop within {_DOWN_TIMEOUT:g}s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    paths.pid.unlink(missing_ok=True)
    print("chaser stopped", file=sys.stderr)
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    with cli_accounts.client_for(args) as client:
        if args.action == "create":
            result = client.create_session(
                session_type=args.type,
                ephemeral=args.ephemeral,
                workspace=args.workspace,
                image=args.image,
                isolation=_isolation(args),
                timeout_ms=args.timeout_ms,
                idle_timeout_ms=args.idle_timeout_ms,
            )
        elif args.action == "list":
            result = client.list_sessions(status=args.status, limit=args.limit)
            if not args.json:
                for s in result["sessions"]:
                    print(f"{s['id']}  {s['session_type']:8} {s['status']:11} {s['created_at']}")
                return 0
        elif args.action == "get":
            result = client.get_session(args.id)
        elif args.action == "extend":
            result = client.extend_session(args.id, timeout_ms=args.timeout_ms, idle_timeout_ms=args.idle_timeout_ms)
        else:
            result = client.terminate_session(args.id, force=args.force)
    _print_json(result)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """``exec SESSION -- CMD...`` streams; ``exec --session|--workspace|--ephemeral CMD`` is one call."""
    if not (args.session or args.workspace or args.ephemeral):
        if len(args.words) < 2:
            raise ValueError("usage: chaser exec SESSION -- COMMAND [ARG...]  (or --session/--workspace/--ephemeral)")
        if args.json:
            raise ValueError("--json needs the one-call form (--session, --workspace or --ephemeral)")
        return stream_exec(args, args.words[0], args.words[1:])
    if args.stdin:
        raise ValueError("-i streams stdin only in the streaming form: chaser exec SESSION -i -- COMMAND")
    with cli_accounts.client_for(args) as client:
        result = client.exec(
            " ".join(args.words) if len(args.words) > 1 else args.words[0],
            session_id=args.session,
            workspace=args.workspace,
            ephemeral=args.ephemeral,
            image=args.image,
            cwd=args.cwd,
            env=dict(kv.split("=", 1) for kv in args.env) or None,
            timeout_ms=args.timeout_ms,
            isolation=_isolation(args),
        )
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(result["output"])
        if result["timed_out"]:
            print("chaser: command timed out", file=sys.stderr)
    return int(result["exit_code"])


def _allow_rule(text: str) -> dict[str, Any]:
    """``CIDR`` or ``CIDR:PORT[,PORT...]`` -> an egress_allow entry."""
    cidr, _, ports = text.partition(":")
    rule: dict[str, Any] = {"cidr": cidr}
    if ports:
        try:
            rule["ports"] = [int(p) for p in ports.split(",")]
        except ValueError:
            raise ValueError(f"--allow {text!r}: ports must be numbers, like 203.0.113.0/24:80,443") from None
    return rule


def _isolation(args: argparse.Namespace) -> dict[str, Any]:
    """The network and limits fields of a new session, from the flags given."""
    fields: dict[str, Any] = {}
    if args.network:
        fields["network"] = args.network
    if args.allow:
        fields["egress_allow"] = [_allow_rule(a) for a in args.allow]
    limits = {k: getattr(args, k) for k in ("cpus", "memory_mb", "pids", "disk_mb") if getattr(args, k) is not None}
    if limits:
        fields["limits"] = limits
    return fields


def _add_lifetime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout-ms", type=int, help="maximum lifetime (from now, for extend)")
    parser.add_argument("--idle-timeout-ms", type=int, help="end after this long with no connection or use")


def _add_isolation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", choices=["egress", "none"], help="egress (host's default) or none")
    parser.add_argument("--allow", action="append", default=[], metavar="CIDR[:PORTS]", help="egress allow-list")
    parser.add_argument("--cpus", type=float)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--pids", type=int)
    parser.add_argument("--disk-mb", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaser", description="Chaser: Linux sandboxes on demand")
    parser.add_argument("--account", help="act on this account (ID, exact name, or 'personal'; X-Chaser-Account)")
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="run scheduler and agent on this machine")
    up.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    up.add_argument("--port", type=int, default=embedded.DEFAULT_PORT)
    up.add_argument("--state-dir", type=Path, default=embedded.DEFAULT_STATE_DIR)
    up.add_argument("--images-dir", type=Path, default=embedded.DEFAULT_IMAGES_DIR)
    up.add_argument("--uplink", metavar="IFACE", help="give sessions egress, NATed out of IFACE (default: none)")
    up.add_argument(
        "--image-alias",
        type=_image_alias,
        action="append",
        default=[],
        metavar="NAME=IMAGE",
        help="let sessions ask for IMAGE by NAME too, e.g. node:20=debian:bookworm",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the embedded system and remove its sandboxes")
    down.add_argument("--state-dir", type=Path, default=embedded.DEFAULT_STATE_DIR)
    down.set_defaults(func=cmd_down)

    sessions = sub.add_parser("sessions", help="create, list, inspect and terminate sessions")
    sessions.add_argument("--json", action="store_true")
    actions = sessions.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
    create.add_argument("--type", choices=["sandbox", "browser"], default="sandbox")
    create.add_argument("--ephemeral", action="store_true")
    create.add_argument("--workspace")
    create.add_argument("--image")
    _add_lifetime_flags(create)
    _add_isolation_flags(create)
    listing = actions.add_parser("list")
    listing.add_argument("--status", choices=["creating", "running", "terminated"])
    listing.add_argument("--limit", type=int, default=50)
    actions.add_parser("get").add_argument("id")
    extend = actions.add_parser("extend", help="a new lifetime from now, and/or a new idle timeout")
    extend.add_argument("id")
    _add_lifetime_flags(extend)
    terminate = actions.add_parser("terminate", aliases=["delete"], help="409 while connected, unless --force")
    terminate.add_argument("id")
    terminate.add_argument("--force", action="store_true", help="close open connections and terminate")
    sessions.set_defaults(func=cmd_sessions)

    run = sub.add_parser(
        "exec",
        help="run a command; exits with its code",
        description="chaser exec SESSION -- COMMAND [ARG...] streams the output as it comes; "
        "chaser exec --session ID|--workspace NAME|--ephemeral COMMAND runs it in one call.",
    )
    target = run.add_mutually_exclusive_group()
    target.add_argument("--session")
    target.add_argument("--workspace")
    target.add_argument("--ephemeral", action="store_true")
    run.add_argument("-i", "--stdin", action="store_true", help="stream standard input to the command")
    run.add_argument("--image")
    run.add_argument("--cwd")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--timeout-ms", type=int)
    run.add_argument("--json", action="store_true")
    _add_isolation_flags(run)
    run.add_argument("words", nargs="+", metavar="SESSION -- COMMAND | COMMAND")
    run.set_defaults(func=cmd_exec)
    add_endpoint_commands(sub)
    cli_accounts.register(sub)

    add_workspace_commands(sub)
    add_image_commands(sub)

    cli_jobs.add_job_commands(sub)
    add_browser_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except errors.ApiError as exc:
        print(f"chaser: {exc.code}: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except ValueError as exc:
        print(f"chaser: {exc}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # The reader went away (`| head`); exit quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
