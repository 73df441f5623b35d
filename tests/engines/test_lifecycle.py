"""The shared lifecycle helpers: the positive-number rule, backoff, stopping a task and the
background loop that the reaper, the Redis heartbeat and the Redis reader run on."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from enginescope.engines import InvalidSettingError
from enginescope.engines._lifecycle import BackgroundLoop, Backoff, check_positive, stop_task


class TestCheckPositive:
    @pytest.mark.parametrize("value", [1, 2.5, 1e-9, math.inf])
    def test_positive_numbers_pass_through(self, value: float) -> None:
        """A positive int or float is returned unchanged."""
        assert value == check_positive("interval", value)

    @pytest.mark.parametrize("value", [0, -1, math.nan, True, "5", None, 1j])
    def test_anything_else_is_refused_by_name(self, value: Any) -> None:
        """Zero, negatives, NaN, bools and non-numbers raise an error naming the field."""
        with pytest.raises(InvalidSettingError, match="interval must be a positive number"):
            check_positive("interval", value)

    def test_integer_settings_refuse_floats(self) -> None:
        """With integer=True only ints pass, and the message says so."""
        assert 3 == check_positive("size", 3, integer=True)
        with pytest.raises(ValueError, match=r"size must be a positive integer, got 1\.5"):
            check_positive("size", 1.5, integer=True)

    def test_the_caller_chooses_the_error(self) -> None:
        """The error factory receives the field, the value and what was expected."""

        class MineError(Exception):
            def __init__(self, field: str, value: object, expected: str) -> None:
                super().__init__(field, value, expected)

        with pytest.raises(MineError) as raised:
            check_positive("size", 0, integer=True, error=MineError)
        assert ("size", 0, "a positive integer") == raised.value.args


class TestBackoff:
    def test_delays_grow_to_the_cap_and_reset(self) -> None:
        """Each failure waits longer, never beyond the cap; a success starts over."""
        backoff = Backoff(base=0.1, cap=1.0)
        delays = [backoff.failed() for _ in range(8)]
        assert all(0 < delay <= 1.0 for delay in delays)
        assert delays[-1] >= 0.5  # half the cap at least, once it is reached
        assert backoff.failing
        assert backoff.succeeded() is True
        assert backoff.succeeded() is False
        assert not backoff.failing


class TestStopTask:
    async def test_a_task_that_swallows_one_cancellation_is_stopped(self) -> None:
        """stop_task cancels again until the task is really done."""

        async def stubborn() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(10)  # swallowed once; the second cancel ends it

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await stop_task(task)
        assert task.cancelled()

    async def test_none_and_done_tasks_are_no_ops(self) -> None:
        """Stopping nothing, or a finished task, returns at once."""
        await stop_task(None)
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await stop_task(done)
        assert (True, False) == (done.done(), done.cancelled())


class TestBackgroundLoop:
    async def test_it_runs_its_step_until_closed(self) -> None:
        """The step runs again and again in one task; aclose stops it for good."""
        steps = 0

        async def step() -> None:
            nonlocal steps
            steps += 1
            await asyncio.sleep(0)

        loop = BackgroundLoop("test-loop", step)
        loop.start()
        loop.start()  # idempotent: still one task
        task = loop.task
        while steps < 5:
            await asyncio.sleep(0)
        assert (True, task) == (loop.running, loop.task)
        await loop.aclose()
        assert (False, True) == (loop.running, loop.closed)
        loop.start()
        assert not loop.running  # a closed loop never starts again

    async def test_failures_back_off_and_recovery_is_reported(self) -> None:
        """A failing step is reported with its backoff, retried, and recovery is announced."""
        outcomes = iter([OSError("down"), OSError("still down"), None, None])
        seen: list[str] = []
        recovered = asyncio.Event()

        async def step() -> None:
            outcome = next(outcomes, None)
            if outcome is not None:
                raise outcome
            await asyncio.sleep(0)

        def on_error(error: BaseException, backoff: Backoff) -> None:
            seen.append(f"{error} (already failing: {backoff.failing})")

        loop = BackgroundLoop(
            "test-loop",
            step,
            errors=(OSError,),
            on_error=on_error,
            on_recovered=recovered.set,
            backoff=Backoff(base=0.001, cap=0.002),
        )
        loop.start()
        await asyncio.wait_for(recovered.wait(), 5)
        await loop.aclose()
        assert ["down (already failing: False)", "still down (already failing: True)"] == seen

    async def test_an_unexpected_error_ends_the_task_and_start_restarts_it(self) -> None:
        """An error outside ``errors`` ends the task; start() brings the loop back."""
        calls = 0

        async def step() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("bug")
            await asyncio.sleep(0)

        loop = BackgroundLoop("test-loop", step, errors=(OSError,))
        loop.start()
        first = loop.task
        assert first is not None
        await asyncio.wait((first,))
        assert isinstance(first.exception(), KeyError)
        assert not loop.running
        loop.start()
        await asyncio.sleep(0)
        assert loop.running
        await loop.aclose()
