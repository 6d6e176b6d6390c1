"""A cluster token too short or too regular to be 32 random bytes is refused at start.

The token authenticates agents and schedulers to each other and keys the
session tokens' HMAC: a guessable one gives the whole cluster away.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pydantic
import pytest

from agent import main as agent_main
from agent.config import AgentConfig
from scheduler import main as scheduler_main
from scheduler.config import SchedulerConfig

WEAK = [
    "change-me: the same cluster token as the agents'",
    "secret",
    secrets.token_hex(16),  # 16 random bytes
    "a" * 64,
    "abcdefgh" * 8,  # long, but a pattern a person typed
]


@pytest.mark.parametrize("token", WEAK)
def test_weak_tokens_are_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="openssl rand -hex 32"):
        SchedulerConfig.load(None, token=token)
    with pytest.raises(pydantic.ValidationError, match="openssl rand -hex 32"):
        AgentConfig.load(None, state_dir=tmp_path, token=token)


@pytest.mark.parametrize("token", [secrets.token_hex(32), secrets.token_urlsafe(32), secrets.token_bytes(32).hex()])
def test_generated_tokens_are_accepted(tmp_path: Path, token: str) -> None:
    assert SchedulerConfig.load(None, token=token).token.get_secret_value() == token
    assert AgentConfig.load(None, state_dir=tmp_path, token=token).token.get_secret_value() == token


def test_the_programs_stop_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHASER_SCHEDULER_TOKEN", "change-me")
    monkeypatch.setenv("CHASER_AGENT_TOKEN", "change-me")
    # Were the check missing, the programs would start: only on loopback and in tmp_path.
    monkeypatch.setenv("CHASER_SCHEDULER_BIND", "127.0.0.1:0")
    monkeypatch.setenv("CHASER_SCHEDULER_DATABASE_URL", f"sqlite:///{tmp_path / 'db'}")
    monkeypatch.setenv("CHASER_AGENT_BIND", "127.0.0.1:0")
    monkeypatch.setenv("CHASER_AGENT_STATE_DIR", str(tmp_path / "agent"))
    monkeypatch.setenv("CHASER_AGENT_IMAGES_DIR", str(tmp_path / "images"))
    for main in (scheduler_main.main, agent_main.main):
        with pytest.raises(SystemExit) as stopped:
            main(["--config", str(tmp_path / "none.toml")])
        assert "token" in str(stopped.value.code) and "openssl rand -hex 32" in str(stopped.value.code)
