"""``chaser jobs``: queue commands and follow jobs from a shell or a CI script.

chaser jobs exec --ephemeral --image default "npm ci && npm test" --wait --json
chaser jobs exec --workspace ci-project "npm test" --wait --json
chaser jobs scrape --url "https://example.com" --selector h1 --wait --json
chaser jobs kinds --json
chaser jobs list | get ID | cancel ID | retry ID

With ``--wait`` the command exits with the job's exit code (its command's,
or 1 for a job that failed or was canceled without one) and, on a
terminal, shows the job's progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from chaser.client import Client

TERMINAL = ("succeeded", "failed", "canceled")


def exit_code(job: dict[str, Any]) -> int:
    """0 for a succeeded job; else its command's exit code when it has a nonzero one, else 1."""
    if job["status"] == "succeeded":
        return 0
    code = (job.get("result") or {}).get("exit_code")
    return code if isinstance(code, int) and code != 0 else 1


class Progress:
    """One line on stderr per change of the job's state, when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        status = job["status"]
        if status == "scheduled":
            detail = f" for {job['run_at']}"
        elif status == "running":
            detail = f" (attempt {job['attempt']})"
        elif status in TERMINAL:
            detail = f" after {time.monotonic() - self.started:.1f}s"
            if job.get("error"):
                detail += f": {job['error']['message']}"
        else:
            detail = ""
        print(f"job {job['id']}: {status}{detail}", file=sys.stderr, flush=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _finish(client: Client, job: dict[str, Any], args: argparse.Namespace) -> int:
    """Wait for the job if asked; print it; the exit code."""
    if not getattr(args, "wait", False):
        if args.json:
            _print_json(job)
        else:
            print(job["id"])
        return 0
    progress = Progress()
    job = client.wait_job(job["id"], on_change=progress)
    if args.json:
        _print_json(job)
    else:
        if job["kind"] == "browser.scrape":
            _print_scraped(job.get("result") or {})
        else:
            sys.stdout.write(job.get("output") or "")
        if job["status"] != "succeeded" and job.get("error") and not progress.enabled:
            print(f"chaser: job {job['status']}: {job['error']['message']}", file=sys.stderr)
    return exit_code(job)


def _print_scraped(result: dict[str, Any]) -> None:
    """A scrape's text: each match's on its lines, or the page's."""
    for item in result.get("matches") or [result.get("content") or {}]:
        text = item.get("text") if "text" in item else item.get("html")
        if text is not None:
            print(text)


def _scrape_input(args: argparse.Namespace) -> dict[str, Any]:
    job_input: dict[str, Any] = {"url": args.url}
    options = {
        "selector": args.selector,
        "workspace": args.workspace,
        "wait_until": args.wait_until,
        "timeout_ms": args.timeout_ms,
        "formats": args.format or None,
    }
    job_input.update({k: v for k, v in options.items() if v is not None})
    if args.wait_for_selector:
        job_input["wait_for_selector"] = True
    if args.screenshot:
        job_input["screenshot"] = True
    return job_input


def cmd_jobs(args: argparse.Namespace) -> int:
    with Client() as client:
        if args.action == "exec":
            job_input: dict[str, Any] = {"command": args.command}
            target = {"session_id": args.session, "workspace": args.workspace, "image": args.image}
            optional = {**target, "cwd": args.cwd, "timeout_ms": args.timeout_ms}
            job_input.update({k: v for k, v in optional.items() if v is not None})
            if args.ephemeral:
                job_input["ephemeral"] = True
            if args.env:
                job_input["env"] = dict(kv.split("=", 1) for kv in args.env)
            job = client.create_job("sandbox.exec", job_input, run_at=args.run_at, idempotency_key=args.idempotency_key)
            return _finish(client, job, args)
        if args.action == "scrape":
            job = client.create_job(
                "browser.scrape", _scrape_input(args), run_at=args.run_at, idempotency_key=args.idempotency_key
            )
            return _finish(client, job, args)
        if args.action == "retry":
            return _finish(client, client.retry_job(args.id), args)
        if args.action == "kinds":
            kinds = client.job_kinds()
            if args.json:
                _print_json(kinds)
            else:
                for kind in kinds["kinds"]:
                    print(f"{kind['kind']:24} {kind['scope']:16} {kind['description']}")
            return 0
        if args.action == "list":
            listing = client.list_jobs(kind=args.kind, status=args.status, limit=args.limit)
            if args.json:
                _print_json(listing)
            else:
                for job in listing["jobs"]:
                    print(f"{job['id']}  {job['kind']:22} {job['status']:10} {job['created_at']}")
            return 0
        job = client.get_job(args.id) if args.action == "get" else client.cancel_job(args.id)
        _print_json(job)
        return 0


def add_job_commands(sub: Any) -> None:
    """Add ``jobs`` to the CLI's subcommands."""
    jobs = sub.add_parser("jobs", help="queue commands as jobs; list, inspect, cancel and retry them")
    actions = jobs.add_subparsers(dest="action", required=True)

    run = actions.add_parser("exec", help="queue a command (a sandbox.exec job)")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--session")
    target.add_argument("--workspace")
    target.add_argument("--ephemeral", action="store_true")
    run.add_argument("--image")
    run.add_argument("--cwd")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--timeout-ms", type=int)
    run.add_argument("--run-at", metavar="RFC3339", help="run later, e.g. 2025-03-15T10:00:00Z")
    run.add_argument("--idempotency-key")
    run.add_argument("command")

    scrape = actions.add_parser("scrape", help="load a page in a browser and extract from it (a browser.scrape job)")
    scrape.add_argument("--url", required=True)
    scrape.add_argument("--selector", help="CSS selector; without one, the whole page")
    scrape.add_argument("--workspace", help="use a browser workspace's profile (cookies, logins)")
    scrape.add_argument("--wait-until", choices=["load", "domcontentloaded", "networkidle"])
    scrape.add_argument("--wait-for-selector", action="store_true", help="wait until the selector matches")
    scrape.add_argument("--format", action="append", choices=["text", "html"], help="what to extract (repeatable)")
    scrape.add_argument("--screenshot", action="store_true", help="include a PNG screenshot (base64)")
    scrape.add_argument("--timeout-ms", type=int)
    scrape.add_argument("--run-at", metavar="RFC3339")
    scrape.add_argument("--idempotency-key")

    listing = actions.add_parser("list", help="the account's jobs, newest first")
    listing.add_argument("--kind")
    listing.add_argument("--status", choices=["queued", "scheduled", "running", "succeeded", "failed", "canceled"])
    listing.add_argument("--limit", type=int, default=50)

    for name, help_text in (("get", "one job, with its attempts and output"), ("cancel", "cancel a job")):
        actions.add_parser(name, help=help_text).add_argument("id")
    actions.add_parser("retry", help="run a failed or canceled job again").add_argument("id")
    actions.add_parser("kinds", help="the job kinds offered, with their input schemas")

    for action in actions.choices.values():
        action.add_argument("--json", action="store_true", help="print the job (or listing) as JSON")
    for name in ("exec", "scrape", "retry"):
        actions.choices[name].add_argument("--wait", action="store_true", help="wait for the job to finish")
    jobs.set_defaults(func=cmd_jobs)
