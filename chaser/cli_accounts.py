"""CLI commands for the multi-tenant API: ``chaser accounts``, ``keys``, ``audit`` and ``webhooks``.

Every command takes ``--account`` (or ``CHASER_ACCOUNT``), sent as
``X-Chaser-Account``: an account ID, its exact name, or ``personal``.
Output is a short table, or the API's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from typing import Any

from chaser.client import Client

ROLES = ("member", "admin", "owner")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def client_for(args: argparse.Namespace) -> Client:
    return Client(account=getattr(args, "account", None))


def _table(rows: list[dict[str, Any]], *columns: str) -> None:
    for row in rows:
        print("  ".join(str(row.get(c) if row.get(c) is not None else "-") for c in columns))


def _show(args: argparse.Namespace, data: Any, rows_key: str | None = None, *columns: str) -> None:
    if args.json or rows_key is None:
        _print_json(data)
    else:
        _table(data[rows_key], *columns)


# -- accounts ---------------------------------------------------------------------


def cmd_accounts(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        action = args.action
        if action == "list":
            result = client.list_accounts()
            if not args.json:
                for a in result["accounts"]:
                    mark = "*" if a["id"] == result["active"] else " "
                    print(f"{mark} {a['id']}  {a['kind']:12} {a['role']:6} {a['name']}")
                return 0
            _print_json(result)
        elif action == "create":
            _print_json(client.create_account(args.name, key_name=args.with_key))
        elif action == "get":
            _print_json(client.get_account(args.target))
        elif action == "rename":
            _print_json(client.rename_account(args.target, args.name))
        elif action == "delete":
            client.delete_account(args.target)
        elif action == "members":
            _members(args, client)
        else:
            _service_accounts(args, client)
    return 0


def _members(args: argparse.Namespace, client: Client) -> None:
    if args.member_action == "list":
        _show(args, client.list_members(args.target), "members", "user_id", "role", "email")
    elif args.member_action == "add":
        _print_json(client.add_member(args.target, args.email, args.role))
    elif args.member_action == "set-role":
        _print_json(client.set_member_role(args.target, args.member, args.role))
    else:
        client.remove_member(args.target, args.member)


def _service_accounts(args: argparse.Namespace, client: Client) -> None:
    if args.sa_action == "list":
        _show(args, client.list_service_accounts(args.target), "service_accounts", "id", "role", "name")
    elif args.sa_action == "create":
        _print_json(client.create_service_account(args.target, args.name, args.role))
    else:
        client.delete_service_account(args.target, args.service_account)


# -- keys -------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.action == "create":
            created = client.create_key(args.name, scopes=args.scope or None, service_account=args.service_account)
            if args.json:
                _print_json(created)
            else:  # the secret alone on stdout, for $(chaser keys create ...); it is never shown again
                print(created["secret"])
                print(f"created key {created['id']} ({created['prefix']}...); store the secret now", file=sys.stderr)
        elif args.action == "list":
            keys = client.list_keys()
            if args.json:
                _print_json(keys)
            else:
                for k in keys["keys"]:
                    state = "revoked" if k["revoked_at"] else "active"
                    scopes = ",".join(k["scopes"]) if k["scopes"] is not None else "full-access"
                    print(f"{k['id']}  {k['prefix']}  {state:7}  {k['name']}  [{scopes}]")
        else:
            _print_json(client.revoke_key(args.id))
    return 0


# -- audit ------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    filters = {
        "action": args.action,
        "actor": args.actor,
        "resource": args.resource,
        "resource_type": args.resource_type,
        "result": args.result,
        "since": args.since,
        "until": args.until,
    }
    with client_for(args) as client:
        events = list(itertools.islice(client.iter_audit(**filters), args.limit))
    if args.json:
        _print_json(events)
        return 0
    for e in events:
        actor = e["actor"]["name"] or e["actor"]["id"] or e["actor"]["type"]
        resource = f"{e['resource']['type'] or '-'}:{e['resource']['id'] or '-'}"
        print(f"{e['time']}  {e['result']:7} {e['status']}  {e['action']:24} {resource}  {actor}  {e['source_ip']}")
    return 0


# -- webhooks ---------------------------------------------------------------------


def cmd_webhooks(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        action = args.action
        if action == "create":
            _print_json(client.create_webhook(args.url, args.event, secret=args.secret, description=args.description))
        elif action == "list":
            _show(args, client.list_webhooks(), "webhooks", "id", "active", "url", "events")
        elif action == "get":
            _print_json(client.get_webhook(args.id))
        elif action == "update":
            changes = {"url": args.url, "events": args.event, "secret": args.secret, "active": args.active}
            _print_json(client.update_webhook(args.id, **{k: v for k, v in changes.items() if v is not None}))
        elif action == "delete":
            client.delete_webhook(args.id)
        elif action == "ping":
            _print_json(client.ping_webhook(args.id))
        else:
            page = client.list_deliveries(args.id, status=args.status, limit=args.limit)
            _show(args, page, "deliveries", "id", "status", "attempts", "event_type", "last_status_code", "created_at")
    return 0


# -- the parsers ------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """``--account`` and ``--json`` on every subcommand (SUPPRESS keeps a value given before it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--account", default=argparse.SUPPRESS, help="account ID, exact name, or 'personal'")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    return common


def register(sub: Any) -> None:
    """Add the commands to ``chaser``'s subparsers."""
    common = _common()

    def add(parent: Any, name: str, func: Callable[[argparse.Namespace], int] | None = None, **kw: Any) -> Any:
        parser = parent.add_parser(name, parents=[common], **kw)
        if func is not None:
            parser.set_defaults(func=func)
        return parser

    accounts = add(sub, "accounts", cmd_accounts, help="your accounts; organizations, members, service accounts")
    acts = accounts.add_subparsers(dest="action", required=True)
    add(acts, "list")
    create = add(acts, "create", help="create an organization")
    create.add_argument("name")
    create.add_argument("--with-key", metavar="KEY_NAME", help="also make its first API key (secret shown once)")
    for name in ("get", "delete"):
        add(acts, name).add_argument("target", metavar="ACCOUNT")
    rename = add(acts, "rename")
    rename.add_argument("target", metavar="ACCOUNT")
    rename.add_argument("name")
    members = add(acts, "members", help="list, add, change and remove members")
    member_acts = members.add_subparsers(dest="member_action", required=True)
    add(member_acts, "list").add_argument("target", metavar="ACCOUNT")
    add_member = add(member_acts, "add")
    add_member.add_argument("target", metavar="ACCOUNT")
    add_member.add_argument("email")
    add_member.add_argument("--role", choices=ROLES, default="member")
    set_role = add(member_acts, "set-role")
    set_role.add_argument("target", metavar="ACCOUNT")
    set_role.add_argument("member", help="user id or email")
    set_role.add_argument("role", choices=ROLES)
    remove = add(member_acts, "remove")
    remove.add_argument("target", metavar="ACCOUNT")
    remove.add_argument("member", help="user id or email")
    service = add(acts, "service-accounts", help="list, create and delete service accounts")
    sa_acts = service.add_subparsers(dest="sa_action", required=True)
    add(sa_acts, "list").add_argument("target", metavar="ACCOUNT")
    sa_create = add(sa_acts, "create")
    sa_create.add_argument("target", metavar="ACCOUNT")
    sa_create.add_argument("name")
    sa_create.add_argument("--role", choices=ROLES[:2], default="member")
    sa_delete = add(sa_acts, "delete")
    sa_delete.add_argument("target", metavar="ACCOUNT")
    sa_delete.add_argument("service_account", metavar="SERVICE_ACCOUNT")

    keys = add(sub, "keys", cmd_keys, help="create, list and revoke API keys of the active account")
    key_acts = keys.add_subparsers(dest="action", required=True)
    key_create = add(key_acts, "create", help="print a new key's secret (shown once)")
    key_create.add_argument("--name", required=True)
    key_create.add_argument("--scope", action="append", default=[], help="repeat for several; none: full access")
    key_create.add_argument("--service-account", help="the key acts as this service account (id or name)")
    add(key_acts, "list")
    add(key_acts, "revoke").add_argument("id")

    audit = add(sub, "audit", cmd_audit, help="the active account's audit events, newest first")
    audit.add_argument("--action")
    audit.add_argument("--actor", help="user, service account or key id")
    audit.add_argument("--resource", help="resource id")
    audit.add_argument("--resource-type")
    audit.add_argument("--result", choices=["success", "failure", "denied"])
    audit.add_argument("--since", help="RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
    audit.add_argument("--until", help="RFC 3339 time")
    audit.add_argument("--limit", type=int, default=100, help="at most this many events (default 100)")

    webhooks = add(sub, "webhooks", cmd_webhooks, help="webhooks of the active account and their deliveries")
    hook_acts = webhooks.add_subparsers(dest="action", required=True)
    hook_create = add(hook_acts, "create")
    hook_create.add_argument("url")
    hook_create.add_argument("--event", action="append", required=True, help="event type; repeat for several")
    hook_create.add_argument("--secret", help="signing secret (default: generated, shown once)")
    hook_create.add_argument("--description")
    add(hook_acts, "list")
    for name in ("get", "delete", "ping"):
        add(hook_acts, name).add_argument("id")
    update = add(hook_acts, "update")
    update.add_argument("id")
    update.add_argument("--url")
    update.add_argument("--event", action="append", help="replaces the subscribed event types")
    update.add_argument("--secret")
    update.add_argument("--enable", dest="active", action="store_const", const=True)
    update.add_argument("--disable", dest="active", action="store_const", const=False)
    deliveries = add(hook_acts, "deliveries", help="the delivery log, newest first")
    deliveries.add_argument("id")
    deliveries.add_argument("--status", choices=["pending", "succeeded", "failed"])
    deliveries.add_argument("--limit", type=int, default=50)
