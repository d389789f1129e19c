"""Load the C++ extension on the ggml that llama-cpp-python already loaded.

`import llama_cpp` maps llama_cpp/lib/libggml-base (and the rest) into the process first; `_core` links the same
sonames and carries an rpath to that folder, so the dynamic loader reuses those copies instead of loading a
second ggml (two ggml copies would mean two backend registries and two sets of thread pools).
"""

from __future__ import annotations

import llama_cpp  # noqa: F401  (side effect: loads llama-cpp-python's ggml before ours binds to it)

from . import _core

__all__ = ["_core"]
