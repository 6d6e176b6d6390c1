"""``POST /v1/exec``: the seeds' curl example verbatim, timeouts, output, cleanup."""

from __future__ import annotations

import json
import os
import subprocess

import trio

from tests.conftest import System, wait_until

# The seeds' "One-shot stateless execution" example, as written (the test
# agent maps its image name to the default image: SEED_IMAGE_ALIASES).
SEEDS_EXAMPLE = """
curl -sS "$CHASER_API_URL/v1/exec" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "ephemeral": true,
    "image": "ghcr.io/example/dev:latest",
    "command": "npm ci && npm test",
    "timeout_ms": 900000
  }' | jq
"""


async def curl(system: System, script: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CHASER_API_URL": system.api_url, "CHASER_API_KEY": system.api_key}
    return await trio.run_process(
        ["bash", "-c", script], env=env, capture_stdout=True, capture_stderr=True, check=False
    )


async def test_seeds_curl_example_verbatim(system: System) -> None:
    done = await curl(system, SEEDS_EXAMPLE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # npm really ran in the sandbox: there is no project there, so `npm ci` says so.
    assert result["exit_code"] != 0
    assert "npm ci" in result["output"] and "package-lock.json" in result["output"]
    assert result["timed_out"] is False
    session = (await system.client.get(f"/v1/sessions/{result['session_id']}")).json()
    assert session["status"] == "terminated" and session["ephemeral"] is True
    assert system.containers() == set()


async def test_default_image_toolchain(system: System) -> None:
    script = SEEDS_EXAMPLE.replace(
        "npm ci && npm test", "node -v && python3 -V && git --version && bash --version | head -1"
    )
    result = json.loads((await curl(system, script)).stdout)
    assert result["exit_code"] == 0, result
    lines = result["output"].splitlines()
    assert lines[0].startswith("v18.") and lines[1].startswith("Python 3.11") and lines[2].startswith("git version")


async def test_timeout_kills_the_whole_process_group(system: System) -> None:
    session = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    ran = await system.client.post(
        "/v1/exec",
        json={"session_id": session["id"], "command": "echo started; sleep 300 | cat; echo never", "timeout_ms": 500},
    )
    result = ran.json()
    assert result["timed_out"] is True and result["exit_code"] == 137
    assert result["output"] == "started\n"
    ps = await system.client.post("/v1/exec", json={"session_id": session["id"], "command": "ps -eo args="})
    assert "sleep 300" not in ps.json()["output"]
    assert "vmimages.guest.agent" in ps.json()["output"]  # the sandbox's own init (its agent) lives on
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_output_keeps_the_tail_when_capped(system: System) -> None:
    command = "seq 1 400000; echo THE-END"  # ~2.6 MB, over the 1 MiB cap
    result = (await system.client.post("/v1/exec", json={"ephemeral": True, "command": command})).json()
    assert result["exit_code"] == 0
    assert result["output_truncated"] is True
    assert result["output"].endswith("400000\nTHE-END\n")
    assert len(result["output"]) <= 1 << 20


async def test_argv_command_and_missing_program(system: System) -> None:
    result = (
        await system.client.post("/v1/exec", json={"ephemeral": True, "command": ["echo", "$HOME", "a b"]})
    ).json()
    assert result["output"] == "$HOME a b\n"
    result = (await system.client.post("/v1/exec", json={"ephemeral": True, "command": ["no-such-program"]})).json()
    assert result["exit_code"] == 127
    assert "no-such-program" in result["output"]
    result = (await system.client.post("/v1/exec", json={"ephemeral": True, "command": "pwd", "cwd": "/nope"})).json()
    assert result["exit_code"] == 127


async def test_client_hanging_up_still_cleans_up(system: System) -> None:
    script = """curl -sS --max-time 2 "$CHASER_API_URL/v1/exec" -H "Authorization: Bearer $CHASER_API_KEY" \
        -H "Content-Type: application/json" -d '{"ephemeral": true, "command": "sleep 20", "timeout_ms": 60000}'"""
    done = await curl(system, script)
    assert done.returncode == 28  # curl: operation timed out, i.e. we hung up

    async def cleaned_up() -> bool:
        sessions = (await system.client.get("/v1/sessions")).json()["sessions"]
        return bool(sessions) and all(s["status"] == "terminated" for s in sessions) and not system.containers()

    await wait_until(cleaned_up, timeout=40)


async def test_a_sane_environment(system: System) -> None:
    """The hostname resolves, and a command gets a home, a PATH and a locale."""
    body = {"ephemeral": True, "command": 'getent hosts "$(hostname)"; echo "$HOME $LANG"; command -v sh'}
    result = (await system.client.post("/v1/exec", json=body)).json()
    resolved, home_lang, shell = result["output"].splitlines()
    assert resolved.split()[1:] == ["sandbox"], result
    assert home_lang == "/root C.UTF-8" and shell == "/usr/bin/sh", result
