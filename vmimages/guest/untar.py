"""Extract the tar stream on stdin into a directory of the guest, refusing what would leave it.

``python3 -m vmimages.guest.untar DIRECTORY``, run by the host for a tar
upload. The same rules as tarfile's "data" filter (which the images'
Python 3.11.2 predates), with its messages: leading slashes are stripped;
a member that would land outside the directory, a link to an absolute
path or pointing outside, and device files are refused (exit 2, the reason
on stderr); modes lose setuid, setgid, sticky and group/other write bits;
files belong to whoever extracts them. Members before a refused one stay.
"""

from __future__ import annotations

import os
import sys
import tarfile

TYPE_CHECKING = False  # importing typing costs milliseconds at every start; mypy reads this as typing's
if TYPE_CHECKING:
    from typing import BinaryIO


class Refused(Exception):
    pass


def _inside(dest: str, path: str) -> bool:
    return os.path.commonpath([dest, path]) == dest


def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """``member`` made safe to extract into ``dest`` (a real path), or ``Refused``."""
    name = member.name.lstrip("/")
    target = os.path.realpath(os.path.join(dest, name))
    if not _inside(dest, target):
        raise Refused(f"{member.name!r} would be extracted to {target!r}, which is outside the destination")
    if member.ischr() or member.isblk() or member.isfifo():
        raise Refused(f"{member.name!r} is a special file")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise Refused(f"{member.name!r} is a link to an absolute path")
        base = os.path.dirname(target) if member.issym() else dest
        linked = os.path.realpath(os.path.join(base, member.linkname))
        if not _inside(dest, linked):
            raise Refused(f"{member.name!r} would link to {linked!r}, which is outside the destination")
    member.name = name
    member.mode &= 0o755
    if member.isreg() or member.islnk():
        member.mode |= 0o600
    member.uid = member.gid = os.getuid()
    member.uname = member.gname = ""
    return member


def extract(dest: str, source: BinaryIO | None = None) -> int:
    """Extract the tar stream read from ``source`` (stdin by default) into ``dest``."""
    try:
        os.makedirs(dest, exist_ok=True)
        dest = os.path.realpath(dest)
        with tarfile.open(fileobj=source or sys.stdin.buffer, mode="r|") as tar:
            for member in tar:
                tar.extract(check(member, dest), dest, numeric_owner=True)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except tarfile.TarError as exc:
        print(f"not a valid tar stream: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"extract failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(extract(sys.argv[1]))
