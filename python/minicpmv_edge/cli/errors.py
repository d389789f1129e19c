"""How an error reads on the command line."""

from __future__ import annotations


def error_text(e: BaseException) -> str:
    """What an error says (a bare MemoryError says nothing: it is named)."""
    text = str(e)
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + text if text else ''}"
    return text or type(e).__name__
