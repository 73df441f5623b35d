"""EngineSettings: defaults, the environment, validation and the options it hands out."""

from __future__ import annotations

import pytest
from dependency_injector import containers, providers
from enginescope.containers import (
    EngineContainer,
    EngineSettings,
    InvalidSettingsError,
    as_engine_settings,
)
from enginescope.engines import AgentWebSocketBridge, ExecutionEngineFactory
from enginescope.engines.testing import RecordingBridge
from pydantic import ValidationError


class TestDefaults:
    def test_factory_defaults_match_the_factory(self) -> None:
        """Without configuration the settings give the factory its own defaults."""
        factory = ExecutionEngineFactory(RecordingBridge(), **EngineSettings().factory_options())

        assert (2, 300, 60, 10, None, 4) == (
            factory.max_engines_per_user,
            factory.engine_timeout_seconds,
            factory.cleanup_interval_seconds,
            factory.shutdown_timeout_seconds,
            factory.agent_timeout_seconds,
            factory.max_concurrent_runs,
        )

    def test_backend_defaults_to_memory(self) -> None:
        """The in-memory backend is the default: nothing to install or run."""
        settings = EngineSettings()

        assert ("memory", "redis://127.0.0.1:6379/0", "enginescope") == (
            settings.backend,
            settings.redis_url,
            settings.redis_key_prefix,
        )

    def test_redis_url_is_kept_out_of_the_repr(self) -> None:
        """A redis URL may carry a password, so the repr does not show it."""
        settings = EngineSettings(redis_url="redis://:hunter2@cache:6379/0")

        assert "hunter2" not in repr(settings)


class TestEnvironment:
    @pytest.mark.parametrize(
        ("variable", "value", "field", "expected"),
        [
            ("ENGINESCOPE_MAX_ENGINES_PER_USER", "5", "max_engines_per_user", 5),
            ("ENGINESCOPE_ENGINE_TIMEOUT_SECONDS", "12.5", "engine_timeout_seconds", 12.5),
            ("ENGINESCOPE_CLEANUP_INTERVAL_SECONDS", "3", "cleanup_interval_seconds", 3.0),
            ("ENGINESCOPE_SHUTDOWN_TIMEOUT_SECONDS", "2", "shutdown_timeout_seconds", 2.0),
            ("ENGINESCOPE_AGENT_TIMEOUT_SECONDS", "30", "agent_timeout_seconds", 30.0),
            ("ENGINESCOPE_MAX_CONCURRENT_RUNS", "8", "max_concurrent_runs", 8),
            ("ENGINESCOPE_BRIDGE_QUEUE_SIZE", "64", "bridge_queue_size", 64),
            ("ENGINESCOPE_BRIDGE_SEND_TIMEOUT_SECONDS", "1.5", "bridge_send_timeout_seconds", 1.5),
            (
                "ENGINESCOPE_BRIDGE_MAX_CONNECTIONS_PER_USER",
                "3",
                "bridge_max_connections_per_user",
                3,
            ),
            ("ENGINESCOPE_BACKEND", "redis", "backend", "redis"),
            ("ENGINESCOPE_REDIS_URL", "redis://cache:6380/1", "redis_url", "redis://cache:6380/1"),
            ("ENGINESCOPE_REDIS_LEASE_TTL_SECONDS", "45", "redis_lease_ttl_seconds", 45.0),
            ("ENGINESCOPE_REDIS_STREAM_MAXLEN", "500", "redis_stream_maxlen", 500),
            ("ENGINESCOPE_REDIS_REPLAY_WINDOW_SECONDS", "9", "redis_replay_window_seconds", 9.0),
            ("ENGINESCOPE_REDIS_KEY_PREFIX", "chat", "redis_key_prefix", "chat"),
        ],
    )
    def test_each_setting_is_read_from_its_variable(
        self,
        monkeypatch: pytest.MonkeyPatch,
        variable: str,
        value: str,
        field: str,
        expected: object,
    ) -> None:
        """ENGINESCOPE_<FIELD> sets that field."""
        monkeypatch.setenv(variable, value)

        assert expected == getattr(EngineSettings(), field)

    def test_variable_names_are_case_insensitive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A lower-case variable name works as well."""
        monkeypatch.setenv("enginescope_max_engines_per_user", "7")

        assert 7 == EngineSettings().max_engines_per_user

    def test_keyword_arguments_win_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An explicit value beats the environment, so tests can pin a setting."""
        monkeypatch.setenv("ENGINESCOPE_MAX_ENGINES_PER_USER", "7")

        assert 3 == EngineSettings(max_engines_per_user=3).max_engines_per_user


class TestValidation:
    @pytest.mark.parametrize(
        "field",
        [
            "max_engines_per_user",
            "engine_timeout_seconds",
            "cleanup_interval_seconds",
            "shutdown_timeout_seconds",
            "agent_timeout_seconds",
            "max_concurrent_runs",
            "bridge_queue_size",
            "bridge_send_timeout_seconds",
            "redis_lease_ttl_seconds",
            "redis_stream_maxlen",
            "redis_replay_window_seconds",
        ],
    )
    @pytest.mark.parametrize("value", ["0", "-1"])
    def test_zero_or_negative_limits_are_refused_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, field: str, value: str
    ) -> None:
        """A zero or negative limit or timeout fails at startup and names the setting."""
        monkeypatch.setenv(f"ENGINESCOPE_{field.upper()}", value)

        with pytest.raises(ValidationError) as caught:
            EngineSettings()

        assert [(field,)] == [error["loc"] for error in caught.value.errors()]
        assert field in str(caught.value)

    def test_unknown_backend_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Only the memory and redis backends exist."""
        monkeypatch.setenv("ENGINESCOPE_BACKEND", "postgres")

        with pytest.raises(ValidationError, match="backend"):
            EngineSettings()

    def test_a_non_number_is_refused_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A value that is not a number names the setting it was given for."""
        monkeypatch.setenv("ENGINESCOPE_ENGINE_TIMEOUT_SECONDS", "soon")

        with pytest.raises(ValidationError, match="engine_timeout_seconds"):
            EngineSettings()

    def test_settings_are_frozen(self) -> None:
        """A settings object cannot change under a running factory."""
        settings = EngineSettings()

        with pytest.raises(ValidationError):
            settings.max_engines_per_user = 9  # type: ignore[misc]


class TestOptions:
    def test_factory_options_configure_a_factory(self) -> None:
        """factory_options() holds exactly the factory's keyword arguments."""
        settings = EngineSettings(max_engines_per_user=3, agent_timeout_seconds=5)

        factory = ExecutionEngineFactory(RecordingBridge(), **settings.factory_options())

        assert (3, 5) == (factory.max_engines_per_user, factory.agent_timeout_seconds)

    async def test_bridge_options_configure_a_bridge(self) -> None:
        """bridge_options() holds exactly the bridge's keyword arguments."""
        settings = EngineSettings(bridge_queue_size=8, bridge_send_timeout_seconds=0.5)

        bridge = AgentWebSocketBridge(**settings.bridge_options())

        assert (8, 0.5) == (bridge._queue_size, bridge._send_timeout)
        await bridge.close()


class TestGivenToAContainer:
    async def test_a_configuration_option_configures_the_container(self) -> None:
        """``providers.Container(EngineContainer, settings=config.engines)`` works as written."""

        class App(containers.DeclarativeContainer):
            config = providers.Configuration()
            engines = providers.Container(EngineContainer, settings=config.engines)

        app = App()
        app.config.from_dict({"engines": {"max_engines_per_user": "3", "bridge_queue_size": 4}})
        await app.init_resources()
        factory = await app.engines.engine_factory()
        bridge = await app.engines.websocket_bridge()
        await app.shutdown_resources()

        assert (3, 4) == (factory.max_engines_per_user, bridge._queue_size)

    def test_a_mapping_is_validated_into_settings(self) -> None:
        """An overriding mapping becomes EngineSettings; the environment fills the rest."""
        container = EngineContainer()
        container.settings.override({"max_engines_per_user": 7})

        settings = container.engine_settings()

        assert (EngineSettings, 7, "memory") == (
            type(settings),
            settings.max_engines_per_user,
            settings.backend,
        )

    def test_an_instance_is_used_as_it_is(self) -> None:
        """EngineSettings given as settings is the very object the resources read."""
        given = EngineSettings(max_engines_per_user=4)

        assert given is as_engine_settings(given)

    @pytest.mark.parametrize(
        ("mapping", "field"),
        [
            ({"max_engines_per_user": 0}, "max_engines_per_user"),
            ({"engine_timeout_seconds": "soon"}, "engine_timeout_seconds"),
            ({"backend": "postgres"}, "backend"),
            ({"max_engine_count": 3}, "max_engine_count"),
        ],
        ids=["out-of-range", "not-a-number", "unknown-backend", "unknown-field"],
    )
    async def test_a_bad_field_is_named_at_startup(
        self, mapping: dict[str, object], field: str
    ) -> None:
        """A bad or unknown field fails init_resources with InvalidSettingsError naming it."""
        container = EngineContainer()
        container.settings.override(mapping)

        with pytest.raises(InvalidSettingsError) as caught:
            await container.init_resources()

        assert field == caught.value.field
        assert repr(field) in str(caught.value)
        assert isinstance(caught.value, ValueError)

    def test_something_else_is_refused_naming_settings(self) -> None:
        """Neither settings nor a mapping (an unloaded Configuration gives None): refused."""
        with pytest.raises(InvalidSettingsError, match="load the Configuration") as caught:
            as_engine_settings(None)

        assert "settings" == caught.value.field


class TestCaps:
    async def test_the_engine_cap_and_metadata_limits_reach_the_engines(self) -> None:
        """ENGINESCOPE_MAX_ENGINES caps the factory; the metadata limits bound every context
        built once the factory has started."""
        from enginescope.engines import (  # noqa: PLC0415 - the names this test is about
            FactoryCapacityError,
            InvalidContextError,
            UserExecutionContext,
            metadata_limits,
            set_metadata_limits,
        )

        previous = metadata_limits()
        container = EngineContainer(
            settings=EngineSettings(max_engines=1, max_metadata_bytes=64, max_metadata_depth=2)
        )
        await container.init_resources()
        try:
            factory = await container.engine_factory()
            assert (1, 64, 2) == (
                factory.max_engines,
                metadata_limits().max_bytes,
                metadata_limits().max_depth,
            )
            with pytest.raises(InvalidContextError, match="metadata"):
                UserExecutionContext(
                    user_id="u", thread_id="t", run_id="r", metadata={"x": "y" * 99}
                )
            await factory.create_for_user(
                UserExecutionContext(user_id="a", thread_id="t", run_id="r")
            )
            with pytest.raises(FactoryCapacityError):
                await factory.create_for_user(
                    UserExecutionContext(user_id="b", thread_id="t", run_id="r")
                )
        finally:
            await container.shutdown_resources()
            set_metadata_limits(max_bytes=previous.max_bytes, max_depth=previous.max_depth)
