"""Error types shared by the servers and the SDK, mapped to HTTP in one place.

Every API error travels as ``{"error": {"code": ..., "message": ...}}``.
Servers raise these; the SDK turns a response back into the same type, so
``except NotFound`` works on both sides of the wire.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidInput(ApiError):
    status = 422
    code = "invalid_request"


class MalformedBody(ApiError):
    status = 400
    code = "invalid_json"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ApiError):
    """More at once than is allowed; the same request may succeed later."""

    status = 429
    code = "too_many_requests"


class BadGateway(ApiError):
    """What the request was passed on to (a program in a sandbox) did not answer."""

    status = 502
    code = "bad_gateway"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class Timeout(ApiError):
    status = 504
    code = "timeout"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidInput,
        MalformedBody,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        TooManyRequests,
        BadGateway,
        Unavailable,
        Timeout,
    )
}


def from_response(status: int, body: Any) -> ApiError:
    """Rebuild the error a server sent, for clients of our APIs."""
    cls = _BY_STATUS.get(status, ApiError)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        exc = cls(str(error.get("message", "")), code=error.get("code"), details=error.get("details"))
    else:
        exc = cls(f"HTTP {status}")
    exc.status = status
    return exc
