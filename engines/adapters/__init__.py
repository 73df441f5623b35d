"""Run agents built with AI frameworks in a user's engine, as enginescope agents.

Each adapter lives in its own module and needs its framework, installed with an extra:

- :func:`enginescope.engines.adapters.pydantic_ai.from_pydantic_ai`
  (``pip install 'enginescope[pydantic-ai]'``)
- :func:`enginescope.engines.adapters.langgraph.from_langgraph`
  (``pip install 'enginescope[langgraph]'``)

Importing this package imports no framework; importing an adapter without its framework
raises :class:`~enginescope.engines.errors.FrameworkNotInstalledError` (an ``ImportError``)
naming the extra to install.
"""

__all__: list[str] = []
