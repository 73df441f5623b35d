"""The pytest plugin, used the way an application's test suite uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from enginescope.containers import EngineContainer
from enginescope.containers.pytest_plugin import InUserScope
from enginescope.engines import AgentWebSocketBridge, ExecutionEngineFactory
from enginescope.engines.testing import RecordingBridge

USER_TESTS = """
import pytest
from enginescope.engines import UserEngineLimitError

seen = {}


@pytest.mark.asyncio
async def test_an_engine_in_a_user_scope(in_user_scope, enginescope_bridge):
    async with in_user_scope("alice") as engine:
        result = await engine.execute_agent("demo", "hello world")
    assert result.success
    assert ["alice"] == enginescope_bridge.user_ids()
    assert "agent_completed" == enginescope_bridge.types_for("alice")[-1]
    assert not engine.is_active()


@pytest.mark.asyncio
async def test_a_context_of_my_own(in_user_scope, make_user_context, enginescope_container):
    context = make_user_context("bob", metadata={"plan": "pro"})
    async with in_user_scope(context) as engine:
        assert context is engine.context
        assert context is enginescope_container.user_context()


@pytest.mark.asyncio
async def test_a_mapping_and_fields(in_user_scope):
    async with in_user_scope({"user_id": "dan", "thread_id": "t-9", "run_id": "r-9"}) as a:
        assert "t-9" == a.context.thread_id
    async with in_user_scope("erin", thread_id="t-1") as b:
        assert ("erin", "t-1") == (b.context.user_id, b.context.thread_id)


@pytest.mark.asyncio
async def test_my_settings_are_used(in_user_scope):
    async with in_user_scope("carol"):
        with pytest.raises(UserEngineLimitError):
            async with in_user_scope("carol"):
                pass


@pytest.mark.asyncio
async def test_the_container_is_started(enginescope_container):
    factory = await enginescope_container.engine_factory()
    seen["factory"] = factory
    assert not factory.is_shutdown


def test_it_was_shut_down_after_the_test():
    assert seen["factory"].is_shutdown
"""

CONFTEST = """
import pytest
from enginescope.containers import EngineSettings


@pytest.fixture
def enginescope_settings():
    return EngineSettings(max_engines_per_user=1)
"""


def ini(mode: str) -> str:
    """A user's pytest configuration: the given asyncio mode, warnings are errors."""
    return textwrap.dedent(
        f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )


class TestUsedByAnApplication:
    @pytest.mark.parametrize("mode", ["strict", "auto"])
    def test_a_users_test_suite_passes_with_the_fixtures(
        self, pytester: pytest.Pytester, mode: str
    ) -> None:
        """Fixtures work in pytest-asyncio strict and auto mode, with settings overridden."""
        pytester.makeini(ini(mode))
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(test_chat=USER_TESTS)

        result = pytester.runpytest("-p", "no:cacheprovider")

        result.assert_outcomes(passed=6)

    def test_a_failing_user_test_fails_and_still_shuts_down(
        self, pytester: pytest.Pytester
    ) -> None:
        """An error inside in_user_scope fails that test only; teardown still runs."""
        pytester.makepyfile(
            test_failing=textwrap.dedent(
                """
                import pytest

                seen = {}

                @pytest.mark.asyncio
                async def test_boom(in_user_scope, enginescope_container):
                    seen["factory"] = await enginescope_container.engine_factory()
                    async with in_user_scope("alice") as engine:
                        seen["engine"] = engine
                        raise RuntimeError("boom")

                def test_cleaned_up():
                    assert not seen["engine"].is_active()
                    assert seen["factory"].is_shutdown
                """
            )
        )

        pytester.makeini(ini("strict"))

        result = pytester.runpytest("-p", "no:cacheprovider")

        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*RuntimeError: boom*"])


class TestFixtures:
    async def test_the_container_uses_the_recording_bridge(
        self, enginescope_container: EngineContainer, enginescope_bridge: RecordingBridge
    ) -> None:
        """enginescope_container's factory talks to enginescope_bridge."""
        factory = await enginescope_container.engine_factory()

        assert isinstance(factory, ExecutionEngineFactory)
        assert enginescope_bridge is factory.websocket_bridge
        assert not isinstance(factory.websocket_bridge, AgentWebSocketBridge)

    async def test_in_user_scope_gives_the_users_engine(
        self, in_user_scope: InUserScope, enginescope_bridge: RecordingBridge
    ) -> None:
        """in_user_scope(user_id) yields an engine for that user, closed afterwards."""
        async with in_user_scope("u-42") as engine:
            await engine.execute_agent("demo", "hi")

        assert ("u-42", False, ["u-42"]) == (
            engine.context.user_id,
            engine.is_active(),
            enginescope_bridge.user_ids(),
        )


class TestImport:
    def test_loading_the_plugin_imports_nothing_heavy(self) -> None:
        """pytest loads the plugin in every run; it must not import the DI stack or pydantic."""
        probe = (
            "import sys, enginescope.containers.pytest_plugin as plugin\n"
            "heavy = ('dependency_injector', 'pydantic', 'enginescope.engines')\n"
            "print(sorted(name for name in heavy if name in sys.modules))"
        )

        output = subprocess.run(  # noqa: S603 - runs this interpreter on a literal probe
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout

        assert "[]" == output.strip()
