"""Finding the caller's workspace from a selector, and the rules for attaching a session.

Shared by the session service (a session names its workspace) and the
workspace service, so that both answer a selector the same way.
"""

from __future__ import annotations

import re
import uuid

from chaser.wire import errors
from scheduler.store import Row, Store
from scheduler.store import workspaces as workspace_db

MAX_NAME = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    """A workspace name: 1-64 of letters, digits, ``.``, ``_``, ``-``; not a UUID.

    Names are unique per account ignoring case. A name that parsed as a UUID
    would make a selector ambiguous, so none does.
    """
    if len(name) > MAX_NAME:
        raise ValueError(f"a workspace name has at most {MAX_NAME} characters")
    if not _NAME.match(name):
        raise ValueError("a workspace name is letters, digits, '.', '_' and '-', starting with a letter or digit")
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise ValueError("a workspace name cannot be a UUID (UUIDs select workspaces by id)")


def not_found(selector: str) -> errors.NotFound:
    return errors.NotFound(f"workspace {selector!r} not found", code="workspace_not_found")


async def resolve(store: Store, account_id: str, selector: str) -> Row:
    """The caller's workspace named ``selector`` (or with that UUID); 404 otherwise."""
    row = await store.run(workspace_db.find, store, account_id, selector)
    if row is None:
        raise not_found(selector)
    return row


async def for_session(store: Store, account_id: str, selector: str, session_type: str) -> Row:
    """The workspace a new session of ``session_type`` may attach, or the reason it may not."""
    row = await resolve(store, account_id, selector)
    if row["session_type"] != session_type:
        raise errors.InvalidInput(
            f"workspace {row['name']!r} is a {row['session_type']} workspace; "
            f"a {session_type} session cannot attach it",
            code="session_type_mismatch",
        )
    if row["status"] != "ready":
        raise errors.Conflict(f"workspace {row['name']!r} is {row['status']}", code="workspace_not_ready")
    return row
