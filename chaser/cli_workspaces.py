"""``chaser workspaces ...``: workspaces, snapshots, clones and imports from a shell.

chaser workspaces create my-project
chaser workspaces import acme/app --ref main --token-env GITHUB_TOKEN
chaser workspaces snapshot my-project --name before-upgrade
chaser workspaces restore my-project <snapshot id>
chaser workspaces clone node-base feature-1

A repository token is read from the environment variable named by
``--token-env``, never from the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from chaser.client import Client


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _token(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ValueError(f"--token-env {variable}: that environment variable is not set")
    return token


def _print_workspaces(rows: list[dict[str, Any]]) -> None:
    for w in rows:
        flags = "template" if w["is_template"] else ""
        attached = w["attached_session"] or "-"
        print(f"{w['name']:32} {w['session_type']:8} {w['status']:9} {attached:36} {w['id']} {flags}".rstrip())


def cmd_workspaces(args: argparse.Namespace) -> int:
    with Client() as client:
        action = args.action
        result: Any
        if action == "create":
            result = client.create_workspace(args.name, session_type=args.type, image=args.image)
        elif action == "list":
            result = client.list_workspaces(templates_only=args.templates, limit=args.limit)
            if not args.json:
                _print_workspaces(result["workspaces"])
                return 0
        elif action == "get":
            result = client.get_workspace(args.workspace)
        elif action == "update":
            result = client.update_workspace(args.workspace, name=args.name, is_template=args.template)
        elif action == "delete":
            client.delete_workspace(args.workspace, force=args.force)
            return 0
        elif action == "import":
            result = client.import_workspace(
                args.repository, ref=args.ref, token=_token(args.token_env), name=args.name, image=args.image
            )
        elif action == "bootstrap":
            result = client.bootstrap_workspace(args.workspace, token=_token(args.token_env), force=args.force)
        elif action == "snapshot":
            result = client.create_snapshot(args.workspace, name=args.name, force=args.force)
        elif action == "snapshots":
            result = client.list_snapshots(args.workspace)
            if not args.json:
                for s in result["snapshots"]:
                    print(f"{s['id']}  {s['created_at']}  {s['name'] or ''}".rstrip())
                return 0
        elif action == "restore":
            result = client.restore_snapshot(args.workspace, args.snapshot, force=args.force)
        elif action == "delete-snapshot":
            client.delete_snapshot(args.workspace, args.snapshot)
            return 0
        else:  # clone
            result = client.clone_workspace(args.template, args.name, snapshot=args.snapshot, force=args.force)
    _print_json(result)
    return 0


def add_workspace_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workspaces = sub.add_parser("workspaces", help="persistent workspaces, their snapshots, clones and imports")
    workspaces.add_argument("--json", action="store_true")
    actions = workspaces.add_subparsers(dest="action", required=True)

    def action(name: str, help: str, *, force: str | None = None) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help)
        if force:
            parser.add_argument("--force", action="store_true", help=force)
        return parser

    create = action("create", "create an empty workspace")
    create.add_argument("name")
    create.add_argument("--type", choices=["sandbox", "browser"], default="sandbox")
    create.add_argument("--image", help="the image its sandboxes run (sandbox workspaces)")

    listing = action("list", "list workspaces by name")
    listing.add_argument("--templates", action="store_true", help="templates only")
    listing.add_argument("--limit", type=int, default=200)

    action("get", "show a workspace").add_argument("workspace", help="name or id")

    update = action("update", "rename, or flag as template")
    update.add_argument("workspace")
    update.add_argument("--name")
    flag = update.add_mutually_exclusive_group()
    flag.add_argument("--template", dest="template", action="store_true", default=None)
    flag.add_argument("--no-template", dest="template", action="store_false")

    action("delete", "delete a workspace and its snapshots", force="terminate its session first").add_argument(
        "workspace"
    )

    imported = action("import", "clone a Git repository into a new workspace")
    imported.add_argument("repository", help="owner/repo or its https URL")
    imported.add_argument("--ref", help="branch, tag or commit (default: the default branch)")
    imported.add_argument("--name", help="default: the repository's name")
    imported.add_argument("--image")
    imported.add_argument("--token-env", metavar="VAR", help="environment variable holding a token (private repos)")

    bootstrap = action("bootstrap", "re-clone an imported workspace onto a fresh disk", force="terminate its session")
    bootstrap.add_argument("workspace")
    bootstrap.add_argument("--token-env", metavar="VAR")

    snapshot = action("snapshot", "take a snapshot", force="even with a session attached (taken frozen)")
    snapshot.add_argument("workspace")
    snapshot.add_argument("--name")

    action("snapshots", "list a workspace's snapshots").add_argument("workspace")

    restore = action("restore", "replace a workspace's content with a snapshot's", force="terminate its session")
    restore.add_argument("workspace")
    restore.add_argument("snapshot", help="snapshot id")

    remove = action("delete-snapshot", "delete a snapshot")
    remove.add_argument("workspace")
    remove.add_argument("snapshot")

    clone = action("clone", "new workspace cloned from a template", force="clone a template in use (taken frozen)")
    clone.add_argument("template")
    clone.add_argument("name")
    clone.add_argument("--snapshot", help="clone this snapshot of the template instead of its current state")

    workspaces.set_defaults(func=cmd_workspaces)
