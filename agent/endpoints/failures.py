"""Runtime failures as API errors, in one place for every session endpoint."""

from __future__ import annotations

from agent.runtimes.base import Busy, FileError, PortClosed, RuntimeFailure, SandboxGone
from chaser.wire import errors

_FILE_ERRORS: dict[str, type[errors.ApiError]] = {
    "not_found": errors.NotFound,
    "permission_denied": errors.Forbidden,
    "invalid": errors.InvalidInput,
}


def api_error(exc: RuntimeFailure, sandbox_id: str, path: str | None = None) -> errors.ApiError:
    where = f"{path}: " if path else ""
    if isinstance(exc, SandboxGone):
        return errors.Conflict(f"sandbox {sandbox_id} is not running", code="session_not_running")
    if isinstance(exc, FileError):
        cls = _FILE_ERRORS.get(exc.kind, errors.Conflict)
        code = "file_not_found" if exc.kind == "not_found" else exc.kind
        return cls(f"{where}{exc}", code=code)
    if isinstance(exc, Busy):
        return errors.TooManyRequests(f"{where}{exc}", code="sandbox_busy")
    if isinstance(exc, PortClosed):
        return errors.BadGateway(str(exc), code="port_not_listening")
    return errors.Unavailable(f"{where}{exc}", code="runtime_failure")
