"""Quart glue shared by the agent's and the scheduler's HTTP APIs.

One place turns every failure into the JSON error shape (never an HTML page
or a traceback) and reads request bodies strictly: size-capped, JSON only,
validated by a pydantic model that forbids unknown fields.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from chaser.wire import errors
from serving.error_answer import CONTENT_TYPE, error_answer

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_HTTP_TO_ERROR: dict[int, type[errors.ApiError]] = {
    400: errors.MalformedBody,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def error_response(exc: errors.ApiError) -> Response:
    answer = error_answer(exc)
    return Response(answer.body, status=answer.status, content_type=CONTENT_TYPE)


def install_error_handlers(app: QuartTrio) -> None:
    """Map every exception an endpoint can raise to a JSON error."""

    @app.errorhandler(errors.ApiError)
    async def _api_error(exc: errors.ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(ValidationError)
    async def _validation(exc: ValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        cls = _HTTP_TO_ERROR.get(status, errors.ApiError)
        err = cls(exc.description or exc.name)
        err.status = status
        return error_response(err)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(errors.ApiError("internal error"))


def validation_error(exc: ValidationError) -> errors.InvalidInput:
    """Summarise pydantic's errors without echoing the caller's values back."""
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    return errors.InvalidInput(f"{first['field']}: {first['message']}", details=problems)


async def read_json() -> Any:
    """The request body as JSON, or a 4xx naming what is wrong with it."""
    body = await request.get_data(cache=False)
    if not body:
        return {}
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise errors.UnsupportedMediaType(f"expected application/json, got {mimetype}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.MalformedBody(f"request body is not valid JSON: {exc}") from None


async def parse_body(model: type[M]) -> M:
    """Read and validate the body against ``model`` (unknown fields refused)."""
    data = await read_json()
    if not isinstance(data, dict):
        raise errors.InvalidInput("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_query(model: type[M]) -> M:
    """Validate query parameters against ``model``."""
    try:
        return model.model_validate(dict(request.args))
    except ValidationError as exc:
        raise validation_error(exc) from None


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")
