#!/usr/bin/env python3
"""Write a deterministic MiniCPM-V checkpoint in the original Hugging Face layout.

    python tools/make_tiny.py tiny-2.6 -o tiny-2.6     # any preset of the families (minicpmv-edge make-model)

The recipes themselves are in python/minicpmv_edge/recipes.py and families/, so the installed `minicpmv-edge demo`
and the tests use the same code.
"""

import sys

from minicpmv_edge.recipes import main

if __name__ == "__main__":
    sys.exit(main())
