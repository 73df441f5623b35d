"""A deterministic built-in agent for demos and tests: no network, no model."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .agents import AgentRun

__all__ = ["DEMO_AGENT_NAME", "demo_agent", "word_statistics"]

DEMO_AGENT_NAME = "demo"
_WORD = re.compile(r"[\w']+")


def word_statistics(text: str) -> dict[str, Any]:
    """Count the words of ``text`` and name the most common ones."""
    words = [word.lower() for word in _WORD.findall(text)]
    return {
        "words": len(words),
        "unique_words": len(set(words)),
        "characters": len(text),
        "most_common": [word for word, _ in Counter(words).most_common(3)],
    }


async def demo_agent(run: AgentRun) -> str:
    """Think once, use one tool and reply: exactly five events per run."""
    await run.think(f"Reading your message of {len(run.message)} characters.")
    stats = await run.use_tool("word_statistics", word_statistics, text=run.message)
    words, unique = stats["words"], stats["unique_words"]
    plural = "" if words == 1 else "s"
    return f"Your message has {words} word{plural} ({unique} unique)."
