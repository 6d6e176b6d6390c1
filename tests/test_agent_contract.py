"""The agent's answers carry the fields the wire's models describe, no fewer and no more.

The scheduler reads an agent's answers through ``chaser.wire.agent_api``,
which ignores fields it does not know: a field added on one side only would
be lost without a word. This pins the two sides together.
"""

from __future__ import annotations

import dataclasses

import pytest

from agent.runtimes.execution import ExecResult as AgentExecResult
from agent.sandboxes.manager import Sandbox
from chaser.wire.agent_api import CreateSandbox, ExecRequest, ExecResult, SandboxInfo

pytestmark = pytest.mark.fast


def test_a_sandbox_answer_is_a_sandbox_info() -> None:
    fields = {field.name for field in dataclasses.fields(Sandbox)}
    assert fields == set(SandboxInfo.model_fields) - {"active_connection_leases"}
    sandbox = Sandbox(id="0" * 36, image="default", runtime="lxc", status="running", created_at=1.0)
    assert SandboxInfo.model_validate(sandbox.to_json()).model_dump() == {
        **sandbox.to_json(),
        "active_connection_leases": None,
    }


def test_an_exec_answer_is_an_exec_result() -> None:
    result = AgentExecResult(exit_code=3, output="out", output_truncated=False, timed_out=False, duration_ms=7)
    assert ExecResult.model_validate(result.to_json()).model_dump() == result.to_json()


def test_requests_round_trip_as_the_scheduler_sends_them() -> None:
    create = CreateSandbox(id="0" * 36, image="default", limits={"cpus": 1}, account="acct")  # type: ignore[arg-type]
    sent = create.model_dump(mode="json", exclude_none=True)
    assert sent == {
        "id": "0" * 36,
        "image": "default",
        "network": "egress",
        "limits": {"cpus": 1.0},
        "session_type": "sandbox",
        "account": "acct",
    }
    assert CreateSandbox.model_validate(sent) == create
    run = ExecRequest(command=["true"], cwd=None, timeout_ms=1000)
    assert ExecRequest.model_validate(run.model_dump(mode="json")) == run
