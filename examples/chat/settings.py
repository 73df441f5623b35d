"""The chat app's settings, read from ``CHAT_*`` environment variables."""

from __future__ import annotations

import secrets

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_SECRET_LENGTH", "ChatSettings"]

MIN_SECRET_LENGTH = 32


def _random_secret() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(MIN_SECRET_LENGTH))


class ChatSettings(BaseSettings):
    """``CHAT_SECRET`` signs login tokens; without it each process makes up its own."""

    model_config = SettingsConfigDict(env_prefix="CHAT_", frozen=True)

    secret: SecretStr = Field(default_factory=_random_secret)
    token_ttl_seconds: int = Field(default=3600, gt=0, le=7 * 24 * 3600)
    max_message_bytes: int = Field(default=8192, gt=0, le=1_048_576)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    tool_delay_seconds: float = Field(default=0.3, ge=0, le=60)
    subscribe_timeout_seconds: float = Field(default=10.0, gt=0)
    model: str | None = None  # CHAT_MODEL: a pydantic-ai model name; unset: offline
    login_attempts_per_minute: int = Field(default=20, gt=0)
    max_messages_per_second: float = Field(default=10.0, gt=0)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"CHAT_SECRET must be at least {MIN_SECRET_LENGTH} characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        return value
