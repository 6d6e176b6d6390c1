"""The agent's routes for detached execs (see ``agent.sandboxes.detached``), used by the scheduler's jobs.

    POST   /v1/sandboxes/<id>/execs                 start (or find) exec ``id``; waits up to ``wait_ms``
    GET    /v1/sandboxes/<id>/execs/<exec>          its state; waits up to ``wait_ms`` for it to exit
    POST   /v1/sandboxes/<id>/execs/<exec>/kill     kill its process group, return the final state
    DELETE /v1/sandboxes/<id>/execs/<exec>          forget a finished exec

A poll that passes ``seen`` (the ``output_bytes`` it already has) gets
``output: null`` while nothing new was written, so a quiet command costs
no transfer.
"""

from __future__ import annotations

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Response
from quart_trio import QuartTrio

from agent.http.api import argv_of
from agent.sandboxes.detached import DetachedExecs
from chaser.wire.agent_api import ExecRequest, SandboxId
from serving.quart_json import json_response, parse_body, parse_query

MAX_WAIT_MS = 60_000


class StartExecBody(ExecRequest):
    id: SandboxId
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS)


class PollQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS)
    seen: int | None = Field(default=None, ge=0)


def register_detached_routes(app: QuartTrio, execs: DetachedExecs) -> None:
    @app.post("/v1/sandboxes/<sandbox_id>/execs")
    async def start_exec(sandbox_id: str) -> Response:
        body = await parse_body(StartExecBody)
        timeout = body.timeout_ms / 1000 if body.timeout_ms else None
        # A caller hanging up must not cut a start half-way (a process nobody owns).
        with trio.CancelScope(shield=True):
            detached, new = await execs.start(body.id, sandbox_id, argv_of(body.command), body.env, body.cwd, timeout)
        await execs.wait(detached, body.wait_ms / 1000)
        return json_response(detached.to_json(), status=201 if new else 200)

    @app.get("/v1/sandboxes/<sandbox_id>/execs/<exec_id>")
    async def poll_exec(sandbox_id: str, exec_id: str) -> Response:
        query = parse_query(PollQuery)
        detached = execs.get(sandbox_id, exec_id)
        await execs.wait(detached, query.wait_ms / 1000)
        return json_response(detached.to_json(query.seen))

    @app.post("/v1/sandboxes/<sandbox_id>/execs/<exec_id>/kill")
    async def kill_exec(sandbox_id: str, exec_id: str) -> Response:
        detached = execs.get(sandbox_id, exec_id)
        await execs.kill(detached)
        return json_response(detached.to_json())

    @app.delete("/v1/sandboxes/<sandbox_id>/execs/<exec_id>")
    async def forget_exec(sandbox_id: str, exec_id: str) -> Response:
        execs.forget(execs.get(sandbox_id, exec_id))
        return Response(b"", status=204)
