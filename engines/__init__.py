"""enginescope.engines."""

__all__: list[str] = []
