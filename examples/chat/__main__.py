"""``python -m examples.chat [--host 127.0.0.1] [--port 8000]``: serve the chat app.

A small subclass of ``uvicorn.Server`` closes every chat WebSocket with 1001 ("going
away") when the server is asked to stop, before uvicorn itself drops the connections.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from .app import ChatContainer, create_app

__all__ = ["ChatServer", "main"]

WS_MAX_SIZE = 64 * 1024  # the transport's hard frame limit; the app's own limit is lower


class ChatServer(uvicorn.Server):
    """``uvicorn.Server`` that lets the chat sessions say goodbye (1001) on shutdown."""

    def __init__(self, config: uvicorn.Config, container: ChatContainer) -> None:
        super().__init__(config)
        self._container = container

    async def shutdown(self, sockets: Any = None) -> None:
        await self._container.gateway().close_all()
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chat", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)s:     %(name)s %(message)s"
    )
    container = ChatContainer()
    app = create_app(container)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=WS_MAX_SIZE
    )
    print(f"enginescope chat: open http://{args.host}:{args.port}/", flush=True)
    ChatServer(config, container).run()


if __name__ == "__main__":
    main()
