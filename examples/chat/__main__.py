"""``python -m examples.chat``: serve the chat app; ``--help`` says how."""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from dependency_injector import providers
from enginescope.containers import EngineSettings
from pydantic import ValidationError

from .app import ChatContainer, create_app
from .settings import ChatSettings

__all__ = ["ChatServer", "QuietPolls", "main"]

PROG = "python -m examples.chat"
WS_MAX_SIZE = 64 * 1024  # the transport's hard frame limit; the app's own limit is lower
QUIET_PATHS = frozenset({"/api/metrics", "/metrics", "/healthz", "/favicon.ico"})

DESCRIPTION = """\
Serve the enginescope chat example: a page where each user logs in, sends messages and
watches each one run in its own isolated engine, plus /metrics (Prometheus) and /healthz.
"""
EPILOG = """\
settings (environment variables):
  CHAT_SECRET                      signs login tokens; at least 32 characters (default:
                                   a new random one per start, so tokens die on restart)
  CHAT_TOKEN_TTL_SECONDS           how long a login lasts (3600)
  CHAT_MAX_MESSAGE_BYTES           largest message a socket may send (8192)
  CHAT_MAX_MESSAGES_PER_SECOND     messages per socket per second (10)
  CHAT_LOGIN_ATTEMPTS_PER_MINUTE   logins per client address per minute (20)
  CHAT_TOOL_DELAY_SECONDS          pause in each tool, to watch a run unfold (0.3)
  ENGINESCOPE_*                    the engine settings, e.g. ENGINESCOPE_MAX_ENGINES_PER_USER=1

examples:
  python -m examples.chat --port 9000
  export CHAT_SECRET="$(python -c 'import secrets; print(secrets.token_urlsafe())')"
  python -m examples.chat --host 0.0.0.0
"""


class ChatServer(uvicorn.Server):
    """``uvicorn.Server`` that closes every chat WebSocket with 1001 on shutdown, before
    uvicorn itself drops the connections."""

    def __init__(self, config: uvicorn.Config, container: ChatContainer) -> None:
        super().__init__(config)
        self._container = container

    async def shutdown(self, sockets: Any = None) -> None:
        await self._container.gateway().close_all()
        await super().shutdown(sockets)


class QuietPolls(logging.Filter):
    """Keeps the page's metrics polls (and scrapes, health checks) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) > 2 else None
        return not (isinstance(path, str) and path.split("?", 1)[0] in QUIET_PATHS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (info)",
    )
    return parser.parse_args(argv)


def load_settings() -> ChatSettings:
    """The ``CHAT_*`` and ``ENGINESCOPE_*`` settings, checked before anything starts; a
    bad one ends the program with one line per bad variable and exit 2."""
    try:
        EngineSettings()
        return ChatSettings()
    except ValidationError as exc:
        prefix = "ENGINESCOPE_" if exc.title == EngineSettings.__name__ else "CHAT_"
        for error in exc.errors():
            name = prefix + "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            line = message if message.startswith(name) else f"{name}: {message}"
            print(f"{PROG}: {line}", file=sys.stderr)
        sys.exit(2)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn; exit 1 with one line if it is taken."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
        print(f"{PROG}: {host}:{port} {reason}; choose another with --port", file=sys.stderr)
        sys.exit(1)
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)s:     %(name)s %(message)s"
    )
    container = ChatContainer()
    container.settings.override(providers.Object(settings))
    config = uvicorn.Config(
        create_app(container), log_level=args.log_level, ws_max_size=WS_MAX_SIZE
    )
    logging.getLogger("uvicorn.access").addFilter(QuietPolls())
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"enginescope chat: open http://{args.host}:{port}/", flush=True)
    tune_garbage_collector()
    ChatServer(config, container).run(sockets=[sock])


def tune_garbage_collector() -> None:
    """Move what startup made out of the collector's way and collect young objects less
    often: a server holding many live engines and runs spends less time in the collector
    (measured on the fan-out of 10,000 runs: +10% events/s with the freeze, +36% with both;
    see the README's performance section)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


if __name__ == "__main__":
    main()
