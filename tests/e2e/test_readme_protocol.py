"""The README's WebSocket protocol names every frame the gateway reads and sends, every
agent event and every error code, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from enginescope.engines.emitter import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "\n".join(
    (ROOT / "containers" / name).read_text(encoding="utf-8")
    for name in ("gateway.py", "_sessions.py", "fastapi.py")
)
CHAT = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "examples" / "chat").glob("*.py"))
ERROR_CODE = re.compile(r'(?:send_error|refuse|_error_event)\(\s*"([a-z_]+)"|"code": "([a-z_]+)"')


def protocol_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The WebSocket protocol\n", 1)[1]
    return re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]


def codes_in(source: str) -> set[str]:
    return {a or b for a, b in ERROR_CODE.findall(source)}


class TestProtocolSection:
    def test_every_error_code_is_documented_and_no_other(self) -> None:
        """The codes table is exactly the codes the gateway and the chat example send."""
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", protocol_section(), re.MULTILINE))
        assert codes_in(GATEWAY) | codes_in(CHAT) == documented

    def test_every_inbound_type_is_documented(self) -> None:
        """Each type the gateway dispatches on has a row in the inbound table."""
        handled = set(re.findall(r'kind == "([a-z_]+)"', GATEWAY))
        assert handled
        for kind in handled:
            assert f'`{{"type": "{kind}"' in protocol_section(), kind

    def test_every_outbound_frame_and_agent_event_is_documented(self) -> None:
        """The gateway's own frames and every agent event type appear in the section."""
        section = protocol_section()
        own = set(re.findall(r'\{\s*"type": "([a-z_]+)"', GATEWAY))
        assert {"session", "thread", "pong"} <= own
        for kind in own:
            assert f'{{"type": "{kind}"' in section, kind
        for event in EVENT_TYPES:
            assert f"`{event}`" in section, event
