"""``chaser images ...``: registry images pulled ahead of time, listed and removed, and registry logins.

chaser images pull ghcr.io/org/app:1.2      # a progress bar on a terminal, plain lines otherwise
chaser images list
chaser images rm sha256:...
chaser images login ghcr.io --username ci-bot --password-stdin < token.txt
chaser images logins
chaser images logout <id>

A password is read from standard input or from the environment variable
named by ``--password-env``, never from the command line, where ``ps``
would show it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from chaser.client import Client

_BAR = 30


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class PullProgress:
    """A bar redrawn in place on a terminal; elsewhere one line per change of phase or layer count."""

    def __init__(self, out: TextIO, reference: str) -> None:
        self.out = out
        self.reference = reference
        self.terminal = out.isatty()
        self.last: tuple[str, int] | None = None

    def __call__(self, pull: dict[str, Any]) -> None:
        p = pull["progress"]
        status, phase = pull["status"], p["phase"]
        counts = f"{p['layers_done']}/{p['layers_total']} layers, {_mb(p['bytes_done'])}/{_mb(p['bytes_total'])}"
        if self.terminal:
            filled = (
                _BAR * p["bytes_done"] // p["bytes_total"]
                if p["bytes_total"]
                else (_BAR if phase != "resolving" else 0)
            )
            bar = "#" * filled + "." * (_BAR - filled)
            self.out.write(f"\r{self.reference}: [{bar}] {counts} {phase:<9}")
            if status != "pulling":
                self.out.write("\n")
            self.out.flush()
            return
        key = (phase, p["layers_done"])
        if key != self.last or status != "pulling":
            self.last = key
            print(f"{self.reference}: {phase} {counts}", file=self.out, flush=True)


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise ValueError(f"--password-env {args.password_env}: that environment variable is not set")
        return value
    if args.password_stdin:
        return sys.stdin.read().rstrip("\n")
    raise ValueError("give the password with --password-stdin or --password-env VAR")


def cmd_images(args: argparse.Namespace) -> int:
    with Client(account=getattr(args, "account", None)) as client:
        action = args.action
        result: Any
        if action == "pull":
            pull = client.pull_image(args.reference)
            if args.no_wait:
                result = pull
            else:
                result = client.wait_image_pull(pull["id"], on_update=PullProgress(sys.stderr, pull["reference"]))
                if not args.json:
                    if result["status"] != "succeeded":
                        error = result["error"] or {}
                        print(f"chaser: {error.get('code')}: {error.get('message')}", file=sys.stderr)
                        return 1
                    fetched = _mb(result["fetched_bytes"] or 0)
                    print(f"{result['reference']}@{result['digest']} ({_mb(result['size'] or 0)}, {fetched} fetched)")
                    return 0
        elif action == "list":
            result = client.list_images()
            if not args.json:
                for image in result["images"]:
                    names = ", ".join(image["references"]) or "-"
                    used = "in use" if image["in_use"] else ""
                    print(f"{image['digest']}  {_mb(image['size'] or 0):>10}  {image['last_used']}  {names} {used}")
                return 0
        elif action == "rm":
            client.delete_image(args.digest)
            return 0
        elif action == "login":
            result = client.add_registry_credential(args.registry, args.username, _password(args))
        elif action == "logins":
            result = client.list_registry_credentials()
            if not args.json:
                for login in result["registry_credentials"]:
                    print(f"{login['id']}  {login['registry']}  {login['username']}  {login['created_at']}")
                return 0
        else:  # logout
            client.delete_registry_credential(args.id)
            return 0
    print(json.dumps(result, indent=2))
    return 1 if action == "pull" and result["status"] == "failed" else 0


def add_image_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = sub.add_parser("images", help="registry images: pull ahead of time, list, remove; registry logins")
    images.add_argument("--json", action="store_true")
    actions = images.add_subparsers(dest="action", required=True)

    pull = actions.add_parser("pull", help="pull an image onto a host, showing progress")
    pull.add_argument("reference", help="node:20, ghcr.io/org/app:tag, host:5000/x/y@sha256:...")
    pull.add_argument("--no-wait", action="store_true", help="print the pull and return at once")

    actions.add_parser("list", help="images the hosts hold that this account may use")
    actions.add_parser("rm", help="remove an image from every host (refused while a session runs it)").add_argument(
        "digest"
    )

    login = actions.add_parser("login", help="give this account's login for a registry")
    login.add_argument("registry", help="ghcr.io, registry.example.com:5000")
    login.add_argument("--username", required=True)
    given = login.add_mutually_exclusive_group()
    given.add_argument("--password-stdin", action="store_true", help="read the password (or token) from stdin")
    given.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")

    actions.add_parser("logins", help="this account's registry logins (never their passwords)")
    actions.add_parser("logout", help="remove a registry login").add_argument("id")
    images.set_defaults(func=cmd_images)
