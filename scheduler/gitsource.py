"""Repository selectors of workspace imports, resolved against the configured Git host.

The host is GitHub by default, or a GitHub Enterprise, or any smart-HTTP Git
server (``git_base_url``). A selector is ``owner/repo`` or a URL of a
repository on that host; a URL anywhere else is refused, so that an import
cannot be aimed at an internal service. Credentials never go in a URL: a
private repository's token has its own field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from chaser.wire import errors

# GitHub's rules, loosened a little for other hosts (underscores, dots).
_OWNER = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_REPO = r"[A-Za-z0-9_.-]{1,100}"
_PATH = re.compile(rf"^(?P<owner>{_OWNER})/(?P<repo>{_REPO}?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Repository:
    path: str  # "owner/repo": what a workspace keeps to be re-imported from
    url: str  # what git clones

    @property
    def name(self) -> str:
        return self.path.split("/", 1)[1]


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code="invalid_repository")


class GitHost:
    def __init__(self, base_url: str) -> None:
        base = urlsplit(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"git_base_url must be an http(s) URL, not {base_url!r}")
        self.scheme = base.scheme
        self.netloc = base.netloc.lower()
        self.prefix = base.path  # a Git server may live under a path
        self.base_url = f"{self.scheme}://{self.netloc}{self.prefix}"

    def resolve(self, selector: str) -> Repository:
        """``owner/repo`` or a URL of this host's repository, as a repository."""
        path = selector
        if "://" in selector:
            url = urlsplit(selector)
            if url.username is not None or url.password is not None:
                raise _invalid("put credentials in the token field, not in the repository URL")
            if url.scheme != self.scheme or url.netloc.lower() != self.netloc or url.query or url.fragment:
                raise _invalid(f"repositories can be imported from {self.base_url} only")
            if not url.path.startswith(self.prefix + "/"):
                raise _invalid(f"repositories can be imported from {self.base_url} only")
            path = url.path.removeprefix(self.prefix + "/")
        match = _PATH.match(path)
        repo = match["repo"] if match else ""
        if match is None or repo in ("", ".", ".."):
            raise _invalid("a repository is 'owner/repo' or its URL, e.g. https://github.com/owner/repo")
        owner_repo = f"{match['owner']}/{repo}"
        return Repository(path=owner_repo, url=f"{self.base_url}/{owner_repo}.git")
