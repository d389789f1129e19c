"""Errors of the runtime's objects themselves (bad inputs have their own: ImageError, VideoError, MessageError)."""

from __future__ import annotations


class ClosedError(ValueError):
    """An object used after close() (as Python's files raise ValueError on a closed file)."""


class BusyError(RuntimeError):
    """A call that would wait for itself: a new chat() in the thread that holds an open stream of the object."""
