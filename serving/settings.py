"""Base for the programs' typed configuration: a TOML file, then the environment.

Each program (agent, scheduler) declares one settings class; values come from
its TOML file and are overridden by ``CHASER_<PROGRAM>_*`` variables, and
explicit keyword arguments (used by tests and embedded mode) beat both.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, TypeVar

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_config_file", default=None)

S = TypeVar("S", bound="FileAndEnvSettings")


class FileAndEnvSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls: type[S], file: Path | None = None, **overrides: Any) -> S:
        """Read the file (if it exists), then the environment, then ``overrides``."""
        token = _config_file.set(file if file is not None and file.exists() else None)
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)
