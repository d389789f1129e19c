#!/usr/bin/env python3
"""Write a deterministic MiniCPM-V checkpoint in the original Hugging Face layout.

    python models/make_tiny.py tiny-2.6 -o models/tiny-2.6     # also: tiny-2.5, real-2.6 (real vision dims)

The recipes themselves are in python/minicpmv_edge/recipes.py, so the installed `minicpmv-edge demo` and the tests
use the same code.
"""

import sys

from minicpmv_edge.recipes import main

if __name__ == "__main__":
    sys.exit(main())
