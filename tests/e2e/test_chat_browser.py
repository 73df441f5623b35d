"""The chat page in a real browser: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, ChatServer

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
SCREENSHOT_COPY = ROOT / "build" / "e2e-screenshot.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def log_in_and_send(browser: sync_api.Browser, url: str, name: str, text: str) -> sync_api.Page:
    """A fresh browser context (a separate user) that logs in and sends ``text``."""
    page = browser.new_context(viewport={"width": 1100, "height": 720}).new_page()
    page.goto(url)
    page.fill("#name", name)
    page.click("#login")
    page.wait_for_selector("body[data-connected=true]")
    page.fill("#message", text)
    page.press("#message", "Enter")
    return page


def timeline(page: sync_api.Page) -> list[tuple[str, str]]:
    """``(event type, user id)`` of every timeline row, top to bottom."""
    rows = page.locator("#timeline .event")
    return [
        (str(rows.nth(i).get_attribute("data-type")), str(rows.nth(i).get_attribute("data-user")))
        for i in range(rows.count())
    ]


def side_by_side(browser: sync_api.Browser, shots: list[bytes], path: Path) -> None:
    """One screenshot showing both users' pages next to each other."""
    images = "".join(
        f'<img style="width:50%;border:1px solid #999" src="data:image/png;base64,'
        f'{base64.b64encode(shot).decode()}">'
        for shot in shots
    )
    page = browser.new_context(viewport={"width": 2200, "height": 740}).new_page()
    page.set_content(f'<body style="margin:0;display:flex">{images}</body>')
    page.screenshot(path=str(path))


def test_two_users_in_two_browser_contexts_each_see_only_their_own_timeline(
    browser: sync_api.Browser, chat_server: ChatServer, tmp_path: Path
) -> None:
    """Alice and Bob log in in separate contexts, send a message each, and each timeline
    shows exactly that user's five events; the metrics panel counts both runs."""
    alice = log_in_and_send(browser, chat_server.url, "Alice", "What is (2 + 3) * 7?")
    bob = log_in_and_send(browser, chat_server.url, "Bob", "the quick brown fox and the dog")
    for page in (alice, bob):
        page.wait_for_selector("#timeline .event[data-type=agent_completed]")
        page.wait_for_function(
            "Number(document.querySelector('[data-metric=total_engines_created]').textContent) >= 2"
        )
    users = {page: page.get_attribute("body", "data-user") for page in (alice, bob)}
    shots = [page.screenshot() for page in (alice, bob)]
    side_by_side(browser, shots, tmp_path / "two-users.png")
    SCREENSHOT_COPY.parent.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "two-users.png", SCREENSHOT_COPY)

    assert users[alice] != users[bob]
    for page, user_id in users.items():
        assert [(kind, user_id) for kind in FIVE] == timeline(page)
    assert "(2 + 3) * 7 = 35" in alice.inner_text("#timeline")
    assert "(2 + 3) * 7" not in bob.inner_text("#timeline")


def test_each_user_sees_their_own_reply_stream_in(
    browser: sync_api.Browser, chat_server: ChatServer
) -> None:
    """The reply is written into the page piece by piece as its text deltas arrive, and
    each user's page holds only their own reply."""
    alice = log_in_and_send(browser, chat_server.url, "Alice", "What is 6 * 7 + 1?")
    bob = log_in_and_send(browser, chat_server.url, "Bob", "one two two three three three")
    for page in (alice, bob):
        page.wait_for_selector("#timeline .event[data-type=agent_completed]")
    replies = {page: page.locator("#timeline .reply") for page in (alice, bob)}

    assert ["6 * 7 + 1 = 43"] == replies[alice].all_inner_texts()
    assert ["6 words, 3 unique; most common: three, two, one."] == replies[bob].all_inner_texts()
    for reply in replies.values():
        assert int(reply.get_attribute("data-deltas") or 0) >= 2
    # Alice's question and answer (a bare "43" is also in the times shown in minute 43)
    bob_timeline = bob.inner_text("#timeline")
    assert "6 * 7 + 1" not in bob_timeline
    assert "= 43" not in bob_timeline


def test_stop_ends_only_that_users_run(browser: sync_api.Browser, start_server: Any) -> None:
    """Alice's Stop button cancels her run, which ends with a 'stopped' row and no reply;
    Bob's run, in progress at the same time, goes on untouched."""
    server = start_server(CHAT_TOOL_DELAY_SECONDS="30")
    alice = log_in_and_send(browser, server.url, "Alice", "What is 1 + 1?")
    bob = log_in_and_send(browser, server.url, "Bob", "What is 2 + 2?")
    for page in (alice, bob):
        page.wait_for_selector("#timeline .event[data-type=tool_executing]")
    alice.click("#timeline .run .stop")
    alice.wait_for_selector("#timeline .event[data-type=agent_stopped]")
    users = {page: page.get_attribute("body", "data-user") for page in (alice, bob)}

    expected = ["agent_started", "agent_thinking", "tool_executing", "agent_stopped"]
    assert [(kind, users[alice]) for kind in expected] == timeline(alice)
    assert "cancelled" in alice.inner_text("#timeline .event[data-type=agent_stopped]")
    assert 0 == alice.locator("#timeline .reply, #timeline .stop").count()
    expected = ["agent_started", "agent_thinking", "tool_executing"]
    assert [(kind, users[bob]) for kind in expected] == timeline(bob)
    assert 1 == bob.locator("#timeline .stop").count()


def test_the_page_keeps_what_was_typed_through_an_oversize_message_and_a_drop(
    browser: sync_api.Browser, chat_server: ChatServer
) -> None:
    """A message over the server's limit is not sent and stays typed, the socket stays
    open; when the server drops the socket the page reconnects by itself with the typed
    text intact, and the run's heading does not say "run run-"."""
    page = browser.new_context(viewport={"width": 1100, "height": 720}).new_page()
    page.goto(chat_server.url)
    page.fill("#name", "Kim")
    page.click("#login")
    page.wait_for_selector("body[data-connected=true]")
    too_long = "x" * 9000
    page.fill("#message", too_long)
    page.press("#message", "Enter")
    status_after_oversize = page.inner_text("#socket-status")
    kept_after_oversize = page.input_value("#message")
    connected_after_oversize = page.get_attribute("body", "data-connected")

    page.fill("#message", "what is 2 + 2")
    page.evaluate("state.socket.send('x'.repeat(9000))")  # past the page: the server closes
    page.wait_for_selector("body[data-connected=false]")
    page.wait_for_selector("body[data-connected=true]", timeout=15_000)
    kept_after_drop = page.input_value("#message")
    page.press("#message", "Enter")
    page.wait_for_selector("#timeline .event[data-type=agent_completed]")
    heading = page.inner_text("#timeline .run .head")

    assert "Too long to send: 9" in status_after_oversize
    assert "the limit is 8192" in status_after_oversize
    assert (too_long, "true") == (kept_after_oversize, connected_after_oversize)
    assert "what is 2 + 2" == kept_after_drop
    assert "" == page.input_value("#message")  # sent, so cleared
    assert heading.startswith("run ")
    assert not heading.startswith("run run")
    assert "2 + 2 = 4" in page.inner_text("#timeline")
