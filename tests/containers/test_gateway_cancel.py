"""The gateway's Stop: ``{"type": "cancel", "run_id": ...}`` for the socket's own runs."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.containers.test_fastapi import ChatHarness, receive_until, wait_for


@pytest.fixture
def harness() -> ChatHarness:
    return ChatHarness()


@pytest.fixture
def client(harness: ChatHarness) -> Any:
    with TestClient(harness.app) as test_client:
        yield test_client


def start_waiting_run(ws: Any) -> str:
    """Send a message whose run blocks; its run id, once the run is thinking."""
    ws.send_json({"type": "message", "text": "wait for it"})
    return str(receive_until(ws, "agent_thinking")[-1]["run_id"])


class TestCancel:
    def test_a_socket_stops_its_own_run_which_ends_with_agent_stopped(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """cancel ends the run with one agent_stopped ('cancelled'), then nothing more of
        it arrives, the engine is cleaned up and the socket serves on."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            run_id = start_waiting_run(ws)
            ws.send_json({"type": "cancel", "run_id": run_id})
            stopped = ws.receive_json()
            ws.send_json({"type": "ping"})
            assert {"type": "pong"} == ws.receive_json()
        assert ("agent_stopped", run_id, "cancelled") == (
            stopped["type"],
            stopped["run_id"],
            stopped["data"]["reason"],
        )
        wait_for(lambda: 0 == harness.metrics(client)["active_engines_count"])

    def test_another_socket_or_user_cannot_stop_the_run(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """A cancel for a run of another socket (even the same user's) or another user is
        an unknown_run error, and the run goes on until its own socket stops it."""
        with (
            client.websocket_connect("/ws/alice") as alice,
            client.websocket_connect("/ws/alice") as alice_again,
            client.websocket_connect("/ws/bob") as bob,
        ):
            for ws in (alice, alice_again, bob):
                ws.receive_json()
            run_id = start_waiting_run(alice)
            receive_until(alice_again, "agent_thinking")
            for ws in (alice_again, bob):
                ws.send_json({"type": "cancel", "run_id": run_id})
                refused = ws.receive_json()
                assert ("error", "unknown_run", run_id) == (
                    refused["type"],
                    refused["code"],
                    refused["run_id"],
                )
            assert 1 == harness.metrics(client)["active_engines_count"]
            alice.send_json({"type": "cancel", "run_id": run_id})
            assert "agent_stopped" == alice.receive_json()["type"]

    @pytest.mark.parametrize("run_id", [None, 7, "run-never-issued"])
    def test_a_bad_or_unknown_run_id_is_an_error_event(
        self, client: TestClient, run_id: Any
    ) -> None:
        """A missing, non-string or unknown run id is refused; the socket stays usable."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_json({"type": "cancel", "run_id": run_id})
            error = ws.receive_json()
            ws.send_json({"type": "ping"})
            assert ("error", "unknown_run") == (error["type"], error["code"])
            assert {"type": "pong"} == ws.receive_json()
