#!/usr/bin/env python3
"""Quantize a language-model GGUF with llama.cpp's quantizer: the same as `minicpmv-edge quantize`.

    python tools/quantize.py IN.gguf OUT.gguf Q4_K_M
"""

import sys

from minicpmv_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))
